"""A handler that hangs: recorded FAILED at its work's timeout, and every other work goes on.

In-process on both workers and through ``worksync work`` as a real process,
on every database. What is checked comes from the table and the threads alive,
not from the worker's own counters: each due tick of the work beside the hung
one has a SUCCESS row (0 missed), the hung claims are FAILED "timed out", their
heartbeats have stopped, and a finish the hung handler attempts later is refused.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from worksync_sa import (
    AsyncClaim,
    AsyncWorker,
    Claim,
    ClaimLostError,
    HandlerTimeoutError,
    InvalidArgumentError,
    InvalidWorkError,
    Scheduler,
    SchedulerConfig,
    Work,
    Worker,
    WorkStatus,
)
from worksync_sa.models import as_utc

from .conftest import Db
from .test_async_worker import run
from .test_cli import Running, Target, due_ticks, every_target, launch, target, write_config
from .test_worker import schedule_due

__all__ = ["every_target", "launch", "target"]  # fixtures, imported for pytest

TIMED_OUT = (
    "HandlerTimeoutError: timed out: the handler was still running after 1s (the work's timeout)"
)
RUN_FOR = 8.0
"""Seconds each fleet runs: several timeouts of 1 s, and ticks around each."""


def per_second(name: str, **policy: Any) -> Work:
    return Work(name, "* * * * * *", **{"lease": "3s", "grace": "5s", **policy})


def missed(db: Db, name: str, start: datetime, end: datetime) -> list[Any]:
    """The rows of ``name`` whose tick came 2 s after ``start`` up to 2 s before ``end``
    (so the fleet had time to claim them), and that are not SUCCESS."""
    rows = [
        row
        for row in db.rows(name=name)
        if start + timedelta(seconds=2) <= as_utc(row.tick_at) <= end - timedelta(seconds=2)
    ]
    assert len(rows) >= RUN_FOR - 5, f"too few ticks of {name!r} in the window: {len(rows)}"
    return [row for row in rows if row.status != WorkStatus.SUCCESS]


def heartbeats_alive(rows: list[Any]) -> list[str]:
    names = {f"worksync-heartbeat-{row.id}" for row in rows}
    return [thread.name for thread in threading.enumerate() if thread.name in names]


@pytest.fixture
def released() -> Iterator[threading.Event]:
    """Set when the test ends: the hung handlers' threads then return, and end."""
    event = threading.Event()
    yield event
    event.set()


def test_work_timeout_is_checked_and_optional() -> None:
    assert Work("w", "@hourly").timeout is None
    assert Work("w", "@hourly", timeout="1m30s").timeout == timedelta(seconds=90)
    assert Work("w", "@hourly", timeout="250ms").timeout == timedelta(milliseconds=250)
    for bad, says in [
        ("0s", "must be positive"),
        (timedelta(0), "must be positive"),
        ("soon", "not valid"),
        (30, "not int"),
        (timedelta(days=400), "at most 365 days"),
    ]:
        with pytest.raises(InvalidWorkError, match=f"work 'w'.*{says}"):
            Work("w", "@hourly", timeout=bad)  # type: ignore[arg-type]


def test_a_worker_refuses_a_bad_timeout_or_max_stuck(db: Db) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"timeout": "never"}, "timeout: duration 'never' is not valid"),
        ({"max_stuck": 0}, "max_stuck must be an int from 1"),
        ({"max_stuck": True}, "max_stuck must be an int from 1"),
    ]
    for options, says in cases:
        with pytest.raises(InvalidArgumentError, match=says):
            Worker(db.engine, ["w"], lambda claim: None, table=db.table, **options)
    assert db.count() == 0


