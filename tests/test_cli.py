"""The ``worksync`` command line, run as real processes against SQLite files and MariaDB.

Each test has a table of its own, passed with --table, so runs never collide.
Long-running commands are started, watched through their log on stderr, and
stopped with real signals.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from worksync_sa import Scheduler, SchedulerConfig, Work, WorkStatus, upgrade
from worksync_sa.cli.migrations import head_revisions
from worksync_sa.models import version_table_for

from .conftest import Backend, Db, create_table, fresh_table_name, require, sqlite_url
from .contract import test_ledger, test_prune

HEAD = ", ".join(head_revisions())
PASSWORD = "hunter2-Secret"
STARTUP_TIMEOUT = 30.0
PROMPTLY = 15.0
"""Seconds a stop may take: far below a 60 s handler or a loop that never ends, and far
above what a loaded machine adds to a prompt exit (a timing is not what these check)."""


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKSYNC_")}
    env.update(extra)
    return env


def worksync(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worksync_sa", *args],
        cwd=cwd,
        env=env if env is not None else environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass
class Running:
    """A command running in the background; its output is collected line by line."""

    process: subprocess.Popen[str]
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    readers: list[threading.Thread] = field(default_factory=list)

    def __post_init__(self) -> None:
        for stream, lines in (
            (self.process.stdout, self.stdout),
            (self.process.stderr, self.stderr),
        ):
            reader = threading.Thread(target=self._read, args=(stream, lines), daemon=True)
            reader.start()
            self.readers.append(reader)

    @staticmethod
    def _read(stream: Any, lines: list[str]) -> None:
        for line in stream:
            lines.append(line)

    @property
    def out(self) -> str:
        return "".join(self.stdout)

    @property
    def err(self) -> str:
        return "".join(self.stderr)

    def wait_for(
        self, check: Callable[[], bool], what: str, timeout: float = STARTUP_TIMEOUT
    ) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if self.process.poll() is not None:
                time.sleep(0.2)  # let the readers catch up before reporting
                pytest.fail(f"exited {self.process.returncode} before {what}:\n{self.err}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} after {timeout}s:\n{self.out}\n{self.err}")
            time.sleep(0.05)

    def wait_for_log(self, text: str, timeout: float = STARTUP_TIMEOUT) -> None:
        self.wait_for(lambda: text in self.err, repr(text), timeout)

    def stop(self, sig: int, timeout: float = 30.0) -> tuple[int, float]:
        """Send ``sig``; the exit code and how long the process took to exit."""
        start = time.monotonic()
        self.process.send_signal(sig)
        code = self.process.wait(timeout=timeout)
        for reader in self.readers:
            reader.join(timeout=5)
        return code, time.monotonic() - start

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Running:
        process = subprocess.Popen(
            [sys.executable, "-m", "worksync_sa", *args],
            cwd=tmp_path,
            env=env if env is not None else environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        running = Running(process)
        started.append(running)
        return running

    yield start
    for running in started:
        running.kill()


@dataclass
class Target:
    """A database reachable by URL, and a table name of this test's own (not created)."""

    backend: Backend
    table: str

    @property
    def engine(self) -> sa.Engine:
        return self.backend.engine

    @property
    def url(self) -> str:
        return self.backend.engine.url.render_as_string(hide_password=False)

    @property
    def db(self) -> Db:
        return Db(self.backend, self.table)

    def args(self) -> list[str]:
        return ["--db", self.url, "--table", self.table]

    def create(self) -> Db:
        create_table(self.engine, self.table)
        return self.db

    def drop(self) -> None:
        with self.engine.begin() as conn:
            for name in (
                f"{self.table}_actions",
                f"{self.table}_pauses",
                self.table,
                version_table_for(self.table),
            ):
                sa.Table(name, sa.MetaData()).drop(conn, checkfirst=True)


def _sqlite(folder: Path) -> Backend:
    url = sqlite_url(folder)
    return Backend("sqlite", url, sa.create_engine(url))


def _target(backend: Backend) -> Iterator[Target]:
    target = Target(backend, fresh_table_name())
    try:
        yield target
    finally:
        target.drop()
        if backend.name == "sqlite":
            backend.engine.dispose()


@pytest.fixture(params=("sqlite", "mysql"))
def target(
    request: pytest.FixtureRequest, _backends: dict[str, Any], tmp_path: Path
) -> Iterator[Target]:
    """A SQLite file of this test's own, then MariaDB."""
    backend = _sqlite(tmp_path) if request.param == "sqlite" else require(_backends, "mysql")
    yield from _target(backend)


@pytest.fixture(params=("sqlite", "mysql", "postgresql"))
def every_target(
    request: pytest.FixtureRequest, _backends: dict[str, Any], tmp_path: Path
) -> Iterator[Target]:
    """``target``, and PostgreSQL too: for what every database must show."""
    backend = _sqlite(tmp_path) if request.param == "sqlite" else require(_backends, request.param)
    yield from _target(backend)


@pytest.fixture
def sqlite_target(tmp_path: Path) -> Iterator[Target]:
    yield from _target(_sqlite(tmp_path))


def write_config(folder: Path, body: str, name: str = "works.toml") -> str:
    path = folder / name
    path.write_text(textwrap.dedent(body))
    return str(path)


FAST = """
[scheduler]
lookahead = "3s"
interval = "1s"

[[works]]
name = "tick"
cron = "@every 1s"
max_run = 2
"""

