"""A fleet half on the Go original, half on worksync_sa, on one MariaDB table.

The original's scheduler and workers (``original``: its exact statements,
transactions and isolation levels) run as real processes beside ours, on a
table the original's README created and ``worksync migrate`` adopted. Per
tick, both schedulers create rows (the original first, ours first, or at
once) and both kinds of worker race to claim them. Its fleet runs in
Europe/Berlin time, so ours labels ticks with ``local_sequence``.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from worksync_sa import local_sequence

from . import original, racers
from .conftest import Backend
from .test_cli import worksync
from .test_migrations import ORIGINAL_DDL

pytestmark = pytest.mark.slow

ZONE = "Europe/Berlin"
# The original finishes on a table named "workers" whatever it was given: a view lets it land.
WORKERS_VIEW = "create view workers as select * from works"


@dataclass
class Fleet:
    """A database of its own, holding the original's ``works`` table and ``workers`` view."""

    url: str
    connect: dict[str, Any]
    engine: sa.Engine

    def rows(self) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.exec_driver_sql("select * from works order by id").mappings())


@pytest.fixture
def fleet(mariadb: Backend) -> Iterator[Fleet]:
    with original.own_database(mariadb.engine, "ws_fleet") as (url, connect):
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.exec_driver_sql(ORIGINAL_DDL.format(table="works"))
        try:
            yield Fleet(url.render_as_string(hide_password=False), connect, engine)
        finally:
            engine.dispose()


SPAWN = multiprocessing.get_context("spawn")


def start(target: Any, *args: Any) -> tuple[Any, Any]:
    results = SPAWN.Queue()
    process = SPAWN.Process(target=target, args=(*args, results))
    process.start()
    return process, results


def collect(started: list[tuple[Any, Any]], timeout: float = 120) -> list[Any]:
    reports = []
    for process, results in started:
        status, value = results.get(timeout=timeout)
        assert status == "ok", value
        reports.append(value)
        process.join(timeout=30)
        assert process.exitcode == 0
    return reports


OUR_WORK = {"name": "shared", "cron": "* * * * * *", "max_run": 2, "grace": 5}


def claims_per_tick(fleet: Fleet) -> Counter[str]:
    """Claims each tick got, whoever made them: rows that ever left QUEUED by a claim."""
    return Counter(row["sequence"] for row in fleet.rows() if row["started_at"] is not None)


