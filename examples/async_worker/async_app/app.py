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
* an ``AsyncWorker`` task, which at every tick of each work claims what is
  due and runs that work's ``async def`` job inside ``async with claim:``. At
  most ``max_run`` claims per tick succeed across all copies; the others get
  nothing. With ``max_concurrency`` 2, a long job of one work never holds up
  the other's ticks.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TypedDict

from worksync_sa import AsyncClaim, AsyncScheduler, AsyncWorker

from async_app.db import make_engine
from async_app.jobs import SCHEDULER_CONFIG, WORKS, run_job

logger = logging.getLogger(__name__)

STOP_SECONDS = 10.0
"""On shutdown, how long the jobs in progress may take to finish before they are cancelled."""


class AppState(TypedDict):
    """What the lifespan yields; an ASGI server hands it to each request as ``request.state``."""

    scheduler: AsyncScheduler
    worker: AsyncWorker
    ran: list[tuple[str, str]]
    """(work, sequence) of every job this copy ran to its end."""


@contextlib.asynccontextmanager
async def lifespan(app: object) -> AsyncIterator[AppState]:
    """Start the scheduler and the worker with the service; stop them, in order, with it.

    ``FastAPI(lifespan=lifespan)`` takes exactly this function.
    """
    engine = make_engine()
    scheduler = AsyncScheduler(engine, WORKS, SCHEDULER_CONFIG)
    ran: list[tuple[str, str]] = []

    async def job(claim: AsyncClaim) -> None:
        # Heartbeats run while it does; SUCCESS when it returns, FAILED if it raises.
        await run_job(engine, claim, worker.sync.worker_id)
        ran.append((claim.name, claim.sequence))

    # One job for every work here; a mapping {name: job} gives each its own.
    worker = AsyncWorker(engine, WORKS, job, max_concurrency=len(WORKS))
    try:
        # One pass before serving: with the tables missing this raises
        # SchemaNotReadyError and the service fails to start, instead of a
        # background loop retrying in silence.
        await scheduler.run_pass()
        async with scheduler:  # the scheduler's task starts here
            worker.start()
            try:
                yield AppState(scheduler=scheduler, worker=worker, ran=ran)
            finally:
                # First, so that no claim is in flight when the rest closes: no new
                # claims, the jobs in progress finish (cancelled after STOP_SECONDS).
                await worker.close(timeout=STOP_SECONDS)
        # Leaving the async with: the scheduler's task stops after its current pass.
    finally:
        await worker.close()  # (a no-op when closed above; needed if run_pass() failed)
        await scheduler.close()
        await engine.dispose()
