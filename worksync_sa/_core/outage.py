"""What the long-running loops (scheduler, worker, heartbeat) share: surviving failures.

A loop that loses its database must not die, must not flood the log, and
must not hammer the server when it comes back. :class:`Outage` logs once
when a run of failures starts and once when it ends, and hands out
exponentially growing, jittered, capped waits in between.

Nothing but a stop ends a loop: a handler or listener raising ``SystemExit``
or ``GeneratorExit`` is one more failure. Only the stop signals
(:func:`is_stop`) pass through, and a loop that ends other than by a
requested stop says so in the log (:func:`ended`) rather than vanishing.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

from .._run.retry import first_line


class Outage:
    """Failure bookkeeping for one loop."""

    def __init__(
        self, logger: logging.Logger, what: str, *, base: float = 0.5, cap: float = 30.0
    ) -> None:
        self.logger = logger
        self.what = what
        self.base = base
        self.cap = cap
        self.failures = 0
        self.since: float | None = None

    def failed(self, exc: BaseException) -> float:
        """Record a failure; returns how long to wait before trying again."""
        if self.failures == 0:
            self.since = time.monotonic()
            self.logger.warning(
                "%s failed, retrying with backoff until it works again: %s: %s",
                self.what,
                type(exc).__name__,
                first_line(exc),
                extra={"action": "outage"},
            )
        self.failures += 1
        ceiling = min(self.cap, self.base * 2 ** (self.failures - 1))
        return random.uniform(ceiling / 2, ceiling)

    def succeeded(self) -> None:
        """Record a success; logs the end of an outage once."""
        if self.failures:
            lasted = time.monotonic() - (self.since or time.monotonic())
            self.logger.warning(
                "%s works again after %d failures over %.1fs",
                self.what,
                self.failures,
                lasted,
                extra={"action": "resumed"},
            )
        self.failures = 0
        self.since = None


def is_stop(exc: BaseException) -> bool:
    """True for what ends a loop: Ctrl-C (``KeyboardInterrupt``) and asyncio cancellation."""
    return isinstance(exc, (KeyboardInterrupt, asyncio.CancelledError))


def ended(logger: logging.Logger, what: str, exc: BaseException) -> None:
    """Log that a loop ended other than by being asked to stop (``running`` is false from now)."""
    logger.error(
        "%s ended by %s: %s; nothing runs it any more",
        what,
        type(exc).__name__,
        first_line(exc),
        extra={"action": "ended"},
    )