@pytest.mark.parametrize(
    ("original_ahead", "ours_ahead"),
    # Ours keep two seconds of lookahead when the original leads: a pass delayed by a busy
    # machine still dates the original's rows before their tick (one second left none).
    [(4, 2), (1, 4), (2, 2)],
    ids=["original-first", "ours-first", "at-once"],
)
@pytest.mark.parametrize(
    "leaks",
    # The faithful stand-in leaves a transaction open whenever it finds a tick complete, and
    # each one holds our pass up for a lock wait or two: at ticks a second apart that is
    # judged where tests run one at a time (scripts/test --all), beside the real original.
    [False, pytest.param(True, marks=[pytest.mark.slow, pytest.mark.original])],
    ids=["patched", "faithful"],
)
def test_the_original_and_ours_together_never_exceed_max_run(
    fleet: Fleet, tmp_path: Path, original_ahead: float, ours_ahead: float, leaks: bool
) -> None:
    adopted = worksync("migrate", "--db", fleet.url, cwd=tmp_path)
    assert adopted.returncode == 0, adopted.stderr
    with fleet.engine.begin() as conn:
        conn.exec_driver_sql(WORKERS_VIEW)
    seconds = 15
    # As the guide says: beside the original, ours leave each tick's last row to it (a
    # create that finds its tick complete leaves its transaction open, as the stand-in does).
    config = {
        "lookahead": f"{ours_ahead}s",
        "interval": "500ms",
        "sequence": local_sequence(ZONE),
        "leave_to_original": "700ms",
    }
    log = str(tmp_path / "claims.log")
    # Ours take seconds longer to start (SQLAlchemy's import) than the original's (MySQLdb
    # alone): they start first and wait at a barrier, so that every tick of the run, not
    # only the later ones, is raced by both fleets from its first pass on.
    ready = SPAWN.Barrier(4)
    ours = [
        start(racers.run_scheduler, fleet.url, "works", [OUR_WORK], config, seconds, ready),
        *(start(racers.run_worker, fleet.url, "works", [OUR_WORK], seconds, log, ready)
          for _ in range(2)),
    ]  # fmt: skip
    ready.wait(timeout=120)
    scheduler = original.run_scheduler if leaks else original.run_patched_scheduler
    theirs_started = [
        start(scheduler, fleet.connect, "works", [("shared", 2)], ZONE,
              original_ahead, seconds),
        *(start(original.run_worker, fleet.connect, "works", ["shared"], ZONE, seconds)
          for _ in range(2)),
    ]  # fmt: skip
    started = [theirs_started[0], ours[0], *theirs_started[1:], *ours[1:]]
    reports = collect(started)
    rows = fleet.rows()
    per_tick = Counter(row["sequence"] for row in rows)
    assert max(per_tick.values()) == 2  # never a third row for a tick, whoever made it
    claimed = claims_per_tick(fleet)
    assert max(claimed.values()) <= 2
    theirs = sum(len(report["claims"]) for report in reports[2:4])
    ours = sum(report["handled"] for report in reports[4:6])
    assert theirs > 0
    assert ours > 0
    assert theirs + ours == sum(claimed.values())
    made_by_original = sum(1 for row in rows if row["slot"] is None)
    made_by_ours = len(rows) - made_by_original
    if original_ahead > ours_ahead:
        assert made_by_original > made_by_ours
    elif ours_ahead > original_ahead:  # ours make all but the last row, the original that one
        assert made_by_original > 0
        assert made_by_ours >= made_by_original
    # Every tick in the middle of the run was claimed twice: nobody starved anybody.
    # The last six are left out: a pass held up by the original's open transaction (up to
    # two lock waits of 1-2 s) dates the original's late rows after their tick, and ours
    # then claim them within the work's 5 s grace, which may outlast the run.
    middle = sorted(claimed)[3:-6]
    assert middle
    short = {
        tick: [(r["slot"], r["status"], r["tick_at"], r["claimed_by"], r["created_at"])
               for r in rows if r["sequence"] == tick]
        for tick in middle if claimed[tick] != 2
    }  # fmt: skip
    assert not short, f"ticks claimed less than twice (slot, status, tick_at, by, made): {short}"
    # Every row of the middle that ours might claim was dated: unclaimed ones, and ours. A row
    # the original added after our last pass before its tick is dated by the next pass (late,
    # within its grace), unless the original's own worker claimed it first: the ledger reads
    # such a row by its label.
    assert all(
        row["tick_at"] is not None
        for row in rows
        if row["sequence"] in middle and (row["status"] == 1 or row["claimed_by"] is not None)
    )


@pytest.mark.parametrize("server_default", ["REPEATABLE READ", "READ COMMITTED"])
@pytest.mark.parametrize("original_got_to", ["count", "insert"])
def test_a_pass_racing_the_originals_open_transaction_never_doubles_its_tick(
    fleet: Fleet, tmp_path: Path, server_default: str, original_got_to: str
) -> None:
    """Exact interleavings: the original's create holds its transaction open while ours runs.

    Whatever the server's default isolation (READ COMMITTED sites exist), the
    pass counts the original's rows with a locking read, so it waits for that
    transaction, or deadlocks with it and retries, and never adds a third row.
    """
    import threading
    from datetime import datetime, timedelta, timezone

    from worksync_sa import Scheduler, SchedulerConfig, Work

    assert worksync("migrate", "--db", fleet.url, cwd=tmp_path).returncode == 0
    engine = sa.create_engine(fleet.url, isolation_level=server_default)
    soon = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=20)
    tick = soon.replace(second=30) + timedelta(minutes=1 if soon.second > 30 else 0)
    sequence = original.label(tick, ZONE)
    theirs = original.OriginalDB(fleet.connect, "works")
    cursor = theirs.conn.cursor()
    cursor.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
    cursor.execute("START TRANSACTION")
    cursor.execute("select count(*) from works where name = %s and sequence = %s", ("w", sequence))
    if original_got_to == "insert":
        cursor.execute(
            "insert into works (created_at, name, status, sequence) "
            "values (now(), %s, 1, %s), (now(), %s, 1, %s)",
            ("w", sequence, "w", sequence),
        )
    config = SchedulerConfig(lookahead="1m", interval="10s", sequence=local_sequence(ZONE))
    scheduler = Scheduler(engine, [Work("w", "30 * * * * *", max_run=2)], config, table="works")
    passed: list[BaseException | int] = []
    racing = threading.Thread(
        target=lambda: passed.append(scheduler.run_pass(tick - timedelta(seconds=1)))
    )
    racing.start()
    racing.join(timeout=1.5)
    assert racing.is_alive()  # ours waits on the original's locks
    try:
        if original_got_to == "count":
            cursor.execute(
                "insert into works (created_at, name, status, sequence) "
                "values (now(), %s, 1, %s), (now(), %s, 1, %s)",
                ("w", sequence, "w", sequence),
            )
        cursor.execute("COMMIT")
    except Exception:  # the original lost the deadlock: its create failed, as it would in Go
        cursor.execute("ROLLBACK")
    racing.join(timeout=30)
    scheduler.close()
    engine.dispose()
    theirs.close()
    rows = [row for row in fleet.rows() if row["sequence"] == sequence]
    assert len(rows) == 2


