"""Work blueprints and their ticks.

A :class:`Work` is what the original calls a work: a name, a cron and a
``max_run`` budget per tick. This module turns it into ticks, and owns nothing
else: no clock, no database. Every function takes the time it needs as an
argument, so tests pass explicit instants instead of patching time.

Cron syntax follows robfig/cron v1 as the original used it, on top of croniter:

* 5 fields: standard Unix cron (minute first);
* 6 fields: seconds first (``0,10,20,30,40,50 * * * * *``);
* descriptors ``@yearly @annually @monthly @weekly @daily @midnight @hourly``;
* ``@every <duration>`` (``2s``, ``5m``, ``1h30m``), whose ticks are multiples
  of the period counted from the Unix epoch, so every process agrees on them.

Ticks are computed in the work's time zone and returned as UTC instants.
Across daylight-saving changes:

* spring forward: a wall time that does not exist that day fires once, at the
  first wall time after the gap (``30 2 * * *`` fires at 03:00), like Vixie cron;
* fall back: a fixed-time job (minute and hour fields both fixed, such as
  ``30 1 * * *``) fires once, at the first 01:30; a job with ``*`` in its
  minute or hour field fires at every matching instant, so ``*/15 * * * *``
  keeps firing every 15 real minutes through the repeated hour. This is
  Vixie cron's rule, and it keeps a nightly job from running twice.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import KW_ONLY, dataclass, field
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter

from ._text import check_text
from .durations import parse_every
from .errors import InvalidWorkError
from .models import (
    DEFAULT_GRACE_SECONDS,
    DEFAULT_LEASE_SECONDS,
    DEFAULT_MAX_ATTEMPTS,
    checked_moment,
)

MAX_RUN_LIMIT = 10_000
"""Largest ``max_run``: the scheduler writes that many rows per tick."""
MAX_ATTEMPTS_LIMIT = 100
LONGEST_POLICY = timedelta(days=365)

_UTC = timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=_UTC)
_DESCRIPTORS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# croniter's hashed (H) and random (R) fields differ between processes unless
# every one is given the same seed; a fleet must agree on ticks, so we refuse them.
_NONDETERMINISTIC = re.compile(r"(?:^|[,\s])[HhRr](?:$|[\s,(/])")


class _Schedule:
    """Ticks of one cron in one zone, in ``(after, until]``."""

    def ticks(self, after: datetime, until: datetime) -> Iterator[datetime]:
        raise NotImplementedError


@dataclass(frozen=True)
class _Every(_Schedule):
    period: timedelta

    def ticks(self, after: datetime, until: datetime) -> Iterator[datetime]:
        # Multiples of the period since the epoch: the same on every process,
        # whenever it started (the original counted from process start).
        tick = _EPOCH + ((after - _EPOCH) // self.period + 1) * self.period
        while tick <= until:
            yield tick
            tick += self.period


@dataclass(frozen=True)
class _Cron(_Schedule):
    expression: str
    zone: ZoneInfo
    seconds_first: bool
    fixed_time: bool

    def ticks(self, after: datetime, until: datetime) -> Iterator[datetime]:
        cursor = croniter(
            self.expression, after.astimezone(self.zone), second_at_beginning=self.seconds_first
        )
        while True:
            local: datetime = cursor.get_next(datetime)
            tick = local.astimezone(_UTC)
            if tick > until:
                return
            if tick > after and not (self.fixed_time and _is_repeated_wall_time(local)):
                yield tick


def _is_repeated_wall_time(local: datetime) -> bool:
    """True for the second occurrence of a wall time repeated when clocks go back."""
    wall = local.replace(tzinfo=None)
    first = wall.replace(tzinfo=local.tzinfo, fold=0)
    second = wall.replace(tzinfo=local.tzinfo, fold=1)
    if first.utcoffset() == second.utcoffset():
        return False
    later = max(first.astimezone(_UTC), second.astimezone(_UTC))
    return local.astimezone(_UTC) == later


def _label(name: object) -> str:
    """The work's name for an error message, shortened so a 10 kB name stays readable."""
    text = repr(name)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _invalid(name: object, field_name: str, problem: str) -> InvalidWorkError:
    return InvalidWorkError(f"work {_label(name)}: {field_name} {problem}")


