"""Leases, heartbeats, fencing and recovery on every backend."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from worksync_sa import (
    ClaimLostError,
    Scheduler,
    SchedulerConfig,
    Work,
    WorkStatus,
    WorkSync,
    default_sequence,
)
from worksync_sa._sql.maintenance import RECOVERY_BATCH
from worksync_sa.models import table_named

from ..conftest import Db

SECOND = timedelta(seconds=1)
CONFIG = SchedulerConfig(lookahead=timedelta(minutes=1), interval="10s")


def schedule(db: Db, *works: Work, now: datetime) -> Scheduler:
    scheduler = db.Scheduler(db.engine, list(works), CONFIG, table=db.table)
    scheduler.run_pass(now)
    return scheduler


def claim_one(db: Db, work: Work) -> tuple[WorkSync, datetime]:
    """Schedule ``work`` around the database clock; returns a WorkSync and that clock."""
    now = db.db_now()
    schedule(db, work, now=now - 5 * SECOND)
    return db.WorkSync(db.engine, table=db.table, keep_alive=False), now


def test_a_claim_holds_a_lease_of_its_works_length(db: Db) -> None:
    sync, _ = claim_one(db, Work("w", "* * * * * *", lease=7 * SECOND))
    claim = sync.acquire_due("w")
    assert claim is not None
    (row,) = db.rows(id=claim.id)
    assert row.lease_until - row.started_at == 7 * SECOND
    assert (row.lease_seconds, row.attempts) == (7, 1)


def test_heartbeat_extends_the_lease_from_the_database_clock(db: Db) -> None:
    sync, _ = claim_one(db, Work("w", "* * * * * *", lease=7 * SECOND))
    claim = sync.acquire_due("w")
    assert claim is not None
    first = db.rows(id=claim.id)[0].lease_until
    time.sleep(0.05)
    before = db.db_now()
    claim.heartbeat()
    (row,) = db.rows(id=claim.id)
    assert row.lease_until > first
    assert before + 7 * SECOND <= row.lease_until <= db.db_now() + 7 * SECOND
    assert row.status == WorkStatus.RUNNING


def test_recovery_fails_expired_claims_and_fences_the_late_writer(db: Db) -> None:
    sync, now = claim_one(db, Work("w", "* * * * * *", lease=2 * SECOND))
    claim = sync.acquire_due("w")
    assert claim is not None
    assert sync.recover(now=now + SECOND) == 0  # still within the lease
    assert sync.recover(now=now + 10 * SECOND) >= 1
    (row,) = db.rows(id=claim.id)
    assert (row.status, row.closed_by, row.error) == (
        WorkStatus.FAILED,
        "lease",
        "lease expired (worker lost)",
    )
    assert row.finished_at is not None
    for late_write in (claim.success, claim.heartbeat, lambda: claim.fail("late")):
        with pytest.raises(ClaimLostError):
            late_write()
    assert db.rows(id=claim.id) == [row]  # the late writer changed nothing
    assert claim.lost


def test_a_work_may_opt_in_to_requeue_within_the_same_tick(db: Db) -> None:
    work = Work("w", "* * * * * *", lease=2 * SECOND, grace=timedelta(hours=1), max_attempts=2)
    sync, _ = claim_one(db, work)
    first = sync.acquire_due("w")
    assert first is not None
    sequence = first.sequence
    assert sync.recover(now=first_row_lease(db, first.id) + SECOND) == 1
    (row,) = db.rows(id=first.id)
    assert (row.status, row.token, row.claimed_by, row.attempts) == (
        WorkStatus.QUEUED,
        None,
        None,
        1,
    )
    second = sync.acquire("w", sequence)  # the same tick, claimed again
    assert second is not None
    assert second.id == first.id
    assert db.rows(id=first.id)[0].attempts == 2
    with pytest.raises(ClaimLostError):
        first.success()  # the first worker's token no longer matches
    assert sync.recover(now=first_row_lease(db, first.id) + SECOND) == 1  # attempts used up

    assert db.rows(id=first.id)[0].status == WorkStatus.FAILED


def first_row_lease(db: Db, row_id: int) -> datetime:
    lease_until = db.rows(id=row_id)[0].lease_until
    assert lease_until is not None
    return lease_until  # type: ignore[no-any-return]


def test_unclaimed_ticks_older_than_grace_are_closed_as_missed(db: Db) -> None:
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    schedule(db, Work("w", "@every 10s", grace=15 * SECOND), now=t0)
    sync = db.WorkSync(db.engine, table=db.table)
    # At t0+40s, ticks :10 and :20 are more than 15 s old; :30 and :40 are not.
    assert sync.recover(now=t0 + 40 * SECOND) == 2
    closed = {r.sequence for r in db.rows(closed_by="missed")}
    assert closed == {default_sequence(t0 + n * SECOND) for n in (10, 20)}
    for row in db.rows(closed_by="missed"):
        assert (row.status, row.error) == (
            WorkStatus.FAILED,
            "missed: nobody claimed it within its grace period",
        )
    assert sync.acquire_due("w", now=t0 + 40 * SECOND) is not None  # :30 is still claimable


def test_acquire_due_never_hands_out_a_tick_older_than_its_grace(db: Db) -> None:
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    schedule(db, Work("w", "@every 10s", grace=15 * SECOND), now=t0)
    sync = db.WorkSync(db.engine, table=db.table)
    claim = sync.acquire_due("w", now=t0 + 40 * SECOND)  # no recovery ran: :10 and :20 still queued
    assert claim is not None
    assert claim.sequence == default_sequence(t0 + 30 * SECOND)


def test_rows_without_a_lease_or_tick_are_left_alone(db: Db) -> None:
    """Rows another program wrote (no tick time) or claimed (no lease) are never recovered."""
    table = table_named(db.table)
    with db.engine.begin() as conn:
        conn.execute(table.insert(), [
            {"name": "legacy", "status": 1, "sequence": "a"},
            {"name": "legacy", "status": 2, "sequence": "b"},
        ])  # fmt: skip
    assert db.WorkSync(db.engine, table=db.table).recover(now=datetime(2099, 1, 1)) == 0


LANE_SET_UP = (
    "PRAGMA",
    "SELECT @@character_set",
    "SET SESSION innodb_lock_wait_timeout",
    "SELECT pg_backend_pid()",
)
"""What a new lane runs once: SQLite's pragma, MySQL's charset check, psycopg's pooler check."""