def test_a_late_row_of_the_original_is_dated_after_its_tick_and_claimed_by_ours(
    fleet: Fleet, tmp_path: Path
) -> None:
    """The original adds a tick's rows after our last pass before it (it fell behind).

    The next pass dates them although the tick is due, while its grace lasts, so ours
    claim them by tick time; a tick past its grace, or another work's, is left alone.
    """
    from datetime import datetime, timezone

    from worksync_sa import Scheduler, SchedulerConfig, Work, WorkSync

    assert worksync("migrate", "--db", fleet.url, cwd=tmp_path).returncode == 0
    engine = sa.create_engine(fleet.url)
    tick = datetime.now(timezone.utc).replace(second=30, microsecond=0) - timedelta(minutes=5)
    stale = tick - timedelta(minutes=2)  # past the work's one-minute grace at the pass
    theirs = original.OriginalDB(fleet.connect, "works", leaks=False)
    for moment in (tick, stale):
        assert theirs.create("w", original.label(moment, ZONE), 2) == 2
    assert theirs.create("other", original.label(tick, ZONE), 1) == 1  # not a work of ours
    claimed_before = theirs.acquire("w", original.label(tick, ZONE))  # one already running
    assert claimed_before is not None
    theirs.close()
    config = SchedulerConfig(lookahead="1m", interval="10s", sequence=local_sequence(ZONE))
    scheduler = Scheduler(engine, [Work("w", "30 * * * * *", max_run=2)], config, table="works")
    sync = WorkSync(engine, table="works")
    try:
        scheduler.run_pass(tick + timedelta(seconds=5))
        assert scheduler.last_pass is not None
        assert scheduler.last_pass.adopted == 2
        claim = sync.acquire_due("w", now=tick + timedelta(seconds=6))
        assert claim is not None
        assert claim.sequence == original.label(tick, ZONE)
        claim.success()
        assert sync.acquire_due("w", now=tick + timedelta(seconds=6)) is None  # max_run 2
    finally:
        sync.close()
        scheduler.close()
        engine.dispose()
    dated = {(row["name"], row["sequence"]): row["tick_at"] for row in fleet.rows()}
    assert dated[("w", original.label(tick, ZONE))] == tick.replace(tzinfo=None)
    assert dated[("w", original.label(stale, ZONE))] is None
    assert dated[("other", original.label(tick, ZONE))] is None


