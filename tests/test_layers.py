"""The layers as the issue asked for them, pinned: a claim's short path, one kind of steps."""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from types import FrameType
from typing import Any

import sqlalchemy as sa

from worksync_sa import NewRow, ScheduleRepository, WorkSync
from worksync_sa._run.steps import Call, drive
from worksync_sa.models import table_named

from .conftest import Db

AT = datetime(2030, 1, 1, tzinfo=timezone.utc)


def schedule(db: Db, slots: int) -> None:
    rows = [NewRow("w", "s1", slot, AT) for slot in range(slots)]
    with db.engine.begin() as conn:
        ScheduleRepository(table_named(db.table)).insert_queued(conn, rows)


def test_a_claim_reaches_the_driver_in_a_few_frames(db: Db) -> None:
    """From ``WorkSync.acquire`` to the DB-API cursor's ``execute``, on every database."""
    schedule(db, 3)
    sync = WorkSync(db.engine, table=db.table)
    assert sync.acquire("w", "s1") is not None  # the lane is open, the statement compiled
    stacks: list[list[str]] = []

    def watch(frame: FrameType, event: str, arg: Any) -> None:
        # The driver's execute: C (sqlite3) or Python (mysqlclient, psycopg), called by us.
        if event == "c_call" and getattr(arg, "__name__", "") == "execute":
            caller: FrameType | None = frame
        elif event == "call" and frame.f_code.co_name == "execute":
            caller = frame.f_back
        else:
            return
        if caller is None or not caller.f_code.co_filename.endswith("_sql/direct.py"):
            return
        names: list[str] = []
        at: FrameType | None = caller
        while at is not None and at.f_code.co_name != "acquire":
            names.append(f"{at.f_code.co_filename.rsplit('/', 1)[-1]}:{at.f_code.co_name}")
            at = at.f_back
        if at is not None:
            stacks.append(names)

    sys.setprofile(watch)
    try:
        claim = sync.acquire("w", "s1")
    finally:
        sys.setprofile(None)
    sync.close()
    assert claim is not None
    path = stacks[0]
    # execute <- _claim_checked <- the runner's step <- drive <- the runner's call <- acquire,
    # then the cursor
    assert len(path) + 2 <= 7, path
    assert path[0] == "direct.py:execute", path
    assert "repository.py:_claim_checked" in path, path


def test_a_single_call_is_a_one_step_service_call(db: Db) -> None:
    """Every core method returns steps: a lone Call drives like a generator of calls."""

    def count(conn: sa.Connection) -> int:
        t = table_named(db.table)
        return int(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one())

    schedule(db, 2)
    call = Call("count", count)

    def two() -> Any:
        first = yield call
        second = yield call
        return first + second

    with db.engine.connect() as conn:
        assert drive(call, lambda c: c.work(conn)) == 2
        assert drive(two(), lambda c: c.work(conn)) == 4
