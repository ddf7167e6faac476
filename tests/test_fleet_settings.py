"""Schedulers that disagree, and budgets that must outlive retention, under real processes.

``test_settings`` checks each rule in one process with explicit instants;
here scheduler and worker processes race in real time (per-second works),
or step through simulated days in lockstep, on every backend.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from worksync_sa import Scheduler, SchedulerConfig, Work, WorkStatus, WorkSync

from . import racers
from .conftest import Db

pytestmark = pytest.mark.slow

SECONDS = 10
WORKERS = 3


class _Journal(logging.Handler):
    """Writes each warning or error of the package as "LEVEL<tab>action<tab>message" lines."""

    def __init__(self, path: str) -> None:
        super().__init__(logging.WARNING)
        self.path = path

    def emit(self, record: logging.LogRecord) -> None:
        line = f"{record.levelname}\t{getattr(record, 'action', '')}\t{record.getMessage()}"
        with open(self.path, "a") as journal:
            journal.write(line.replace("\n", " ") + "\n")


def journalled_scheduler(journal: str, *args: Any) -> None:
    """``racers.run_scheduler``, with the package's warnings and errors kept in ``journal``."""
    logging.getLogger("worksync_sa").addHandler(_Journal(journal))
    racers.run_scheduler(*args)


def disagreements(path: Path) -> list[tuple[str, str]]:
    """(level, message) of each "disagreement" line a ``journalled_scheduler`` wrote."""
    found = []
    for line in path.read_text().splitlines() if path.exists() else []:
        level, action, message = line.split("\t", 2)
        if action == "disagreement":
            found.append((level, message))
    return found


def claim_early(url: str, table: str, seconds: float, results: Any) -> None:
    """For ``seconds``, claim every queued row of the next five seconds' ticks, due or not.

    A claim by sequence needs no due tick, so a tick is claimed while its
    maker has it queued, before another scheduler can close it: each tick's
    budget is tested, whichever scheduler passed last. Reports the claims made.
    """
    engine = sa.create_engine(url, pool_size=2, max_overflow=2)
    try:
        sync = WorkSync(engine, table=table, keep_alive=False)
        claims = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            now = datetime.now(timezone.utc)
            for ahead in range(1, 6):
                label = f"{now + timedelta(seconds=ahead):%Y-%m-%d %H:%M:%S}"  # UTC labels
                while (claim := sync.acquire("w", label)) is not None:
                    claim.success()
                    claims += 1
            time.sleep(0.05)
        sync.close()
        results.put(("ok", claims))
    except BaseException as exc:
        results.put(("error", repr(exc)))
        raise
    finally:
        engine.dispose()


def race(
    db: Db,
    tmp_path: Path,
    schedulers: list[tuple[dict[str, Any], dict[str, Any]]],
    early: int = 0,
) -> list[dict[str, int]]:
    """Scheduler processes (a work and a config each), workers and ``early`` processes that
    claim before ticks are due (``claim_early``), for SECONDS; the schedulers' reports.

    Scheduler ``n`` keeps its warnings and errors in ``tmp_path / "scheduler-n.log"``.
    """
    ctx = multiprocessing.get_context("spawn")
    started = []
    for number, (work, config) in enumerate(schedulers):
        results = ctx.Queue()
        log = str(tmp_path / f"scheduler-{number}.log")
        args = (log, db.url, db.table, [work], config, SECONDS, None, results)
        started.append((ctx.Process(target=journalled_scheduler, args=args), results))
    worker_work = {**schedulers[0][0], "cron": "* * * * * *"}  # look every second
    for number in range(WORKERS):
        results = ctx.Queue()
        log = str(tmp_path / f"worker-{number}.log")
        worker_args = (db.url, db.table, [worker_work], SECONDS, log, None, results)
        started.append((ctx.Process(target=racers.run_worker, args=worker_args), results))
    for _ in range(early):
        results = ctx.Queue()
        early_args = (db.url, db.table, SECONDS, results)
        started.append((ctx.Process(target=claim_early, args=early_args), results))
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
    custom = "'custom:tests.racers.tagged'"  # a plain function's kind: its full name
    for number, (there, here) in enumerate([(custom, "'utc'"), ("'utc'", custom)]):
        ((level, message),) = disagreements(tmp_path / f"scheduler-{number}.log")
        assert level == "ERROR"
        assert f"sequence {there} there, {here} here" in message


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


EVEN_MINUTES = "* */2 * * * *"


def test_schedulers_in_different_time_zones_never_exceed_max_run(db: Db, tmp_path: Path) -> None:
    """Each second of the even minutes, in UTC and in Kathmandu (+05:45, so its even minutes are
    UTC's odd ones): the two never share an instant, and a one-minute lookahead always holds
    ticks of both, so each scheduler keeps closing the other's and making its own again.

    Each closes the other's queued slots, which gives them up, and the other
    makes them again: claims taken early, between the two, must still never
    give an instant more than ``max_run``.
    """
    utc = {"name": "w", "cron": EVEN_MINUTES, "max_run": 2, "grace": 5, "timezone": "UTC"}
    kathmandu = {**utc, "timezone": "Asia/Kathmandu"}
    wide = config(lookahead="1m", interval="700ms")
    reports = race(db, tmp_path, [(utc, wide), (kathmandu, wide)], early=2)
    claimed = claims_per_instant(db)
    assert claimed
    assert max(claimed.values()) <= 2
    slots = Counter(r.tick_at for r in db.rows(name="w") if r.slot is not None)
    assert max(slots.values()) <= 2
    assert {r.tick_at.minute % 2 for r in db.rows(name="w")} == {0, 1}  # both zones' ticks made
    assert [report.get("disagreement", 0) for report in reports] == [1, 1]  # logged once, each
    pairs = [("'Asia/Kathmandu'", "'UTC'"), ("'UTC'", "'Asia/Kathmandu'")]
    for number, (there, here) in enumerate(pairs):
        ((level, message),) = disagreements(tmp_path / f"scheduler-{number}.log")
        assert level == "ERROR"
        assert f"timezone {there} there, {here} here" in message
    # Both now run UTC's settings (the Kathmandu one was moved): every tick not yet due
    # follows them, whatever the race left behind.
    settings = SchedulerConfig(lookahead="1m", interval="1s")
    for _ in range(2):
        moved = Scheduler(db.engine, [Work("w", EVEN_MINUTES, max_run=2)], settings, table=db.table)
        moved.run_pass()  # by the database clock, as the race ran
        moved.close()
    assert moved.last_pass is not None
    now = moved.last_pass.now
    first = now.replace(microsecond=0) + timedelta(seconds=1)
    window = [first + timedelta(seconds=n) for n in range(60)]  # every second in (now, now+1m]
    rows = [r for r in db.rows(name="w") if now < r.tick_at <= now + timedelta(minutes=1)]
    # Queued rows only at UTC's instants; each of those with both slots held (queued, or
    # already claimed early); a Kathmandu tick keeps only what was claimed before the move.
    assert {r.tick_at.minute % 2 for r in rows if r.status == WorkStatus.QUEUED} <= {0}
    held = {
        t: sorted(r.slot for r in rows if r.tick_at == t and r.slot is not None) for t in window
    }
    assert all(held[t] == [0, 1] for t in window if t.minute % 2 == 0), held
