"""Retention: old finished rows go in small primary-key-ordered batches, and never come back."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from worksync_sa import (
    InvalidArgumentError,
    MaintenanceRepository,
    SchedulerConfig,
    Work,
    WorkStatus,
)
from worksync_sa.models import table_named

from ..conftest import Db

DAY = timedelta(days=1)
CONFIG = SchedulerConfig(lookahead="1m", interval="10s")


def history(
    db: Db, *, days_ago: int, name: str = "w", ticks: int = 4, max_run: int = 2
) -> list[int]:
    """Ticks that ran ``days_ago``: every row claimed and finished; returns their ids."""
    work = Work(name, "@every 10s", max_run=max_run, grace=timedelta(days=365))
    at = db.db_now() - days_ago * DAY
    db.Scheduler(db.engine, [work], CONFIG, table=db.table).run_pass(at)
    sync = db.WorkSync(db.engine, table=db.table, keep_alive=False)
    table = table_named(db.table)
    ids = []
    for row in db.rows(status=WorkStatus.QUEUED, name=name)[: ticks * max_run]:
        claim = sync.acquire(name, row.sequence)
        assert claim is not None
        claim.success() if claim.id % 2 else claim.fail("boom")
        ids.append(claim.id)
    with db.engine.begin() as conn:  # they finished back then
        conn.execute(
            sa.update(table).where(table.c.id.in_(ids)).values(finished_at=at, started_at=at)
        )
    return ids


def test_prune_deletes_old_finished_rows_in_small_batches(db: Db) -> None:
    old = history(db, days_ago=10)
    young = history(db, days_ago=1, name="young")
    still_queued = {r.id for r in db.rows(status=WorkStatus.QUEUED)}
    deletes: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement.lstrip().upper().startswith("DELETE"):
            deletes.append(statement)

    sa.event.listen(db.traced(db.engine), "before_cursor_execute", count)
    try:
        assert db.WorkSync(db.engine, table=db.table).prune(2 * DAY, batch_size=3) == len(old)
    finally:
        sa.event.remove(db.traced(db.engine), "before_cursor_execute", count)
    # One small autocommit DELETE per batch of at most 3 rows: short, separate transactions.
    assert len(deletes) == -(-len(old) // 3)
    left = {r.id for r in db.rows()}
    assert not left & set(old)
    assert set(young) <= left  # finished, but not old enough
    assert still_queued <= left  # never finished: never pruned


def test_batches_go_in_primary_key_order(db: Db) -> None:
    old = history(db, days_ago=10)
    cutoff = db.db_now() - 2 * DAY
    with db.engine.begin() as conn:
        deleted = MaintenanceRepository(table_named(db.table)).prune_batch(conn, cutoff, 3)
    assert deleted == 3
    left = sorted(set(old) & {r.id for r in db.rows()})
    assert left == sorted(old)[3:]


def test_pruned_ticks_are_never_created_again(db: Db) -> None:
    history(db, days_ago=10, ticks=6)
    db.WorkSync(db.engine, table=db.table).recover()  # close the rest of that old window as missed
    db.WorkSync(db.engine, table=db.table).prune(2 * DAY)
    assert db.rows() == []
    now = db.db_now()
    restarted = db.Scheduler(
        db.engine, [Work("w", "@every 10s", max_run=2)], CONFIG, table=db.table
    )
    restarted.run_pass()
    assert db.rows()
    assert all(r.tick_at > now - CONFIG.catchup for r in db.rows())


def test_a_scheduler_with_retention_prunes_as_it_passes(db: Db) -> None:
    old = history(db, days_ago=10)
    config = SchedulerConfig(lookahead="1m", interval="10s", retention="3d")
    scheduler = db.Scheduler(db.engine, [Work("other", "@every 10s")], config, table=db.table)
    scheduler.run_pass()
    assert scheduler.last_pass is not None
    assert scheduler.last_pass.pruned == len(old)
    scheduler.run_pass()  # pruning is rate-limited: the next pass does not look again
    assert scheduler.last_pass.pruned == 0


@pytest.mark.parametrize(
    ("older_than", "batch_size", "message"),
    [
        (timedelta(hours=1), 100, "older_than"),
        ("7d", 100, "older_than"),
        (3 * DAY, 0, "batch_size"),
        (3 * DAY, 1.5, "batch_size"),
        (3 * DAY, 10**9, "batch_size"),
    ],
)
def test_bad_prune_arguments_delete_nothing(
    db: Db, older_than: object, batch_size: object, message: str
) -> None:
    old = history(db, days_ago=10)
    with pytest.raises(InvalidArgumentError, match=message):
        db.WorkSync(db.engine, table=db.table).prune(older_than, batch_size)  # type: ignore[arg-type]
    assert set(old) <= {r.id for r in db.rows()}
