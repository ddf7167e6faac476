"""AsyncWorker: the asyncio twin of Worker, with ``async def`` handlers, on every backend.

Rows are scheduled by the blocking Scheduler (the same table either way) and
every outcome is read back from the table with plain SQL.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest

from worksync_sa import (
    AsyncClaim,
    AsyncWorker,
    InvalidArgumentError,
    Scheduler,
    SchedulerConfig,
    Work,
    WorkStatus,
)
from worksync_sa.models import as_utc

from .conftest import Db
from .test_worker import schedule_due
from .twins import async_engine, async_url

if TYPE_CHECKING:  # SQLAlchemy's asyncio needs greenlet: async_url skips without it
    from sqlalchemy.ext.asyncio import AsyncEngine


def run(db: Db, body: Callable[[AsyncEngine], Awaitable[None]]) -> None:
    """Run ``body(engine)`` on a fresh event loop with an AsyncEngine on ``db``."""

    url = async_url(db.engine.url)  # skips, naming the extra, before the loop starts

    async def main() -> None:
        engine = async_engine(url)
        try:
            await body(engine)
        finally:
            await engine.dispose()

    asyncio.run(main())


async def wait_for(condition: Callable[[], bool], seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_each_work_runs_its_own_async_handler_and_outcomes_are_recorded(db: Db) -> None:
    schedule_due(db, Work("report", "* * * * * *"), Work("sync", "* * * * * *", max_run=2))
    seen: Counter[str] = Counter()

    async def report(claim: AsyncClaim) -> None:
        seen[claim.name] += 1

    async def sync(claim: AsyncClaim) -> None:
        seen[claim.name] += 1
        raise RuntimeError("shard down")

    async def body(engine: AsyncEngine) -> None:
        worker = AsyncWorker(
            engine, ["report", "sync"], {"report": report, "sync": sync}, table=db.table
        )
        ran = await worker.run_once()
        await worker.close()
        assert ran == sum(seen.values()) == worker.handled > 0

    run(db, body)
    assert set(seen) == {"report", "sync"}
    assert len(db.rows(name="report", status=WorkStatus.SUCCESS)) == seen["report"]
    failed = db.rows(name="sync", status=WorkStatus.FAILED)
    assert len(failed) == seen["sync"]
    assert {row.error for row in failed} == {"RuntimeError: shard down"}


def test_blocking_handlers_are_refused_naming_the_work(db: Db) -> None:
    def blocking(claim: AsyncClaim) -> None:
        pass

    async def fine(claim: AsyncClaim) -> None:
        pass

    async def body(engine: AsyncEngine) -> None:
        with pytest.raises(InvalidArgumentError, match=r"handler for 'b' is not an async function"):
            AsyncWorker(engine, ["a", "b"], {"a": fine, "b": blocking}, table=db.table)  # type: ignore[dict-item]
        with pytest.raises(InvalidArgumentError, match="max_concurrency"):
            AsyncWorker(engine, ["a"], fine, table=db.table, max_concurrency=0)
        with pytest.raises(InvalidArgumentError, match="no handler for 'b'"):
            AsyncWorker(engine, ["a", "b"], {"a": fine}, table=db.table)

    run(db, body)
    assert db.count() == 0


def test_an_async_worker_never_holds_more_claims_than_it_can_run(db: Db) -> None:
    schedule_due(db, Work("w", "* * * * * *", max_run=5))
    release = asyncio.Event()
    running: list[int] = []

    async def slow(claim: AsyncClaim) -> None:
        running.append(claim.id)
        await release.wait()

    async def body(engine: AsyncEngine) -> None:
        worker = AsyncWorker(engine, ["w"], slow, table=db.table, max_concurrency=2)
        assert await worker.run_once() == 2
        assert await worker.run_once() == 0  # both runners busy: nothing more is claimed
        await wait_for(lambda: len(running) == 2)
        assert len(db.rows(status=WorkStatus.RUNNING)) == 2
        release.set()
        await worker.close()  # waits for the running claims

    run(db, body)
    assert len(db.rows(status=WorkStatus.SUCCESS)) == 2
    assert not db.rows(status=WorkStatus.RUNNING)


def test_run_due_waits_for_free_runners_until_nothing_due_is_left(db: Db) -> None:
    schedule_due(db, Work("w", "* * * * * *", max_run=5))
    inside = 0
    most = 0

    async def handler(claim: AsyncClaim) -> None:
        nonlocal inside, most
        inside += 1
        most = max(most, inside)
        await asyncio.sleep(0.05)
        inside -= 1

    async def body(engine: AsyncEngine) -> None:
        worker = AsyncWorker(engine, ["w"], handler, table=db.table, max_concurrency=2)
        ran = await worker.run_due()
        await worker.close()
        assert ran == worker.handled >= 10  # two due ticks at least, five rows each

    run(db, body)
    assert most == 2
    assert not db.rows(status=WorkStatus.RUNNING)
    assert not db.rows(status=WorkStatus.FAILED)


def test_three_shards_run_at_once_each_knowing_its_slot(db: Db) -> None:
    schedule_due(db, Work("shards", "* * * * * *", max_run=3))
    at_once = 0
    inside = 0
    seen: dict[int, tuple[int | None, object, int]] = {}

    async def shard(claim: AsyncClaim) -> None:
        nonlocal at_once, inside
        inside += 1
        at_once = max(at_once, inside)
        seen[claim.id] = (claim.slot, claim.tick_at, claim.attempt)
        await asyncio.sleep(0.3)
        inside -= 1

    async def body(engine: AsyncEngine) -> None:
        async with AsyncWorker(
            engine, ["shards"], shard, table=db.table, max_concurrency=3
        ) as worker:
            await wait_for(lambda: len(seen) >= 3)
            assert worker.running
        assert not worker.running

    run(db, body)
    assert at_once == 3
    rows = {row.id: row for row in db.rows(name="shards")}
    for claim_id, (slot, tick_at, attempt) in seen.items():
        assert (slot, tick_at, attempt) == (
            rows[claim_id].slot,
            as_utc(rows[claim_id].tick_at),
            rows[claim_id].attempts,
        )
    first_tick = min(as_utc(r.tick_at) for r in rows.values() if r.id in seen)
    slots = [slot for slot, tick, _ in seen.values() if tick == first_tick]
    assert sorted(slot if slot is not None else -1 for slot in slots) == [0, 1, 2]


@pytest.mark.parametrize("exit_with", [SystemExit(3), GeneratorExit(), BaseException("odd")])
def test_a_handler_that_exits_fails_its_row_and_the_loop_goes_on(
    db: Db, exit_with: BaseException, caplog: pytest.LogCaptureFixture
) -> None:
    schedule_due(db, Work("w", "* * * * * *"))
    calls: list[str] = []

    async def handler(claim: AsyncClaim) -> None:
        calls.append(claim.sequence)
        raise exit_with

    async def body(engine: AsyncEngine) -> None:
        worker = AsyncWorker(engine, ["w"], handler, table=db.table, poll="100ms")
        with caplog.at_level(logging.ERROR, logger="worksync_sa"):
            worker.start()
            await wait_for(lambda: len(calls) >= 3)
            assert worker.running  # the task outlived every exit
            await worker.close()

    run(db, body)
    failed = db.rows(name="w", status=WorkStatus.FAILED)
    assert len(failed) >= 3
    assert all(row.error.startswith(type(exit_with).__name__) for row in failed)
    assert not db.rows(name="w", status=WorkStatus.RUNNING)
    assert any(getattr(r, "action", None) == "failed" for r in caplog.records)


def test_run_until_a_deadline_returns(db: Db) -> None:
    schedule_due(db, Work("w", "* * * * * *"))
    ran: list[str] = []

    async def handler(claim: AsyncClaim) -> None:
        ran.append(claim.sequence)

    async def body(engine: AsyncEngine) -> None:
        worker = AsyncWorker(engine, [Work("w", "* * * * * *")], handler, table=db.table)
        started = time.monotonic()
        await worker.run(until=time.time() + 2.5)
        assert 2.0 < time.monotonic() - started < 6
        await worker.close()

    run(db, body)
    assert len(ran) >= 2
    assert len(ran) == len(set(ran))  # one run per tick (max_run 1)


@pytest.mark.slow
@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_slow_job_beside_a_per_second_work(maria_db: Db, concurrency: int) -> None:
    """A 6 s job every 3 s beside a per-second work with a 2 s grace, for 12 s."""
    fast = Work("fast", "* * * * * *", grace=timedelta(seconds=2))
    slow = Work("slow", "*/3 * * * * *", grace=timedelta(seconds=2))
    config = SchedulerConfig(lookahead="5s", interval="1s")
    scheduler = Scheduler(maria_db.engine, [fast, slow], config, table=maria_db.table)
    scheduler.run_pass()
    scheduler.start()

    async def handler(claim: AsyncClaim) -> None:
        if claim.name == "slow":
            await asyncio.sleep(6)

    since = maria_db.db_now()

    async def body(engine: AsyncEngine) -> None:
        worker = AsyncWorker(
            engine,
            [fast, slow],
            handler,
            table=maria_db.table,
            max_concurrency=concurrency,
            poll=timedelta(milliseconds=200),
        )
        worker.start()
        await asyncio.sleep(12)
        await worker.stop()
        await worker.close()

    run(maria_db, body)
    until = since + timedelta(seconds=9)  # ticks whose grace ended while it ran
    scheduler.run_pass()  # closes as missed what nobody claimed within grace
    scheduler.close()
    window = [r for r in maria_db.rows(name="fast") if since <= as_utc(r.tick_at) <= until]
    missed = [r for r in window if r.closed_by == "missed"]
    print(
        f"\n  async max_concurrency {concurrency}: {len(window)} fast ticks, {len(missed)} missed"
    )
    if concurrency > 1:
        assert missed == []
    else:
        assert missed  # one at a time, the slow job holds the fast work up past its grace


def test_close_with_a_timeout_cancels_a_claim_still_running_and_records_it_failed(
    db: Db,
) -> None:
    schedule_due(db, Work("w", "* * * * * *"))
    started = asyncio.Event()

    async def endless(claim: AsyncClaim) -> None:
        started.set()
        await asyncio.sleep(3600)

    async def body(engine: AsyncEngine) -> None:
        worker = AsyncWorker(engine, ["w"], endless, table=db.table, max_concurrency=2)
        worker.start()
        await asyncio.wait_for(started.wait(), 15)
        begun = time.monotonic()
        await worker.close(timeout=0.5)
        assert time.monotonic() - begun < 5
        assert not worker.running

    run(db, body)
    assert not db.rows(status=WorkStatus.RUNNING)
    failed = db.rows(status=WorkStatus.FAILED)
    assert failed
    # Recorded before the task is cancelled, with the same text as Worker's
    assert {row.error for row in failed} == {
        "shut down: still running 0.5 s after the worker was asked to stop"
    }