def test_the_readmes_rolling_migration_step_by_step(fleet: Fleet, tmp_path: Path) -> None:
    """ "Moving from worksync (Go)", each step taken while the fleet keeps running.

    0. the original's scheduler and two workers run on the table of its README;
    1. `worksync migrate` adopts that table, and a `workers` view lets the
       original's finishes land;
    2. our scheduler joins the original's (same works, `local_sequence`);
    3. our workers replace the original's, one at a time;
    4. the original's scheduler stops;
    5. a rolling restart of our scheduler switches to UTC labels.

    No tick ever gets more than max_run claims, and ticks keep being run.
    """
    import time
    from datetime import datetime, timezone

    step = 6.0
    berlin = {
        "lookahead": "2s",
        "interval": "500ms",
        "sequence": local_sequence(ZONE),
        "leave_to_original": "700ms",
    }
    utc = {"lookahead": "2s", "interval": "500ms"}
    log = str(tmp_path / "claims.log")
    began = datetime.now(timezone.utc)

    def at(seconds: float) -> None:
        time.sleep(max(0.0, seconds - (datetime.now(timezone.utc) - began).total_seconds()))

    started = [  # 0: the original fleet
        start(original.run_scheduler, fleet.connect, "works", [("shared", 2)], ZONE, 2, 4 * step),
        start(original.run_worker, fleet.connect, "works", ["shared"], ZONE, 3 * step),
        start(original.run_worker, fleet.connect, "works", ["shared"], ZONE, 3.5 * step),
    ]
    at(step)  # 1: adopt the table in place, while it is in use
    adopted = worksync("migrate", "--db", fleet.url, cwd=tmp_path)
    assert adopted.returncode == 0, adopted.stderr
    with fleet.engine.begin() as conn:
        conn.exec_driver_sql(WORKERS_VIEW)
    at(2 * step)  # 2: our scheduler beside the original's
    started.append(
        start(racers.run_scheduler, fleet.url, "works", [OUR_WORK], berlin, 3.2 * step, None)
    )
    at(3 * step)  # 3: our workers replace the original's, one by one
    # Our workers and the last scheduler outlive the switch by 2 steps: time enough for
    # ticks after it to be claimed even when a busy machine starts processes late.
    started.append(start(racers.run_worker, fleet.url, "works", [OUR_WORK], 4 * step, log, None))
    at(3.5 * step)
    started.append(start(racers.run_worker, fleet.url, "works", [OUR_WORK], 3.5 * step, log, None))
    # 4: the original's scheduler stops on its own at 4 steps.
    at(5 * step)  # 5: a rolling restart onto UTC labels (the old one runs a little longer)
    started.append(start(racers.run_scheduler, fleet.url, "works", [OUR_WORK], utc, 2 * step, None))
    # Processes start late on a busy machine: the switch is when the old one has ended.
    started[3][0].join(timeout=120)
    switched = datetime.now(timezone.utc)
    collect(started, timeout=180)
    rows = fleet.rows()

    def instant(row: Any) -> datetime:
        if row["tick_at"] is not None:
            tick: datetime = row["tick_at"]
            return tick.replace(tzinfo=timezone.utc)
        wall = datetime.strptime(row["sequence"], original.LAYOUT)
        return wall.replace(tzinfo=ZoneInfo(ZONE)).astimezone(timezone.utc)

    claimed = Counter(instant(row) for row in rows if row["started_at"] is not None)
    assert max(claimed.values()) <= 2  # per instant, across both kinds of label
    per_label = Counter(row["sequence"] for row in rows if row["started_at"] is not None)
    assert max(per_label.values()) <= 2
    # Ticks kept running through every step after the table was adopted.
    seconds = [began + timedelta(seconds=s) for s in range(int(1.5 * step), int(5.7 * step))]
    ticks = [t.replace(microsecond=0) + timedelta(seconds=1) for t in seconds]
    missed = [t for t in ticks if claimed[t] == 0]
    assert len(missed) <= 2, missed  # the adoption's ALTER may hold the table for a moment
    # The last step relabelled every tick after it: UTC labels, our rows.
    late = [
        row
        for row in rows
        if row["tick_at"] is not None
        and row["started_at"] is not None
        and row["tick_at"].replace(tzinfo=timezone.utc) > switched + timedelta(seconds=3)
    ]
    assert late
    assert all(row["sequence"] == row["tick_at"].strftime(original.LAYOUT) for row in late)


