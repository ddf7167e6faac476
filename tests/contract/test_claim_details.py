"""What a claim tells its handler: which slot (shard) it holds, the tick's time, its attempt.

Expected values come from the rows themselves, read back with plain SQL, and
from the ticks the test scheduled; nothing is computed by the code under test.
"""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa

from worksync_sa import (
    DetailsNotLoadedError,
    SchedulerConfig,
    Work,
    WorkStatus,
    WorkSync,
    WorksyncError,
    default_sequence,
)
from worksync_sa.events import Event
from worksync_sa.models import table_named

from ..conftest import Db

UTC = timezone.utc
T0 = datetime(2026, 1, 1, tzinfo=UTC)
TICK_AT = T0 + timedelta(seconds=30)
TICK = default_sequence(TICK_AT)
CONFIG = SchedulerConfig(lookahead=timedelta(minutes=1), interval="10s")


def schedule(db: Db, *works: Work, now: datetime = T0) -> None:
    db.Scheduler(db.engine, list(works), CONFIG, table=db.table).run_pass(now)


def row_of(db: Db, claim_id: int) -> Any:
    table = table_named(db.table)
    with db.engine.connect() as conn:
        return conn.execute(sa.select(table).where(table.c.id == claim_id)).one()


def as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def test_due_claims_know_their_slot_tick_and_attempt(db: Db) -> None:
    schedule(db, Work("sync", "@every 30s", max_run=3))
    ws = db.WorkSync(db.engine, table=db.table)
    claims = [ws.acquire_due("sync", now=TICK_AT) for _ in range(3)]
    assert all(claims)
    slots = []
    for claim in claims:
        assert claim is not None
        row = row_of(db, claim.id)
        assert claim.slot == row.slot
        assert claim.tick_at == TICK_AT == as_utc(row.tick_at)
        assert claim.tick_at is not None
        assert claim.tick_at.tzinfo is not None
        assert claim.attempt == 1 == row.attempts
        slots.append(claim.slot)
        claim.success()
    assert sorted(s if s is not None else -1 for s in slots) == [0, 1, 2]  # each shard once


def test_claims_by_sequence_know_them_too(db: Db) -> None:
    schedule(db, Work("sync", "@every 30s", max_run=2))
    ws = db.WorkSync(db.engine, table=db.table)
    seen = []
    for _ in range(2):
        claim = ws.acquire("sync", TICK)
        assert claim is not None
        with claim:  # the asyncio twin learns them when `async with` begins on MySQL
            row = row_of(db, claim.id)
            seen.append((claim.slot, claim.tick_at, claim.attempt))
            assert (claim.slot, claim.tick_at, claim.attempt) == (
                row.slot,
                as_utc(row.tick_at),
                row.attempts,
            )
    assert sorted(seen, key=lambda s: s[0] or 0) == [(0, TICK_AT, 1), (1, TICK_AT, 1)]


def test_load_details_reads_them_outside_the_with_block(db: Db) -> None:
    schedule(db, Work("sync", "@every 30s", max_run=2))
    claim = db.WorkSync(db.engine, table=db.table).acquire("sync", TICK)
    assert claim is not None
    claim.load_details()
    row = row_of(db, claim.id)
    assert (claim.slot, claim.tick_at, claim.attempt) == (row.slot, TICK_AT, row.attempts)
    claim.load_details()  # loaded: nothing more to read
    claim.success()


def test_details_asked_for_before_they_are_read(db: Db) -> None:
    """A claim by sequence on MySQL returns only the id: the documented difference.

    The blocking claim reads the details when first asked; the asyncio one
    cannot await in a property and says how to load them. Elsewhere the claim
    returns them, and both answer at once.
    """
    schedule(db, Work("sync", "@every 30s"))
    claim = db.WorkSync(db.engine, table=db.table).acquire("sync", TICK)
    assert claim is not None
    if db.twin == "asyncio" and db.name == "mysql":
        with pytest.raises(DetailsNotLoadedError, match="load_details") as raised:
            _ = claim.slot
        assert isinstance(raised.value, (WorksyncError, RuntimeError))
        claim.load_details()
    assert (claim.slot, claim.tick_at, claim.attempt) == (0, TICK_AT, 1)
    claim.success()


def test_a_requeued_row_counts_its_attempts(db: Db) -> None:
    schedule(db, Work("sync", "@every 30s", lease="2s", max_attempts=2))
    ws = db.WorkSync(db.engine, table=db.table)
    first = ws.acquire("sync", TICK)
    assert first is not None
    assert row_of(db, first.id).attempts == 1
    # The worker vanishes: once its lease has run out, recovery puts the row back in the queue.
    lease_until = as_utc(row_of(db, first.id).lease_until)
    ws.recover(now=lease_until + timedelta(seconds=1))  # also closes later ticks as missed
    assert row_of(db, first.id).status == WorkStatus.QUEUED
    again = ws.acquire("sync", TICK)
    assert again is not None
    with again:
        assert again.id == first.id
        assert again.attempt == 2 == row_of(db, first.id).attempts
        assert again.slot == 0


def test_rows_other_programs_wrote_have_no_slot_or_tick(db: Db) -> None:
    """The Go original's insert: no slot, no tick time."""
    sequence = "2026-01-01 00:00:30"
    table = table_named(db.table)
    with db.engine.begin() as conn:
        conn.execute(
            sa.insert(table),
            {"created_at": T0, "name": "legacy", "status": 1, "sequence": sequence},
        )
    claim = db.WorkSync(db.engine, table=db.table).acquire("legacy", sequence)
    assert claim is not None
    with claim:
        assert (claim.slot, claim.tick_at, claim.attempt) == (None, None, 1)


def test_the_claimed_event_carries_the_lag_by_the_database_clock(db: Db) -> None:
    events: list[Event] = []
    now = datetime.now(UTC).replace(microsecond=0)
    work = Work("late", "@every 10s", grace="10m")
    db.Scheduler(db.engine, [work], CONFIG, table=db.table).run_pass(now - timedelta(seconds=40))
    ws = db.WorkSync(db.engine, table=db.table, listeners=[events.append])
    claim = ws.acquire_due("late", grace=timedelta(minutes=10))
    assert claim is not None
    claim.success()
    row = row_of(db, claim.id)
    expected = (as_utc(row.started_at) - as_utc(row.tick_at)).total_seconds()
    (claimed,) = [e for e in events if e.action == "claimed"]
    assert claimed.lag is not None
    assert claimed.lag == pytest.approx(expected, abs=1e-3)
    assert 0 < claimed.lag < 120


def test_a_blocking_claim_by_sequence_on_mysql_reads_its_details_only_when_asked(
    maria_db: Db,
) -> None:
    """One round trip per claim stays true: the details cost a read only if a handler asks."""
    schedule(maria_db, Work("sync", "@every 30s", max_run=2))
    statements = itertools.count()

    def counted(*_: object) -> None:
        next(statements)

    ws = WorkSync(maria_db.engine, table=maria_db.table)
    claim = ws.acquire("sync", TICK)  # warm the lane first
    assert claim is not None
    claim.success()
    sa.event.listen(maria_db.engine, "before_cursor_execute", counted)
    try:
        start = next(statements)
        claim = ws.acquire("sync", TICK)
        assert claim is not None
        claimed = next(statements)
        assert claimed - start == 2  # the claim itself (count() itself takes one)
        assert claim.slot == 1
        assert claim.attempt == 1
        assert claim.tick_at == TICK_AT
        assert next(statements) - claimed == 2  # one read for all three
        claim.success()
    finally:
        sa.event.remove(maria_db.engine, "before_cursor_execute", counted)
        ws.close()
