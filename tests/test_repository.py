"""Repositories run inside the caller's transaction and never commit."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from worksync_sa import ClaimRepository, QueryRepository, ScheduleRepository, WorkStatus
from worksync_sa.models import table_named
from worksync_sa.repository import NewRow, TickCount

from .conftest import Db

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def rows(name: str, ticks: int, max_run: int) -> list[NewRow]:
    return [
        NewRow(name, f"tick-{n}", slot, T0 + timedelta(seconds=n))
        for n in range(ticks)
        for slot in range(max_run)
    ]


def test_a_host_transaction_that_rolls_back_leaves_nothing(db: Db) -> None:
    table = table_named(db.table)
    with db.engine.connect() as conn:
        transaction = conn.begin()
        assert ScheduleRepository(table).insert_queued(conn, rows("w", 2, 2)) == 4
        claim = ClaimRepository(table).claim(conn, "w", "tick-0", "a" * 32, "host:1")
        assert claim is not None
        assert ClaimRepository(table).finish(conn, claim.id, claim.token, WorkStatus.SUCCESS)
        transaction.rollback()
    assert db.count() == 0


def test_a_host_transaction_that_commits_keeps_everything(db: Db) -> None:
    table = table_named(db.table)
    with db.engine.begin() as conn:
        ScheduleRepository(table).insert_queued(conn, rows("w", 2, 2))
        claim = ClaimRepository(table).claim(conn, "w", "tick-1", "b" * 32, "host:2")
        assert claim is not None
    counts = {(c.sequence, c.queued, c.running) for c in _counts(db)}
    assert counts == {("tick-0", 2, 0), ("tick-1", 1, 1)}


def test_insert_counts_only_new_rows(db: Db) -> None:
    table = table_named(db.table)
    with db.engine.begin() as conn:
        assert ScheduleRepository(table).insert_queued(conn, rows("w", 3, 2)) == 6
        assert ScheduleRepository(table).insert_queued(conn, rows("w", 4, 3)) == 12 - 6
        assert ScheduleRepository(table).insert_queued(conn, []) == 0


def _counts(db: Db) -> list[TickCount]:
    with db.engine.connect() as conn:
        return list(QueryRepository(table_named(db.table)).tick_counts(conn, "w"))


def test_repositories_take_a_table_name_as_the_services_do(db: Db) -> None:
    """``ScheduleRepository("works")`` as ``Scheduler(..., table="works")``; bad names refused."""
    from worksync_sa.errors import InvalidArgumentError
    from worksync_sa.repository import LedgerRepository, MaintenanceRepository

    with db.engine.begin() as conn:
        assert ScheduleRepository(db.table).insert_queued(conn, rows("w", 1, 2)) == 2
        claim = ClaimRepository(db.table).claim(conn, "w", "tick-0", "c" * 32, "host:3")
        assert claim is not None
    with db.engine.connect() as conn:
        assert [c.running for c in QueryRepository(db.table).tick_counts(conn, "w")] == [1]
    for repository in (ScheduleRepository, ClaimRepository, MaintenanceRepository,
                       QueryRepository, LedgerRepository):  # fmt: skip
        assert repository(db.table).table.name == db.table
        with pytest.raises(InvalidArgumentError, match="table name"):
            repository("works; DROP TABLE works")
        with pytest.raises(InvalidArgumentError, match="table name or a sqlalchemy Table"):
            repository(42)  # type: ignore[arg-type]