def test_beside_the_original_our_pass_leaves_it_the_last_row_so_its_create_commits(
    fleet: Fleet, tmp_path: Path
) -> None:
    """``leave_to_original``: the original must never find a tick complete.

    When it does, its create returns without COMMIT or ROLLBACK, and its
    SERIALIZABLE transaction holds its locks and its connection for hours.
    With the setting, our pass makes each far tick all but its last row; the
    original's create finds one missing, adds it and commits. A tick the
    original has not made by the lead gets its last row from us.
    """
    from datetime import datetime, timezone

    from worksync_sa import Scheduler, SchedulerConfig, Work

    assert worksync("migrate", "--db", fleet.url, cwd=tmp_path).returncode == 0
    now = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=5)
    # A minute's start 31 s to 90 s away (beyond the lead), and a second 5 s away (within it).
    far = (now + timedelta(seconds=30)).replace(second=0) + timedelta(minutes=1)
    near = now + timedelta(seconds=5)
    config = SchedulerConfig(
        lookahead="2m", interval="1s", leave_to_original="10s", sequence=local_sequence(ZONE)
    )
    works = [Work("far", "0 * * * * *", max_run=3), Work("near", "* * * * * *", max_run=2)]
    scheduler = Scheduler(fleet.engine, works, config, table="works")
    scheduler.run_pass(now)
    far_label = original.label(far, ZONE)
    far_rows = [r for r in fleet.rows() if r["name"] == "far" and r["sequence"] == far_label]
    assert len(far_rows) == 2  # max_run 3, one left to the original
    near_rows = [
        r
        for r in fleet.rows()
        if r["name"] == "near" and r["sequence"] == original.label(near, ZONE)
    ]
    assert len(near_rows) == 2  # within the lead: complete, the original is too late for it

    theirs = original.OriginalDB(fleet.connect, "works")
    try:
        assert theirs.create("far", far_label, 3) == 1  # found one missing: inserted, committed
        with theirs.conn.cursor() as cursor:
            cursor.execute(
                "select count(*) from information_schema.innodb_trx "
                "where trx_mysql_thread_id = connection_id()"
            )
            assert cursor.fetchone() == (0,)  # nothing left open
    finally:
        theirs.close()
    scheduler.run_pass(now + timedelta(seconds=1))
    far_rows = [r for r in fleet.rows() if r["name"] == "far" and r["sequence"] == far_label]
    assert len(far_rows) == 3  # the original's row completes it; ours add none
    assert all(r["tick_at"] is not None for r in far_rows)  # its row dated like ours
    scheduler.close()


def _leave_open(fleet: Fleet, name: str, sequence: str) -> Any:
    """The original's create on a complete tick: a SERIALIZABLE count, never committed."""
    import MySQLdb

    conn = MySQLdb.connect(**fleet.connect, charset="utf8mb4")
    cursor = conn.cursor()
    cursor.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
    cursor.execute("START TRANSACTION")
    cursor.execute("select count(*) from works where name = %s and sequence = %s", (name, sequence))
    cursor.fetchone()
    return conn


def _wait_idle(fleet: Fleet, connection: int, seconds: int) -> None:
    """Until the server counts ``connection`` idle for ``seconds`` (it counts whole seconds)."""
    import time

    deadline = time.monotonic() + 30
    with fleet.engine.connect() as conn:
        while time.monotonic() < deadline:
            idle = conn.exec_driver_sql(
                "select time from information_schema.processlist where id = %s", (connection,)
            ).scalar()
            if idle is not None and idle >= seconds:
                return
            time.sleep(0.2)
    raise AssertionError(f"connection {connection} never idle for {seconds} s")


