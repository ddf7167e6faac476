"""Rows another program writes, as the Go original does, are first-class on every backend.

The original creates a tick by counting its rows, then inserting what is
missing with only ``created_at, name, status, sequence`` (no slot, no tick
time), all in one transaction. Here that is done with plain Core statements;
``test_original_fleet`` races the original's exact MySQL statements.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa

from worksync_sa import ClaimLostError, Ledger, SchedulerConfig, Work, WorkStatus, local_sequence
from worksync_sa.models import table_named

from ..conftest import Db
from ..twins import second_claim_object

UTC = timezone.utc
T0 = datetime(2026, 1, 5, tzinfo=UTC)
SECOND = timedelta(seconds=1)
CONFIG = SchedulerConfig(lookahead="1m", interval="10s")


def at(seconds: float) -> datetime:
    return T0 + seconds * SECOND


def label(seconds: float) -> str:
    return at(seconds).strftime("%Y-%m-%d %H:%M:%S")


def original_create(db: Db, name: str, sequence: str, max_run: int) -> int:
    """The original's create: count the tick's rows, insert the missing ones; returns inserted."""
    t = table_named(db.table)
    with db.engine.begin() as conn:
        count = conn.execute(
            sa.select(sa.func.count()).where(t.c.name == name, t.c.sequence == sequence)
        ).scalar_one()
        missing = max_run - count
        if missing > 0:
            row = {"created_at": T0, "name": name, "status": 1, "sequence": sequence}
            conn.execute(sa.insert(t), [row] * missing)
        return max(missing, 0)


def schedule(db: Db, max_run: int = 2, **work: Any) -> Any:
    scheduler = db.Scheduler(
        db.engine, [Work("w", "@every 10s", max_run=max_run, **work)], CONFIG, table=db.table
    )
    scheduler.run_pass(at(0))
    return scheduler


def rows_of(db: Db, seconds: float) -> list[Any]:
    return db.rows(name="w", sequence=label(seconds))


def test_the_originals_rows_made_first_fill_the_budget_and_get_dated(db: Db) -> None:
    assert original_create(db, "w", label(30), 2) == 2
    scheduler = schedule(db, grace=timedelta(seconds=20), lease=timedelta(seconds=90))
    thirty = rows_of(db, 30)
    assert len(thirty) == 2  # no slots of ours beside them
    assert {(r.slot, r.tick_at) for r in thirty} == {(None, at(30))}  # dated, as ours are
    assert {(r.grace_seconds, r.lease_seconds) for r in thirty} == {(20, 90)}
    assert scheduler.last_pass.adopted == 2
    assert [len(rows_of(db, s)) for s in (10, 20, 40, 50, 60)] == [2] * 5
    assert original_create(db, "w", label(40), 2) == 0  # and the original adds nothing to ours


def test_a_partial_tick_of_the_original_gets_only_the_missing_slots(db: Db) -> None:
    original_create(db, "w", label(30), 1)  # its MaxRun was 1
    schedule(db, max_run=3)
    assert sorted((r.slot is None) for r in rows_of(db, 30)) == [False, False, True]
    assert {r.slot for r in rows_of(db, 30)} == {None, 0, 1}


def test_our_claims_on_the_originals_rows_get_leases_and_fencing(db: Db) -> None:
    original_create(db, "w", label(30), 2)
    schedule(db, grace=timedelta(seconds=5))
    sync = db.WorkSync(db.engine, table=db.table, keep_alive=False)
    first = sync.acquire_due("w", now=at(31))  # due by its adopted tick time
    assert first is not None
    assert first.sequence == label(30)
    (row,) = db.rows(id=first.id)
    assert row.slot is None
    assert row.lease_until is not None
    assert row.token == first.token
    first.heartbeat()
    first.success()
    with pytest.raises(ClaimLostError, match="no longer holds"):  # fenced by token and status
        second_claim_object(first).fail("twice")
    assert db.rows(id=first.id)[0].status == WorkStatus.SUCCESS
    second = sync.acquire("w", label(30))
    assert second is not None
    assert sync.acquire("w", label(30)) is None  # two rows, two claims, no more


def test_unclaimed_rows_of_the_original_are_closed_as_missed_after_their_grace(db: Db) -> None:
    original_create(db, "w", label(30), 2)
    schedule(db, grace=timedelta(seconds=20))
    sync = db.WorkSync(db.engine, table=db.table)
    sync.recover(now=at(49))  # :10 and :20 are missed; :30 is within its grace
    assert {(r.status, r.closed_by) for r in rows_of(db, 30)} == {(WorkStatus.QUEUED, None)}
    assert sync.recover(now=at(51)) == 2
    assert {(r.status, r.closed_by) for r in rows_of(db, 30)} == {(WorkStatus.FAILED, "missed")}


def test_rows_no_scheduler_of_ours_plans_are_still_shown_and_closed(db: Db) -> None:
    """A work only the original schedules: its label is the only clue to its time."""
    original_create(db, "theirs", label(30), 2)
    entries = list(Ledger(db.engine, table=db.table).entries(since=at(0), until=at(60)))
    assert [(e.name, e.tick_at, e.created, e.queued, e.max_run) for e in entries] == [
        ("theirs", at(30), 2, 2, 2)
    ]
    sync = db.WorkSync(db.engine, table=db.table)
    # The label's zone is unknown (UTC-12 .. UTC+14): closed only once its latest reading passed.
    assert sync.recover(now=at(30) + timedelta(hours=12, seconds=59)) == 0
    assert sync.recover(now=at(30) + timedelta(hours=12, seconds=61)) == 2
    entries = list(Ledger(db.engine, table=db.table).entries(since=at(0), until=at(60)))
    assert [(e.name, e.missed) for e in entries] == [("theirs", 2)]


def test_the_ledger_pages_through_dated_and_undated_ticks_in_order(db: Db) -> None:
    original_create(db, "theirs", label(25), 1)
    schedule(db, max_run=1)  # "w" at :10 ... :60
    ledger = Ledger(db.engine, table=db.table)
    seen = []
    page = ledger.page(since=at(0), until=at(100), limit=2)
    while True:
        seen += [(e.tick_at, e.name) for e in page.entries]
        if page.after is None:
            break
        page = ledger.page(since=at(0), until=at(100), after=page.after, limit=2)
    expected = [(at(s), "w") for s in range(10, 70, 10)]
    expected.insert(2, (at(25), "theirs"))
    assert seen == expected


def test_the_ledger_reads_undated_labels_in_the_zone_of_the_works_rows_or_the_one_given(
    db: Db,
) -> None:
    """Europe/Berlin is UTC+1 on T0: the original's label 01:00:30 is the tick at 00:00:30."""
    berlin = local_sequence("Europe/Berlin")
    original_create(db, "w", berlin(at(30)), 1)  # before our scheduler's first pass
    original_create(db, "theirs", berlin(at(45)), 1)  # a work only the original schedules
    config = SchedulerConfig(lookahead="1m", interval="10s", sequence=berlin)
    work = Work("w", "@every 10s", grace="10s")
    scheduler = db.Scheduler(db.engine, [work], config, table=db.table)
    scheduler.run_pass(at(60))  # plans 70 s ... 120 s; the tick at 30 s, past grace, stays undated
    assert {r.tick_at for r in db.rows(name="w", sequence=berlin(at(30)))} == {None}
    for zone, theirs in ((None, at(45) + timedelta(hours=1)), ("Europe/Berlin", at(45))):
        ledger = Ledger(db.engine, table=db.table, sequence_zone=zone)
        try:
            entries = list(ledger.entries(since=at(0), until=at(7200)))
        finally:
            ledger.close()
        ticks = [(e.tick_at, e.name) for e in entries]
        # "w": the zone its rows of ours record; "theirs": the zone given, else UTC.
        expected = [(at(30), "w"), *((at(s), "w") for s in range(70, 130, 10)), (theirs, "theirs")]
        assert ticks == sorted(expected)