def test_recovery_is_one_bounded_statement(db: Db) -> None:
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    work = Work("w", "* * * * * *", max_run=3, grace=SECOND)
    config = SchedulerConfig(lookahead=timedelta(seconds=400), interval="10s")
    db.Scheduler(db.engine, [work], config, table=db.table).run_pass(t0)  # 1,200 rows
    statements: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        if not statement.startswith(LANE_SET_UP):
            statements.append(statement)

    sync = db.WorkSync(db.engine, table=db.table)
    sa.event.listen(db.traced(db.engine), "before_cursor_execute", count)
    try:
        first = sync.recover(now=t0 + timedelta(hours=1))
    finally:
        sa.event.remove(db.traced(db.engine), "before_cursor_execute", count)
    assert first == RECOVERY_BATCH
    updates = [s for s in statements if "UPDATE" in s.upper().split("SET")[0]]
    assert len(updates) == 1  # one UPDATE (WITH ... UPDATE on PostgreSQL), no loop per row
    # MySQL/MariaDB cannot return updated rows: it reads the batch's ids first. Then one read
    # for other programs' undated rows, which finds none here.
    assert len(statements) == (3 if db.name == "mysql" else 2)
    assert sync.recover(now=t0 + timedelta(hours=1)) == 1200 - RECOVERY_BATCH
    assert sync.recover(now=t0 + timedelta(hours=1)) == 0


def test_every_scheduler_pass_runs_recovery(db: Db) -> None:
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    scheduler = schedule(db, Work("w", "@every 10s", grace=5 * SECOND), now=t0)
    scheduler.run_pass(t0 + 30 * SECOND)
    assert scheduler.last_pass is not None
    assert scheduler.last_pass.recovered == 2  # :10 and :20 were missed
    assert len(db.rows(closed_by="missed")) == 2


def test_the_context_manager_keeps_the_lease_alive(db: Db) -> None:
    sync, _ = claim_one(db, Work("w", "* * * * * *", lease=2 * SECOND))
    sync.keep_alive = True
    claim = sync.acquire_due("w")
    assert claim is not None
    with claim:
        for _ in range(7):  # 3.5 s: well past the 2 s lease
            time.sleep(0.5)
            assert sync.recover() == 0 or db.rows(id=claim.id)[0].status == WorkStatus.RUNNING
    (row,) = db.rows(id=claim.id)
    assert (row.status, row.closed_by) == (WorkStatus.SUCCESS, "worker")


def test_a_claim_whose_row_was_recovered_learns_it_while_running(db: Db) -> None:
    sync, now = claim_one(db, Work("w", "* * * * * *", lease=2 * SECOND))
    sync.keep_alive = True
    claim = sync.acquire_due("w")
    assert claim is not None
    noticed = False

    def body() -> None:
        nonlocal noticed
        with claim:
            db.WorkSync(db.engine, table=db.table).recover(now=now + timedelta(minutes=5))
            deadline = time.monotonic() + 5
            while not claim.lost and time.monotonic() < deadline:
                time.sleep(0.1)
            noticed = claim.lost  # the heartbeat noticed; a long body could stop here

    with pytest.raises(ClaimLostError):
        body()  # and on exit, recording success is refused
    assert noticed
    assert db.rows(id=claim.id)[0].closed_by == "lease"


def test_heartbeat_after_finish_raises(db: Db) -> None:
    sync, _ = claim_one(db, Work("w", "* * * * * *"))
    claim = sync.acquire_due("w")
    assert claim is not None
    claim.success()
    with pytest.raises(ClaimLostError, match="already finished"):
        claim.heartbeat()


def test_a_finish_racing_recovery_has_exactly_one_winner(db: Db) -> None:
    """Many rows, each finished by its claim while recovery sweeps: every row ends one way."""
    t0 = db.db_now()
    work = Work("w", "* * * * * *", max_run=4, lease=SECOND, grace=timedelta(minutes=5))
    db.Scheduler(db.engine, [work], CONFIG, table=db.table).run_pass(t0 - 30 * SECOND)
    sync = db.WorkSync(db.engine, table=db.table, keep_alive=False)
    claims = []
    while (claim := sync.acquire_due("w")) is not None:
        claims.append(claim)
    outcomes: dict[int, str] = {}

    def finish_all() -> None:
        for claim in claims:
            try:
                claim.success()
                outcomes[claim.id] = "worker"
            except ClaimLostError:
                outcomes[claim.id] = "lease"

    finisher = threading.Thread(target=finish_all)
    finisher.start()
    sweeps = 0
    while finisher.is_alive():
        sweeps += db.WorkSync(db.engine, table=db.table).recover(now=t0 + timedelta(minutes=1))
    finisher.join()
    by_row = {r.id: r.closed_by for r in db.rows() if r.id in outcomes}
    assert by_row == outcomes  # the database and the claims agree on every row
    assert sweeps == sum(1 for o in outcomes.values() if o == "lease")
