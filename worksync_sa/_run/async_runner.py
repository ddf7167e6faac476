"""The asyncio runner: runs the services' calls on held autocommit ``AsyncConnection``s.

The twin of ``_run.blocking`` (and of ``_run.lanes``) for an ``AsyncEngine``. Each
:class:`~worksync_sa._run.steps.Call` runs through ``AsyncConnection.run_sync``,
so the very same repository code and statements drive the async driver
(aiomysql or asyncmy, psycopg, aiosqlite), and the same attempts
(``_run.attempts``) decide everything; only the waiting is ``await``-ed.

Lanes are kept per concurrently running call, opened through the host's
engine and detached from its pool, exactly as on the blocking side, so a
claim costs no BEGIN or COMMIT; and as there, a forked child never uses or closes
its parent's lanes (its own event loop opens its own). A call cancelled
while its statement is in flight drops its connection: its protocol state
is unknown. (Its claim, if it landed, is held by nobody and comes back
through lease recovery.)
"""

from __future__ import annotations

import asyncio
import contextlib
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .._sql.direct import mark_lane
from ..config import RetryPolicy
from ..errors import InvalidArgumentError
from .attempts import (
    BUSY,
    Commit,
    Give,
    Invalidate,
    Locked,
    Release,
    Run,
    Step,
    Take,
    WaitLock,
)
from .lanes import SHARED_POOLS, inherit, prepare_lane
from .process import pid
from .runner import RunnerBase
from .steps import Call, Sleep, drive_async
from .writelock import WriteLock

if TYPE_CHECKING:  # at run time only once used: it needs greenlet, an optional extra
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

T = TypeVar("T")


def checked_async_engine(engine: object) -> AsyncEngine:
    """``engine`` if it is an AsyncEngine, else an error that says which engine to pass."""
    try:
        import greenlet  # type: ignore[import-untyped]  # noqa: F401, PLC0415 (SQLAlchemy 2.0 imports its asyncio without it)
        from sqlalchemy.ext.asyncio import AsyncEngine  # noqa: PLC0415
    except ImportError as exc:
        raise InvalidArgumentError(
            "the asyncio services need greenlet: pip install 'worksync_sa[asyncio]'"
        ) from exc
    if not isinstance(engine, AsyncEngine):
        hint = _blocking_hint(engine) if isinstance(engine, sa.Engine) else ""
        raise InvalidArgumentError(
            "engine must be a sqlalchemy AsyncEngine "
            f"(sqlalchemy.ext.asyncio.create_async_engine(url)), not {type(engine).__name__}{hint}"
        )
    return engine


_ASYNC_EXTRAS = {"mysql": "async-mysql", "mariadb": "async-mysql", "postgresql": "async-postgresql"}


def _blocking_hint(engine: sa.Engine) -> str:
    """The two ways out for a blocking Engine: its twin, or an async driver and its extra."""
    extra = _ASYNC_EXTRAS.get(engine.dialect.name, "async-sqlite")
    return (
        "; for a blocking Engine use the twin without Async, or install an async driver"
        f" (pip install 'worksync_sa[{extra}]') and pass create_async_engine(url)"
    )


def _prepare(conn: Connection) -> None:
    """A lane, as on the blocking side (``_run.lanes.prepare_lane``).

    Marked as a lane, the connection also takes the hot statements' direct path
    (``_sql.direct``): inside ``run_sync`` its cursor is SQLAlchemy's adapter over
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
        self._pid = pid()
        """As ``Lanes``: a forked child never uses or closes its parent's lanes."""

    async def take(self) -> AsyncConnection:
        if not self.own:
            return await self.engine.connect()
        if self._pid != pid():  # we are a forked child
            inherit(self._idle)
            self._pid = pid()
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
        if self._closed or conn.invalidated or not self.own or self._pid != pid():
            await _drop(conn)
            return
        self._idle.append(conn)

    async def release_failed(self, conn: AsyncConnection) -> None:
        """After an error: keep the lane if its connection is sound, else drop it."""
        if conn.invalidated:
            await _invalidate(conn)
            return
        try:
            await conn.rollback()
        except Exception:
            await _invalidate(conn)  # broken: no reset on the way out, it would fail again
            return
        await self.give(conn)

    async def close(self) -> None:
        """Close every idle lane; lanes in use are closed when given back."""
        self._closed = True
        if self._pid != pid():  # a forked child: the idle lanes are its parent's
            inherit(self._idle)
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


class AsyncRunner(RunnerBase):
    """The asyncio runner: does each step of a call's attempts (``_run.attempts``) by awaiting."""

    def __init__(self, engine: AsyncEngine, table: str, policy: RetryPolicy) -> None:
        self.engine = checked_async_engine(engine)
        super().__init__(engine.url, engine.dialect.name, table, policy)
        self.lanes = AsyncLanes(engine)

    async def close(self) -> None:
        """Close the held connections, and give back the writers' lock (as ``BlockingRunner``)."""
        lanes, self.lanes = self.lanes, AsyncLanes(self.engine)
        await lanes.close()
        if self.writer is not None:
            self.writer.release()

    async def call(self, call: Call[T]) -> T:
        """Run one call to its end: the asyncio counterpart of ``BlockingRunner.call``."""
        lanes = self.lanes
        steps = self.attempts(call, lanes=lanes.own)
        return await drive_async(steps, partial(self._do, lanes=lanes, writer=self.writer))

    @staticmethod
    async def _do(step: Step, lanes: AsyncLanes, writer: WriteLock | None) -> Any:
        """One step, by awaiting."""
        if isinstance(step, Run):
            return await step.conn.run_sync(step.fn)
        if isinstance(step, Take):
            return await lanes.take()
        if isinstance(step, Give):
            await lanes.give(step.conn)
        elif isinstance(step, Commit):
            await step.conn.commit()
        elif isinstance(step, Release):
            await lanes.release_failed(step.conn)
        elif isinstance(step, Invalidate):
            await _invalidate(step.conn)
        elif isinstance(step, Sleep):
            await asyncio.sleep(step.seconds)
        else:
            return await _with_lock(step, writer)
        return None


async def _with_lock(step: Step, writer: WriteLock | None) -> Any:
    """The writers' lock's steps, by awaiting."""
    if writer is None:
        raise AssertionError(f"{step!r} without a writers' lock")
    if isinstance(step, Locked):
        if not writer.try_acquire():
            return BUSY
        try:
            return await step.conn.run_sync(step.fn)
        finally:
            writer.release()
    if isinstance(step, WaitLock):
        await _queue_for(writer)
    else:
        writer.release()
    return None


async def _queue_for(writer: WriteLock) -> None:
    """Wait for the writers' lock in the kernel, on a thread, without blocking the loop.

    If the waiting task is cancelled, the thread still gets the lock in the
    end; it is released the moment it does, so no write waits for a task
    that is gone.
    """
    waiting = asyncio.get_running_loop().run_in_executor(None, writer.__enter__)
    try:
        await asyncio.shield(waiting)
    except asyncio.CancelledError:
        waiting.add_done_callback(lambda _: writer.release())
        raise
