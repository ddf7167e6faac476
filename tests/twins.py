"""The contract suite runs against both twins: the blocking services and the asyncio ones.

A test asks ``db.WorkSync(db.engine, ...)`` / ``db.Scheduler(db.engine, ...)``
with the blocking signatures. On the "asyncio" twin these build an
``AsyncEngine`` on the same database (aiomysql, psycopg's async mode,
aiosqlite) and wrap ``AsyncWorkSync`` / ``AsyncScheduler`` in adapters that
run each call on one event loop in a background thread. The adapters only
forward calls: every behaviour under test is the asyncio twin's own.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterable, Mapping
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa

from worksync_sa import (
    AsyncClaim,
    AsyncScheduler,
    AsyncWorker,
    AsyncWorkSync,
    Claim,
    ClaimedRow,
    Work,
)

from .extras import need

if TYPE_CHECKING:  # SQLAlchemy's asyncio needs greenlet: imported once a test has it
    from sqlalchemy.ext.asyncio import AsyncEngine

T = TypeVar("T")

ASYNC_DRIVERS = {"mysql": "aiomysql", "mariadb": "aiomysql", "postgresql": "psycopg"}
ASYNC_EXTRAS = {"mysql": "async-mysql", "mariadb": "async-mysql", "postgresql": "async-postgresql"}


def async_url(url: sa.URL | str) -> sa.URL:
    """The same database through its asyncio driver; a skip naming the extra without it."""
    url = sa.make_url(url)
    backend = url.get_backend_name()
    driver = "aiosqlite" if backend == "sqlite" else ASYNC_DRIVERS[backend]
    extra = "async-sqlite" if backend == "sqlite" else ASYNC_EXTRAS[backend]
    need("greenlet", extra)
    need(driver, extra)
    return url.set(drivername=f"{backend}+{driver}")


def async_engine(url: sa.URL | str, **options: Any) -> AsyncEngine:
    """An AsyncEngine on the same database through its asyncio driver (see ``async_url``)."""
    url = async_url(url)
    from sqlalchemy.ext.asyncio import create_async_engine

    return create_async_engine(url, **options)


class Loop:
    """An event loop running in a daemon thread; ``run`` blocks until a coroutine is done."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


class BlockingClaim:
    """An :class:`AsyncClaim` behind the blocking Claim's interface."""

    def __init__(self, loop: Loop, claim: AsyncClaim) -> None:
        self._loop = loop
        self.inner = claim

    def __getattr__(self, name: str) -> Any:  # id, name, sequence, token, finished, lost
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return repr(self.inner)

    def heartbeat(self) -> None:
        self._loop.run(self.inner.heartbeat())

    def load_details(self) -> None:
        self._loop.run(self.inner.load_details())

    def success(self) -> None:
        self._loop.run(self.inner.success())

    def fail(self, error: str | BaseException | None = None) -> None:
        self._loop.run(self.inner.fail(error))

    def __enter__(self) -> BlockingClaim:
        self._loop.run(self.inner.__aenter__())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._loop.run(self.inner.__aexit__(exc_type, exc, tb))


def second_claim_object(claim: Any) -> Any:
    """Another claim object for the same row, as another process holding its token would have."""
    if isinstance(claim, BlockingClaim):
        inner = claim.inner
        return BlockingClaim(claim._loop, AsyncClaim(inner._sync, inner._row))
    return Claim(claim._sync, claim._row)


