"""``Worker(isolation="process")``: each claim's handler in a child process that a timeout kills.

Real processes on every database, no mocks. What is checked comes from the
table, the log and the process table (``/proc``), not from the worker's own
counters: each outcome's row text, the child's pid (another process, and gone
afterwards), a hung child killed at its timeout with 0 missed ticks beside it,
the children still running when the drain runs out killed, and through
``worksync work`` the same with a SIGTERM, and a second one.
"""

from __future__ import annotations

import inspect
import json
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from worksync_sa import (
    AsyncWorker,
    HandlerProcessError,
    InvalidArgumentError,
    Scheduler,
    SchedulerConfig,
    Work,
    Worker,
    WorkStatus,
)
from worksync_sa.models import as_utc

from . import process_handlers as handlers
from .conftest import Db
from .test_cli import Running, Target, environment, every_target, launch, write_config
from .test_timeouts import RUN_FOR, TIMED_OUT, heartbeats_alive, missed, per_second
from .test_worker import schedule_due

__all__ = ["every_target", "launch"]  # fixtures, imported for pytest


@pytest.fixture
def pids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The folder the handlers note their pids in (children inherit the environment)."""
    folder = tmp_path / "pids"
    folder.mkdir()
    monkeypatch.setenv(handlers.FOLDER, str(folder))
    return folder


def noted(folder: Path, name: str | None = None) -> list[dict[str, Any]]:
    """What the handlers (of work ``name``) noted: one entry per claim run."""
    files = sorted(folder.glob("*.json" if name is None else f"{name}-*.json"))
    return [json.loads(path.read_text()) for path in files]


def alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie does not: it has ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def children_of(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (zombies included), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(0.05)


def hung_failed(db: Db) -> int:
    """How many claims of work 'hang' timed out (not its ticks missed while it hung)."""
    return len([row for row in db.rows(name="hang") if row.error == TIMED_OUT])


def settled(db: Db, name: str, start: datetime, end: datetime) -> bool:
    """Whether every row of ``name`` ticking in the window ``missed`` reads has finished."""
    open_ = (WorkStatus.QUEUED, WorkStatus.RUNNING)
    return not [
        row
        for row in db.rows(name=name)
        if start + timedelta(seconds=2) <= as_utc(row.tick_at) <= end - timedelta(seconds=2)
        and row.status in open_
    ]


def steady(name: str) -> Work:
    """A per-second work whose claims may lag: each costs a process start, which a busy
    machine makes slow; what counts is that none is missed, not how soon each ran."""
    return Work(name, "* * * * * *", lease="10s", grace="1m")


def process_worker(db: Db, works: list[Any], handler: Any, **options: Any) -> Worker:
    return Worker(db.engine, works, handler, table=db.table, isolation="process", **options)


# -- what is refused ---------------------------------------------------------------------


def test_isolation_is_thread_or_process_and_a_process_handler_must_pickle(db: Db) -> None:
    assert Worker(db.engine, ["w"], handlers.returns, table=db.table).isolation == "thread"
    with pytest.raises(InvalidArgumentError, match="isolation must be 'thread' or 'process', "):
        Worker(db.engine, ["w"], handlers.returns, table=db.table, isolation="fork")
    with pytest.raises(InvalidArgumentError, match="got 'Process'"):
        Worker(db.engine, ["w"], handlers.returns, table=db.table, isolation="Process")

    def nested(view: Any) -> None:
        pass

    for bad in (lambda view: None, nested):
        with pytest.raises(InvalidArgumentError) as refused:
            process_worker(db, ["ok", "bad"], {"ok": handlers.returns, "bad": bad})
        text = str(refused.value)
        assert "handler for work 'bad' cannot run with isolation='process'" in text
        assert "module-level function" in text
        assert "lambda" in text
    Worker(db.engine, ["w"], lambda claim: None, table=db.table)  # threads take anything
    assert "isolation" not in inspect.signature(AsyncWorker).parameters  # tasks are cancelled
    assert db.count() == 0


# -- outcomes ------------------------------------------------------------------------------


def test_each_outcome_of_a_handler_in_its_own_process_is_recorded(
    db: Db, pids: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Return: SUCCESS; raise: its text, as thread mode stores it; a death: how it died."""
    names = {
        "returns": handlers.returns,
        "raises": handlers.raises,
        "exits": handlers.exits,
        "segfaults": handlers.segfaults,
    }
    schedule_due(db, *(Work(name, "*/2 * * * * *") for name in names))
    worker = process_worker(db, list(names), names, max_concurrency=4)
    with caplog.at_level(logging.ERROR, logger="worksync_sa"):
        ran = worker.run_due()
        worker.close()
    assert ran >= len(names)  # each work at least once
    started = [row for row in db.rows() if row.started_at is not None]
    assert len(started) == ran
    assert not db.rows(status=WorkStatus.RUNNING)
    died = "HandlerProcessError: the handler's process"
    expected = {
        "returns": (WorkStatus.SUCCESS, None),
        "raises": (WorkStatus.FAILED, "ValueError: it broke"),
        "exits": (WorkStatus.FAILED, f"{died} exited with code 3"),
        "segfaults": (WorkStatus.FAILED, f"{died} was killed by signal SIGSEGV"),
    }
    for row in started:
        assert (row.status, row.error) == expected[row.name], row
    assert worker.stuck == 0
    # Each ran in a process of its own, with a view of its claim, and none is left.
    seen = noted(pids)
    assert len(seen) == ran
    assert os.getpid() not in {entry["pid"] for entry in seen}
    assert len({entry["pid"] for entry in seen}) == ran
    assert not [entry["pid"] for entry in seen if alive(entry["pid"])]
    assert multiprocessing.active_children() == []
    by_id = {row.id: row for row in started}
    for entry in seen:
        row = by_id[entry["id"]]
        assert (entry["name"], entry["sequence"], entry["slot"]) == (
            row.name,
            row.sequence,
            row.slot,
        )
        assert entry["attempt"] == row.attempts == 1
        assert entry["tick_at"] == as_utc(row.tick_at).isoformat()
        assert entry["worker_id"] == worker.sync.worker_id == row.claimed_by
    # The raise's ERROR line: the work's fields, and the child's traceback.
    failed = [r for r in caplog.records if getattr(r, "action", None) == "failed"]
    raised = [r for r in failed if getattr(r, "work", None) == "raises"]
    assert len(raised) == len([row for row in started if row.name == "raises"])
    record = raised[0]
    assert record.levelno == logging.ERROR
    assert "ValueError: it broke" in record.getMessage()
    assert {"sequence", "slot", "attempt"} <= set(vars(record))
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], HandlerProcessError)
    shown = logging.Formatter().format(record)
    assert "process_handlers.py" in shown
    assert "in raises" in shown
    assert 'raise ValueError("it broke")' in shown
    exited = [r for r in failed if getattr(r, "work", None) == "exits"]
    assert exited
    assert "exited with code 3" in exited[0].getMessage()


