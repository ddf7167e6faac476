"""A due claim looks back no further than the work's grace, so its cost stays flat with history.

The row's own grace decides what may be claimed; the ``grace`` a caller
passes (``Worker`` passes each Work's) bounds the index range the claim
reads. Checked by behaviour on every backend and twin, and on the servers
by what one claim reads with statistics gathered before the history
finished (the plan a stale ``ANALYZE`` picks).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from benchmarks.due_history import load, reads_per_claim
from worksync_sa import (
    InvalidArgumentError,
    Scheduler,
    SchedulerConfig,
    Work,
    Worker,
    WorkStatus,
    default_sequence,
)

from .conftest import Db

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
S = timedelta(seconds=1)
CONFIG = SchedulerConfig(lookahead="600s", interval="10s")


def schedule(db: Db, work: Work, now: datetime = T0) -> None:
    db.Scheduler(db.engine, [work], CONFIG, table=db.table).run_pass(now)


def test_a_due_claim_looks_back_no_further_than_the_grace_given(twin_db: Db) -> None:
    db = twin_db
    schedule(db, Work("w", "@every 10s", grace=timedelta(hours=1)))
    sync = db.WorkSync(db.engine, table=db.table, keep_alive=False)
    now = T0 + 600 * S
    near = sync.acquire_due("w", now=now, grace=35 * S)
    assert near is not None
    assert near.sequence == default_sequence(T0 + 570 * S)  # the earliest at most 35 s late
    assert sync.acquire_due("w", now=now, grace="35s") is not None  # 580 s; strings too
    far = sync.acquire_due("w", now=now)  # the row's grace alone: an hour back
    assert far is not None
    assert far.sequence == default_sequence(T0 + 10 * S)


def test_the_rows_own_grace_still_decides(twin_db: Db) -> None:
    db = twin_db
    schedule(db, Work("w", "@every 10s", grace=15 * S))
    sync = db.WorkSync(db.engine, table=db.table, keep_alive=False)
    claim = sync.acquire_due("w", now=T0 + 40 * S, grace=timedelta(hours=1))
    assert claim is not None
    assert claim.sequence == default_sequence(T0 + 30 * S)  # :10 and :20 are past 15 s


@pytest.mark.parametrize(
    ("grace", "message"),
    [
        (timedelta(0), "grace must be positive"),
        (-S, "grace must be positive"),
        ("soon", "grace: "),
        (timedelta(days=366), "grace must be at most 365 days"),
        (30, "grace must be a timedelta or a duration string"),
    ],
)
def test_a_bad_grace_is_refused_and_claims_nothing(db: Db, grace: object, message: str) -> None:
    schedule(db, Work("w", "@every 10s", grace=timedelta(hours=1)))
    sync = db.WorkSync(db.engine, table=db.table, keep_alive=False)
    with pytest.raises(InvalidArgumentError, match=message):
        sync.acquire_due("w", now=T0 + 60 * S, grace=grace)  # type: ignore[arg-type]
    assert {row.status for row in db.rows()} == {WorkStatus.QUEUED}


def test_the_worker_looks_back_as_far_as_its_works_grace(db: Db) -> None:
    """Rows written with an hour's grace; this worker's Work says 45 s: it claims only those."""
    now = db.db_now()
    written = Work("w", "@every 10s", grace=timedelta(hours=1))
    Scheduler(db.engine, [written], CONFIG, table=db.table).run_pass(now - 300 * S)
    handled: list[str] = []
    worker = Worker(
        db.engine, [Work("w", "@every 10s", grace=45 * S)], lambda c: handled.append(c.sequence),
        table=db.table,
    )  # fmt: skip
    worker.run_once()
    worker.close()
    claimed = [row for row in db.rows() if row.status != WorkStatus.QUEUED]
    assert claimed
    assert all(row.started_at - row.tick_at <= 46 * S for row in claimed)
    assert len(handled) == len(claimed) <= 5  # four or five ticks in the last 45 s
    older = [row for row in db.rows() if row.tick_at < now - 60 * S]
    assert older
    assert {row.status for row in older} == {WorkStatus.QUEUED}  # left for its own grace


@pytest.mark.slow
def test_a_claims_reads_stay_flat_with_stale_statistics(server_db: Db) -> None:
    """20,000 finished rows, statistics from when they were all queued; one claim reads little."""
    db = server_db
    load(db.engine, db.table, 20_000, 50)
    count, unit = reads_per_claim(db.engine, db.table, timedelta(hours=1))
    # PostgreSQL: about 40 buffers; MariaDB: a couple of handler reads. Without
    # the floor a stale plan read thousands of buffers, growing with the history.
    assert count < (200 if unit == "buffers" else 20), (count, unit)
    sync = db.WorkSync(db.engine, table=db.table, keep_alive=False)
    assert sync.acquire_due("lib", grace=timedelta(hours=1)) is not None
