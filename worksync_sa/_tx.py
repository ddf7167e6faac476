"""Running the services' statements: on held autocommit lanes, with bounded retries.

Only the services run their own statements, so only they may retry: a retried
repository call inside a host's transaction could repeat half of it. Every
service call is a single guarded statement (or a read plus one), so it runs
in autocommit on a lane (see ``_lanes``) and a retry repeats the whole call.

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

from ._calls import Call
from ._dialects import db_now, family_of, is_disconnect, is_missing_schema, is_transient
from ._lanes import Lanes
from ._writelock import WriteLock
from .config import RetryPolicy
from .errors import InvalidArgumentError, SchemaNotReadyError
from .models import as_utc

logger = logging.getLogger(__name__)

T = TypeVar("T")


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


def checked_engine(engine: object) -> Engine:
    """``engine`` if it is a SQLAlchemy Engine, else a clear error."""
    if not isinstance(engine, Engine):
        raise InvalidArgumentError(
            f"engine must be a sqlalchemy Engine (sqlalchemy.create_engine(url)), "
            f"not {type(engine).__name__}"
        )
    return engine


def writer_lock(url: sa.URL, suffix: str = "-worksync.lock") -> WriteLock | None:
    """The writers' lock of a SQLite database file; None for memory and URI databases."""
    database = str(url.database or "")
    if database in ("", ":memory:") or database.startswith("file:"):
        return None
    return WriteLock(database, suffix)


def read_clock(conn: Connection) -> datetime:
    """The database server's clock, as aware UTC."""
    return as_utc(conn.execute(sa.select(db_now(family_of(conn.dialect)))).scalar_one())


CLOCK: Call[datetime] = Call("clock", read_clock)


class Retry:
    """The retry rule both executors follow, for one service call.

    Pure bookkeeping: the executor runs an attempt, and on a database error
    asks :meth:`delay_after` how long to wait before the next one; the
    method raises instead when the error is not worth retrying.
    """

    def __init__(self, policy: RetryPolicy, table: str, sqlite: bool, what: str) -> None:
        self.policy = policy
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
        ``policy.busy_timeout`` seconds; deadlocks, lock-wait timeouts and lost
        connections up to ``policy.attempts`` times with full-jitter backoff.
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


class Transactions:
    """Runs a service's statements on its lanes, retrying transient failures."""

    def __init__(self, engine: Engine, table: str, policy: RetryPolicy) -> None:
        self.engine = checked_engine(engine)
        self.table = table
        self.policy = policy
        self.sqlite = engine.dialect.name == "sqlite"
        self.lanes = Lanes(self.engine)
        self._writer = writer_lock(engine.url) if self.sqlite else None
        self.lost_connections = 0
        """Connections lost or refused so far: after one, the server may be another one
        (a failover) that lacks this process's latest writes."""

    def close(self) -> None:
        """Give the held connections back; a later call opens new ones."""
        self.lanes.close()
        self.lanes = Lanes(self.engine)

    def run(
        self,
        what: str,
        work: Callable[[Connection], T],
        resolve: Callable[[Connection], T | None] | None = None,
        *,
        peek: Callable[[Connection], bool] | None = None,
        nothing: T | None = None,
    ) -> T:
        """Run ``work`` on a lane (autocommit: each statement commits on its own).

        On a SQLite file, ``work`` runs holding the writers' lock (see
        ``_writelock``). If another writer holds it and ``peek`` says there is
        nothing to do (a claim whose tick is already taken), the call returns
        ``nothing`` at once instead of queueing for a write it would not make.

        Transient errors and lost connections are retried up to
        ``policy.attempts`` times with jittered exponential backoff; SQLite's
        "database is locked" is retried in fine steps for up to
        ``policy.busy_timeout`` seconds. After a connection was lost
        mid-call, ``resolve`` (if given) runs first in the next attempt; a
        non-None result is taken as that call's outcome. A missing table
        raises :class:`SchemaNotReadyError`; anything else propagates unchanged.
        """
        retry = Retry(self.policy, self.table, self.sqlite, what)
        while True:
            conn: Connection | None = None
            sent = False
            try:
                conn = self.lanes.take()
                if retry.unknown_outcome and resolve is not None:
                    found = resolve(conn)
                    if found is not None:
                        self.lanes.give(conn)
                        return found
                sent = True
                result = self._attempt(conn, work, peek, nothing)
                if not self.lanes.own:  # an ordinary transaction on a shared connection
                    conn.commit()
            except sa.exc.DBAPIError as exc:
                self._release_failed(conn)
                self.lost_connections += is_disconnect(exc)
                time.sleep(retry.delay_after(exc, sent))
                continue
            except BaseException:
                self._release_failed(conn)
                raise
            self.lanes.give(conn)
            return result

    def call(self, call: Call[T]) -> T:
        """Execute one :class:`Call` (the blocking executor of ``_calls``)."""
        return self.run(
            call.what,
            call.work,
            call.resolve,
            peek=call.peek,
            nothing=call.nothing,
        )

    def _attempt(
        self,
        conn: Connection,
        work: Callable[[Connection], T],
        peek: Callable[[Connection], bool] | None,
        nothing: T | None,
    ) -> T:
        writer = self._writer
        if writer is None:
            return work(conn)
        # SQLite: one writer at a time, queued in the kernel.
        if not writer.try_acquire():
            if peek is not None and not peek(conn):
                return nothing  # type: ignore[return-value]
            writer.__enter__()
        try:
            return work(conn)
        finally:
            writer.release()

    def _release_failed(self, conn: Connection | None) -> None:
        """After an error: keep the lane if its connection is sound, else drop it."""
        if conn is None:
            return
        if conn.invalidated:
            self.lanes.discard(conn)
            return
        try:
            conn.rollback()  # clears SQLAlchemy's view of the (autocommit) transaction
        except Exception:
            self.lanes.discard(conn)
            return
        self.lanes.give(conn)