def test_a_hung_handler_fails_at_its_timeout_and_the_other_works_keep_their_ticks(
    db: Db, released: threading.Event, caplog: pytest.LogCaptureFixture
) -> None:
    """The hung work's own timeout; the worker's default ``timeout`` leaves the other alone."""
    works = [per_second("hang", timeout="1s"), per_second("beat")]
    refused: list[BaseException] = []

    def hang(claim: Claim) -> None:
        released.wait()  # forever, as far as the worker can tell
        try:
            claim.success()  # what the handler finishes after its timeout: fenced off
        except ClaimLostError as exc:
            refused.append(exc)

    handlers = {"hang": hang, "beat": lambda claim: None}
    config = SchedulerConfig(lookahead="3s", interval="1s")
    scheduler = Scheduler(db.engine, works, config, table=db.table)
    worker = Worker(
        db.engine, works, handlers, table=db.table, max_concurrency=2, max_stuck=100,
        poll="100ms", timeout="1h",
    )  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="worksync_sa"):
        scheduler.start()
        worker.start()
        start = db.db_now()
        time.sleep(RUN_FOR)
        end = db.db_now()
        assert worker.running
        assert not worker.gave_up
        worker.close(timeout=3)
        scheduler.close()
        hung = [row for row in db.rows(name="hang") if row.started_at is not None]
        assert len(hung) >= 3  # its slot was free again after each timeout
        assert {row.status for row in hung} == {WorkStatus.FAILED}
        assert {row.error for row in hung} == {TIMED_OUT}
        assert not heartbeats_alive(hung)  # stopped at the timeout, though the handlers run on
        assert worker.stuck == len(hung)
        assert missed(db, "beat", as_utc(start), as_utc(end)) == []
        released.set()
        deadline = time.monotonic() + 10
        while worker.stuck and time.monotonic() < deadline:
            time.sleep(0.05)
    assert worker.stuck == 0
    assert len(refused) == len(hung)
    assert {row.status for row in db.rows(name="hang") if row.started_at} == {WorkStatus.FAILED}
    timed_out = [r for r in caplog.records if getattr(r, "action", None) == "timed-out"]
    assert len(timed_out) == len(hung)
    record = timed_out[0]
    assert record.levelno == logging.ERROR
    assert record.work == "hang"  # type: ignore[attr-defined]
    assert "in hang" in record.getMessage()  # where the handler was stuck: its own frame
    assert "released.wait()" in record.getMessage()
    ended = [r for r in caplog.records if getattr(r, "action", None) == "ended-late"]
    assert len(ended) == len(hung)


def test_hung_works_that_keep_every_runner_busy_leave_a_quick_work_its_ticks(
    db: Db, released: threading.Event
) -> None:
    """Both of two threads hung, again and again: two hung works each tick need 4 thread-s/s.

    Free threads go to the work that used the least thread time lately, so the
    quick one still gets each of its ticks (one claim each per turn gave it one
    claim per timeout, and it missed ticks).
    """
    works = [
        per_second("hang-a", timeout="2s"),
        per_second("hang-b", timeout="2s"),
        per_second("beat"),
    ]
    handlers: dict[str, Callable[[Claim], object]] = {
        "hang-a": lambda claim: released.wait(),
        "hang-b": lambda claim: released.wait(),
        "beat": lambda claim: None,
    }
    config = SchedulerConfig(lookahead="3s", interval="1s")
    scheduler = Scheduler(db.engine, works, config, table=db.table)
    worker = Worker(
        db.engine, works, handlers, table=db.table, max_concurrency=2, max_stuck=100,
        poll="100ms",
    )  # fmt: skip
    scheduler.start()
    worker.start()
    start = db.db_now()
    time.sleep(RUN_FOR + 4)
    end = db.db_now()
    worker.close(timeout=3)
    scheduler.close()
    assert missed(db, "beat", as_utc(start), as_utc(end)) == []
    hung = [row for row in db.rows() if row.name != "beat" and row.started_at is not None]
    assert len(hung) >= RUN_FOR  # the hung works kept both threads busy all along
    assert {row.error for row in hung} == {TIMED_OUT.replace("after 1s", "after 2s")}


def test_a_worker_with_more_stuck_threads_than_max_stuck_stops(
    db: Db, released: threading.Event, caplog: pytest.LogCaptureFixture
) -> None:
    """So that its supervisor can restart the process: threads cannot be killed."""
    schedule_due(db, Work("w", "* * * * * *", max_run=5))
    worker = Worker(
        db.engine, ["w"], lambda claim: released.wait(), table=db.table, timeout="300ms",
        max_stuck=1, poll="100ms",
    )  # fmt: skip
    assert worker.max_stuck == 1
    with caplog.at_level(logging.ERROR, logger="worksync_sa"):
        worker.start()
        deadline = time.monotonic() + 15
        while worker.running and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not worker.running
        assert worker.gave_up
        assert worker.stuck == 2  # the first was replaced; the second was one too many
        worker.close()
    failed = db.rows(name="w", status=WorkStatus.FAILED)
    assert [row.error.split(":")[0] for row in failed] == ["HandlerTimeoutError"] * 2
    assert not db.rows(name="w", status=WorkStatus.RUNNING)
    (stuck,) = [r for r in caplog.records if getattr(r, "action", None) == "stuck"]
    assert stuck.levelno == logging.CRITICAL
    assert "more than max_stuck 1" in stuck.getMessage()