class _CronProblem(ValueError):
    """Why a cron string is unusable; the caller adds which work and field."""


def _parse_schedule(name: str, cron: object, zone: ZoneInfo) -> _Schedule:
    if not isinstance(cron, str):
        raise _invalid(name, "cron", f"must be a string, not {type(cron).__name__}")
    schedule = _schedule_of(cron, zone)
    if isinstance(schedule, str):
        raise _invalid(name, "cron", schedule)
    return schedule


_FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week")


def _which_field(fields: list[str], seconds_first: bool) -> str:
    """Name the field croniter refuses: each one is tried alone among stars."""
    names = ("second", *_FIELDS) if seconds_first else _FIELDS
    for at, value in enumerate(fields):
        probe = ["*"] * len(fields)
        probe[at] = value
        if not croniter.is_valid(" ".join(probe), second_at_beginning=seconds_first):
            return f"its {names[at]} field {value!r} is out of range or not understood"
    return "croniter cannot parse it"


@functools.lru_cache(maxsize=4096)
def _schedule_of(cron: str, zone: ZoneInfo) -> _Schedule | str:
    """The schedule of a cron in a zone, or the problem with it.

    Cached: a fleet's works share a handful of crons, and validating one asks
    croniter for its next tick, which costs far more than everything else a
    Work does. Schedules are immutable, so works may share them.
    """
    try:
        return _compile_schedule(cron, zone)
    except _CronProblem as problem:
        return str(problem)


def _compile_schedule(cron: str, zone: ZoneInfo) -> _Schedule:
    spec = " ".join(cron.split())
    if spec.lower().startswith("@every"):
        try:
            period = parse_every(spec)
        except ValueError as exc:
            raise _CronProblem(f"{cron!r} is invalid: {exc}") from None
        if period is None:
            raise _CronProblem(f"{cron!r} is invalid: write '@every 5m'")
        if period % timedelta(seconds=1) or period < timedelta(seconds=1):
            raise _CronProblem(f"{cron!r} must be a whole number of seconds (sequences have 1 s)")
        return _Every(period)
    expression = _DESCRIPTORS.get(spec.lower(), spec)
    if expression.startswith("@"):
        raise _CronProblem(
            f"{cron!r} is not a known descriptor ({', '.join(_DESCRIPTORS)}, @every)"
        )
    fields = expression.split(" ")
    if len(fields) not in (5, 6):
        raise _CronProblem(
            f"{cron!r} has {len(fields)} fields; use 5 (minute first) or 6 (seconds first)"
        )
    if _NONDETERMINISTIC.search(expression):
        raise _CronProblem(f"{cron!r} uses H or R fields, which differ between processes")
    seconds_first = len(fields) == 6
    minute, hour = (fields[1], fields[2]) if seconds_first else (fields[0], fields[1])
    schedule = _Cron(
        expression=expression,
        zone=zone,
        seconds_first=seconds_first,
        fixed_time=not (minute.startswith("*") or hour.startswith("*")),
    )
    try:
        if not croniter.is_valid(expression, second_at_beginning=seconds_first):
            raise ValueError(_which_field(fields, seconds_first))
        # An expression can parse and still never fire (``0 0 30 2 *``).
        next(schedule.ticks(_EPOCH, datetime.max.replace(tzinfo=_UTC)))
    except (StopIteration, CroniterBadDateError):
        raise _CronProblem(f"{cron!r} never fires") from None
    except Exception as exc:  # croniter raises several unrelated types
        raise _CronProblem(f"{cron!r} is invalid: {exc}") from None
    return schedule


