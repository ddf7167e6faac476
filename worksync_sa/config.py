"""Settings of the services, validated once at construction.

Frozen, keyword-only dataclasses: a setting cannot change under a running
scheduler, and a call site reads as documentation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from .durations import as_timedelta, shown
from .errors import InvalidConfigError
from .sequences import default_sequence

LONGEST_LOOKAHEAD = timedelta(days=1)
LONGEST_CATCHUP = timedelta(days=1)
SHORTEST_RETENTION = LONGEST_LOOKAHEAD + LONGEST_CATCHUP
"""Pruning keeps at least this much history, so no scheduler, whatever its
lookahead and catch-up, can ever create a pruned tick again."""


def _duration(value: timedelta | str, what: str) -> timedelta:
    try:
        return as_timedelta(value, what)
    except ValueError as exc:
        raise InvalidConfigError(f"SchedulerConfig: {exc}") from None


@dataclass(frozen=True, init=False)
class SchedulerConfig:
    """How far ahead and how often the scheduler creates rows, and what it repairs.

    ``lookahead``
        The original's DurationBeforeSequence: rows for a tick are created
        once the tick is at most this far away (up to one day).
    ``interval``
        The original's SchedulerCheckingInterval: a ``timedelta``, a Go
        duration (``"2s"``) or ``"@every 2s"``. At most ``lookahead``, or
        ticks between one pass's horizon and the next pass would be lost.
        The background loop recovers abandoned rows on its passes at most
        every 5 seconds, or every half of its works' shortest lease or grace
        (``_core.passes.RECOVER_EVERY``); ``run_pass`` always.
    ``sequence``
        The original's SequenceGenerator. Ticks it maps to the same string
        share one budget of ``max_run``.
    ``catchup``
        After the scheduler was down for longer than ``lookahead``, ticks
        missed by at most this much are still created (and claimed late, if
        within their grace, or closed as missed). Older ones are skipped,
        counted and logged once. Default: one and a half intervals. At most a day.
    ``retention``
        If set (at least two days), a pass every five minutes (or every
        interval, if longer) also deletes rows that finished longer ago than
        this, a few small batches at a time; the rows of a custom sequence
        are kept (see ``sequences``).
    ``max_backoff``
        The longest wait between attempts while the database is unreachable.
    ``leave_to_original``
        Set while the Go original's scheduler runs beside this one, on the
        same table: each tick's last row is left to it until the tick is
        this close, and made here only if it has not made it by then. The
        original's create leaves its transaction open, holding locks and a
        connection for hours, whenever it finds a tick already complete, so
        it must find one row missing: make this shorter than its
        DurationBeforeSequence minus its SchedulerCheckingInterval, and
        longer than ``interval``. (On MySQL/MariaDB the scheduler also ends
        such a transaction when it finds one; see the guide on moving from
        the original.)

    Every duration may be given as a ``timedelta``, a Go duration (``"90s"``,
    ``"1h30m"``) or ``"@every 2s"``; the fields hold ``timedelta``s.
    """

    lookahead: timedelta
    interval: timedelta
    sequence: Callable[[datetime], str]
    catchup: timedelta
    """Filled in at construction when not given: one and a half intervals."""
    retention: timedelta | None
    max_backoff: timedelta
    leave_to_original: timedelta | None

    def __init__(
        self,
        *,
        lookahead: timedelta | str = timedelta(minutes=10),
        interval: timedelta | str = timedelta(minutes=1),
        sequence: Callable[[datetime], str] = default_sequence,
        catchup: timedelta | str | None = None,
        retention: timedelta | str | None = None,
        max_backoff: timedelta | str = timedelta(seconds=30),
        leave_to_original: timedelta | str | None = None,
    ) -> None:
        ahead = _duration(lookahead, "lookahead")
        every = _duration(interval, "interval")
        behind = every * 3 / 2 if catchup is None else _duration(catchup, "catchup")
        keep = None if retention is None else _duration(retention, "retention")
        if ahead > LONGEST_LOOKAHEAD:
            raise InvalidConfigError(f"SchedulerConfig: lookahead ({shown(ahead)}) is over one day")
        if ahead < every:
            raise InvalidConfigError(
                f"SchedulerConfig: lookahead ({shown(ahead)}) is shorter than interval "
                f"({shown(every)}); "
                "ticks between one pass's horizon and the next pass would never be created"
            )
        if behind > LONGEST_CATCHUP:
            raise InvalidConfigError(f"SchedulerConfig: catchup ({shown(behind)}) is over one day")
        if keep is not None and keep < SHORTEST_RETENTION:
            raise InvalidConfigError(
                f"SchedulerConfig: retention ({shown(keep)}) is under {shown(SHORTEST_RETENTION)}; "
                "shorter would let a restarted scheduler create pruned ticks again"
            )
        if not callable(sequence):
            raise InvalidConfigError("SchedulerConfig: sequence must be a function of the tick")
        leave = None
        if leave_to_original is not None:
            leave = _duration(leave_to_original, "leave_to_original")
            if not every < leave < ahead:
                raise InvalidConfigError(
                    f"SchedulerConfig: leave_to_original ({shown(leave)}) must be longer than "
                    f"interval ({shown(every)}), so a pass comes between it and the tick, and "
                    f"shorter than lookahead ({shown(ahead)}), or nothing would be left to "
                    "the original"
                )
        settings = {
            "lookahead": ahead,
            "interval": every,
            "sequence": sequence,
            "catchup": behind,
            "retention": keep,
            "max_backoff": _duration(max_backoff, "max_backoff"),
            "leave_to_original": leave,
        }
        for name, value in settings.items():
            object.__setattr__(self, name, value)


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How the services retry transient database errors within one call.

    Deadlocks, lock-wait timeouts, serialization failures and lost
    connections are retried up to ``attempts`` times in all, with exponential
    backoff from ``base_delay`` capped at ``max_delay`` (seconds) and full
    jitter, so racing processes do not retry in lockstep. Loops (scheduler,
    worker) add their own longer backoff on top.

    SQLite's "database is locked" is handled apart: a writer retries in
    jittered steps of at most 2 ms for up to ``busy_timeout`` seconds,
    instead of SQLite's own busy handler, whose coarse sleeps let a handful
    of processes starve each other.
    """

    attempts: int = 8
    base_delay: float = 0.005
    max_delay: float = 0.5
    busy_timeout: float = 10.0

    def __post_init__(self) -> None:
        attempts = self.attempts
        if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 1:
            raise InvalidConfigError(f"RetryPolicy: attempts must be an int >= 1, got {attempts!r}")
        for name in ("base_delay", "max_delay", "busy_timeout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise InvalidConfigError(
                    f"RetryPolicy: {name} must be a number >= 0, got {value!r}"
                )