def test_a_handler_that_finished_its_claim_then_hung_keeps_its_outcome(
    db: Db, released: threading.Event
) -> None:
    """The timeout then finds the claim finished: nothing is overwritten, the thread is left."""
    schedule_due(db, Work("w", "* * * * * *"))

    def finishes_then_hangs(claim: Claim) -> None:
        claim.success()
        released.wait()

    worker = Worker(db.engine, ["w"], finishes_then_hangs, table=db.table, timeout="300ms")
    assert worker.run_once() >= 1
    done = [row for row in db.rows(name="w") if row.started_at is not None]
    assert {row.status for row in done} == {WorkStatus.SUCCESS}
    assert {row.error for row in done} == {None}
    assert worker.stuck == len(done)
    worker.close()


def test_an_async_handler_past_its_timeout_is_cancelled_and_the_others_keep_their_ticks(
    db: Db, caplog: pytest.LogCaptureFixture
) -> None:
    works = [per_second("hang"), per_second("beat", timeout="1h")]
    cancelled: list[str] = []
    refused: list[BaseException] = []

    async def hang(claim: AsyncClaim) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError as exc:
            cancelled.append(str(exc))
            try:
                await claim.success()
            except ClaimLostError as lost:
                refused.append(lost)
            raise

    async def beat(claim: AsyncClaim) -> None:
        await asyncio.sleep(0)

    async def body(engine: Any) -> None:
        config = SchedulerConfig(lookahead="3s", interval="1s")
        scheduler = Scheduler(db.engine, works, config, table=db.table)
        worker = AsyncWorker(
            engine, works, {"hang": hang, "beat": beat}, table=db.table, max_concurrency=2,
            poll="100ms", timeout="1s",
        )  # fmt: skip
        scheduler.start()
        try:
            async with worker:
                start = db.db_now()
                await asyncio.sleep(RUN_FOR)
                end = db.db_now()
                assert worker.running
                assert not worker.gave_up
                assert worker.stuck == 0  # each let its cancellation through
        finally:
            scheduler.close()
        hung = [row for row in db.rows(name="hang") if row.started_at is not None]
        assert len(hung) >= 3
        assert {row.status for row in hung} == {WorkStatus.FAILED}
        assert {row.error for row in hung} == {TIMED_OUT}
        assert len(cancelled) == len(refused) == len(hung)
        assert set(cancelled) == {TIMED_OUT.removeprefix("HandlerTimeoutError: ")}
        assert missed(db, "beat", as_utc(start), as_utc(end)) == []

    with caplog.at_level(logging.ERROR, logger="worksync_sa"):
        run(db, body)
    timed_out = [r for r in caplog.records if getattr(r, "action", None) == "timed-out"]
    assert timed_out
    assert "in hang" in timed_out[0].getMessage()  # the task's stack where it waited


def test_async_handlers_that_ignore_their_cancellation_stop_the_worker_past_max_stuck(
    db: Db, caplog: pytest.LogCaptureFixture
) -> None:
    schedule_due(db, Work("w", "* * * * * *", max_run=5))
    release = asyncio.Event()

    async def stubborn(claim: AsyncClaim) -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue  # a handler that swallows its cancellation runs on

    async def body(engine: Any) -> None:
        nonlocal release
        release = asyncio.Event()
        worker = AsyncWorker(
            engine, ["w"], stubborn, table=db.table, timeout="300ms", max_stuck=1, poll="100ms"
        )
        worker.start()
        deadline = time.monotonic() + 15
        while worker.running and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert not worker.running
        assert worker.gave_up
        release.set()
        await worker.close()

    with caplog.at_level(logging.ERROR, logger="worksync_sa"):
        run(db, body)
    failed = db.rows(name="w", status=WorkStatus.FAILED)
    assert len(failed) == 3  # two stuck, then a third timeout found more than max_stuck
    assert all(row.error.startswith("HandlerTimeoutError: timed out") for row in failed)
    assert [r.levelno for r in caplog.records if getattr(r, "action", None) == "stuck"] == [
        logging.CRITICAL
    ]