def _parse_zone(name: str, value: object) -> ZoneInfo:
    if not isinstance(value, str) or not value:
        raise _invalid(name, "timezone", f"must be an IANA zone name such as 'UTC', not {value!r}")
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise _invalid(
            name, "timezone", f"{value!r} is not a known IANA zone (e.g. 'Europe/Berlin')"
        ) from None


def _policy_seconds(name: str, field_name: str, value: object) -> int:
    """A lease or grace as whole seconds, between 1 s and a year."""
    if not isinstance(value, timedelta):
        raise _invalid(name, field_name, f"must be a timedelta, not {type(value).__name__}")
    if value % timedelta(seconds=1) or not timedelta(seconds=1) <= value <= LONGEST_POLICY:
        raise _invalid(
            name, field_name, f"must be a whole number of seconds from 1 s to 365 days, got {value}"
        )
    return int(value.total_seconds())


@dataclass(frozen=True, slots=True)  # slots: a scheduler may hold 100,000 of them
class Work:
    """One job: run it at most ``max_run`` times per tick of ``cron``, fleet-wide.

    Keyword-only policy, copied into every row the scheduler creates, so
    workers and recovery act on it without a copy of the works:

    ``lease``
        How long a claim holds its row without a heartbeat. When it runs out,
        recovery takes the row back (the worker is presumed lost).
    ``grace``
        How late after its tick a row may still be claimed. After that, the
        tick is closed as missed, and ``acquire_due`` never hands it out.
    ``max_attempts``
        How many claims a row may get in all. The default, 1, never re-queues:
        a lost worker's row is marked FAILED. Above 1, a row whose lease
        expired goes back to QUEUED (the same tick) until the attempts are used.

    Validated at construction; anything unusable raises
    :class:`~worksync_sa.InvalidWorkError` naming the work and the field.
    """

    name: str
    cron: str
    max_run: int = 1
    timezone: str = "UTC"
    _: KW_ONLY
    lease: timedelta = timedelta(seconds=DEFAULT_LEASE_SECONDS)
    grace: timedelta = timedelta(seconds=DEFAULT_GRACE_SECONDS)
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    _schedule: _Schedule = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            check_text(self.name, "name")
        except ValueError as exc:
            raise InvalidWorkError(f"work {_label(self.name)}: {exc}") from None
        for field_name, value, limit in (
            ("max_run", self.max_run, MAX_RUN_LIMIT),
            ("max_attempts", self.max_attempts, MAX_ATTEMPTS_LIMIT),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= limit:
                raise _invalid(
                    self.name, field_name, f"must be an int from 1 to {limit}, got {value!r}"
                )
        _policy_seconds(self.name, "lease", self.lease)
        _policy_seconds(self.name, "grace", self.grace)
        zone = _parse_zone(self.name, self.timezone)
        object.__setattr__(self, "_schedule", _parse_schedule(self.name, self.cron, zone))

    @property
    def lease_seconds(self) -> int:
        """``lease`` in whole seconds, as stored in each row."""
        return int(self.lease.total_seconds())

    @property
    def grace_seconds(self) -> int:
        """``grace`` in whole seconds, as stored in each row."""
        return int(self.grace.total_seconds())

    def ticks(self, after: datetime, until: datetime) -> list[datetime]:
        """The ticks in ``(after, until]`` as aware UTC datetimes, earliest first.

        Naive arguments are taken as UTC.
        """
        return list(self.iter_ticks(after, until))

    def iter_ticks(self, after: datetime, until: datetime) -> Iterator[datetime]:
        """Like :meth:`ticks`, lazily: for windows that may hold very many ticks."""
        return self._schedule.ticks(checked_moment(after, "after"), checked_moment(until, "until"))

    def next_tick(self, after: datetime) -> datetime:
        """The first tick strictly after ``after`` (aware UTC)."""
        start = checked_moment(after, "after")
        return next(self._schedule.ticks(start, datetime.max.replace(tzinfo=_UTC)))