class BlockingWorkSync:
    """An :class:`AsyncWorkSync` behind the blocking WorkSync's interface."""

    def __init__(self, loop: Loop, sync: AsyncWorkSync) -> None:
        self._loop = loop
        self.inner = sync

    def __getattr__(self, name: str) -> Any:  # worker_id, table
        return getattr(self.inner, name)

    @property
    def keep_alive(self) -> bool:
        return self.inner.keep_alive

    @keep_alive.setter
    def keep_alive(self, value: bool) -> None:
        self.inner.keep_alive = value

    def __repr__(self) -> str:
        return repr(self.inner)

    def _claim(self, claim: AsyncClaim | None) -> BlockingClaim | None:
        return None if claim is None else BlockingClaim(self._loop, claim)

    def acquire(self, name: str, sequence: str) -> BlockingClaim | None:
        return self._claim(self._loop.run(self.inner.acquire(name, sequence)))

    def acquire_due(
        self, name: str, *, now: datetime | None = None, grace: timedelta | str | None = None
    ) -> BlockingClaim | None:
        return self._claim(self._loop.run(self.inner.acquire_due(name, now=now, grace=grace)))

    def claim_from_row(self, row: ClaimedRow) -> BlockingClaim:
        # Not awaited: its check that the claim is committed runs in the claim's first call.
        return BlockingClaim(self._loop, self.inner.claim_from_row(row))

    def recover(self, *, now: datetime | None = None) -> int:
        return self._loop.run(self.inner.recover(now=now))

    def prune(self, older_than: timedelta, batch_size: int = 1000) -> int:
        return self._loop.run(self.inner.prune(older_than, batch_size))

    def close(self) -> None:
        self._loop.run(self.inner.close())

    def __enter__(self) -> BlockingWorkSync:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BlockingScheduler:
    """An :class:`AsyncScheduler` behind the blocking Scheduler's interface."""

    def __init__(self, loop: Loop, scheduler: AsyncScheduler) -> None:
        self._loop = loop
        self.inner = scheduler

    def __getattr__(self, name: str) -> Any:  # works, config, last_pass, plan, running
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return repr(self.inner)

    def run_pass(self, now: datetime | None = None) -> int:
        return self._loop.run(self.inner.run_pass(now))

    def start(self) -> None:
        async def start() -> None:
            self.inner.start()

        self._loop.run(start())

    def stop(self, timeout: float | None = None) -> None:
        self._loop.run(self.inner.stop(timeout))

    def close(self) -> None:
        self._loop.run(self.inner.close())

    def __enter__(self) -> BlockingScheduler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BlockingWorker:
    """An :class:`AsyncWorker` behind the blocking Worker's interface.

    Its handlers are the test's blocking functions, each awaited on a thread
    (``asyncio.to_thread``) with a :class:`BlockingClaim`: a handler that
    sleeps stalls no other task, and the claim's own calls run on the loop.
    """

    def __init__(self, loop: Loop, worker: AsyncWorker) -> None:
        self._loop = loop
        self.inner = worker

    def __getattr__(self, name: str) -> Any:  # names, works, poll, handled, running, sync...
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return repr(self.inner)

    def run_once(self) -> int:
        return self._loop.run(self.inner.run_once())

    def run_due(self) -> int:
        return self._loop.run(self.inner.run_due())

    def run(self, *, until: float | None = None) -> None:
        self._loop.run(self.inner.run(until=until))

    def start(self) -> None:
        async def start() -> None:
            self.inner.start()

        self._loop.run(start())

    def stop(self, timeout: float | None = None) -> None:
        self._loop.run(self.inner.stop(timeout))

    def close(self, timeout: float | None = None) -> None:
        self._loop.run(self.inner.close(timeout))

    def _wait(self, seconds: float, *, wake: bool) -> bool:
        """The loop's wait itself, for the tests of the wake signal."""

        async def wait() -> bool:
            return await self.inner._wait(seconds, wake=wake)

        return self._loop.run(wait())

    def wake(self) -> None:
        """Set the wake signal, as a claim ending does (asyncio.Event: on the loop's thread)."""
        self._loop.loop.call_soon_threadsafe(self.inner._wake.set)

    def __enter__(self) -> BlockingWorker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncTwin:
    """Factories with the blocking signatures that build the asyncio twins."""

    def __init__(self) -> None:
        self.loop = Loop()
        self._engines: dict[str, AsyncEngine] = {}
        self._made: list[BlockingWorkSync | BlockingScheduler | BlockingWorker] = []

    def engine_for(self, engine: sa.Engine) -> AsyncEngine:
        key = engine.url.render_as_string(hide_password=False)
        found = self._engines.get(key)
        if found is None:
            url = async_url(engine.url)  # outside the loop's thread: a skip ends the test

            async def make() -> AsyncEngine:
                return async_engine(url)

            found = self._engines[key] = self.loop.run(make())
        return found

    def WorkSync(self, engine: sa.Engine, **options: Any) -> BlockingWorkSync:
        made = BlockingWorkSync(self.loop, AsyncWorkSync(self.engine_for(engine), **options))
        self._made.append(made)
        return made

    def Scheduler(
        self, engine: sa.Engine, works: Iterable[Work], *args: Any, **options: Any
    ) -> BlockingScheduler:
        made = BlockingScheduler(
            self.loop, AsyncScheduler(self.engine_for(engine), works, *args, **options)
        )
        self._made.append(made)
        return made

    def Worker(
        self,
        engine: sa.Engine,
        works: Iterable[Work | str],
        handler: Callable[[Any], object] | Mapping[str, Callable[[Any], object]],
        **options: Any,
    ) -> BlockingWorker:
        handlers: Any = (
            {name: self._awaited(h) for name, h in handler.items()}
            if isinstance(handler, Mapping)
            else self._awaited(handler)
        )
        made = BlockingWorker(
            self.loop, AsyncWorker(self.engine_for(engine), works, handlers, **options)
        )
        self._made.append(made)
        return made

    def _awaited(self, handler: Callable[[Any], object]) -> Callable[[AsyncClaim], Any]:
        loop = self.loop

        async def awaited(claim: AsyncClaim) -> object:
            return await asyncio.to_thread(handler, BlockingClaim(loop, claim))

        return awaited

    def traced(self, engine: sa.Engine) -> sa.Engine:
        """The engine whose events see the twin's statements."""
        return self.engine_for(engine).sync_engine

    def close(self) -> None:
        for made in self._made:
            made.close()
        for engine in self._engines.values():
            self.loop.run(engine.dispose())
        self.loop.close()
