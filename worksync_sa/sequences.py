"""Sequence functions: how a tick is labelled, and what retention may assume of the labels.

A tick's sequence is its name in the table: the scheduler creates rows under
it and workers claim by it. Ticks a function maps to one label share one
budget of ``max_run`` for ever, so retention may only delete the rows of a
label that no later tick can be given again:

* :func:`default_sequence` labels a tick with its own UTC time, and
  :func:`local_sequence` with its wall time in one zone: both labels belong
  to one instant (two, an hour apart, in a repeated autumn hour), long gone
  when retention reaches them, so their rows are pruned;
* any other function might give an old label again (``%G-W%V``, one label a
  week), so its rows are kept, unless it is wrapped in :func:`per_tick` to
  declare that every tick gets a label of its own.

:func:`sequence_kind` names the kind; each row records it in ``spec``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import InvalidConfigError
from .models import checked_moment

LAYOUT = "%Y-%m-%d %H:%M:%S"
"""The original's layout (Go's ``time.DateTime``)."""

Sequence = Callable[[datetime], str]


def default_sequence(tick: datetime) -> str:
    """The tick converted to UTC, in the original's layout ``YYYY-MM-DD HH:MM:SS``.

    UTC, not local time, so the repeated hour at the end of daylight saving
    gives two ticks two sequences, and hosts in different zones agree. A naive
    ``tick`` is taken as UTC.
    """
    return checked_moment(tick, "tick").strftime(LAYOUT)


class LocalSequence:
    """The tick's wall time in one zone, in the original's layout: see :func:`local_sequence`."""

    __slots__ = ("zone",)

    def __init__(self, zone: str) -> None:
        self.zone = zone_named(zone, "local_sequence")

    def __call__(self, tick: datetime) -> str:
        return checked_moment(tick, "tick").astimezone(self.zone).strftime(LAYOUT)

    def __repr__(self) -> str:
        return f"local_sequence({self.zone.key!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LocalSequence) and other.zone == self.zone

    def __hash__(self) -> int:
        return hash(self.zone)


def local_sequence(zone: str) -> LocalSequence:
    """Label ticks as the Go original does on a host whose local zone is ``zone``.

    The original formats each tick as ``2006-01-02 15:04:05`` in its process's
    local time; a fleet whose original schedulers or workers run in
    ``Europe/Berlin`` needs ``sequence=local_sequence("Europe/Berlin")`` so
    both name each tick alike (hosts on UTC need nothing: that is the default).

    The autumn change makes one hour repeat, and every wall time in it names
    two instants an hour apart. Both get the same label, so they share one
    budget: the first runs, the second finds its tick taken. The original
    behaves the same way.
    """
    return LocalSequence(zone)


class PerTick:
    """A sequence function declared to give every tick a label of its own: see :func:`per_tick`."""

    __slots__ = ("function",)

    def __init__(self, function: Sequence) -> None:
        if not callable(function):
            raise InvalidConfigError("per_tick needs a function of the tick")
        self.function = function

    def __call__(self, tick: datetime) -> str:
        return self.function(tick)

    def __repr__(self) -> str:
        return f"per_tick({_name(self.function)})"


def per_tick(function: Sequence) -> PerTick:
    """Declare that ``function`` never gives two ticks the same label.

    Retention keeps the rows of custom sequences, because a label given again
    later would find its budget gone and run once more. A function that names
    every tick apart (``lambda t: t.isoformat()``) can say so, and its rows
    are then pruned like the default's. Declaring it of a function that does
    repeat labels lets retention reopen their budgets.
    """
    return PerTick(function)


def sequence_kind(function: Sequence) -> str:
    """What a sequence function is, as recorded in each row's ``spec``.

    ``utc`` (:func:`default_sequence`), ``local:<zone>``, ``per-tick:<name>``
    or ``custom:<name>``; only the first three let retention prune.
    """
    if function is default_sequence:
        return "utc"
    if isinstance(function, LocalSequence):
        return f"local:{function.zone.key}"
    if isinstance(function, PerTick):
        return f"per-tick:{_name(function.function)}"
    return f"custom:{_name(function)}"


def zone_named(zone: object, what: str) -> ZoneInfo:
    """The IANA zone ``zone`` names; ``InvalidConfigError`` naming ``what`` if it is none."""
    if not isinstance(zone, str) or not zone:
        raise InvalidConfigError(f"{what} needs an IANA zone name, not {zone!r}")
    try:
        return ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidConfigError(
            f"{what}: {zone!r} is not a known IANA zone (e.g. 'Europe/Berlin')"
        ) from None


def kind_zone(kind: str | None) -> str | None:
    """The zone a sequence kind labels in, if it names one: ``local:Europe/Berlin`` -> its zone.

    A row's ``spec`` starts ``sequence=<kind>``; :func:`spec_zone` reads it from there.
    """
    if kind is None or not kind.startswith("local:"):
        return None
    return kind.removeprefix("local:") or None


def spec_zone(spec: str | None) -> str | None:
    """The labels' zone a scheduler's ``spec`` records (``sequence=local:<zone>; ...``), if any."""
    if not spec or not spec.startswith("sequence="):
        return None
    return kind_zone(spec.removeprefix("sequence=").partition("; ")[0])


def label_instant(label: str, zone: tzinfo = timezone.utc) -> datetime | None:
    """The instant a label in the original's layout stands for as a wall time in ``zone``.

    Aware UTC, or None when the label is no time in that layout. A wall time
    the autumn change repeats names two instants: this is the first, as
    :func:`local_sequence` gives both ticks that one label and the first
    takes it. A wall time the spring change skips names none: it is read
    with the offset before the change, i.e. shifted forward by the gap
    (``02:30`` in Berlin on the spring day is ``03:30`` CEST, ``01:30`` UTC).
    """
    try:
        wall = datetime.strptime(label, LAYOUT)
        # fold=0: the earlier instant of a repeated hour, the offset before a skipped one
        # (PEP 495). Near year 1 or 9999 the instant may fall outside datetime's range.
        return wall.replace(tzinfo=zone, fold=0).astimezone(timezone.utc)
    except (ValueError, OverflowError):
        return None


PRUNABLE_KINDS = ("utc", "local:", "per-tick:")
"""Prefixes of the kinds whose labels never come back, so retention may delete their rows."""


def _name(function: object) -> str:
    module = getattr(function, "__module__", None) or "?"
    qualname = getattr(function, "__qualname__", None) or type(function).__qualname__
    return f"{module}.{qualname}"