HANDLERS = """
import asyncio
import pathlib
import time

VALUE = 5


def handle(claim):
    if claim.name == "bad":
        raise RuntimeError(f"boom at {claim.sequence}")


def slow(claim):
    pathlib.Path("started").write_text(str(claim.id))
    time.sleep(60)


async def aslow(claim):
    pathlib.Path("started").write_text(str(claim.id))
    await asyncio.sleep(60)


def shard(claim):
    with open(f"ran-{claim.name}", "a") as ran:
        ran.write(f"{claim.sequence}|{claim.slot}|{claim.attempt}\\n")


def broken_shard(claim):
    raise RuntimeError(f"shard {claim.slot} down at {claim.sequence}")
"""


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("worksync: "), result.stderr
    return lines[0]


# -- migrate and check ---------------------------------------------------------------


@pytest.mark.slow
def test_migrate_then_check(target: Target, tmp_path: Path) -> None:
    before = worksync("check", *target.args(), cwd=tmp_path)
    assert before.returncode == 1, before.stderr
    assert "current revision: (none)" in before.stdout
    assert f"head revision:    {HEAD}" in before.stdout
    assert "run `worksync migrate`" in before.stdout

    migrated = worksync("migrate", *target.args(), cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    assert f"table {target.table!r}" in migrated.stdout
    assert f"migrated from (none) to {HEAD} (head)" in migrated.stdout
    assert sa.inspect(target.engine).has_table(target.table)

    again = worksync("migrate", *target.args(), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert f"already at head ({HEAD}); nothing to do" in again.stdout

    after = worksync("check", *target.args(), cwd=tmp_path)
    assert after.returncode == 0, after.stderr
    assert f"current revision: {HEAD}" in after.stdout
    assert "is at head" in after.stdout


def test_check_fails_behind_head_and_migrate_says_from_where(
    sqlite_target: Target, tmp_path: Path
) -> None:
    upgrade(sqlite_target.engine, "worksync_0003", table=sqlite_target.table)
    behind = worksync("check", *sqlite_target.args(), cwd=tmp_path)
    assert behind.returncode == 1
    assert "current revision: worksync_0003" in behind.stdout
    assert "is behind head" in behind.stdout
    migrated = worksync("migrate", *sqlite_target.args(), cwd=tmp_path)
    assert f"migrated from worksync_0003 to {HEAD}" in migrated.stdout


def test_check_does_not_create_a_missing_sqlite_file(tmp_path: Path) -> None:
    result = worksync("check", "--db", f"sqlite:///{tmp_path / 'none.db'}", cwd=tmp_path)
    assert result.returncode == 1
    assert "does not exist" in one_line_error(result)
    assert not (tmp_path / "none.db").exists()


# -- schedule ------------------------------------------------------------------------


def test_schedule_once_creates_the_rows_ahead(target: Target, tmp_path: Path) -> None:
    db = target.create()
    config = write_config(tmp_path, FAST)
    result = worksync("schedule", "--config", config, "--once", *target.args(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    match = re.search(r"(\d+) rows planned, (\d+) created in \d+ batch", result.stdout)
    assert match, result.stdout
    planned, created = map(int, match.groups())
    assert created == planned == db.count() >= 4  # 2 or 3 ticks of max_run 2
    assert {row.status for row in db.rows()} == {WorkStatus.QUEUED}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_schedule_runs_until_a_signal_then_stops_cleanly(
    target: Target, tmp_path: Path, launch: Callable[..., Running], sig: int
) -> None:
    db = target.create()
    config = write_config(tmp_path, FAST)
    running = launch("schedule", "--config", config, *target.args())
    running.wait_for_log("scheduler started")
    first = db.count()
    running.wait_for(lambda: db.count() > first, "a later pass creating rows")
    code, took = running.stop(sig)
    assert code == 0, running.err
    assert took < PROMPTLY
    assert f"{signal.Signals(sig).name} received" in running.err
    assert running.err.rstrip().endswith("scheduler stopped")
    assert "Traceback" not in running.err


def test_schedule_fails_fast_when_the_table_is_missing(
    sqlite_target: Target, tmp_path: Path
) -> None:
    config = write_config(tmp_path, FAST)
    result = worksync("schedule", "--config", config, *sqlite_target.args(), cwd=tmp_path)
    assert result.returncode == 1
    assert "worksync migrate" in result.stderr
    assert "Traceback" not in result.stderr


# -- work ----------------------------------------------------------------------------

WORKS = """
[[works]]
name = "good"
cron = "@every 10s"
max_run = 2

[[works]]
name = "bad"
cron = "@every 10s"
"""


def due_ticks(db: Db) -> int:
    """Three past ticks of 'good' (max_run 2) and 'bad', all due and within grace."""
    works = [
        Work("good", "@every 10s", max_run=2, grace=timedelta(minutes=10)),
        Work("bad", "@every 10s", grace=timedelta(minutes=10)),
    ]
    config = SchedulerConfig(lookahead="30s", interval="10s")
    past = db.db_now() - timedelta(seconds=35)
    return Scheduler(db.engine, works, config, table=db.table).run_pass(past)


def test_work_once_claims_due_ticks_and_records_outcomes(target: Target, tmp_path: Path) -> None:
    db = target.create()
    assert due_ticks(db) == 9
    (tmp_path / "handlers.py").write_text(HANDLERS)
    config = write_config(tmp_path, WORKS)
    result = worksync(
        "work", "--config", config, "--run", "handlers:handle", "--once",
        "--worker-id", "cli-test", *target.args(), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "ran 9 claims of bad, good" in result.stdout
    good, bad = db.rows(name="good"), db.rows(name="bad")
    assert [row.status for row in good] == [WorkStatus.SUCCESS] * 6
    assert [row.status for row in bad] == [WorkStatus.FAILED] * 3
    assert all(row.error == f"RuntimeError: boom at {row.sequence}" for row in bad)
    assert {row.claimed_by for row in good + bad} == {"cli-test"}
    assert "SUCCESS" in result.stderr  # one log line per claim
    assert "FAILED" in result.stderr


ASYNC_HANDLERS = """
import asyncio


async def handle(claim):
    await asyncio.sleep(0.01)
    with open("side-effects.txt", "a") as done:
        done.write(f"{claim.name} {claim.sequence}\\n")
    if claim.name == "bad":
        raise RuntimeError(f"boom at {claim.sequence}")


def plain(claim):
    pass
"""


def test_work_runs_async_def_functions_on_an_async_worker(
    every_target: Target, tmp_path: Path
) -> None:
    """Awaited, so their side effects happen (a Worker would record SUCCESS and do nothing)."""
    target = every_target
    db = target.create()
    assert due_ticks(db) == 9
    (tmp_path / "handlers.py").write_text(ASYNC_HANDLERS)
    config = write_config(tmp_path, WORKS)
    result = worksync(
        "work", "--config", config, "--run", "handlers:handle", "--once",
        "--concurrency", "3", *target.args(), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "ran 9 claims of bad, good" in result.stdout
    done = (tmp_path / "side-effects.txt").read_text().splitlines()
    assert sorted(line.split()[0] for line in done) == ["bad"] * 3 + ["good"] * 6
    assert [row.status for row in db.rows(name="good")] == [WorkStatus.SUCCESS] * 6
    bad = db.rows(name="bad")
    assert [row.status for row in bad] == [WorkStatus.FAILED] * 3
    assert all(row.error == f"RuntimeError: boom at {row.sequence}" for row in bad)
    assert "never awaited" not in result.stderr


def test_work_refuses_async_and_plain_functions_together(
    sqlite_target: Target, tmp_path: Path
) -> None:
    db = sqlite_target.create()
    due_ticks(db)
    (tmp_path / "handlers.py").write_text(ASYNC_HANDLERS)
    result = worksync(
        "work", "--run", "good=handlers:handle", "--run", "bad=handlers:plain", "--once",
        *sqlite_target.args(), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert "async def functions ('good') and plain ones ('bad')" in result.stderr
    assert "Traceback" not in result.stderr
    assert {row.status for row in db.rows()} == {WorkStatus.QUEUED}  # nothing claimed


def only_handler_tracebacks(stderr: str) -> int:
    """How many handlers failed; every traceback printed must be one's, in its ERROR record."""
    failed = stderr.count(" failed at tick ")
    assert stderr.count("Traceback (most recent call last)") == failed, stderr
    return failed


EXITING = """
import sys


def exits(claim):
    sys.exit(3)


def leaves(claim):
    raise GeneratorExit("handler left")
"""


@pytest.mark.parametrize(
    ("handler", "error"), [("exits", "SystemExit: 3"), ("leaves", "GeneratorExit: handler left")]
)
def test_work_once_records_a_handler_that_exits_and_keeps_its_exit_code(
    sqlite_target: Target, tmp_path: Path, handler: str, error: str
) -> None:
    db = sqlite_target.create()
    due_ticks(db)
    (tmp_path / "handlers.py").write_text(EXITING)
    result = worksync(
        "work", "--name", "good", "--run", f"handlers:{handler}", "--once",
        *sqlite_target.args(), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "ran 6 claims of good" in result.stdout
    assert only_handler_tracebacks(result.stderr) == 6
    rows = db.rows(name="good")
    assert [row.status for row in rows] == [WorkStatus.FAILED] * 6
    assert {row.error for row in rows} == {error}


def test_work_outlives_a_handler_that_exits(
    sqlite_target: Target, tmp_path: Path, launch: Callable[..., Running]
) -> None:
    db = sqlite_target.create()
    due_ticks(db)
    (tmp_path / "handlers.py").write_text(EXITING)
    running = launch(
        "work", "--name", "good", "--name", "bad", "--run", "handlers:exits", "--poll", "200ms",
        *sqlite_target.args(),
    )  # fmt: skip
    running.wait_for(
        lambda: {row.status for row in db.rows()} == {WorkStatus.FAILED}, "every due tick run"
    )
    assert running.process.poll() is None  # sys.exit() in a handler ended neither loop nor command
    code, _ = running.stop(signal.SIGTERM)
    assert code == 0, running.err
    assert "worker stopped after 9 claims" in running.err
    assert only_handler_tracebacks(running.err) == 9  # 'good' exits; 'bad' raises


@pytest.mark.slow
@pytest.mark.parametrize("command", ["schedule", "work"])
def test_a_database_away_at_start_up_is_an_outage_not_an_exit(
    maria_db: Db, tmp_path: Path, launch: Callable[..., Running], command: str
) -> None:
    from .proxy import Proxy

    url = sa.make_url(maria_db.url)
    proxy = Proxy(url.host or "127.0.0.1", url.port or 3306)
    try:
        proxy.cut()
        config = write_config(tmp_path, FAST)
        (tmp_path / "handlers.py").write_text(HANDLERS)
        run = ["--run", "handlers:handle"] if command == "work" else []
        running = launch(
            command, "-c", config, *run, "--db", proxy.url_for(maria_db.url),
            "--table", maria_db.table,
        )  # fmt: skip
        running.wait_for_log("retrying with backoff")
        time.sleep(2)
        assert running.process.poll() is None  # still waiting for its database
        assert running.err.count("retrying with backoff") == 1  # logged once, not per attempt
        proxy.restore()
        running.wait_for_log("started on", timeout=60)
        assert "works again" in running.err
        if command == "schedule":
            running.wait_for(lambda: maria_db.count() > 0, "rows created after the outage")
        code, _ = running.stop(signal.SIGTERM)
        assert code == 0, running.err
        assert "Traceback" not in running.err
    finally:
        proxy.close()


def test_a_stop_during_a_start_up_outage_exits_cleanly(
    maria_db: Db, tmp_path: Path, launch: Callable[..., Running]
) -> None:
    from .proxy import Proxy

    url = sa.make_url(maria_db.url)
    proxy = Proxy(url.host or "127.0.0.1", url.port or 3306)
    try:
        proxy.cut()
        running = launch(
            "schedule", "-c", write_config(tmp_path, FAST), "--db", proxy.url_for(maria_db.url),
            "--table", maria_db.table,
        )  # fmt: skip
        running.wait_for_log("retrying with backoff")
        code, took = running.stop(signal.SIGTERM)
        assert code == 0, running.err
        assert took < PROMPTLY
        assert "SIGTERM received before the database came back" in running.err
    finally:
        proxy.close()


def test_work_runs_each_works_own_function_several_at_once(target: Target, tmp_path: Path) -> None:
    """``--run NAME=module:function`` per work, ``--concurrency``; the works come from the pairs."""
    db = target.create()
    assert due_ticks(db) == 9
    (tmp_path / "handlers.py").write_text(HANDLERS)
    result = worksync(
        "work", "--run", "good=handlers:shard", "--run", "bad=handlers:broken_shard",
        "--concurrency", "3", "--once", *target.args(), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "ran 9 claims of bad, good" in result.stdout
    good, bad = db.rows(name="good"), db.rows(name="bad")
    assert {row.status for row in good} == {WorkStatus.SUCCESS}
    ran = sorted((tmp_path / "ran-good").read_text().splitlines())
    assert ran == sorted(f"{row.sequence}|{row.slot}|1" for row in good)  # slots 0 and 1
    assert {row.slot for row in good} == {0, 1}
    assert {row.error for row in bad} == {
        f"RuntimeError: shard 0 down at {row.sequence}" for row in bad
    }
    assert not (tmp_path / "ran-bad").exists()


def test_work_takes_its_concurrency_from_the_config(
    sqlite_target: Target, tmp_path: Path, launch: Callable[..., Running]
) -> None:
    db = sqlite_target.create()
    due_ticks(db)  # three due ticks of 'good', two rows each
    (tmp_path / "handlers.py").write_text(HANDLERS)
    config = write_config(tmp_path, WORKS + "\n[worker]\nconcurrency = 2\n")
    running = launch(
        "work", "--config", config, "--name", "good", "--run", "handlers:slow",
        *sqlite_target.args(),
    )  # fmt: skip
    running.wait_for_log("2 claims at once")

    def held() -> int:
        return len(db.rows(name="good", status=WorkStatus.RUNNING))

    running.wait_for(lambda: held() == 2, "two claims running")
    time.sleep(1.5)  # slow() sleeps a minute: with two threads busy nothing more is claimed
    assert held() == 2
    running.process.kill()


def test_work_without_a_config_polls_the_named_works(sqlite_target: Target, tmp_path: Path) -> None:
    db = sqlite_target.create()
    due_ticks(db)
    (tmp_path / "handlers.py").write_text(HANDLERS)
    result = worksync(
        "work", "--name", "good", "--run", "handlers:handle", "--once",
        *sqlite_target.args(), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "ran 6 claims of good" in result.stdout
    assert {row.status for row in db.rows(name="bad")} == {WorkStatus.QUEUED}


def test_work_runs_until_a_signal_then_stops_cleanly(
    target: Target, tmp_path: Path, launch: Callable[..., Running]
) -> None:
    db = target.create()
    due_ticks(db)
    (tmp_path / "handlers.py").write_text(HANDLERS)
    config = write_config(tmp_path, WORKS)
    running = launch(
        "work", "--config", config, "--name", "good", "--run", "handlers:handle",
        "--poll", "200ms", *target.args(),
    )  # fmt: skip
    running.wait_for_log("worker ")
    running.wait_for(
        lambda: {row.status for row in db.rows(name="good")} == {WorkStatus.SUCCESS},
        "every due tick of 'good' done",
    )
    code, took = running.stop(signal.SIGTERM)
    assert code == 0, running.err
    assert took < PROMPTLY
    assert "worker stopped after 6 claims" in running.err
    assert {row.status for row in db.rows(name="bad")} == {WorkStatus.QUEUED}  # not --name'd


HUNG = [("1", "slow"), ("3", "slow"), ("3", "aslow")]
"""Concurrency and function: one claim on the loop's thread, three on threads, three tasks."""


@pytest.mark.parametrize(("concurrency", "function"), HUNG)
def test_a_stop_waits_the_drain_then_records_hung_claims_shut_down_and_exits_3(
    every_target: Target,
    tmp_path: Path,
    launch: Callable[..., Running],
    concurrency: str,
    function: str,
) -> None:
    target = every_target
    db = target.create()
    due_ticks(db)
    (tmp_path / "handlers.py").write_text(HANDLERS)
    running = launch(
        "work", "--name", "good", "--run", f"handlers:{function}", "--drain", "2s",
        "--concurrency", concurrency, *target.args(),
    )  # fmt: skip
    running.wait_for((tmp_path / "started").exists, "the handler started")
    time.sleep(0.5)  # with --concurrency 3, let the other claims start too
    code, took = running.stop(signal.SIGTERM)
    assert code == 3, running.err
    assert took < 2 + 5  # the drain, and time to record and exit
    assert "waiting up to 2s for running claims" in running.err
    assert "recorded FAILED (shut down)" in running.err
    hung = [row for row in db.rows(name="good") if row.started_at is not None]
    assert len(hung) == int(concurrency)
    assert {row.status for row in hung} == {WorkStatus.FAILED}
    assert all(row.error.startswith("shut down: still running 2 s after") for row in hung)


@pytest.mark.parametrize(("concurrency", "function"), HUNG)
def test_a_second_signal_quits_at_once_recording_the_running_claims(
    every_target: Target,
    tmp_path: Path,
    launch: Callable[..., Running],
    concurrency: str,
    function: str,
) -> None:
    """Even with hung handlers on threads of their own, which once kept the process alive."""
    target = every_target
    db = target.create()
    due_ticks(db)
    (tmp_path / "handlers.py").write_text(HANDLERS)
    running = launch(
        "work", "--name", "good", "--run", f"handlers:{function}", "--concurrency", concurrency,
        *target.args(),
    )  # fmt: skip
    running.wait_for((tmp_path / "started").exists, "the handler started")
    time.sleep(0.5)
    running.process.send_signal(signal.SIGTERM)
    running.wait_for_log("waiting up to 30s for running claims")
    assert running.process.poll() is None  # still waiting for the handlers
    code, took = running.stop(signal.SIGTERM)
    assert code == 1
    assert took < 3.0  # 2 s on a quiet machine: 1 s to record, then the exit
    assert "worksync: stopped at once" in running.err
    assert "the running claims were recorded FAILED (shut down)" in running.err
    assert "Traceback" not in running.err
    hung = [row for row in db.rows(name="good") if row.started_at is not None]
    assert len(hung) == int(concurrency)
    assert {row.status for row in hung} == {WorkStatus.FAILED}, running.err


# -- status --------------------------------------------------------------------------

TICK_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\s+(\S+)\s+" + r"(\d+)\s+" * 8 + r"(\S+)(?: +(.+))?$",
    re.M,
)


def test_status_prints_every_figure_of_a_known_history(target: Target, tmp_path: Path) -> None:
    db = target.create()
    test_ledger.history(db)  # 2026-01-01, works a and b every 10 s (see test_ledger)
    result = worksync(
        "status", "--since", "2026-01-01T00:00:00Z", "--until", "2026-01-01 00:00:35",
        *target.args(), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = TICK_LINE.findall(result.stdout)
    ticks = {(m[1], m[0][-2:]): (*map(int, m[2:10]), m[10]) for m in lines}
    errors = {(m[1], m[0][-2:]): m[11] for m in lines if m[11]}
    assert errors == {("a", "10"): "boom", ("a", "20"): "lease expired (worker lost)"}
    assert ticks == {
        ("a", "10"): (2, 2, 0, 0, 1, 1, 0, 0, "1s"),
        ("a", "20"): (2, 2, 0, 0, 0, 0, 1, 1, "2s"),  # one lost worker, one missed slot
        ("a", "30"): (2, 2, 1, 0, 1, 0, 0, 0, "5s"),  # one still queued
        ("b", "10"): (1, 1, 0, 0, 1, 0, 1, 0, "7s"),  # recovered, then done
        ("b", "20"): (1, 1, 0, 0, 0, 0, 0, 1, "-"),
        ("b", "30"): (1, 1, 1, 0, 0, 0, 0, 0, "-"),
    }
    summary = {
        line.split()[0]: line.split()[1:]
        for line in result.stdout.split("\n\nwork ", 1)[1].splitlines()[1:]
    }
    # due, ahead, claimed, succeeded, failed, recovered, missed, success, lag p50, lag p95
    assert summary == {
        "a": ["3", "0", "4", "2", "1", "1", "1", "50.0%", "2s", "4.7s"],
        "b": ["3", "0", "1", "1", "0", "1", "1", "50.0%", "7s", "7s"],
    }
    only_a = worksync(
        "status", "--name", "a", "--since", "2026-01-01T00:00:15Z", "--until",
        "2026-01-01T00:00:25Z", *target.args(), cwd=tmp_path,
    )  # fmt: skip
    assert [(m[1], m[0]) for m in TICK_LINE.findall(only_a.stdout)] == [
        ("a", "2026-01-01 00:00:20")
    ]


def test_status_of_an_empty_ledger_says_so(sqlite_target: Target, tmp_path: Path) -> None:
    sqlite_target.create()
    result = worksync("status", *sqlite_target.args(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"no ticks of every work in table {sqlite_target.table!r}")


def test_status_watch_refreshes_until_interrupted(
    sqlite_target: Target, tmp_path: Path, launch: Callable[..., Running]
) -> None:
    db = sqlite_target.create()
    due_ticks(db)
    running = launch("status", "--watch", "--every", "200ms", *sqlite_target.args())
    running.wait_for(lambda: running.out.count("refreshed") >= 3, "three refreshes", 20)
    code, took = running.stop(signal.SIGINT)
    assert code == 0, running.err
    assert took < PROMPTLY
    assert "good" in running.out
    assert running.err == ""


# -- prune ---------------------------------------------------------------------------


def test_prune_deletes_old_finished_rows_and_refuses_less_than_two_days(
    target: Target, tmp_path: Path
) -> None:
    db = target.create()
    old = test_prune.history(db, days_ago=10)
    recent = test_prune.history(db, days_ago=3, name="recent")
    before = db.count()  # the finished rows, and the queued rows after them
    too_short = worksync("prune", "--older-than", "1d", *target.args(), cwd=tmp_path)
    assert too_short.returncode == 2
    assert "at least 2 days" in one_line_error(too_short)
    assert db.count() == before

    result = worksync(
        "prune", "--older-than", "7d", "--batch-size", "3", *target.args(), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert f"pruned {len(old)} rows of table {target.table!r}" in result.stdout
    assert "more than 7d ago" in result.stdout
    assert db.count() == before - len(old)
    assert {row.id for row in db.rows()} >= set(recent)
    assert not {row.id for row in db.rows()} & set(old)


# -- bad input -----------------------------------------------------------------------

CONFIGS = {
    "unknown_key": '[[works]]\nname = "a"\ncron = "@every 1s"\nleese = "1h"\n',
    "unknown_section": '[shceduler]\ninterval = "1s"\n',
    "bad_cron": '[[works]]\nname = "nightly"\ncron = "61 * * * *"\n',
    "bad_duration": '[scheduler]\ninterval = "soon"\n[[works]]\nname = "a"\ncron = "@daily"\n',
    "short_retention": '[scheduler]\nretention = "1d"\n',
    "good": FAST,
    "bad_concurrency": FAST + '\n[worker]\nconcurrency = "4"\n',
}

BAD_INPUT = [
    (["schedule", "-c", "unknown_key"], ["unknown_key.toml", "'leese'", "[[works]] #1 ('a')"]),
    (["schedule", "-c", "unknown_section"], ["unknown_section.toml", "'shceduler'"]),
    (["schedule", "-c", "bad_cron"], ["bad_cron.toml", "'nightly'", "cron '61 * * * *'"]),
    (["schedule", "-c", "bad_duration"], ["bad_duration.toml", "[scheduler] interval", "'soon'"]),
    (["schedule", "-c", "short_retention"], ["short_retention.toml", "retention (1d)", "under 2d"]),
    (["schedule", "-c", "missing"], ["missing.toml", "cannot read"]),
    (["schedule", "--db", "DB"], ["--config"]),
    (["status", "--since", "5x", "--db", "DB"], ["--since", "'5x'"]),
    (["status", "--since", "1h", "--until", "2h", "--db", "DB"], ["--until", "not after --since"]),
    (
        ["work", "--name", "a", "--run", "handlers:handle", "--poll", "soon", "--db", "DB"],
        ["--poll", "'soon'"],
    ),
    (["prune", "--older-than", "1d", "--db", "DB"], ["--older-than", "at least 2 days"]),
    (["prune", "--older-than", "7d", "--batch-size", "0", "--db", "DB"], ["--batch-size"]),
    (["status"], ["no database given", "--db", "WORKSYNC_DATABASE_URL"]),
    (
        ["schedule", "-c", "good"],
        ["no database given", "--db", "WORKSYNC_DATABASE_URL", "[database]"],
    ),
    (["status", "--db", "DB", "--table", "works; drop table x"], ["--table", "table name"]),
    (
        ["status", "--db", f"mysql//root:{PASSWORD}@127.0.0.1/test"],
        ["--db is not a SQLAlchemy URL"],
    ),
    (["status", "--db", "nosuchdb://x/y"], ["unknown database dialect"]),
    (
        ["work", "--name", "a", "--run", "handlers", "--db", "DB"],
        ["--run 'handlers'", "module:function"],
    ),
    (
        ["work", "--name", "a", "--run", "nosuchmodule:f", "--db", "DB"],
        ["no module named 'nosuchmodule'"],
    ),
    (
        ["work", "--name", "a", "--run", "handlers:nope", "--db", "DB"],
        ["'handlers' has no attribute 'nope'"],
    ),
    (["work", "--name", "a", "--run", "handlers:VALUE", "--db", "DB"], ["is int, not a function"]),
    (["work", "--run", "handlers:handle", "--db", "DB"], ["no works to run", "--name"]),
    (
        ["work", "--name", "a", "--run", "handlers:handle", "--run", "handlers:slow", "--db", "DB"],
        ["--run 'handlers:handle' and --run 'handlers:slow'", "NAME=MODULE:FUNCTION"],
    ),
    (
        ["work", "--run", "a=handlers:handle", "--run", "a=handlers:slow", "--db", "DB"],
        ["'a' already has a function"],
    ),
    (
        ["work", "--name", "a", "--run", "b=handlers:handle", "--db", "DB"],
        ["'b' is not among the works to run"],
    ),
    (
        ["work", "--name", "a", "--name", "b", "--run", "a=handlers:handle", "--db", "DB"],
        ["no function for work 'b'", "--run b=MODULE:FUNCTION"],
    ),
    (
        ["work", "--run", "a=handlers:nope", "--db", "DB"],
        ["'handlers' has no attribute 'nope'"],
    ),
    (
        ["work", "--name", "a", "--run", "handlers:handle", "--concurrency", "0", "--db", "DB"],
        ["--concurrency", "'0'", "1 to 1024"],
    ),
    (
        ["work", "-c", "bad_concurrency", "--run", "handlers:handle", "--db", "DB"],
        ["[worker] concurrency", "1 to 1024", "'4'"],
    ),
    (
        ["work", "-c", "good", "--name", "nope", "--run", "handlers:handle", "--db", "DB"],
        ["--name 'nope'", "good.toml", "tick"],
    ),
    (
        ["work", "--name", "a", "--run", "handlers:handle", "--worker-id", "x ", "--db", "DB"],
        ["worker_id"],
    ),
    (["demo", "--table", "works; drop"], ["--table", "works; drop"]),
    (["demo", "--db", "not a url"], ["--db is not a SQLAlchemy URL"]),
    (["frobnicate"], ["invalid choice: 'frobnicate'"]),
    ([], ["required: COMMAND"]),
]


@pytest.mark.parametrize(("args", "words"), BAD_INPUT, ids=[" ".join(a[:3]) for a, _ in BAD_INPUT])
def test_bad_input_is_exit_2_and_one_clear_line(
    sqlite_target: Target, tmp_path: Path, args: list[str], words: list[str]
) -> None:
    sqlite_target.create()
    (tmp_path / "handlers.py").write_text(HANDLERS)
    for name, body in CONFIGS.items():
        write_config(tmp_path, body, f"{name}.toml")
    args = [
        sqlite_target.url if arg == "DB" else f"{arg}.toml" if args[i - 1 : i] == ["-c"] else arg
        for i, arg in enumerate(args)
    ]
    result = worksync(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    line = one_line_error(result)
    for word in words:
        assert word in line, line
    assert PASSWORD not in result.stdout + result.stderr
    assert sqlite_target.db.count() == 0  # nothing was written
    assert not (tmp_path / "worksync-demo.db").exists()


# -- where the database comes from, and passwords -------------------------------------


@pytest.mark.slow
def test_db_option_then_environment_then_config_file(tmp_path: Path) -> None:
    urls = {}
    for name in ("option", "environ", "file"):
        folder = tmp_path / name
        folder.mkdir()
        urls[name] = sqlite_url(folder)
    config = write_config(tmp_path, f'[database]\nurl = "{urls["file"]}"\ntable = "from_file"\n')
    env = environment(WORKSYNC_DATABASE_URL=urls["environ"], WORKSYNC_TABLE="from_env")
    option = worksync(
        "check", "-c", config, "--db", urls["option"], "--table", "from_option",
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert f"table 'from_option' on {urls['option']}" in option.stdout
    environ = worksync("check", "-c", config, cwd=tmp_path, env=env)
    assert f"table 'from_env' on {urls['environ']}" in environ.stdout
    file = worksync("check", "-c", config, cwd=tmp_path)
    assert f"table 'from_file' on {urls['file']}" in file.stdout


@pytest.fixture
def postgresql(_backends: dict[str, Any]) -> Iterator[Target]:
    yield from _target(require(_backends, "postgresql"))


@pytest.mark.slow
def test_a_password_is_masked_in_everything_printed(
    postgresql: Target, tmp_path: Path, launch: Callable[..., Running]
) -> None:
    """The local PostgreSQL trusts 127.0.0.1, so a URL with a password connects."""
    url = postgresql.engine.url.set(password=PASSWORD).render_as_string(hide_password=False)
    args = ["--db", url, "--table", postgresql.table]
    masked = postgresql.engine.url.set(password=PASSWORD).render_as_string()
    assert "***" in masked
    outputs = []
    for command in (["migrate"], ["check"], ["status"], ["prune", "--older-than", "7d"]):
        result = worksync(*command, *args, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert masked in result.stdout
        outputs.append(result.stdout + result.stderr)
    config = write_config(tmp_path, FAST)
    running = launch("schedule", "-c", config, *args)
    running.wait_for_log("scheduler started")
    assert masked in running.err
    assert running.stop(signal.SIGTERM)[0] == 0
    from_env = worksync(
        "check", "--table", postgresql.table, cwd=tmp_path,
        env=environment(WORKSYNC_DATABASE_URL=url),
    )  # fmt: skip
    assert masked in from_env.stdout
    outputs += [running.out + running.err, from_env.stdout + from_env.stderr]
    for output in outputs:
        assert PASSWORD not in output


def test_a_refused_password_is_not_echoed(mariadb: Backend, tmp_path: Path) -> None:
    url = mariadb.engine.url.set(password=PASSWORD).render_as_string(hide_password=False)
    config = write_config(tmp_path, f'[database]\nurl = "{url}"\n' + FAST)
    for args in (["check", "--db", url], ["status", "-c", config], ["schedule", "-c", config]):
        result = worksync(*args, cwd=tmp_path)
        assert result.returncode == 1
        line = one_line_error(result)
        assert "Access denied" in line
        assert PASSWORD not in result.stdout + result.stderr


QUERY_PASSWORDS = [("mysql", "passwd"), ("mysql", "password"), ("postgresql", "password")]
"""The query-string keys each driver takes a password from (mysqlclient: both; psycopg: one)."""


@dataclass(frozen=True)
class Refused:
    """A URL with ``PASSWORD`` in its query string (and none before the '@'), and what the
    server says when it refuses it."""

    server: str
    key: str
    url: str
    refusal: str


@pytest.fixture(params=QUERY_PASSWORDS, ids="-".join)
def refused(request: pytest.FixtureRequest, _backends: dict[str, Any]) -> Refused:
    """MariaDB's root has no password, so any password is refused. The local PostgreSQL trusts
    127.0.0.1 and checks none, so there a user that does not exist is refused instead."""
    server, key = request.param
    url = require(_backends, server).engine.url
    if server == "postgresql":
        url = url.set(username="ws_no_such_role")
    url = url.update_query_dict({key: PASSWORD})
    assert url.password is None  # the password is only in the query string
    refusal = "Access denied" if server == "mysql" else 'role "ws_no_such_role" does not exist'
    return Refused(server, key, url.render_as_string(hide_password=False), refusal)


def test_a_refused_password_in_the_query_string_is_not_echoed(
    refused: Refused, tmp_path: Path, launch: Callable[..., Running]
) -> None:
    assert PASSWORD in refused.url
    config = write_config(tmp_path, f'[database]\nurl = "{refused.url}"\n' + FAST)
    for args in (["check", "--db", refused.url], ["status", "-c", config]):
        result = worksync(*args, cwd=tmp_path)
        assert result.returncode == 1
        assert refused.refusal in one_line_error(result)
        assert PASSWORD not in result.stdout + result.stderr
    if refused.server == "mysql":  # refused credentials end the command
        result = worksync("schedule", "-c", config, cwd=tmp_path)
        assert result.returncode == 1
        assert refused.refusal in one_line_error(result)
        output = result.stdout + result.stderr
    else:  # psycopg gives a refused login no SQLSTATE: an outage, waited out
        running = launch("schedule", "-c", config)
        running.wait_for_log("retrying with backoff")
        assert f"{refused.key}=***" in running.err
        assert refused.refusal in running.err
        assert running.stop(signal.SIGTERM)[0] == 0
        output = running.out + running.err
    assert PASSWORD not in output


def test_the_secrets_mask_catches_a_driver_message_that_echoes_the_url() -> None:
    from worksync_sa.cli.options import Secrets

    secrets = Secrets()
    secrets.add_url(sa.make_url("mysql+mysqldb://app:p%40ss%2Fword@db/app"))
    echoed = "cannot connect to mysql://app:p%40ss%2Fword@db/app (password p@ss/word)"
    assert secrets.mask(echoed) == "cannot connect to mysql://app:***@db/app (password ***)"


def test_help_names_every_command(tmp_path: Path) -> None:
    result = worksync("--help", cwd=tmp_path)
    assert result.returncode == 0
    for command in ("migrate", "check", "schedule", "work", "status", "prune", "demo"):
        assert command in result.stdout
    assert worksync("status", "--help", cwd=tmp_path).returncode == 0


def test_now_is_utc_in_the_status_header(sqlite_target: Target, tmp_path: Path) -> None:
    sqlite_target.create()
    result = worksync("status", "--since", "30m", *sqlite_target.args(), cwd=tmp_path)
    match = re.search(r"from (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) to the end \(UTC\)", result.stdout)
    assert match, result.stdout
    since = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)
    expected = datetime.now(timezone.utc) - timedelta(minutes=30)
    assert abs(since - expected) < timedelta(seconds=30)


def test_a_table_made_outside_the_migrations_is_explained(
    sqlite_target: Target, tmp_path: Path
) -> None:
    sqlite_target.create()  # create_all: no revision recorded
    check = worksync("check", *sqlite_target.args(), cwd=tmp_path)
    assert check.returncode == 1
    assert "created outside these migrations" in check.stdout
    migrate = worksync("migrate", *sqlite_target.args(), cwd=tmp_path)
    assert migrate.returncode == 1
    assert "created outside these migrations" in one_line_error(migrate)


def test_migrate_adopts_the_table_of_the_go_original(target: Target, tmp_path: Path) -> None:
    from .test_migrations import original_table

    original_table(target.backend, target.table)
    check = worksync("check", *target.args(), cwd=tmp_path)
    assert check.returncode == 1
    assert "is the table of worksync (Go): `worksync migrate` adopts it in place" in check.stdout
    migrate = worksync("migrate", *target.args(), cwd=tmp_path)
    assert migrate.returncode == 0, migrate.stderr
    assert "adopted the table of worksync (Go) in place, every row kept" in migrate.stdout
    assert worksync("check", *target.args(), cwd=tmp_path).returncode == 0
    assert len(target.db.rows()) == 3
    again = worksync("migrate", *target.args(), cwd=tmp_path)
    assert "already at head" in again.stdout
    # Its history shows in the ledger, each tick at the time its label reads (as UTC).
    status = worksync(
        "status", "--since", "2026-01-01T00:00:00Z", "--until", "2026-01-02T00:00:00Z",
        *target.args(), cwd=tmp_path,
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    lines = {(m[1], m[0]): tuple(map(int, m[2:10])) for m in TICK_LINE.findall(status.stdout)}
    # max_run, created, queued, running, succeeded, failed, recovered, missed
    assert lines == {
        ("report", "2026-01-01 10:00:00"): (2, 2, 0, 0, 1, 1, 0, 0),
        ("Report", "2026-01-01 11:00:00"): (1, 1, 1, 0, 0, 0, 0, 0),
    }