# -- a hang, killed at its timeout -----------------------------------------------------------


def test_a_hung_handler_process_is_killed_at_its_timeout_and_the_other_works_keep_their_ticks(
    db: Db, pids: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A child spinning on the CPU: FAILED "timed out", its process gone, 0 stuck threads."""
    works = [per_second("hang", timeout="1s"), steady("beat")]
    config = SchedulerConfig(lookahead="3s", interval="1s")
    scheduler = Scheduler(db.engine, works, config, table=db.table)
    worker = process_worker(
        db, works, {"hang": handlers.spins, "beat": handlers.returns}, max_concurrency=4,
        poll="100ms", timeout="1h",
    )  # fmt: skip
    with caplog.at_level(logging.ERROR, logger="worksync_sa"):
        scheduler.start()
        worker.start()
        try:
            start = db.db_now()
            time.sleep(RUN_FOR)
            wait_until(lambda: hung_failed(db) >= 3, timeout=120)  # conditions, not timings
            end = db.db_now()
            wait_until(lambda: settled(db, "beat", as_utc(start), as_utc(end)), timeout=120)
            assert worker.running
            assert worker.stuck == 0
            assert not worker.gave_up
        finally:
            worker.close(timeout=60)  # a claim still starting its process times out too
            scheduler.close()
    hung = [row for row in db.rows(name="hang") if row.started_at is not None]
    assert len(hung) >= 3  # its slot was free again after each timeout
    assert {row.status for row in hung} == {WorkStatus.FAILED}
    assert {row.error for row in hung} == {TIMED_OUT}
    assert not heartbeats_alive(hung)
    assert worker.stuck == 0
    assert missed(db, "beat", as_utc(start), as_utc(end)) == []
    spun = noted(pids, "hang")
    assert len(spun) == len(hung)
    assert not [entry["pid"] for entry in spun if alive(entry["pid"])]
    assert multiprocessing.active_children() == []
    timed_out = [r for r in caplog.records if getattr(r, "action", None) == "timed-out"]
    assert len(timed_out) == len(hung)
    record = timed_out[0]
    assert record.levelno == logging.ERROR
    assert record.work == "hang"  # type: ignore[attr-defined]
    assert "in spins" in record.getMessage()  # where the child was: its own frame
    assert "while True" in record.getMessage() or "pass" in record.getMessage()


# -- close(): the drain runs out -------------------------------------------------------------


@pytest.mark.parametrize("concurrency", [1, 2])
def test_close_records_a_child_still_running_past_the_drain_and_kills_it(
    db: Db, pids: Path, caplog: pytest.LogCaptureFixture, concurrency: int
) -> None:
    """One runs on the loop's own thread, the other on a runner's: both are killed."""
    schedule_due(db, Work("w", "*/5 * * * * *", grace="1m"))
    worker = process_worker(db, ["w"], handlers.sleeps, max_concurrency=concurrency)
    with caplog.at_level(logging.WARNING, logger="worksync_sa"):
        worker.start()
        wait_until(lambda: bool(noted(pids)))
        worker.close(timeout=0.5)
    (entry,) = noted(pids)
    assert not alive(entry["pid"])
    assert multiprocessing.active_children() == []
    assert worker.cut_off == 1
    assert not worker.running
    (row,) = [row for row in db.rows(name="w") if row.started_at is not None]
    assert row.status == WorkStatus.FAILED
    assert row.error == "shut down: still running 0.5 s after the worker was asked to stop"
    assert not heartbeats_alive([row])
    shut = [r for r in caplog.records if getattr(r, "action", None) == "shut-down"]
    assert "processes are killed" in shut[-1].getMessage()
    assert not [r for r in caplog.records if getattr(r, "action", None) == "failed"]


def test_a_child_that_ends_within_the_drain_keeps_its_outcome(db: Db, pids: Path) -> None:
    schedule_due(db, Work("w", "*/5 * * * * *", grace="1m"))
    worker = process_worker(db, ["w"], handlers.sleeps_briefly)
    worker.start()
    wait_until(lambda: bool(noted(pids)))
    worker.close(timeout=30)
    assert worker.cut_off == 0
    started = [row for row in db.rows(name="w") if row.started_at is not None]
    assert started
    assert {row.status for row in started} == {WorkStatus.SUCCESS}


# -- through `worksync work`, a real process -------------------------------------------------

CLI_HANDLERS = """
import os
import time


def _note(name):
    with open(f"pid-{name}-{os.getpid()}", "w") as file:
        file.write(str(os.getpid()))


def hang(claim):
    _note("hang")
    while True:
        time.sleep(60)


def beat(claim):
    _note("beat")
"""

CONFIG = """
[[works]]
name = "hang"
cron = "* * * * * *"
lease = "3s"
grace = "5s"

[[works]]
name = "beat"
cron = "* * * * * *"
lease = "10s"
grace = "1m"
"""


def function_processes(pid: int) -> list[int]:
    """The children of ``pid`` that multiprocessing spawned (not its resource tracker)."""
    found = []
    for child in children_of(pid):
        try:
            command = Path(f"/proc/{child}/cmdline").read_text(errors="replace")
        except OSError:
            continue  # it ended meanwhile
        if "spawn_main" in command:
            found.append(child)
    return found


def cli_pids(folder: Path, name: str) -> list[int]:
    return [int(path.read_text() or 0) for path in folder.glob(f"pid-{name}-*")]


def test_worksync_work_kills_a_hung_function_process_at_its_timeout_and_leaves_none(
    every_target: Target, tmp_path: Path, launch: Callable[..., Running]
) -> None:
    target = every_target
    db = target.create()
    (tmp_path / "handlers.py").write_text(CLI_HANDLERS)
    config = write_config(tmp_path, CONFIG)
    running = launch(
        "work", "--config", config, "--run", "hang=handlers:hang", "--run",
        "beat=handlers:beat", "--concurrency", "4", "--poll", "100ms", "--drain", "1m",
        "--timeout", "1s", "--isolation", "process", *target.args(),
    )  # fmt: skip
    works = [per_second("hang"), steady("beat")]
    scheduler = Scheduler(
        db.engine, works, SchedulerConfig(lookahead="3s", interval="1s"), table=db.table
    )
    scheduler.start()
    most = 0

    def count_children() -> None:
        nonlocal most
        most = max(most, len(function_processes(running.process.pid)))

    def enough_hung() -> bool:
        count_children()
        return hung_failed(db) >= 3

    try:
        running.wait_for_log("worker ")
        start = db.db_now()
        deadline = time.monotonic() + RUN_FOR
        while time.monotonic() < deadline:
            count_children()
            time.sleep(0.2)
        wait_until(enough_hung, timeout=120)
        end = db.db_now()
        wait_until(lambda: settled(db, "beat", as_utc(start), as_utc(end)), timeout=120)
        code, _ = running.stop(signal.SIGTERM, timeout=120)
    finally:
        scheduler.close()
    assert code == 0, running.err
    assert 1 <= most <= 4  # never more children than --concurrency
    hung = [row for row in db.rows(name="hang") if row.started_at is not None]
    assert len(hung) >= 3
    assert {row.status for row in hung} == {WorkStatus.FAILED}, running.err
    assert {row.error for row in hung} == {TIMED_OUT}
    assert missed(db, "beat", as_utc(start), as_utc(end)) == []
    assert running.err.count("timed out at tick") == len(hung)
    assert "in hang" in running.err  # where the child was, from its SIGTERM handler
    every = cli_pids(tmp_path, "hang") + cli_pids(tmp_path, "beat")
    assert len(cli_pids(tmp_path, "hang")) == len(hung)
    assert not [pid for pid in every if alive(pid)]
    assert not children_of(running.process.pid)


def test_a_second_signal_to_worksync_work_leaves_no_function_process(
    every_target: Target, tmp_path: Path, launch: Callable[..., Running]
) -> None:
    target = every_target
    db = target.create()
    schedule_due(db, Work("hang", "*/5 * * * * *", grace="1m"))
    (tmp_path / "handlers.py").write_text(CLI_HANDLERS)
    running = launch(
        "work", "--name", "hang", "--run", "handlers:hang", "--isolation", "process",
        "--drain", "1m", "--poll", "100ms", *target.args(), env=environment(),
    )  # fmt: skip
    wait_until(lambda: bool(cli_pids(tmp_path, "hang")))
    (pid,) = cli_pids(tmp_path, "hang")
    running.process.send_signal(signal.SIGTERM)
    running.wait_for_log("stopping")
    code, _ = running.stop(signal.SIGTERM)
    assert code == 1, running.err
    assert "stopped at once" in running.err
    wait_until(lambda: not alive(pid), timeout=10)
    (row,) = [row for row in db.rows(name="hang") if row.started_at is not None]
    assert row.status == WorkStatus.FAILED
    assert row.error.startswith("shut down:")


def test_worksync_work_refuses_process_isolation_for_async_functions(
    every_target: Target, tmp_path: Path, launch: Callable[..., Running]
) -> None:
    (tmp_path / "handlers.py").write_text("async def job(claim):\n    pass\n")
    running = launch(
        "work", "--name", "w", "--run", "handlers:job", "--isolation", "process",
        *every_target.args(),
    )  # fmt: skip
    assert running.process.wait(timeout=60) == 2
    for reader in running.readers:
        reader.join(timeout=5)
    assert "isolation 'process' is for plain functions" in running.err