@pytest.mark.parametrize("beside_original", [True, False], ids=["ended", "reported"])
def test_a_transaction_the_original_left_open_is_ended_or_reported(
    fleet: Fleet,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    beside_original: bool,
) -> None:
    """Beside the original (``leave_to_original``) a pass ends it; otherwise an ERROR says how."""
    from datetime import datetime, timezone

    import MySQLdb

    from worksync_sa import Scheduler, SchedulerConfig, Work
    from worksync_sa._core import blockers

    monkeypatch.setattr(blockers, "IDLE_SECONDS", 1)
    monkeypatch.setattr(blockers, "LOOK_EVERY", 0.0)  # look every pass, report once a minute
    assert worksync("migrate", "--db", fleet.url, cwd=tmp_path).returncode == 0
    now = datetime.now(timezone.utc).replace(microsecond=0)
    leave = {"leave_to_original": "3s"} if beside_original else {}
    config = SchedulerConfig(lookahead="5s", interval="1s", **leave)  # type: ignore[arg-type]
    scheduler = Scheduler(
        fleet.engine, [Work("w", "* * * * * *", max_run=2)], config, table="works"
    )
    scheduler.run_pass(now)
    left_open = _leave_open(fleet, "w", original.label(now + timedelta(seconds=1), "UTC"))
    try:
        connection = left_open.thread_id()
        _wait_idle(fleet, connection, seconds=1)
        caplog.set_level(logging.ERROR, logger="worksync_sa.scheduler")
        scheduler.run_pass(now + timedelta(seconds=1))
        assert scheduler.last_pass is not None
        records = [r for r in caplog.records if getattr(r, "action", None) == "lock-holder"]
        assert len(records) == 1, [r.getMessage() for r in records]
        message = records[0].getMessage()
        assert f"connection {connection} (" in message
        assert "SERIALIZABLE" in message
        if beside_original:
            assert scheduler.last_pass.released == 1
            assert message.startswith(f"ended connection {connection}")
            with pytest.raises(MySQLdb.OperationalError):  # its server side is gone
                left_open.cursor().execute("select 1")
        else:
            assert scheduler.last_pass.released == 0
            assert f"KILL {connection}" in message
            assert "leave_to_original" in message
            scheduler.run_pass(now + timedelta(seconds=2))  # reported once a minute
            again = [r for r in caplog.records if getattr(r, "action", None) == "lock-holder"]
            assert len(again) == 1
            left_open.cursor().execute("select 1")  # still open: not ours to end
    finally:
        left_open.close()  # the server rolls back what is still open
        scheduler.close()


def test_a_lanes_lock_waits_are_bounded(fleet: Fleet) -> None:
    """A statement stuck behind a transaction left open lets go after seconds, not 50."""
    from worksync_sa import WorkSync
    from worksync_sa._run.lanes import LOCK_WAIT_SECONDS

    sync = WorkSync(fleet.engine, table="works")
    wait = sync._runner.run(
        "lock wait", lambda conn: conn.exec_driver_sql("select @@innodb_lock_wait_timeout").scalar()
    )
    sync.close()
    assert wait == LOCK_WAIT_SECONDS == 2


