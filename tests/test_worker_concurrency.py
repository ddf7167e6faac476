"""Worker for real services: a handler per work, and claims run on a pool of threads."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import timedelta

import pytest

from worksync_sa import (
    Claim,
    InvalidArgumentError,
    Scheduler,
    SchedulerConfig,
    Work,
    Worker,
    WorkStatus,
)
from worksync_sa.models import as_utc

from .conftest import Db
from .test_worker import schedule_due


def test_each_work_runs_its_own_handler(db: Db) -> None:
    schedule_due(db, Work("report", "* * * * * *"), Work("sync", "* * * * * *", max_run=2))
    seen: Counter[tuple[str, str]] = Counter()

    def report(claim: Claim) -> None:
        seen["report", claim.name] += 1

    def sync(claim: Claim) -> None:
        seen["sync", claim.name] += 1

    worker = Worker(db.engine, ["report", "sync"], {"report": report, "sync": sync}, table=db.table)
    ran = worker.run_once()
    worker.close()
    assert ran == sum(seen.values()) > 0
    assert set(seen) == {("report", "report"), ("sync", "sync")}
    assert len(db.rows(status=WorkStatus.SUCCESS)) == ran


@pytest.mark.parametrize(
    ("handler", "message"),
    [
        ({"report": print}, "no handler for 'sync'"),
        ({"report": print, "sync": print, "other": print}, "not a work: 'other'"),
        ({"report": print, "sync": "print"}, "handler for 'sync' is not a function"),
        ("print", "mapping of work names"),
    ],
)
def test_a_handler_mapping_must_fit_the_works(db: Db, handler: object, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        Worker(db.engine, ["report", "sync"], handler, table=db.table)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0, -1, 1025, 2.0, True])
def test_max_concurrency_is_checked(db: Db, bad: object) -> None:
    with pytest.raises(InvalidArgumentError, match="max_concurrency"):
        Worker(db.engine, ["w"], print, table=db.table, max_concurrency=bad)  # type: ignore[arg-type]


def test_a_worker_never_holds_more_claims_than_it_can_run(db: Db) -> None:
    schedule_due(db, Work("w", "* * * * * *", max_run=5))
    release = threading.Event()
    started = threading.Semaphore(0)

    def slow(claim: Claim) -> None:
        started.release()
        release.wait(30)

    worker = Worker(db.engine, ["w"], slow, table=db.table, max_concurrency=2)
    assert worker.run_once() == 2
    assert worker.run_once() == 0  # both threads busy: nothing more is claimed
    for _ in range(2):
        assert started.acquire(timeout=10)
    assert len(db.rows(status=WorkStatus.RUNNING)) == 2
    release.set()
    worker.close()
    assert len(db.rows(status=WorkStatus.SUCCESS)) == 2


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

    def handler(claim: Claim) -> None:
        if claim.name == "slow":
            time.sleep(6)

    worker = Worker(
        maria_db.engine,
        [fast, slow],
        handler,
        table=maria_db.table,
        max_concurrency=concurrency,
        poll=timedelta(milliseconds=200),
    )
    worker.start()
    since = maria_db.db_now()
    time.sleep(12)
    until = maria_db.db_now() - timedelta(seconds=3)  # ticks whose grace ended while it ran
    worker.stop()
    scheduler.run_pass()  # closes as missed what nobody claimed within grace
    worker.close()
    scheduler.close()
    window = [r for r in maria_db.rows(name="fast") if since <= as_utc(r.tick_at) <= until]
    missed = [r for r in window if r.closed_by == "missed"]
    print(f"\n  max_concurrency {concurrency}: {len(window)} fast ticks, {len(missed)} missed")
    if concurrency > 1:
        assert missed == []


def test_run_due_waits_for_free_threads_until_nothing_due_is_left(db: Db) -> None:
    schedule_due(db, Work("w", "* * * * * *", max_run=5))
    due = len(
        [r for r in db.rows(name="w") if as_utc(r.tick_at) <= db.db_now() - timedelta(seconds=1)]
    )
    at_once = Counter[str]()
    inside = threading.Semaphore(2)

    def handler(claim: Claim) -> None:
        assert inside.acquire(blocking=False), "more claims running than threads"
        time.sleep(0.05)
        at_once["runs"] += 1
        inside.release()

    worker = Worker(db.engine, ["w"], handler, table=db.table, max_concurrency=2)
    ran = worker.run_due()
    worker.close()
    assert ran == at_once["runs"] >= due >= 10  # two due ticks at least, five rows each
    assert len(db.rows(status=WorkStatus.SUCCESS)) == ran
    assert not db.rows(status=WorkStatus.RUNNING)
