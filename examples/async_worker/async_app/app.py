"""The service's lifespan: a scheduler and a background worker on the app's one AsyncEngine.

``lifespan(app)`` is a standard ``@contextlib.asynccontextmanager``, the shape
ASGI frameworks take for startup and shutdown. With FastAPI::

    from fastapi import FastAPI
    from async_app.app import lifespan

    app = FastAPI(lifespan=lifespan)  # exactly this function, nothing to adapt

and a route reads what it yields as ``request.state.worker``. This example
does not need FastAPI: ``python -m async_app`` runs the same lifespan the way a
server would, for a while.

Inside, every copy of the service runs:

* an ``AsyncScheduler`` task, which writes each tick's rows ahead of time
  (all copies write the same rows; the table keeps one set);
* a worker task, which at every tick of each work asks ``acquire_due`` and
  runs the job inside ``async with claim:`` when it gets one. At most
  ``max_run`` claims per tick succeed across all copies; the others get None.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timezone
from typing import TypedDict

from sqlalchemy.ext.asyncio import AsyncEngine
from worksync_sa import AsyncClaim, AsyncScheduler, AsyncWorkSync, ClaimLostError, Work

from async_app.db import make_engine
from async_app.jobs import SCHEDULER_CONFIG, WORKS, run_job

logger = logging.getLogger(__name__)

POLL_SECONDS = 1.0
"""The longest the worker sleeps between looks, whatever the next tick."""
AFTER_TICK_SECONDS = 0.05
"""Look this long after a tick, so that the database clock has passed it too."""
MAX_BACKOFF_SECONDS = 30.0
"""The longest wait between tries while the database is away."""
STOP_SECONDS = 10.0
"""On shutdown, how long the jobs in progress may take to finish before they are cancelled."""


class BackgroundWorker:
    """Claims the due ticks of ``works`` and runs their jobs, in a task of the running loop."""

    def __init__(self, engine: AsyncEngine, sync: AsyncWorkSync, works: Sequence[Work]) -> None:
        self.engine = engine
        self.sync = sync
        self.works = list(works)
        self.ran: list[tuple[str, str]] = []
        """(work, sequence) of every job this worker ran and recorded as SUCCESS."""
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the loop in a task of the running event loop."""
        self._stopping.clear()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="async-app-worker")

    async def stop(self, timeout: float = STOP_SECONDS) -> None:
        """Let the jobs in progress finish, then end the loop; cancel it after ``timeout`` s.

        Stopping between jobs rather than cancelling at once matters: a claim
        cancelled while its UPDATE is in flight may have landed, and then
        nobody holds it until its lease runs out (5 minutes by default).
        """
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        _, pending = await asyncio.wait({task}, timeout=timeout)
        if pending:
            logger.warning("jobs still running after %.0f s: cancelling them", timeout)
            task.cancel()
            await asyncio.wait({task})  # (asyncio.wait never raises the task's own error)
        if not task.cancelled():
            task.result()  # re-raise whatever crashed the loop, if anything did

    async def _run(self) -> None:
        # One loop per work, so that a long job never holds up another work's ticks.
        # They share the one AsyncWorkSync: it opens a connection per concurrent call.
        await asyncio.gather(*(self._serve(work) for work in self.works))

    async def _serve(self, work: Work) -> None:
        backoff = 0.0
        while not self._stopping.is_set():
            try:
                await self._run_due(work)
            except Exception as exc:  # the database is away: wait, then try again
                backoff = min(max(1.0, 2 * backoff), MAX_BACKOFF_SECONDS)
                logger.warning("worker (%s): %s; again in %.0f s", work.name, exc, backoff)
                await self._pause(backoff)
                continue
            backoff = 0.0
            await self._pause(self._until_next_look(work))

    async def _run_due(self, work: Work) -> None:
        """Claim and run every due tick of ``work``, until none is left for this copy."""
        while not self._stopping.is_set():
            # Due by the database clock and still within the work's grace; None
            # when nothing is due or max_run other claims already have the tick.
            claim = await self.sync.acquire_due(work.name)
            if claim is None:
                return
            await self._handle(claim)

    async def _handle(self, claim: AsyncClaim) -> None:
        try:
            # Heartbeats in a background task while the job runs; SUCCESS when the
            # block returns, FAILED with the error's text when it raises (re-raised).
            async with claim:
                await run_job(self.engine, claim, self.sync.worker_id)
        except ClaimLostError:
            logger.warning("%r was taken back before it finished", claim)
        except Exception:
            logger.exception("%s for tick %s failed", claim.name, claim.sequence)
        else:
            self.ran.append((claim.name, claim.sequence))

    @staticmethod
    def _until_next_look(work: Work) -> float:
        """Seconds until just after the work's next tick by this process's clock, at most a poll.

        This clock only decides when to look; whether a tick is due is the
        database's call, so a copy whose clock is off still claims the right ticks.
        """
        now = datetime.now(timezone.utc)
        until_tick = (work.next_tick(now) - now).total_seconds()
        return min(POLL_SECONDS, until_tick + AFTER_TICK_SECONDS)

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if :meth:`stop` is called meanwhile."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)


class AppState(TypedDict):
    """What the lifespan yields; an ASGI server hands it to each request as ``request.state``."""

    scheduler: AsyncScheduler
    worker: BackgroundWorker


@contextlib.asynccontextmanager
async def lifespan(app: object) -> AsyncIterator[AppState]:
    """Start the scheduler and the worker with the service; stop them, in order, with it.

    ``FastAPI(lifespan=lifespan)`` takes exactly this function.
    """
    engine = make_engine()
    scheduler = AsyncScheduler(engine, WORKS, SCHEDULER_CONFIG)
    try:
        # One pass before serving: with the tables missing this raises
        # SchemaNotReadyError and the service fails to start, instead of a
        # background loop retrying in silence.
        await scheduler.tick()
        async with scheduler, AsyncWorkSync(engine) as sync:  # the scheduler's task starts here
            worker = BackgroundWorker(engine, sync, WORKS)
            worker.start()
            try:
                yield AppState(scheduler=scheduler, worker=worker)
            finally:
                await worker.stop()  # first: no claim may be in flight when the rest closes
        # Leaving the async with: the scheduler's task stops after its current
        # pass, and the connections the scheduler and AsyncWorkSync hold close.
    finally:
        await scheduler.close()  # (a no-op when the async with ran; needed if tick() failed)
        await engine.dispose()
