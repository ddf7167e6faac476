"""The asyncio executor: runs the services' calls on held autocommit ``AsyncConnection``s.

The twin of ``_tx`` (and of ``_lanes``) for an ``AsyncEngine``. Each
:class:`~worksync_sa._calls.Call` runs through ``AsyncConnection.run_sync``,
so the very same repository code and statements drive the async driver
(aiomysql or asyncmy, psycopg, aiosqlite), and the same :class:`Retry` rule
decides what is retried; only the waiting is ``await``-ed.

Lanes are kept per concurrently running call, opened through the host's
engine and detached from its pool, exactly as on the blocking side, so a
claim is one round trip. A call cancelled while its statement is in flight
drops its connection: its protocol state is unknown. (Its claim, if it
landed, is held by nobody and comes back through lease recovery.)
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import TYPE_CHECKING, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ._calls import Call
from ._dialects import is_disconnect
from ._direct import mark_lane
from ._lanes import SHARED_POOLS, prepare_lane
from ._tx import Retry, writer_lock
from .config import RetryPolicy
from .errors import InvalidArgumentError

if TYPE_CHECKING:  # at run time only once used: it needs greenlet, an optional extra
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

T = TypeVar("T")


def checked_async_engine(engine: object) -> AsyncEngine:
    """``engine`` if it is an AsyncEngine, else an error that says which engine to pass."""
    try:
        from sqlalchemy.ext.asyncio import AsyncEngine  # noqa: PLC0415
    except ImportError as exc:
        raise InvalidArgumentError(
            "the asyncio services need greenlet: pip install 'worksync_sa[asyncio]'"
        ) from exc
    if not isinstance(engine, AsyncEngine):
        hint = (
            "; for a blocking Engine use the twin without Async"
            if isinstance(engine, sa.Engine)
            else ""
        )
        raise InvalidArgumentError(
            "engine must be a sqlalchemy AsyncEngine "
            f"(sqlalchemy.ext.asyncio.create_async_engine(url)), not {type(engine).__name__}{hint}"
        )
    return engine


def _prepare(conn: Connection) -> None:
    """A lane, as on the blocking side (``_lanes.prepare_lane``).

    Marked as a lane, the connection also takes the hot statements' direct path
    (``_direct``): inside ``run_sync`` its cursor is SQLAlchemy's adapter over
    the async driver, so a claim skips the general execution machinery here too.
    """
    prepare_lane(conn)
    mark_lane(conn)


class AsyncLanes:
    """Idle autocommit connections, one per call running at the same time."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.own = not isinstance(engine.sync_engine.pool, SHARED_POOLS)
        """As ``Lanes.own``: False on a pool sharing one connection."""
        self._idle: list[AsyncConnection] = []
        self._closed = False

    async def take(self) -> AsyncConnection:
        if not self.own:
            return await self.engine.connect()
        if self._idle:
            return self._idle.pop()
        conn = await self.engine.connect()
        try:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.run_sync(_prepare)
        except BaseException:
            await _drop(conn)
            raise
        return conn

    async def give(self, conn: AsyncConnection) -> None:
        if self._closed or conn.invalidated or not self.own:
            await _drop(conn)
            return
        self._idle.append(conn)

    async def close(self) -> None:
        """Close every idle lane; lanes in use are closed when given back."""
        self._closed = True
        lanes, self._idle = self._idle, []
        for conn in lanes:
            await _drop(conn)

    @property
    def idle(self) -> int:
        """How many lanes are waiting for work."""
        return len(self._idle)


async def _invalidate(conn: AsyncConnection) -> None:
    with contextlib.suppress(Exception):
        await conn.invalidate()
    await _drop(conn)


async def _drop(conn: AsyncConnection) -> None:
    try:
        await conn.close()
    except Exception:  # a dead connection: make sure it is dropped, whatever state it is in
        with contextlib.suppress(Exception):
            await conn.invalidate()


class AsyncTransactions:
    """Runs a service's calls on its lanes, retrying transient failures (see ``_tx.Retry``)."""

    def __init__(self, engine: AsyncEngine, table: str, policy: RetryPolicy) -> None:
        self.engine = checked_async_engine(engine)
        self.table = table
        self.policy = policy
        self.sqlite = engine.dialect.name == "sqlite"
        self.lanes = AsyncLanes(engine)
        self._writer = writer_lock(engine.url) if self.sqlite else None
        self.lost_connections = 0
        """As ``Transactions.lost_connections``."""

    async def close(self) -> None:
        """Close the held connections; a later call opens new ones."""
        lanes, self.lanes = self.lanes, AsyncLanes(self.engine)
        await lanes.close()

    async def call(self, call: Call[T]) -> T:
        """Execute one call: the asyncio counterpart of ``Transactions.call``."""
        retry = Retry(self.policy, self.table, self.sqlite, call.what)
        lanes = self.lanes
        while True:
            conn: AsyncConnection | None = None
            sent = False
            try:
                conn = await lanes.take()
                if retry.unknown_outcome and call.resolve is not None:
                    found = await conn.run_sync(call.resolve)
                    if found is not None:
                        await lanes.give(conn)
                        return found
                sent = True
                result = await self._attempt(conn, call)
                if not lanes.own:  # an ordinary transaction on a shared connection
                    await conn.commit()
            except sa.exc.DBAPIError as exc:
                await self._release_failed(lanes, conn)
                self.lost_connections += is_disconnect(exc)
                conn = None
                await asyncio.sleep(retry.delay_after(exc, sent))
                continue
            except asyncio.CancelledError:
                if conn is not None:  # the statement may be half-way: never reuse it
                    with contextlib.suppress(Exception):
                        await conn.invalidate()
                raise
            except BaseException:
                await self._release_failed(lanes, conn)
                raise
            await lanes.give(conn)
            return result

    async def _attempt(self, conn: AsyncConnection, call: Call[T]) -> T:
        body = call.work
        writer = self._writer
        if writer is None:
            return await conn.run_sync(body)
        # SQLite: take the writers' lock without blocking the event loop. Waiting
        # is bounded; past it, SQLite's own lock still guards the write.
        held = writer.try_acquire()
        if not held:
            if call.peek is not None and not await conn.run_sync(call.peek):
                return call.nothing  # type: ignore[return-value]
            deadline = time.monotonic() + self.policy.busy_timeout
            while not (held := writer.try_acquire()) and time.monotonic() < deadline:
                await asyncio.sleep(random.uniform(0.0001, 0.001))
        try:
            return await conn.run_sync(body)
        finally:
            if held:
                writer.release()

    async def _release_failed(self, lanes: AsyncLanes, conn: AsyncConnection | None) -> None:
        """After an error: keep the lane if its connection is sound, else drop it."""
        if conn is None:
            return
        if conn.invalidated:
            await _invalidate(conn)
            return
        try:
            await conn.rollback()
        except Exception:
            await _invalidate(conn)  # broken: no reset on the way out, it would fail again
            return
        await lanes.give(conn)
