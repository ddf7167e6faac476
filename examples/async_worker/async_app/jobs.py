"""The app's cron jobs, and the visible trace each run leaves.

Two works, both every two seconds:

* ``heartbeat_report``, ``max_run=1``: one copy of the service runs each tick,
  the others skip it;
* ``refresh_shard``, ``max_run=2``: at most two runs per tick, whichever copies
  claim them (one copy may run both when the other is busy or down).

Running a work appends a row to the app's own ``job_runs`` table: which work,
which tick (the worksync sequence) and which worker. Comparing it with the
SUCCESS rows of worksync_sa's ``works`` table shows that nothing ran twice.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from worksync_sa import AsyncClaim, SchedulerConfig, Work

logger = logging.getLogger(__name__)

WORKS = [
    Work("heartbeat_report", "@every 2s", max_run=1),
    Work("refresh_shard", "@every 2s", max_run=2),
]

SCHEDULER_CONFIG = SchedulerConfig(
    lookahead=timedelta(seconds=10),  # write each tick's rows up to 10 s before it comes
    interval=timedelta(seconds=1),  # a scheduler pass every second (a real app: a minute)
)

metadata = sa.MetaData()
"""The app's own tables. worksync_sa's ``works`` table is not here: its migrations own it."""

job_runs = sa.Table(
    "job_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("work", sa.String(255), nullable=False),
    sa.Column("sequence", sa.String(255), nullable=False),
    sa.Column("worker", sa.String(255), nullable=False),
    sa.Column("ran_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)

WORK_SECONDS = 0.2
"""How long a run pretends to work, so that the copies' runs overlap."""


async def run_job(engine: AsyncEngine, claim: AsyncClaim, worker: str) -> None:
    """The job itself, run inside ``async with claim:``: raise to have the tick marked FAILED."""
    await asyncio.sleep(WORK_SECONDS)  # (really: call an API, refresh a cache, ...)
    async with engine.begin() as conn:  # the app's own transaction, not the claim's
        await conn.execute(
            job_runs.insert().values(work=claim.name, sequence=claim.sequence, worker=worker)
        )
    logger.info("ran %s for tick %s", claim.name, claim.sequence, extra={"action": "ran"})
