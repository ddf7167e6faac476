"""Settings of the services, validated once at construction.

Frozen, keyword-only dataclasses: a setting cannot change under a running
scheduler, and a call site reads as documentation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from .durations import as_timedelta
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


@dataclass(frozen=True, kw_only=True)
class SchedulerConfig:
    """How far ahead and how often the scheduler creates rows, and what it repairs.

    ``lookahead``
        The original's DurationBeforeSequence: rows for a tick are created
        once the tick is at most this far away (up to one day).
    ``interval``
        The original's SchedulerCheckingInterval: a ``timedelta``, a Go
        duration (``"2s"``) or ``"@every 2s"``. At most ``lookahead``, or
        ticks between one pass's horizon and the next pass would be lost.
    ``sequence``
        The original's SequenceGenerator. Ticks it maps to the same string
        share one budget of ``max_run``.
    ``catchup``
        After the scheduler was down for longer than ``lookahead``, ticks
        missed by at most this much are still created (and claimed late, if
        within their grace, or closed as missed). Older ones are skipped,
        counted and logged once. Default: one and a half intervals. At most a day.
    ``retention``
        If set (at least two days), every pass also deletes rows that
        finished longer ago than this, a few small batches at a time.
    ``max_backoff``
        The longest wait between attempts while the database is unreachable.
    """

    lookahead: timedelta | str = timedelta(minutes=10)
    interval: timedelta | str = timedelta(minutes=1)
    sequence: Callable[[datetime], str] = default_sequence
    catchup: timedelta | str | None = None
    retention: timedelta | str | None = None
    max_backoff: timedelta | str = timedelta(seconds=30)

    def __post_init__(self) -> None:
        lookahead = _duration(self.lookahead, "lookahead")
        interval = _duration(self.interval, "interval")
        catchup = interval * 3 / 2 if self.catchup is None else _duration(self.catchup, "catchup")
        retention = None if self.retention is None else _duration(self.retention, "retention")
        max_backoff = _duration(self.max_backoff, "max_backoff")
        if lookahead > LONGEST_LOOKAHEAD:
            raise InvalidConfigError(f"SchedulerConfig: lookahead ({lookahead}) is over one day")
        if lookahead < interval:
            raise InvalidConfigError(
                f"SchedulerConfig: lookahead ({lookahead}) is shorter than interval ({interval}); "
                "ticks between one pass's horizon and the next pass would never be created"
            )
        if catchup > LONGEST_CATCHUP:
            raise InvalidConfigError(f"SchedulerConfig: catchup ({catchup}) is over one day")
        if retention is not None and retention < SHORTEST_RETENTION:
            raise InvalidConfigError(
                f"SchedulerConfig: retention ({retention}) is under {SHORTEST_RETENTION}; "
                "shorter would let a restarted scheduler create pruned ticks again"
            )
        if not callable(self.sequence):
            raise InvalidConfigError("SchedulerConfig: sequence must be a function of the tick")
        for name, value in (
            ("lookahead", lookahead),
            ("interval", interval),
            ("catchup", catchup),
            ("retention", retention),
            ("max_backoff", max_backoff),
        ):
            object.__setattr__(self, name, value)

    @property
    def lookahead_delta(self) -> timedelta:
        """``lookahead`` as a ``timedelta`` (it is normalised at construction)."""
        return as_timedelta(self.lookahead, "lookahead")

    @property
    def interval_delta(self) -> timedelta:
        """``interval`` as a ``timedelta`` (it is normalised at construction)."""
        return as_timedelta(self.interval, "interval")

    @property
    def catchup_delta(self) -> timedelta:
        """``catchup`` as a ``timedelta`` (its default is filled in at construction)."""
        assert self.catchup is not None
        return as_timedelta(self.catchup, "catchup")

    @property
    def retention_delta(self) -> timedelta | None:
        """``retention`` as a ``timedelta``, or None when the scheduler does not prune."""
        return None if self.retention is None else as_timedelta(self.retention, "retention")

    @property
    def max_backoff_delta(self) -> timedelta:
        """``max_backoff`` as a ``timedelta``."""
        return as_timedelta(self.max_backoff, "max_backoff")


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How the services retry transient database errors within one call.

    Deadlocks, lock-wait timeouts, serialization failures, SQLite's
    "database is locked" and lost connections are retried up to ``attempts``
    times in all, with exponential backoff from ``base_delay`` capped at
    ``max_delay`` (seconds) and full jitter, so racing processes do not retry
    in lockstep. Loops (scheduler, worker) add their own longer backoff on top.

    SQLite's "database is locked" is handled apart: a writer retries in
    steps of a fraction of a millisecond for up to ``busy_timeout`` seconds,
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
