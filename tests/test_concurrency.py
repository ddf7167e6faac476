"""The promise under real concurrency: OS processes racing on a real server.

At most ``max_run`` claims succeed per tick, each on a distinct row, however
many processes race; and any number of schedulers create exactly ``max_run``
rows per tick. Run on MariaDB first, then PostgreSQL and SQLite.
"""

from __future__ import annotations

import multiprocessing
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from worksync_sa import Scheduler, SchedulerConfig, Work, WorkStatus, default_sequence

from . import racers
from .conftest import Db

UTC = timezone.utc
T0 = datetime(2026, 3, 1, tzinfo=UTC)
RACERS = 16
TICKS = 50
MAX_RUN = 5

pytestmark = pytest.mark.slow


def run_processes(target: Any, args_for: list[tuple[Any, ...]], timeout: float = 240) -> list[Any]:
    """Start one spawned process per argument tuple and collect what each reports."""
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    barrier = ctx.Barrier(len(args_for))
    procs = [ctx.Process(target=target, args=(*args, barrier, results)) for args in args_for]
    for proc in procs:
        proc.start()
    reports = []
    try:
        for _ in procs:
            status, value = results.get(timeout=timeout)
            assert status == "ok", f"a racer failed: {value}"
            reports.append(value)
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
    assert all(proc.exitcode == 0 for proc in procs)
    return reports


def test_racing_workers_never_exceed_max_run(db: Db) -> None:
    work = Work("race", "@every 10s", max_run=MAX_RUN)
    config = SchedulerConfig(lookahead=timedelta(seconds=10 * TICKS), interval="10s")
    Scheduler(db.engine, [work], config, table=db.table).run_pass(T0)
    sequences = [default_sequence(T0 + timedelta(seconds=10 * n)) for n in range(1, TICKS + 1)]
    assert db.count() == TICKS * MAX_RUN

    reports = run_processes(racers.race_acquire, [(db.url, db.table, "race", sequences)] * RACERS)

    wins = [win for report in reports for win in report]
    per_tick = Counter(sequence for sequence, _ in wins)
    assert set(per_tick) == set(sequences)
    assert max(per_tick.values()) == MAX_RUN  # never more ...
    assert min(per_tick.values()) == MAX_RUN  # ... and with 16 racers, every row is taken
    ids = [row_id for _, row_id in wins]
    assert len(ids) == len(set(ids)) == TICKS * MAX_RUN  # each claim on its own row
    # The table agrees with what the processes report.
    rows = db.rows()
    assert Counter(r.status for r in rows) == {WorkStatus.SUCCESS: TICKS * MAX_RUN}
    assert {r.id for r in rows} == set(ids)


def test_racing_due_claims_never_exceed_max_run(db: Db) -> None:
    work = Work("due", "@every 10s", max_run=3, grace=timedelta(hours=1))
    config = SchedulerConfig(lookahead=timedelta(seconds=10 * TICKS), interval="10s")
    Scheduler(db.engine, [work], config, table=db.table).run_pass(T0)
    now = T0 + timedelta(seconds=10 * TICKS)

    reports = run_processes(racers.race_acquire_due, [(db.url, db.table, "due", now)] * RACERS)

    wins = [win for report in reports for win in report]
    per_tick = Counter(sequence for sequence, _ in wins)
    assert len(per_tick) == TICKS
    assert set(per_tick.values()) == {3}
    assert len({row_id for _, row_id in wins}) == len(wins) == TICKS * 3


def test_racing_schedulers_create_exactly_max_run_rows(db: Db) -> None:
    works = [("a", "*/5 * * * * *", 3), ("b", "@every 7s", 2), ("c", "* * * * *", 4)]
    # Overlapping windows: each pass re-covers most of the previous one.
    passes = [T0 + timedelta(seconds=15 * n) for n in range(8)]
    schedulers = 4

    reports = run_processes(
        racers.race_schedule, [(db.url, db.table, works, passes, 120.0)] * schedulers
    )

    rows = db.rows()
    assert sum(reports) == len(rows)  # every insert counted once, by exactly one scheduler
    per_tick = Counter((r.name, r.sequence) for r in rows)
    budget = {name: max_run for name, _, max_run in works}
    for (name, _), count in per_tick.items():
        assert count == budget[name]
    slots = Counter((r.name, r.sequence, r.slot) for r in rows)
    assert set(slots.values()) == {1}
    # And the ticks are the ones a single scheduler would have planned.
    blueprints = [Work(n, c, m) for n, c, m in works]
    planner = Scheduler(db.engine, blueprints, SchedulerConfig(lookahead="120s", interval="1s"))
    expected = {
        (row.name, row.sequence)
        for now in passes
        for row in planner.plan(now, now + timedelta(seconds=120))
    }
    assert set(per_tick) == expected
