"""The operators' commands, run as ``worksync`` processes, beside a fleet that honours them.

A ``worksync schedule`` process and a scheduler in this process (on an
engine of its own) make the ticks; two workers, each on its own engine,
claim them. The commands act while all of them run, with no restart, and
every expectation is read from the tables with plain SQL.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from worksync_sa import (
    NewRow,
    Scheduler,
    SchedulerConfig,
    ScheduleRepository,
    Work,
    Worker,
    WorkStatus,
    WorkSync,
    upgrade,
)
from worksync_sa.models import as_utc, table_named

from . import test_cli
from .test_cli import Running, Target, one_line_error, worksync, write_config

target = test_cli.target  # a SQLite file of the test's own, then MariaDB
every_target = test_cli.every_target  # and PostgreSQL
launch = test_cli.launch

CONFIG = """
[scheduler]
lookahead = "3s"
interval = "1s"

[[works]]
name = "tick"
cron = "@every 1s"
max_run = 2
"""
WORK = Work("tick", "@every 1s", max_run=2)
BY = ("--by", "ann@test")


def db_now(engine: sa.Engine) -> Any:
    from worksync_sa._sql.dialect import read_clock

    with engine.connect() as conn:
        return read_clock(conn)


def queued_ahead(target: Target) -> int:
    t = table_named(target.table)
    with target.engine.connect() as conn:
        select = sa.select(sa.func.count()).where(
            t.c.name == "tick",
            t.c.status == WorkStatus.QUEUED.value,
            t.c.tick_at > db_now(target.engine),
        )
        return int(conn.execute(select).scalar_one())


def rows_of(target: Target, label: str) -> list[Any]:
    t = table_named(target.table)
    with target.engine.connect() as conn:
        select = sa.select(t).where(t.c.name == "tick", t.c.sequence == label).order_by(t.c.slot)
        return list(conn.execute(select).all())


def ledger(target: Target) -> list[tuple[Any, ...]]:
    actions = sa.table(
        f"{target.table}_actions",
        sa.column("id"),
        sa.column("action"),
        sa.column("tick"),
        sa.column("actor"),
        sa.column("reason"),
    )
    c = actions.c
    with target.engine.connect() as conn:
        select = sa.select(c.action, c.tick, c.actor, c.reason).order_by(c.id)
        return [tuple(row) for row in conn.execute(select)]


def eventually(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"no {what} after {timeout}s"
        time.sleep(0.1)


def test_pause_run_now_retry_and_resume_reach_a_running_fleet(
    every_target: Target, tmp_path: Path, launch: Callable[..., Running]
) -> None:
    target = every_target
    upgrade(target.engine, table=target.table)
    config = write_config(tmp_path, CONFIG)
    where = ["-c", config, *target.args()]

    def command(*args: str) -> str:
        result = worksync(*args, *where, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        return result.stdout

    claims: list[tuple[str, int | None, int]] = []
    lock = threading.Lock()

    def handler(claim: Any) -> None:
        with lock:
            claims.append((claim.sequence, claim.slot, claim.attempt))
        if claim.sequence.startswith("run-now") and claim.slot == -1 and claim.attempt == 1:
            raise RuntimeError("first attempt fails")

    engines = [sa.create_engine(target.url) for _ in range(3)]
    process = launch("schedule", *where)
    process.wait_for_log("scheduler started")
    here = Scheduler(
        engines[0], [WORK], SchedulerConfig(lookahead="3s", interval="1s"), table=target.table
    )
    workers = [
        Worker(engine, [WORK], handler, table=target.table, poll="200ms") for engine in engines[1:]
    ]
    try:
        here.start()
        for worker in workers:
            worker.start()
        eventually(lambda: len(claims) >= 4, "claims of the cron's ticks")

        out = command("pause", "tick", "--reason", "deploy", *BY)
        assert "paused work 'tick' until resumed" in out
        for _ in range(3):  # every pass of both schedulers since: nothing queued ahead
            time.sleep(1.2)
            assert queued_ahead(target) == 0

        out = command("run-now", "tick", "--reason", "backfill", *BY)
        label = ledger(target)[-1][1]
        assert f"made tick {label!r}" in out
        assert "2 rows" in out
        eventually(
            lambda: all(r.status != WorkStatus.QUEUED for r in rows_of(target, label)),
            "run-now claimed",
        )
        eventually(
            lambda: all(r.status > WorkStatus.RUNNING for r in rows_of(target, label)),
            "run-now finished",
        )
        by_slot = {row.slot: row for row in rows_of(target, label)}
        assert (by_slot[-1].status, by_slot[-1].attempts) == (WorkStatus.FAILED, 1)
        assert (by_slot[-2].status, by_slot[-2].attempts) == (WorkStatus.SUCCESS, 1)

        out = command("retry", "tick", label, "--reason", "flaky", *BY)
        assert "1 failed row queued again" in out
        eventually(
            lambda: {r.slot: r.status for r in rows_of(target, label)}[-1] == WorkStatus.SUCCESS,
            "the retried run",
        )
        by_slot = {row.slot: row for row in rows_of(target, label)}
        assert (by_slot[-1].attempts, by_slot[-1].max_attempts) == (2, 2)
        with lock:
            assert sorted(c for c in claims if c[0] == label) == [
                (label, -2, 1),
                (label, -1, 1),
                (label, -1, 2),
            ]
        assert queued_ahead(target) == 0  # still paused

        command("resume", "tick", *BY)
        eventually(lambda: queued_ahead(target) > 0, "ticks after resume", timeout=10)
        resumed_at = as_utc(db_now(target.engine))
        eventually(
            lambda: any(
                seq not in (label,) and seq > resumed_at.strftime("%Y-%m-%d %H:%M:%S")
                for seq, _, _ in list(claims)
            ),
            "claims of the cron's ticks after resume",
        )

        listing = command("actions", "--name", "tick")
        for word in ("pause", "run-now", "retry", "resume", "ann@test", "deploy", "flaky"):
            assert word in listing
        upcoming = command("next", "tick", "-n", "3")
        assert "work 'tick' (not paused)" in upcoming
        assert len(upcoming.strip().splitlines()) == 5  # the heading, the table's header, 3 ticks
    finally:
        for worker in workers:
            worker.close()
        here.close()
        code, _ = process.stop(signal.SIGTERM)
        for engine in engines:
            engine.dispose()
    assert code == 0, process.err
    assert ledger(target) == [
        ("pause", None, "ann@test", "deploy"),
        ("run-now", label, "ann@test", "backfill"),
        ("retry", label, "ann@test", "flaky"),
        ("resume", None, "ann@test", ""),
    ]


def test_bad_input_exits_2_with_the_reason_and_writes_nothing(
    target: Target, tmp_path: Path
) -> None:
    upgrade(target.engine, table=target.table)
    config = write_config(tmp_path, CONFIG)
    where = ["-c", config, *target.args()]
    made = worksync("run-now", "tick", *where, cwd=tmp_path)  # known from the config file
    assert made.returncode == 0, made.stderr
    label = ledger(target)[0][1]
    before = rows_of(target, label)
    cases = {
        ("pause", "nope"): "work 'nope' is unknown",
        ("run-now", "nope"): "work 'nope' is unknown",
        ("pause", "tick", "--until", "banana"): "neither a duration from now",
        ("pause", "tick", "--reason", "x" * 300): "reason has 300 characters",
        ("pause", "tick", "--until", "2001-01-01T00:00:00Z"): "is not in the future",
        ("retry", "tick", "2001-01-01 00:00:00"): "has no tick",
        ("retry", "tick", label): "is still queued",
        ("resume", "tick"): "is not paused",
        ("next", "nope"): "work 'nope' is unknown",
    }
    for args, message in cases.items():
        result = worksync(*args, *where, cwd=tmp_path)
        assert result.returncode == 2, (args, result.stderr)
        assert message in one_line_error(result), args
    assert rows_of(target, label) == before
    assert [entry[0] for entry in ledger(target)] == ["run-now"]
    # A tick that succeeded is not retried.
    t = table_named(target.table)
    with target.engine.begin() as conn:
        conn.execute(sa.update(t).where(t.c.sequence == label).values(status=3, attempts=1))
    result = worksync("retry", "tick", label, *where, cwd=tmp_path)
    assert result.returncode == 2
    assert "succeeded" in one_line_error(result)
    assert [entry[0] for entry in ledger(target)] == ["run-now"]


def test_a_table_not_migrated_to_0006_is_exit_1_with_the_fix(
    target: Target, tmp_path: Path
) -> None:
    upgrade(target.engine, "worksync_0005", table=target.table)
    result = worksync(
        "pause", "tick", "-c", write_config(tmp_path, CONFIG), *target.args(), cwd=tmp_path
    )
    assert result.returncode == 1
    line = one_line_error(result)
    assert "worksync_0006" in line
    assert "worksync migrate" in line


def test_a_missed_tick_retried_past_grace_is_run_by_a_worker_process(
    target: Target, tmp_path: Path
) -> None:
    upgrade(target.engine, table=target.table)
    config = write_config(tmp_path, CONFIG)
    (tmp_path / "handlers.py").write_text("def handle(claim):\n    pass\n")
    where = ["-c", config, *target.args()]
    tick = as_utc(db_now(target.engine)).replace(microsecond=0) - timedelta(minutes=10)
    label = tick.strftime("%Y-%m-%d %H:%M:%S")
    with target.engine.begin() as conn:
        row = NewRow("tick", label, 0, tick, 300, 60, 1, max_run=2)
        ScheduleRepository(target.table).insert_queued(conn, [row])
    sync = WorkSync(target.engine, table=target.table)
    try:
        assert sync.recover() == 1  # missed
    finally:
        sync.close()

    refused = worksync("retry", "tick", label, *where, cwd=tmp_path)
    assert refused.returncode == 2
    assert "past its grace" in one_line_error(refused)
    done = worksync("retry", "tick", tick.isoformat(), "--past-grace", *BY, *where, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "moved past its grace" in done.stdout
    ran = worksync("work", "--run", "handlers:handle", "--once", *where, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    (row,) = rows_of(target, label)
    assert (row.status, row.attempts, row.slot) == (WorkStatus.SUCCESS, 1, -1)

    paused = worksync("pause", "tick", "--until", "2h", *BY, *where, cwd=tmp_path)
    assert paused.returncode == 0, paused.stderr
    upcoming = worksync("next", "tick", "-n", "2", *where, cwd=tmp_path)
    assert "PAUSED until" in upcoming.stdout
    assert upcoming.stdout.count("paused") == 2
    assert [entry[0] for entry in ledger(target)] == ["retry", "pause"]
