"""A pause and a run-now tick, honoured by both twins' schedulers and workers alike.

Both read the pauses in the pass core they share; this holds that each twin
performs that read, and that a run-now tick is claimed through each twin's
claim, with the counts read from the table.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from worksync_sa import Operator, SchedulerConfig, Work, WorkStatus
from worksync_sa.models import table_named

from ..conftest import Db


def queued_ahead(db: Db) -> int:
    t = table_named(db.table)
    now = db.db_now()
    with db.engine.connect() as conn:
        select = sa.select(sa.func.count()).where(
            t.c.status == WorkStatus.QUEUED.value, t.c.tick_at > now
        )
        return int(conn.execute(select).scalar_one())


def test_each_twin_honours_a_pause_and_claims_a_run_now_tick(db: Db) -> None:
    work = Work("w", "@every 1s", max_run=2)
    scheduler = db.Scheduler(
        db.engine, [work], SchedulerConfig(lookahead="4s", interval="1s"), table=db.table
    )
    operator = Operator(db.engine, table=db.table, by="ann@test", works=[work])
    try:
        operator.pause("w", reason="twins")
        scheduler.run_pass()
        assert queued_ahead(db) == 0
        assert scheduler.last_pass is not None
        assert scheduler.last_pass.created == 0
        operator.resume("w")
        scheduler.run_pass()
        assert queued_ahead(db) > 0
    finally:
        scheduler.close()
    made = Operator(db.engine, table=db.table, works=[Work("n", "0 0 1 1 *", max_run=2)]).run_now(
        "n"
    )
    ran: list[Any] = []
    worker = db.Worker(db.engine, ["n"], ran.append, table=db.table)
    try:
        worker.run_due()
    finally:
        worker.close()
    assert len(ran) == 2
    assert [row.status for row in db.rows(sequence=made.label)] == [WorkStatus.SUCCESS] * 2
