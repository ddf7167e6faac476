"""Schedulers that disagree, and budgets that must outlive retention, under real processes.

``test_settings`` checks each rule in one process with explicit instants;
here scheduler and worker processes race in real time (per-second works),
or step through simulated days in lockstep, on every backend.
"""

from __future__ import annotations

import multiprocessing
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from . import racers
from .conftest import Db

pytestmark = pytest.mark.slow

SECONDS = 10
WORKERS = 3


def race(
    db: Db, tmp_path: Path, schedulers: list[tuple[dict[str, Any], dict[str, Any]]]
) -> list[dict[str, int]]:
    """Scheduler processes (a work and a config each) and workers, for SECONDS; their reports."""
    ctx = multiprocessing.get_context("spawn")
    started = []
    for work, config in schedulers:
        results = ctx.Queue()
        args = (db.url, db.table, [work], config, SECONDS, None, results)
        started.append((ctx.Process(target=racers.run_scheduler, args=args), results))
    worker_work = {**schedulers[0][0], "cron": "* * * * * *"}  # look every second
    for number in range(WORKERS):
        results = ctx.Queue()
        log = str(tmp_path / f"worker-{number}.log")
        worker_args = (db.url, db.table, [worker_work], SECONDS, log, None, results)
        started.append((ctx.Process(target=racers.run_worker, args=worker_args), results))
    for process, _ in started:
        process.start()
    reports = []
    for process, results in started:
        status, value = results.get(timeout=120)
        assert status == "ok", value
        reports.append(value)
        process.join(timeout=30)
    return reports[: len(schedulers)]


def claims_per_instant(db: Db) -> Counter[datetime]:
    return Counter(r.tick_at for r in db.rows(name="w") if r.started_at is not None)


def config(**extra: Any) -> dict[str, Any]:
    return {"lookahead": "3s", "interval": "500ms", **extra}


def test_schedulers_disagreeing_on_max_run_never_exceed_the_larger(db: Db, tmp_path: Path) -> None:
    three = {"name": "w", "cron": "* * * * * *", "max_run": 3, "grace": 5}
    one = {**three, "max_run": 1}
    reports = race(db, tmp_path, [(three, config()), (one, config())])
    claimed = claims_per_instant(db)
    assert claimed
    assert max(claimed.values()) <= 3
    assert min(claimed.values()) >= 1  # they undo each other's upcoming slots, never a whole tick
    slots = Counter(r.tick_at for r in db.rows(name="w") if r.slot is not None)
    assert max(slots.values()) <= 3
    assert [report.get("disagreement", 0) for report in reports] == [1, 1]  # logged once, each


def test_a_rolling_change_of_the_sequence_function_never_doubles_a_tick(
    db: Db, tmp_path: Path
) -> None:
    work = {"name": "w", "cron": "* * * * * *", "grace": 5}
    reports = race(db, tmp_path, [(work, config()), (work, config(sequence=racers.tagged))])
    claimed = claims_per_instant(db)
    assert claimed
    assert max(claimed.values()) == 1
    per_label = Counter(r.sequence for r in db.rows(name="w") if r.started_at is not None)
    assert max(per_label.values()) == 1
    assert [report.get("disagreement", 0) for report in reports] == [1, 1]


def test_one_name_with_two_crons_never_doubles_a_tick_and_both_are_made(
    db: Db, tmp_path: Path
) -> None:
    twos = {"name": "w", "cron": "*/2 * * * * *", "grace": 5}
    threes = {**twos, "cron": "*/3 * * * * *"}
    reports = race(db, tmp_path, [(twos, config()), (threes, config())])
    claimed = claims_per_instant(db)
    assert max(claimed.values()) == 1
    made = {r.tick_at.second % 6 for r in db.rows(name="w")}
    assert {2, 3} <= made  # ticks only the first cron has, and ticks only the second has
    assert [report.get("disagreement", 0) for report in reports] == [1, 1]


def test_a_weekly_label_runs_once_a_week_under_racing_processes(db: Db) -> None:
    """Two schedulers (pruning at the two-day minimum) and two workers, fourteen mornings."""
    monday = datetime(2027, 1, 4, 5, 0, tzinfo=timezone.utc)  # later than the real clock
    mornings = [monday + timedelta(days=day) for day in range(14)]
    work = {"name": "report", "cron": "0 6 * * *", "grace": 3600}
    settings = {"lookahead": "2h", "interval": "1h", "retention": "2d", "sequence": racers.iso_week}
    args = [
        (db.url, db.table, role, [work], settings, mornings)
        for role in ("scheduler", "scheduler", "worker", "worker")
    ]
    from .test_concurrency import run_processes

    reports = run_processes(racers.race_days, args, timeout=300)
    runs = Counter(label for claims in reports for _, label in claims)
    assert runs == {"2027-W01": 1, "2027-W02": 1}
