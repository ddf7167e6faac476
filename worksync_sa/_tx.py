"""Short transactions with bounded retries, shared by the services.

Only the services own transactions, so only they may retry: a retried
repository call inside a host's transaction could repeat half of it. What is
retried is the whole transaction, from the start, on a fresh checkout.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from ._dialects import is_missing_schema, is_transient
from .config import RetryPolicy
from .errors import SchemaNotReadyError

logger = logging.getLogger(__name__)

T = TypeVar("T")


def schema_not_ready(table: str, exc: BaseException) -> SchemaNotReadyError:
    """The error a host sees when our table is missing or behind: it says how to fix it."""
    return SchemaNotReadyError(
        f"table {table!r} is missing or out of date ({_first_line(exc)}): run the migrations "
        "(`alembic upgrade head` with WORKSYNC_DATABASE_URL set, or "
        "worksync_sa.upgrade(engine))"
    )


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__


class Transactions:
    """Runs a unit of work in its own transaction, retrying transient failures."""

    def __init__(self, engine: Engine, table: str, policy: RetryPolicy) -> None:
        if not isinstance(engine, Engine):
            raise TypeError(f"expected a sqlalchemy Engine, got {type(engine).__name__}")
        self.engine = engine
        self.table = table
        self.policy = policy

    def run(self, what: str, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in one transaction; commit on return, roll back on error.

        Deadlocks, lock-wait timeouts, serialization failures and SQLite's
        "database is locked" are retried up to ``policy.attempts`` times with
        jittered exponential backoff. A missing table raises
        :class:`SchemaNotReadyError`; anything else propagates unchanged.
        """
        attempt = 1
        while True:
            try:
                with self.engine.begin() as conn:
                    return work(conn)
            except sa.exc.DBAPIError as exc:
                if is_missing_schema(exc):
                    raise schema_not_ready(self.table, exc) from exc
                if not is_transient(exc) or attempt >= self.policy.attempts:
                    raise
                delay = self.backoff(attempt)
                logger.debug(
                    "%s: transient error on attempt %d, retrying in %.3fs: %s",
                    what,
                    attempt,
                    delay,
                    _first_line(exc),
                    extra={"action": "retry"},
                )
                time.sleep(delay)
                attempt += 1

    def backoff(self, attempt: int) -> float:
        """Full jitter: racing processes spread out instead of colliding again."""
        cap = min(self.policy.max_delay, self.policy.base_delay * (2 ** (attempt - 1)))
        return random.uniform(0, cap)
