"""The Worker loop: claims due ticks of its works, runs the handler, records the outcome."""

from __future__ import annotations

import functools
import logging
import time
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from worksync_sa import Claim, Event, Scheduler, SchedulerConfig, Work, Worker, WorkStatus
from worksync_sa._run.writelock import WriteLock
from worksync_sa.errors import InvalidArgumentError

from .conftest import Db, create_table, sqlite_url


def schedule_due(db: Db, *works: Work) -> None:
    """Rows for ticks that came in the last few seconds (and the next minute)."""
    config = SchedulerConfig(lookahead="1m", interval="10s")
    Scheduler(db.engine, list(works), config, table=db.table).run_pass(
        db.db_now() - timedelta(seconds=3)
    )


def test_run_once_claims_every_due_tick_and_records_each_outcome(db: Db) -> None:
    schedule_due(db, Work("good", "* * * * * *", max_run=2), Work("bad", "* * * * * *"))
    seen: list[tuple[str, str]] = []

    def handler(claim: Claim) -> None:
        seen.append((claim.name, claim.sequence))
        if claim.name == "bad":
            raise RuntimeError("it broke")

    worker = Worker(db.engine, ["good", "bad"], handler, table=db.table)
    ran = worker.run_once()
    worker.close()
    assert ran == len(seen) > 0
    good = db.rows(name="good", status=WorkStatus.SUCCESS)
    bad = db.rows(name="bad", status=WorkStatus.FAILED)
    assert len(good) + len(bad) == ran
    assert all(row.error == "RuntimeError: it broke" for row in bad)
    per_tick = {(r.name, r.sequence) for r in good}
    assert all(sum(1 for s in seen if s == tick) <= 2 for tick in per_tick)


@pytest.mark.parametrize(
    "exit_with", [SystemExit(3), GeneratorExit(), BaseException("odd"), KeyboardInterrupt()]
)
def test_a_handler_that_exits_fails_its_row_and_the_loop_goes_on(
    db: Db, exit_with: BaseException, caplog: pytest.LogCaptureFixture
) -> None:
    """A KeyboardInterrupt too: off the main thread, only the handler can have raised it
    (Python delivers Ctrl-C to the main thread), and it once ended the loop for good."""
    schedule_due(db, Work("w", "* * * * * *"))
    calls: list[str] = []

    def handler(claim: Claim) -> None:
        calls.append(claim.sequence)
        raise exit_with

    worker = Worker(db.engine, ["w"], handler, table=db.table, poll="100ms")
    with caplog.at_level(logging.ERROR, logger="worksync_sa"):
        worker.start()
        deadline = time.monotonic() + 15
        while len(calls) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert worker.running  # the thread outlived every exit
        worker.close()
    assert len(calls) >= 3
    failed = db.rows(name="w", status=WorkStatus.FAILED)
    assert len(failed) >= 3
    assert all(row.error.startswith(type(exit_with).__name__) for row in failed)
    assert not db.rows(name="w", status=WorkStatus.RUNNING)
    assert any(getattr(r, "action", None) == "failed" for r in caplog.records)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_loop_that_stops_says_so_and_running_turns_false(
    db: Db, caplog: pytest.LogCaptureFixture
) -> None:
    """Only a stop signal ends the loop early (here a listener's KeyboardInterrupt): it says so."""
    schedule_due(db, Work("w", "* * * * * *"))

    def interrupts(event: Event) -> None:
        if event.action == "claimed":
            raise KeyboardInterrupt

    worker = Worker(
        db.engine, ["w"], lambda claim: None, table=db.table, poll="100ms", listeners=[interrupts]
    )
    assert not worker.running
    with caplog.at_level(logging.ERROR, logger="worksync_sa"):
        worker.start()
        deadline = time.monotonic() + 10
        while worker.running and time.monotonic() < deadline:
            time.sleep(0.05)
    assert not worker.running  # a host can notice its worker died, and restart or exit
    worker.close()
    ended = [r for r in caplog.records if getattr(r, "action", None) == "ended"]
    assert ended
    assert ended[0].levelno == logging.ERROR
    assert "KeyboardInterrupt" in ended[0].getMessage()
    # The claim the listener interrupted is left to lease recovery: nothing ran it.
    assert [row.status for row in db.rows(name="w", status=WorkStatus.RUNNING)] == [
        WorkStatus.RUNNING
    ]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_scheduler_loop_that_stops_says_so_and_running_turns_false(
    db: Db, caplog: pytest.LogCaptureFixture
) -> None:
    """Only a stop signal ends the loop early (here a listener's KeyboardInterrupt): it says so."""
    import logging
    import time

    def interrupts(event: object) -> None:
        raise KeyboardInterrupt

    config = SchedulerConfig(lookahead="3s", interval="200ms")
    scheduler = Scheduler(
        db.engine, [Work("w", "* * * * * *")], config, table=db.table, listeners=[interrupts]
    )
    with caplog.at_level(logging.ERROR, logger="worksync_sa"):
        scheduler.start()
        deadline = time.monotonic() + 10
        while scheduler.running and time.monotonic() < deadline:
            time.sleep(0.05)
    assert not scheduler.running
    (ended,) = [r for r in caplog.records if getattr(r, "action", None) == "ended"]
    assert ended.levelno == logging.ERROR
    assert "scheduler loop ended by KeyboardInterrupt" in ended.getMessage()
    scheduler.close()


class _AsyncCall:
    async def __call__(self, claim: Claim) -> None:
        pass


def test_an_async_handler_is_refused_pointing_to_async_worker(db: Db) -> None:
    """Called on a thread, it would return a coroutine never awaited, and record SUCCESS."""

    async def coroutine(claim: Claim) -> None:
        pass

    def plain(claim: Claim) -> None:
        pass

    cases: list[object] = [coroutine, _AsyncCall(), functools.partial(coroutine)]
    for handler in cases:
        with pytest.raises(InvalidArgumentError, match=r"'a' is an async function.+AsyncWorker"):
            Worker(db.engine, ["a"], handler, table=db.table)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match=r"handler for 'b' is an async function"):
        Worker(db.engine, ["a", "b"], {"a": plain, "b": coroutine}, table=db.table)
    assert db.count() == 0


def test_closing_gives_back_a_writers_lock_an_interruption_left_taken(tmp_path: Path) -> None:
    """A Ctrl-C between taking SQLite's writers' lock and the step that gives it back left
    it taken: a scheduler of the same process then waited for it in the kernel for good."""
    engine = sa.create_engine(sqlite_url(tmp_path))
    create_table(engine, "works")
    worker = Worker(engine, ["w"], lambda claim: None)
    writer = worker.sync._runner.writer
    assert writer is not None
    writer.__enter__()  # as the interrupted call left it
    other = WriteLock(writer.path.removesuffix("-worksync.lock"))
    assert not other.try_acquire()
    worker.close()
    assert other.try_acquire()  # the scheduler's pass gets its turn
    other.release()
    engine.dispose()
