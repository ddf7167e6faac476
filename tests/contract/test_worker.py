"""The worker loop, the same on both twins: ``Worker`` (threads) and ``AsyncWorker`` (tasks).

``db.Worker`` builds a :class:`Worker`, or on the asyncio twin an
:class:`AsyncWorker` behind the blocking interface (``tests.twins``), whose
handlers are the test's blocking functions awaited on threads. Rows are
scheduled by the blocking Scheduler, and outcomes are read back from the
table with plain SQL. Where the twins must differ (a thread cannot be
cancelled, a task can), the test says so and checks each side's documented way.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from worksync_sa import SchedulerConfig, Work, WorkStatus

from ..conftest import Db

UTC = timezone.utc


def schedule_due(db: Db, *works: Work) -> None:
    """Rows for ticks that came in the last few seconds (and the next minute)."""
    config = SchedulerConfig(lookahead="1m", interval="10s")
    db.Scheduler(db.engine, list(works), config, table=db.table).run_pass(
        db.db_now() - timedelta(seconds=3)
    )


def wait_for(condition: Callable[[], bool], seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_both_workers_show_their_settings(db: Db) -> None:
    work = Work("a", "@every 10s")

    def clock() -> datetime:
        return datetime(2026, 1, 1, tzinfo=UTC)

    worker = db.Worker(
        db.engine,
        [work, "b"],
        lambda claim: None,
        table=db.table,
        max_concurrency=3,
        poll="2s",
        max_backoff="7s",
        clock=clock,
    )
    try:
        assert worker.works == [work]
        assert worker.names == ["a", "b"]
        assert worker.max_concurrency == 3
        assert worker.poll == 2.0
        assert worker.max_backoff == 7.0
        assert worker.clock is clock
    finally:
        worker.close()


def test_a_claim_ending_wakes_the_loop_long_before_its_poll(db: Db) -> None:
    """With every runner busy the loop waits ``poll`` (30 s), unless a running claim ends."""
    schedule_due(db, Work("w", "* * * * * *"))  # a tick each second, three or four due

    def handler(claim: Any) -> None:
        time.sleep(0.3)

    worker = db.Worker(db.engine, ["w"], handler, table=db.table, max_concurrency=2, poll="30s")
    worker.start()
    try:
        wait_for(lambda: worker.handled >= 3, seconds=10)
    finally:
        worker.close()
    assert len(db.rows(status=WorkStatus.SUCCESS)) >= 3


def test_stop_with_a_timeout_returns_in_time_and_no_claim_follows(db: Db) -> None:
    """Both return within the timeout; then a thread finishes its claim, a task is cancelled."""
    schedule_due(db, Work("w", "* * * * * *"))
    started = threading.Event()

    def handler(claim: Any) -> None:
        started.set()
        time.sleep(1.5)

    worker = db.Worker(db.engine, ["w"], handler, table=db.table, poll="30s")
    worker.start()
    try:
        assert started.wait(10)
        begun = time.monotonic()
        worker.stop(timeout=0.2)
        assert time.monotonic() - begun < 1.0
        if db.twin == "blocking":  # the loop's thread ends after its claim
            wait_for(lambda: not worker.running, seconds=5)
            assert len(db.rows(status=WorkStatus.SUCCESS)) == 1
        else:  # the loop's task was cancelled, and the claim it ran with it
            assert not worker.running
            wait_for(lambda: len(db.rows(status=WorkStatus.FAILED)) == 1, seconds=5)
        assert len(db.rows(status=WorkStatus.RUNNING)) == 0
        time.sleep(0.3)
        finished = db.rows(status=WorkStatus.SUCCESS) + db.rows(status=WorkStatus.FAILED)
        assert len(finished) == 1  # no claim after the stop
    finally:
        worker.close()


def test_close_with_a_timeout_bounds_the_wait_for_running_claims(db: Db) -> None:
    schedule_due(db, Work("w", "* * * * * *"))
    started = threading.Semaphore(0)

    def handler(claim: Any) -> None:
        started.release()
        time.sleep(1.5)

    worker = db.Worker(db.engine, ["w"], handler, table=db.table, max_concurrency=2, poll="30s")
    worker.start()
    try:
        assert started.acquire(timeout=10)
        assert started.acquire(timeout=10)
    finally:
        begun = time.monotonic()
        worker.close(timeout=0.2)
        took = time.monotonic() - begun
    assert took < 1.2
    # A thread finishes its claim on its own; a task was cancelled, and its row says so.
    outcome = WorkStatus.SUCCESS if db.twin == "blocking" else WorkStatus.FAILED
    wait_for(lambda: len(db.rows(status=outcome)) == 2, seconds=5)
    assert len(db.rows(status=WorkStatus.RUNNING)) == 0
