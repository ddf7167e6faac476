"""Short transactions with bounded retries, shared by the services.

Only the services own transactions, so only they may retry: a retried
repository call inside a host's transaction could repeat half of it. What is
retried is the whole transaction, from the start, on a fresh checkout.

Retried: deadlocks, lock-wait timeouts, serialization failures, SQLite's
"database is locked", and lost connections. A connection lost after a
statement went out leaves its outcome unknown; the caller's ``resolve``
function then looks for what that attempt wrote (a claim's token, say)
before trying again, so a retry never claims or finishes twice.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from ._dialects import db_now, family_of, is_disconnect, is_missing_schema, is_transient
from .config import RetryPolicy
from .errors import InvalidArgumentError, SchemaNotReadyError
from .models import as_utc

logger = logging.getLogger(__name__)

T = TypeVar("T")


def schema_not_ready(table: str, exc: BaseException) -> SchemaNotReadyError:
    """The error a host sees when our table is missing or behind: it says how to fix it."""
    return SchemaNotReadyError(
        f"table {table!r} is missing or out of date ({first_line(exc)}): run the migrations "
        "(`alembic upgrade head` with WORKSYNC_DATABASE_URL set, or "
        "worksync_sa.upgrade(engine))"
    )


def first_line(exc: BaseException) -> str:
    """The driver's message, first line only: enough to log, never a statement dump."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip()
    return text.splitlines()[0] if text else type(orig).__name__


def checked_engine(engine: object) -> Engine:
    """``engine`` if it is a SQLAlchemy Engine, else a clear error."""
    if not isinstance(engine, Engine):
        raise InvalidArgumentError(
            f"engine must be a sqlalchemy Engine (sqlalchemy.create_engine(url)), "
            f"not {type(engine).__name__}"
        )
    return engine


class Transactions:
    """Runs a unit of work in its own transaction, retrying transient failures."""

    def __init__(self, engine: Engine, table: str, policy: RetryPolicy) -> None:
        self.engine = checked_engine(engine)
        self.table = table
        self.policy = policy

    def run(
        self,
        what: str,
        work: Callable[[Connection], T],
        resolve: Callable[[Connection], T | None] | None = None,
    ) -> T:
        """Run ``work`` in one transaction; commit on return, roll back on error.

        Transient errors and lost connections are retried up to
        ``policy.attempts`` times with jittered exponential backoff. After a
        connection was lost mid-attempt, ``resolve`` (if given) runs first in
        the next attempt; a non-None result is taken as that attempt's outcome.
        A missing table raises :class:`SchemaNotReadyError`; anything else
        propagates unchanged.
        """
        attempt = 1
        unknown_outcome = False
        while True:
            sent = False
            try:
                with self.engine.begin() as conn:
                    if unknown_outcome and resolve is not None:
                        found = resolve(conn)
                        if found is not None:
                            return found
                    sent = True
                    return work(conn)
            except sa.exc.DBAPIError as exc:
                if is_missing_schema(exc):
                    raise schema_not_ready(self.table, exc) from exc
                lost = is_disconnect(exc)
                if not (lost or is_transient(exc)) or attempt >= self.policy.attempts:
                    raise
                unknown_outcome = unknown_outcome or (lost and sent)
                delay = self.backoff(attempt)
                logger.debug(
                    "%s: %s on attempt %d, retrying in %.3fs: %s",
                    what,
                    "lost connection" if lost else "transient error",
                    attempt,
                    delay,
                    first_line(exc),
                    extra={"action": "retry"},
                )
                time.sleep(delay)
                attempt += 1

    def database_now(self) -> datetime:
        """The database server's clock, read once (one round trip)."""

        def read(conn: Connection) -> datetime:
            return as_utc(conn.execute(sa.select(db_now(family_of(conn.dialect)))).scalar_one())

        return self.run("clock", read)

    def backoff(self, attempt: int) -> float:
        """Full jitter: racing processes spread out instead of colliding again."""
        cap = min(self.policy.max_delay, self.policy.base_delay * (2 ** (attempt - 1)))
        return random.uniform(0, cap)
