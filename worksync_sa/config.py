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
from .work import default_sequence


@dataclass(frozen=True, kw_only=True)
class SchedulerConfig:
    """How far ahead and how often the scheduler creates rows.

    ``lookahead`` is the original's DurationBeforeSequence: rows for a tick
    are created once the tick is at most this far away. ``interval`` is its
    SchedulerCheckingInterval, given as a ``timedelta``, a Go duration
    (``"2s"``) or the original's ``"@every 2s"``. ``sequence`` is its
    SequenceGenerator: ticks it maps to the same string share one budget of
    ``max_run``.

    ``lookahead`` must be at least ``interval``; otherwise the ticks that fall
    between one pass's horizon and the next pass would never be created.
    """

    lookahead: timedelta | str = timedelta(minutes=10)
    interval: timedelta | str = timedelta(minutes=1)
    sequence: Callable[[datetime], str] = default_sequence

    def __post_init__(self) -> None:
        try:
            lookahead = as_timedelta(self.lookahead, "lookahead")
            interval = as_timedelta(self.interval, "interval")
        except ValueError as exc:
            raise InvalidConfigError(f"SchedulerConfig: {exc}") from None
        if lookahead < interval:
            raise InvalidConfigError(
                f"SchedulerConfig: lookahead ({lookahead}) is shorter than interval ({interval}); "
                "ticks between one pass's horizon and the next pass would never be created"
            )
        if not callable(self.sequence):
            raise InvalidConfigError("SchedulerConfig: sequence must be a function of the tick")
        object.__setattr__(self, "lookahead", lookahead)
        object.__setattr__(self, "interval", interval)

    @property
    def lookahead_delta(self) -> timedelta:
        """``lookahead`` as a ``timedelta`` (it is normalised at construction)."""
        return as_timedelta(self.lookahead, "lookahead")

    @property
    def interval_delta(self) -> timedelta:
        """``interval`` as a ``timedelta`` (it is normalised at construction)."""
        return as_timedelta(self.interval, "interval")


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How the services retry transient database errors.

    Deadlocks, lock-wait timeouts, serialization failures and SQLite's
    "database is locked" are retried up to ``attempts`` times in all, with
    exponential backoff from ``base_delay`` capped at ``max_delay`` and full
    jitter, so racing processes do not retry in lockstep.
    """

    attempts: int = 8
    base_delay: float = 0.005
    max_delay: float = 0.5

    def __post_init__(self) -> None:
        if (
            not isinstance(self.attempts, int)
            or isinstance(self.attempts, bool)
            or self.attempts < 1
        ):
            raise InvalidConfigError(
                f"RetryPolicy: attempts must be an int >= 1, got {self.attempts!r}"
            )
        for name in ("base_delay", "max_delay"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise InvalidConfigError(
                    f"RetryPolicy: {name} must be a number >= 0, got {value!r}"
                )
