"""When a service call is tried again, and after how long.

Deadlocks, lock-wait timeouts, serialization failures, SQLite's "database is
locked" and lost connections are retried; anything else is raised at once.
:class:`Retry` is pure bookkeeping for one call; the attempts themselves
(``_run.attempts``) ask it after every database error.
"""

from __future__ import annotations

import logging
import random
import time

import sqlalchemy as sa

from .._sql.driver_errors import is_disconnect, is_lock_wait, is_missing_schema, is_transient
from ..config import RetryPolicy
from ..errors import SchemaNotReadyError

logger = logging.getLogger(__name__)


def schema_not_ready(table: str, exc: BaseException) -> SchemaNotReadyError:
    """The error a host sees when our table is missing or behind: it says how to fix it."""
    return SchemaNotReadyError(
        f"table {table!r} is missing or out of date ({first_line(exc)}): run the migrations "
        "(`worksync migrate`, or `alembic upgrade heads` in your app, or "
        "worksync_sa.upgrade(engine))"
    )


def first_line(exc: BaseException) -> str:
    """The driver's message, first line only: enough to log, never a statement dump."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip()
    return text.splitlines()[0] if text else type(orig).__name__


class Retry:
    """The retry rule both runners follow, for one service call.

    Pure bookkeeping: the attempts (``_run.attempts``), on a database error,
    ask :meth:`delay_after` how long to wait before the next one; the
    method raises instead when the error is not worth retrying.
    """

    def __init__(
        self, policy: RetryPolicy, table: str, sqlite: bool, what: str, wait_out_locks: bool = True
    ) -> None:
        self.policy = policy
        self.wait_out_locks = wait_out_locks
        self.table = table
        self.sqlite = sqlite
        self.what = what
        self.attempt = 1
        self.unknown_outcome = False
        """A connection was lost after a statement went out: resolve before retrying."""
        self._busy_until: float | None = None

    def delay_after(self, exc: sa.exc.DBAPIError, sent: bool) -> float:
        """Seconds to wait before the next attempt; re-raises what should not be retried.

        A missing table becomes :class:`SchemaNotReadyError`. SQLite's "database
        is locked" is retried in fine jittered steps for up to
        ``policy.busy_timeout`` seconds; deadlocks, lock-wait timeouts,
        serialization failures and lost connections, with full-jitter backoff,
        until ``policy.attempts`` attempts in all have failed.
        """
        if is_missing_schema(exc):
            raise schema_not_ready(self.table, exc) from exc
        attempt = self.attempt
        self.attempt += 1
        if self.sqlite and is_transient(exc):
            now = time.monotonic()
            self._busy_until = self._busy_until or now + self.policy.busy_timeout
            if now < self._busy_until:
                return random.uniform(0.00005, min(0.002, 0.0001 * attempt))
            raise exc
        lost = is_disconnect(exc)
        if not (lost or is_transient(exc)) or attempt >= self.policy.attempts:
            raise exc
        if not self.wait_out_locks and is_lock_wait(exc):
            raise exc
        self.unknown_outcome = self.unknown_outcome or (lost and sent)
        delay = backoff(self.policy, attempt)
        logger.debug(
            "%s: %s on attempt %d, retrying in %.3fs: %s",
            self.what,
            "lost connection" if lost else "transient error",
            attempt,
            delay,
            first_line(exc),
            extra={"action": "retry"},
        )
        return delay


def backoff(policy: RetryPolicy, attempt: int) -> float:
    """Full jitter: racing processes spread out instead of colliding again."""
    cap = min(policy.max_delay, policy.base_delay * (2 ** (attempt - 1)))
    return random.uniform(0, cap)
