"""What only the asyncio twins have: tasks, cancellation, the background loop on an event loop.

Their shared behaviour is the contract suite's (the modules using ``twin_db``).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest

from worksync_sa import AsyncScheduler, AsyncWorkSync, SchedulerConfig, Work, WorkStatus

from .conftest import Db
from .twins import async_engine, async_url

if TYPE_CHECKING:  # SQLAlchemy's asyncio needs greenlet: async_url skips without it
    from sqlalchemy.ext.asyncio import AsyncEngine

WORK = Work("w", "* * * * * *", max_run=2, lease=timedelta(seconds=3))


def run(db: Db, body: object) -> None:
    """Run ``body(engine)`` on a fresh event loop with an AsyncEngine on ``db``."""

    url = async_url(db.engine.url)  # skips, naming the extra, before the loop starts

    async def main() -> None:
        engine = async_engine(url)
        try:
            await body(engine)  # type: ignore[operator]
        finally:
            await engine.dispose()

    asyncio.run(main())


async def schedule_now(db: Db, engine: AsyncEngine) -> None:
    config = SchedulerConfig(lookahead="30s", interval="10s")
    async with AsyncScheduler(engine, [WORK], config, table=db.table) as scheduler:
        await scheduler.run_pass(db.db_now() - timedelta(seconds=2))


def test_a_cancelled_body_records_failed_and_the_cancellation_goes_on(db: Db) -> None:
    async def body(engine: AsyncEngine) -> None:
        await schedule_now(db, engine)
        async with AsyncWorkSync(engine, table=db.table) as sync:
            claim = await sync.acquire_due("w")
            assert claim is not None
            started = asyncio.Event()

            async def job() -> None:
                async with claim:
                    started.set()
                    await asyncio.sleep(30)

            task = asyncio.create_task(job())
            await started.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert claim.finished
            (row,) = db.rows(id=claim.id)
            assert (row.status, row.closed_by) == (WorkStatus.FAILED, "worker")
            assert "cancelled" in row.error

    run(db, body)


def test_the_keep_alive_task_heartbeats_past_the_lease_and_stops_with_the_body(db: Db) -> None:
    async def body(engine: AsyncEngine) -> None:
        await schedule_now(db, engine)
        async with AsyncWorkSync(engine, table=db.table) as sync:
            claim = await sync.acquire_due("w")
            assert claim is not None
            before = len(asyncio.all_tasks())
            async with claim:
                assert len(asyncio.all_tasks()) == before + 1  # the heartbeat task
                first = db.rows(id=claim.id)[0].lease_until
                await asyncio.sleep(2.5)  # heartbeats every 1 s (a third of the 3 s lease)
                assert db.rows(id=claim.id)[0].lease_until > first
                assert await sync.recover() == 0
            assert len(asyncio.all_tasks()) == before
            assert db.rows(id=claim.id)[0].status == WorkStatus.SUCCESS

    run(db, body)


def test_the_background_loop_runs_passes_until_stopped(db: Db) -> None:
    async def body(engine: AsyncEngine) -> None:
        config = SchedulerConfig(lookahead="5s", interval="200ms")
        scheduler = AsyncScheduler(engine, [WORK], config, table=db.table)
        scheduler.start()
        with pytest.raises(RuntimeError, match="already running"):
            scheduler.start()
        await asyncio.sleep(1.2)
        assert scheduler.running
        await scheduler.close()
        assert not scheduler.running
        created = db.count()
        assert created >= 2 * 5  # every tick of the next 5 s, two slots each
        await asyncio.sleep(0.5)
        assert db.count() == created  # stopped: no pass after close()

    run(db, body)