def test_a_pass_held_up_by_a_transaction_left_open_ends_it_and_goes_on(
    fleet: Fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The original leaves its count open on the last tick: the next tick's insert meets its lock.

    Its gap lock runs past the last row, so no insert of a later tick can land
    until it ends. The pass's insert gives up its wait after seconds, looks for
    the holder, ends it (beside the original) and goes on: the pass completes
    in one lock wait, not in hours.
    """
    import time
    from datetime import datetime, timezone

    from worksync_sa import Scheduler, SchedulerConfig, Work
    from worksync_sa._core import blockers
    from worksync_sa._run.lanes import LOCK_WAIT_SECONDS

    monkeypatch.setattr(blockers, "IDLE_SECONDS", 1)
    assert worksync("migrate", "--db", fleet.url, cwd=tmp_path).returncode == 0
    now = datetime.now(timezone.utc).replace(microsecond=0)
    config = SchedulerConfig(lookahead="5s", interval="1s", leave_to_original="2s")
    scheduler = Scheduler(
        fleet.engine, [Work("w", "* * * * * *", max_run=1)], config, table="works"
    )
    scheduler.run_pass(now)  # ticks up to now + 3 s (the last 2 s are left to the original)
    last = max(row["sequence"] for row in fleet.rows())
    left_open = _leave_open(fleet, "w", last)
    try:
        started = time.monotonic()
        scheduler.run_pass(now + timedelta(seconds=3))  # makes later ticks: into the locked gap
        took = time.monotonic() - started
        assert scheduler.last_pass is not None
        assert scheduler.last_pass.released == 1
        assert scheduler.last_pass.created >= 1
        assert took < 3 * LOCK_WAIT_SECONDS  # one lock wait, a look, the insert
    finally:
        left_open.close()
        scheduler.close()


def test_a_first_pass_held_up_by_a_young_transaction_left_open_ends_it(
    fleet: Fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two of the original's schedulers leave one count open per tick, a new one every second.

    Before our first pass has written the lookahead, such a count's gap lock
    covers every upcoming tick of the work. A write that waited for it in vain
    must end it however young: sparing those idle for less than ``IDLE_SECONDS``
    (here: all of them) found a fresh one in the way on every retry, and the
    first pass failed for as long as the original ran.
    """
    import time
    from datetime import datetime, timezone

    from worksync_sa import Scheduler, SchedulerConfig, Work
    from worksync_sa._core import blockers
    from worksync_sa._run.lanes import LOCK_WAIT_SECONDS

    monkeypatch.setattr(blockers, "IDLE_SECONDS", 3600)  # every leak is a young one
    assert worksync("migrate", "--db", fleet.url, cwd=tmp_path).returncode == 0
    now = datetime.now(timezone.utc).replace(microsecond=0)
    config = SchedulerConfig(lookahead="5s", interval="1s", leave_to_original="2s")
    scheduler = Scheduler(
        fleet.engine, [Work("w", "* * * * * *", max_run=2)], config, table="works"
    )
    left_open = _leave_open(fleet, "w", original.label(now + timedelta(seconds=1), "UTC"))
    try:
        started = time.monotonic()
        scheduler.run_pass(now)  # the first: every tick of the window, into the locked gap
        took = time.monotonic() - started
        assert scheduler.last_pass is not None
        assert scheduler.last_pass.released == 1
        assert scheduler.last_pass.created >= 5
        assert took < 3 * LOCK_WAIT_SECONDS  # one lock wait, a look, the insert
    finally:
        left_open.close()
        scheduler.close()


def _ended_within(fleet: Fleet, left_open: Any, seconds: float) -> float | None:
    """How long until the server no longer lists ``left_open``'s connection (None: it still is)."""
    import time

    connection = left_open.thread_id()
    started = time.monotonic()
    with fleet.engine.connect() as conn:
        while time.monotonic() - started < seconds:
            listed = conn.exec_driver_sql(
                "select count(*) from information_schema.processlist where id = %s", (connection,)
            ).scalar()
            if not listed:
                return time.monotonic() - started
            time.sleep(0.05)
    return None


@pytest.mark.parametrize("twin", ["blocking", "async"])
def test_beside_the_original_a_watch_ends_its_leaks_at_once(
    fleet: Fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, twin: str
) -> None:
    """A started scheduler beside the original ends a transaction it leaves open in seconds.

    Not at its next pass (an hour away here): a watch loop of its own, on a
    second connection, looks four times a second, and ends it once idle for a
    second (the server counts whole seconds), sooner than our writes give up
    waiting for a lock (2 s).
    """
    from datetime import datetime, timezone

    from worksync_sa import AsyncScheduler, Scheduler, SchedulerConfig, Work

    from .twins import Loop, async_engine

    assert worksync("migrate", "--db", fleet.url, cwd=tmp_path).returncode == 0
    now = datetime.now(timezone.utc).replace(microsecond=0)
    config = SchedulerConfig(lookahead="2h", interval="1h", leave_to_original="90m")
    works = [Work("w", "0 0 0 1 1 *", max_run=2)]  # one tick a year: the passes write nothing
    if twin == "blocking":
        scheduler = Scheduler(fleet.engine, works, config, table="works")
        scheduler.start()
        scheduler_stop = scheduler.close
    else:
        loop = Loop()
        engine = async_engine(fleet.url)
        ours = AsyncScheduler(engine, works, config, table="works")
        loop.run(_started(ours))

        def scheduler_stop() -> None:
            loop.run(ours.close())
            loop.run(engine.dispose())
            loop.close()

    try:
        import time

        time.sleep(1.0)  # the first pass is done; the next is an hour away
        left_open = _leave_open(fleet, "w", original.label(now + timedelta(seconds=2), "UTC"))
        try:
            took = _ended_within(fleet, left_open, seconds=5)
        finally:
            left_open.close()
        assert took is not None, "the transaction left open was not ended"
        assert took < 3
    finally:
        scheduler_stop()


async def _started(scheduler: Any) -> None:
    scheduler.start()