@pytest.mark.parametrize("concurrency", [1, 2])
def test_an_async_worker_that_cannot_cancel_its_handlers_still_stops_within_the_drain(
    db: Db, concurrency: int
) -> None:
    """Handlers that swallow their cancellation: recorded FAILED first, then left to end."""
    schedule_due(db, Work("w", "* * * * * *", max_run=2))
    started = 0

    async def stubborn(claim: AsyncClaim) -> None:
        nonlocal started
        started += 1
        for _ in range(100):  # ends on its own after a while: the test leaves nothing behind
            try:
                await asyncio.sleep(0.1)
            except asyncio.CancelledError:
                continue

    async def body(engine: Any) -> None:
        worker = AsyncWorker(
            engine, ["w"], stubborn, table=db.table, max_concurrency=concurrency, drain="1s"
        )
        worker.start()
        deadline = time.monotonic() + 15
        while started < concurrency and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        began = time.monotonic()
        await worker.close()
        took = time.monotonic() - began
        assert took < 1 + 1 + 2  # the drain, a second to settle, and slack for a busy machine
        assert worker.cut_off == concurrency

    run(db, body)
    running = [row for row in db.rows(name="w") if row.started_at is not None]
    assert len(running) == concurrency
    assert {row.status for row in running} == {WorkStatus.FAILED}
    assert {row.error for row in running} == {
        "shut down: still running 1 s after the worker was asked to stop"
    }


# -- through `worksync work`, a real process -------------------------------------------

HANDLERS = """
import asyncio
import time


def hang(claim):
    while True:
        time.sleep(60)


def beat(claim):
    pass


async def ahang(claim):
    await asyncio.sleep(3600)


async def abeat(claim):
    pass
"""

CONFIG = """
[worker]
max_stuck = 100

[[works]]
name = "hang"
cron = "* * * * * *"
lease = "3s"
grace = "5s"
{timeout}

[[works]]
name = "beat"
cron = "* * * * * *"
lease = "3s"
grace = "5s"
"""


@pytest.mark.parametrize("kind", ["threads", "async"])
def test_worksync_work_fails_a_hung_function_at_its_timeout_and_runs_the_rest(
    every_target: Target, tmp_path: Path, launch: Callable[..., Running], kind: str
) -> None:
    """Threads: the work's ``timeout`` in the config; async: ``--timeout`` for every work."""
    target = every_target
    db = target.create()
    (tmp_path / "handlers.py").write_text(HANDLERS)
    prefix = "" if kind == "threads" else "a"
    own = 'timeout = "1s"' if kind == "threads" else ""
    config = write_config(tmp_path, CONFIG.format(timeout=own))
    flags = [] if kind == "threads" else ["--timeout", "1s"]
    running = launch(
        "work", "--config", config, "--run", f"hang=handlers:{prefix}hang",
        "--run", f"beat=handlers:{prefix}beat", "--concurrency", "2", "--poll", "100ms",
        "--drain", "5s", *flags, *target.args(),
    )  # fmt: skip
    works = [per_second("hang"), per_second("beat")]
    scheduler = Scheduler(
        db.engine, works, SchedulerConfig(lookahead="3s", interval="1s"), table=db.table
    )
    scheduler.start()
    try:
        running.wait_for_log("worker ")
        start = db.db_now()
        time.sleep(RUN_FOR)
        end = db.db_now()
        code, took = running.stop(signal.SIGTERM)
    finally:
        scheduler.close()
    assert code == 0, running.err  # the hung claim running at the stop timed out in the drain
    assert took < 5 + 5
    hung = [row for row in db.rows(name="hang") if row.started_at is not None]
    assert len(hung) >= 3
    assert {row.status for row in hung} == {WorkStatus.FAILED}, running.err
    assert {row.error for row in hung} == {TIMED_OUT}
    assert missed(db, "beat", as_utc(start), as_utc(end)) == []
    assert running.err.count("timed out at tick") == len(hung)
    assert f"in {prefix}hang" in running.err  # where each was, in its ERROR


def test_worksync_work_exits_4_when_more_functions_are_stuck_than_max_stuck(
    target: Target, tmp_path: Path, launch: Callable[..., Running]
) -> None:
    db = target.create()
    due_ticks(db)
    (tmp_path / "handlers.py").write_text(HANDLERS)
    running = launch(
        "work", "--name", "good", "--run", "handlers:hang", "--timeout", "300ms",
        "--max-stuck", "2", "--poll", "100ms", *target.args(),
    )  # fmt: skip
    code = running.process.wait(timeout=30)
    for reader in running.readers:
        reader.join(timeout=5)
    assert code == 4, running.err
    assert "more than --max-stuck 2; exiting 4" in running.err
    failed = db.rows(name="good", status=WorkStatus.FAILED)
    assert len(failed) == 3
    assert all(row.error.startswith("HandlerTimeoutError: timed out") for row in failed)
    assert not db.rows(name="good", status=WorkStatus.RUNNING)


def test_handler_timeout_error_is_a_timeout_error() -> None:
    assert issubclass(HandlerTimeoutError, TimeoutError)
