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

import pytest

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


def test_a_claim_ending_during_a_backoff_makes_the_next_look_immediate(db: Db) -> None:
    """Only a wait that wakes on a claim ending consumes the wake signal, on both twins."""
    worker = db.Worker(db.engine, ["w"], lambda claim: None, table=db.table)
    try:
        if db.twin == "blocking":
            worker._wake.set()  # what a claim ending does
        else:
            worker.wake()  # type: ignore[attr-defined]
        begun = time.monotonic()
        assert not worker._wait(0.2, wake=False)  # a backoff runs its full length...
        assert time.monotonic() - begun >= 0.15
        begun = time.monotonic()
        assert not worker._wait(10, wake=True)  # ...and the next look is at once
        assert time.monotonic() - begun < 1
        begun = time.monotonic()
        assert not worker._wait(0.2, wake=True)  # the signal was used up
        assert time.monotonic() - begun >= 0.15
    finally:
        worker.close()


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
    # Both twins record the claims still running FAILED: a task is cancelled, a thread left
    # to end on its own, and what its handler finishes later is fenced off.
    wait_for(lambda: len(db.rows(status=WorkStatus.FAILED)) == 2, seconds=5)
    claimed = [row for row in db.rows() if row.started_at is not None]
    assert len(claimed) == 2
    assert all(row.error.endswith("0.2 s after the worker was asked to stop") for row in claimed)
    assert worker.cut_off == 2
    time.sleep(1.5)  # the threads' handlers return: their SUCCESS is refused
    assert {row.status for row in db.rows() if row.started_at is not None} == {WorkStatus.FAILED}


def test_run_once_runs_each_works_handler_and_records_each_outcome(db: Db) -> None:
    schedule_due(db, Work("good", "* * * * * *", max_run=2), Work("bad", "* * * * * *"))
    seen: list[tuple[str, str]] = []
    lock = threading.Lock()

    def good(claim: Any) -> None:
        with lock:
            seen.append((claim.name, claim.sequence))

    def bad(claim: Any) -> None:
        good(claim)
        raise RuntimeError("it broke")

    worker = db.Worker(db.engine, ["good", "bad"], {"good": good, "bad": bad}, table=db.table)
    try:
        ran = worker.run_once()
    finally:
        worker.close()
    assert ran == len(seen) == worker.handled > 0
    succeeded = db.rows(status=WorkStatus.SUCCESS)
    failed = db.rows(status=WorkStatus.FAILED)
    assert len(succeeded) + len(failed) == ran
    assert {row.name for row in succeeded} == {"good"}
    assert {row.name for row in failed} == {"bad"}
    assert all(row.error == "RuntimeError: it broke" for row in failed)
    assert not db.rows(status=WorkStatus.RUNNING)


def test_a_handler_may_finish_its_claim_itself(db: Db) -> None:
    schedule_due(db, Work("w", "* * * * * *"))

    def handler(claim: Any) -> None:
        claim.fail("not today")

    worker = db.Worker(db.engine, ["w"], handler, table=db.table)
    try:
        ran = worker.run_once()
    finally:
        worker.close()
    failed = db.rows(status=WorkStatus.FAILED)
    assert len(failed) == ran > 0
    assert all(row.error == "not today" for row in failed)  # exit recorded nothing more


def test_run_due_with_threads_or_tasks_runs_everything_due_and_waits_for_it(db: Db) -> None:
    schedule_due(db, Work("w", "* * * * * *", max_run=3))
    running = 0
    most = 0
    lock = threading.Lock()

    def handler(claim: Any) -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05)
        with lock:
            running -= 1

    worker = db.Worker(db.engine, ["w"], handler, table=db.table, max_concurrency=2)
    try:
        ran = worker.run_due()
        due_left = [row for row in db.rows(status=WorkStatus.QUEUED) if row.tick_at <= db.db_now()]
    finally:
        worker.close()
    assert ran == len(db.rows(status=WorkStatus.SUCCESS)) >= 9  # three ticks or more, 3 rows each
    assert not db.rows(status=WorkStatus.RUNNING)  # every claim it started has ended
    assert most == 2  # never more than max_concurrency at once, and both used
    assert len(due_left) <= 3  # at most the tick that came while it ran


def test_the_loop_runs_until_its_deadline(db: Db) -> None:
    schedule_due(db, Work("w", "* * * * * *"))
    worker = db.Worker(db.engine, ["w"], lambda claim: None, table=db.table, poll="100ms")
    try:
        begun = time.monotonic()
        worker.run(until=time.time() + 1.0)
        took = time.monotonic() - begun
    finally:
        worker.close()
    assert 0.9 <= took < 3.0
    assert worker.handled == len(db.rows(status=WorkStatus.SUCCESS)) >= 3


def test_as_a_context_manager_it_starts_and_closes(db: Db) -> None:
    schedule_due(db, Work("w", "* * * * * *"))
    with db.Worker(db.engine, ["w"], lambda claim: None, table=db.table, poll="100ms") as worker:
        assert worker.running
        wait_for(lambda: worker.handled >= 3)
    assert not worker.running
    assert worker.handled == len(db.rows(status=WorkStatus.SUCCESS))
    assert not db.rows(status=WorkStatus.RUNNING)


def test_a_second_start_is_refused_and_a_stopped_worker_starts_again(db: Db) -> None:
    """One loop per worker: both twins refuse to start it twice, and restart it after a stop."""
    schedule_due(db, Work("w", "* * * * * *"))
    worker = db.Worker(db.engine, ["w"], lambda claim: None, table=db.table, poll="100ms")
    try:
        worker.start()
        assert worker.running
        with pytest.raises(RuntimeError, match="worker is already running"):
            worker.start()
        worker.stop()
        assert not worker.running
        handled = worker.handled
        worker.start()  # the stop request of before does not end the new loop at once
        wait_for(lambda: worker.handled > handled)
        assert worker.running
    finally:
        worker.close()
    assert not worker.running
