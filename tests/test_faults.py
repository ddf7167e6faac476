"""Real processes, real kills: a worker or a scheduler dies with SIGKILL, clocks are skewed,
and five schedulers with sixteen workers are killed and restarted at random.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from worksync_sa import (
    Claim,
    ClaimLostError,
    Scheduler,
    SchedulerConfig,
    WorkStatus,
    WorkSync,
    default_sequence,
)
from worksync_sa.repository import ClaimedRow

from . import racers
from .conftest import Db

pytestmark = pytest.mark.slow
SPAWN = multiprocessing.get_context("spawn")


class Background:
    """A Scheduler running in a thread of the test process."""

    def __init__(self, db: Db, works: list[dict[str, Any]], **config: Any) -> None:
        self.scheduler = Scheduler(
            db.engine, racers.blueprints(works), SchedulerConfig(**config), table=db.table
        )

    def __enter__(self) -> Scheduler:
        self.scheduler.start()
        return self.scheduler

    def __exit__(self, *exc: object) -> None:
        self.scheduler.stop(timeout=30)


def wait_for(predicate: Any, timeout: float, step: float = 0.05) -> float:
    """Poll until ``predicate()``; returns the seconds it took."""
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout, "timed out"
        time.sleep(step)
    return time.monotonic() - started


def test_kill_9_a_worker_mid_run(db: Db) -> None:
    lease, interval = 2.0, 1.0
    works = [{"name": "k", "cron": "* * * * * *", "lease": int(lease), "grace": 3600}]
    with Background(db, works, lookahead="5s", interval=f"{interval:g}s"):
        claims = SPAWN.Queue()
        proc = SPAWN.Process(target=racers.hold_claim, args=(db.url, db.table, "k", claims))
        proc.start()
        held = claims.get(timeout=60)
        assert held is not None
        row_id, name, sequence, token, pid = held
        time.sleep(lease)  # past its first lease: only heartbeats keep it
        assert db.rows(id=row_id)[0].status == WorkStatus.RUNNING
        os.kill(pid, signal.SIGKILL)
        proc.join(10)

        took = wait_for(lambda: db.rows(id=row_id)[0].status != WorkStatus.RUNNING, 30)

    assert took <= lease + interval + 2.0  # within lease + one interval (+ slack for a busy box)
    (row,) = db.rows(id=row_id)
    assert (row.status, row.closed_by, row.error) == (
        WorkStatus.FAILED,
        "lease",
        "lease expired (worker lost)",
    )
    # A copy of the dead worker's claim (same row, same token) can write nothing.
    copy = Claim(WorkSync(db.engine, table=db.table), ClaimedRow(row_id, name, sequence, token))
    for late in (copy.success, copy.heartbeat, lambda: copy.fail("late")):
        with pytest.raises(ClaimLostError):
            late()
    assert db.rows(id=row_id) == [row]


def test_kill_9_the_scheduler_and_restart_it(db: Db) -> None:
    works = [{"name": "s", "cron": "* * * * * *", "max_run": 2}]
    config: dict[str, Any] = {"lookahead": "1s", "interval": "1s"}  # catch-up: 1.5 s
    results = SPAWN.Queue()
    proc = SPAWN.Process(
        target=racers.run_scheduler,
        args=(db.url, db.table, works, config, 3600.0, None, results),
    )
    proc.start()
    wait_for(lambda: db.count() > 0, 60)
    time.sleep(2)
    assert proc.pid is not None
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    horizon = max(r.tick_at for r in db.rows())
    time.sleep(4)  # over three intervals without a scheduler: longer than lookahead + catch-up

    restarted = Scheduler(
        db.engine, racers.blueprints(works), SchedulerConfig(**config), table=db.table
    )
    restarted.run_pass()
    report = restarted.last_pass
    assert report is not None
    floor = report.now - SchedulerConfig(**config).catchup

    rows = db.rows()
    per_tick = Counter(r.sequence for r in rows)
    assert set(per_tick.values()) == {2}  # no duplicates, no partial ticks
    ticks = sorted({r.tick_at for r in rows})
    first = ticks[0]
    expected_before = [
        first + timedelta(seconds=n) for n in range(int((horizon - first).total_seconds()) + 1)
    ]
    gap = racers.blueprints(works)[0].ticks(horizon, floor)
    after = racers.blueprints(works)[0].ticks(floor, report.now + timedelta(seconds=1))
    assert ticks == expected_before + after  # the gap got no rows ...
    assert report.skipped.get("s", 0) == len(gap)  # ... and was counted, once
    assert len(gap) >= 1  # down longer than lookahead + catch-up: something was skipped
    assert any(t <= report.now for t in after)  # and a tick it missed was still created
    assert default_sequence(after[-1]) in per_tick


def test_skewed_worker_clocks_still_claim_exactly_max_run(db: Db, tmp_path: Path) -> None:
    works = [{"name": "skew", "cron": "*/2 * * * * *", "max_run": 2, "grace": 60}]
    skews = [30.0, 30.0, -30.0, -30.0]
    run_for = 12.0
    with Background(db, works, lookahead="4s", interval="1s"):
        results = SPAWN.Queue()
        barrier = SPAWN.Barrier(len(skews) + 1)
        procs = [
            SPAWN.Process(
                target=racers.run_worker,
                args=(db.url, db.table, works, run_for, None, barrier, results, skew),
            )
            for skew in skews
        ]
        for proc in procs:
            proc.start()
        barrier.wait(timeout=120)
        started = db.db_now()
        reports = [results.get(timeout=120) for _ in procs]
        for proc in procs:
            proc.join(30)
    assert all(status == "ok" for status, _ in reports), reports
    window_start = started + timedelta(seconds=2)
    window_end = started + timedelta(seconds=run_for - 2)
    rows = [r for r in db.rows() if window_start < r.tick_at <= window_end]
    claimed = Counter(r.sequence for r in rows if r.status == WorkStatus.SUCCESS)
    ticks = {r.sequence for r in rows}
    assert len(ticks) >= 3
    assert all(claimed[t] == 2 for t in ticks)  # exactly max_run, every tick
    assert all(r.started_at >= r.tick_at for r in rows)  # nobody claimed early, +30 s or not


@pytest.mark.soak
def test_soak_five_schedulers_sixteen_workers_random_kills(maria_db: Db, tmp_path: Path) -> None:
    """Bounded by WORKSYNC_SOAK_SECONDS (default 120); kills a random process every ~2 s."""
    db = maria_db
    seconds = float(os.environ.get("WORKSYNC_SOAK_SECONDS", "120"))
    works: list[dict[str, Any]] = [
        {"name": "a", "cron": "* * * * * *", "max_run": 3, "lease": 3, "grace": 20},
        {"name": "b", "cron": "*/2 * * * * *", "max_run": 1, "lease": 3, "grace": 20},
        {
            "name": "c",
            "cron": "@every 3s",
            "max_run": 5,
            "lease": 3,
            "grace": 20,
            "max_attempts": 2,
        },
    ]
    config = {"lookahead": "5s", "interval": "1s", "catchup": "10s", "max_backoff": "2s"}
    results = SPAWN.Queue()
    journals = iter(range(10_000))
    rng = random.Random(7)

    def scheduler() -> Any:
        return SPAWN.Process(
            target=racers.run_scheduler,
            args=(db.url, db.table, works, config, 3600.0, None, results),
        )

    def worker() -> Any:
        log = str(tmp_path / f"journal-{next(journals)}.log")
        return SPAWN.Process(
            target=racers.run_worker,
            args=(db.url, db.table, works, 3600.0, log, None, results),
        )

    procs = [scheduler() for _ in range(5)] + [worker() for _ in range(16)]
    kinds = [scheduler] * 5 + [worker] * 16
    for proc in procs:
        proc.start()
    wait_for(lambda: db.count() > 0, 120)  # the first scheduler is up
    started = db.db_now()
    kills = 0
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(1.0, 3.0))
            victim = rng.randrange(len(procs))
            os.kill(procs[victim].pid, signal.SIGKILL)
            procs[victim].join(10)
            procs[victim] = kinds[victim]()
            procs[victim].start()
            kills += 1
    finally:
        for proc in procs:
            if proc.pid is not None and proc.is_alive():
                os.kill(proc.pid, signal.SIGKILL)
            proc.join(10)
    ended = db.db_now()
    assert kills >= seconds / 4

    # Every lease and grace has run out an hour later: close everything still open.
    sync = WorkSync(db.engine, table=db.table)
    while sync.recover(now=ended + timedelta(hours=1)):
        pass

    budget = {w["name"]: w["max_run"] for w in works}
    attempts = {w["name"]: w.get("max_attempts", 1) for w in works}
    rows = db.rows()
    window = [
        r
        for r in rows
        if started + timedelta(seconds=3) < r.tick_at <= ended - timedelta(seconds=1)
    ]
    per_tick = Counter((r.name, r.sequence) for r in rows)
    assert all(count == budget[name] for (name, _), count in per_tick.items())
    expected = {
        (work.name, default_sequence(tick))
        for work in racers.blueprints(works)
        for tick in work.ticks(started + timedelta(seconds=3), ended - timedelta(seconds=1))
    }
    assert expected <= set(per_tick)  # no tick of the run went without rows
    for row in window:
        assert row.status in (WorkStatus.SUCCESS, WorkStatus.FAILED), row
        assert row.closed_by in ("worker", "lease", "missed"), row
    succeeded = Counter((r.name, r.sequence) for r in rows if r.status == WorkStatus.SUCCESS)
    assert all(count <= budget[name] for (name, _), count in succeeded.items())
    claims_per_row: Counter[tuple[str, int]] = Counter()
    for journal in tmp_path.glob("journal-*.log"):
        for line in journal.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) == 3:  # a line cut short by SIGKILL is ignored
                claims_per_row[(parts[0], int(parts[2]))] += 1
    assert claims_per_row
    assert all(count <= attempts[name] for (name, _), count in claims_per_row.items())
    assert sum(1 for r in window if r.status == WorkStatus.SUCCESS) > len(window) / 2
