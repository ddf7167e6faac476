"""Work blueprints and their ticks.

A :class:`Work` is what the original calls a work: a name, a cron and a
``max_run`` budget per tick. This module checks it and turns it into ticks,
and owns nothing else: no clock, no database. Every function takes the time
it needs as an argument, so tests pass explicit instants instead of patching
time. What a cron string means, and how its ticks fall across daylight-saving
changes, is ``cron``'s business.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ._sql.text import check_text
from .cron import SYNTAXES, Schedule, schedule_of
from .durations import as_timedelta, shown
from .errors import InvalidArgumentError, InvalidWorkError
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


def _label(name: object) -> str:
    """The work's name for an error message, shortened so a 10 kB name stays readable."""
    text = repr(name)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _invalid(name: object, field_name: str, problem: str) -> InvalidWorkError:
    return InvalidWorkError(f"work {_label(name)}: {field_name} {problem}")


def _parse_schedule(name: str, cron: object, zone: ZoneInfo, syntax: object) -> Schedule:
    if not isinstance(cron, str):
        raise _invalid(name, "cron", f"must be a string, not {type(cron).__name__}")
    if syntax not in SYNTAXES:
        raise _invalid(
            name, "cron_syntax", f"must be one of {', '.join(map(repr, SYNTAXES))}, not {syntax!r}"
        )
    schedule = schedule_of(cron, zone, str(syntax))
    if isinstance(schedule, str):
        raise _invalid(name, "cron", schedule)
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


def _policy(name: str, field_name: str, value: object) -> timedelta:
    """A lease or grace: a ``timedelta`` or a duration such as ``"5m"``, whole seconds from
    1 s to a year."""
    if isinstance(value, str):
        try:
            value = as_timedelta(value, field_name)
        except ValueError as exc:
            raise InvalidWorkError(f"work {_label(name)}: {exc}") from None
    if not isinstance(value, timedelta):
        raise _invalid(
            name,
            field_name,
            f"must be a timedelta or a duration such as '5m', not {type(value).__name__}",
        )
    if value % timedelta(seconds=1) or not timedelta(seconds=1) <= value <= LONGEST_POLICY:
        raise _invalid(
            name,
            field_name,
            f"must be a whole number of seconds from 1 s to 365 days, got {shown(value)}",
        )
    return value


def _timeout(name: str, value: object) -> timedelta | None:
    """A handler's time limit: None (no limit), or a positive duration of at most a year.

    Unlike a lease it is never stored in a row (only the worker running the
    handler acts on it), so it may be finer than a second.
    """
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = as_timedelta(value, "timeout")
        except ValueError as exc:
            raise InvalidWorkError(f"work {_label(name)}: {exc}") from None
    if not isinstance(value, timedelta):
        raise _invalid(
            name,
            "timeout",
            f"must be None, a timedelta or a duration such as '30s', not {type(value).__name__}",
        )
    if not timedelta(0) < value <= LONGEST_POLICY:
        raise _invalid(
            name, "timeout", f"must be positive and at most 365 days, got {shown(value)}"
        )
    return value


@dataclass(frozen=True, slots=True, init=False)  # slots: a scheduler may hold 100,000
class Work:
    """One job: run it at most ``max_run`` times per tick of ``cron``, fleet-wide.

    Keyword-only policy, copied into every row the scheduler creates, so
    workers and recovery act on it without a copy of the works:

    ``lease`` (a ``timedelta`` or a duration such as ``"5m"``, as ``grace``)
        How long a claim holds its row without a heartbeat. When it runs out,
        recovery takes the row back (the worker is presumed lost).
    ``grace``
        How late after its tick a row may still be claimed. After that, the
        tick is closed as missed, and ``acquire_due`` never hands it out.
    ``max_attempts``
        How many claims a row may get in all. The default, 1, never re-queues:
        a lost worker's row is marked FAILED. Above 1, a row whose lease
        expired goes back to QUEUED (the same tick) until the attempts are used.
    ``timeout`` (None, the default: no limit)
        How long a worker lets the handler of one claim run. Past it the
        claim is recorded FAILED ("timed out"), its heartbeat stops and the
        worker's slot is free again; whatever the handler does later is
        fenced off. :class:`AsyncWorker` cancels the handler's task;
        :class:`Worker` cannot kill a thread, so it leaves it and runs
        new claims on new ones (see ``max_stuck`` there). Not stored in the
        rows: the worker running the handler enforces it.
    ``cron_syntax``
        ``"standard"`` (the default): 5 fields are Unix cron, minute first.
        ``"original"``: read ``cron`` exactly as the Go original's
        ``cron.Parse`` does, 5 fields being second, minute, hour, day of month
        and month, for configs carried over from it.

    Validated at construction; anything unusable raises
    :class:`~worksync_sa.InvalidWorkError` naming the work and the field.
    """

    name: str
    cron: str
    max_run: int
    timezone: str
    lease: timedelta
    grace: timedelta
    max_attempts: int
    cron_syntax: str
    timeout: timedelta | None
    _schedule: Schedule = field(init=False, repr=False, compare=False)

    def __init__(
        self,
        name: str,
        cron: str,
        max_run: int = 1,
        timezone: str = "UTC",
        *,
        lease: timedelta | str = timedelta(seconds=DEFAULT_LEASE_SECONDS),
        grace: timedelta | str = timedelta(seconds=DEFAULT_GRACE_SECONDS),
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        cron_syntax: str = "standard",
        timeout: timedelta | str | None = None,
    ) -> None:
        try:
            check_text(name, "name")
        except InvalidArgumentError as exc:
            raise InvalidWorkError(f"work {_label(name)}: {exc}") from None
        for field_name, value, limit in (
            ("max_run", max_run, MAX_RUN_LIMIT),
            ("max_attempts", max_attempts, MAX_ATTEMPTS_LIMIT),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= limit:
                raise _invalid(name, field_name, f"must be an int from 1 to {limit}, got {value!r}")
        values: dict[str, object] = {
            "name": name,
            "cron": cron,
            "max_run": max_run,
            "timezone": timezone,
            "lease": _policy(name, "lease", lease),
            "grace": _policy(name, "grace", grace),
            "max_attempts": max_attempts,
            "cron_syntax": cron_syntax,
            "timeout": _timeout(name, timeout),
        }
        zone = _parse_zone(name, timezone)
        values["_schedule"] = _parse_schedule(name, cron, zone, cron_syntax)
        for key, given in values.items():
            object.__setattr__(self, key, given)

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
