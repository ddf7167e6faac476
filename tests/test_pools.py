"""Lanes never leak into the host's connections, whatever pool the engine has.

A host app's own tests usually run on ``sqlite://`` (a ``SingletonThreadPool``)
or a ``StaticPool``: one connection shared by everyone. The services must not
leave their autocommit mode or any marker on it, or the host's transactions
stop being transactions. A ``NullPool`` engine opens a connection per checkout;
on it the services keep lanes of their own, as on any other pool.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import pool

from worksync_sa import (
    Ledger,
    Scheduler,
    SchedulerConfig,
    Work,
    WorkStatus,
    WorkSync,
    default_sequence,
    upgrade,
)

from .conftest import Backend, fresh_table_name
from .extras import need

T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
NOTES = sa.Table("host_notes", sa.MetaData(), sa.Column("note", sa.String(50)))


def memory_engine(poolclass: type[pool.Pool]) -> sa.Engine:
    return sa.create_engine(
        "sqlite://", poolclass=poolclass, connect_args={"check_same_thread": False}
    )


@pytest.fixture(
    params=["static", "singleton-thread", "null-sqlite-file", "null-mysql", "null-postgresql"]
)
def engine(
    request: pytest.FixtureRequest, tmp_path: Path, _backends: dict[str, object]
) -> Iterator[sa.Engine]:
    kind = request.param
    if kind == "static":
        made = memory_engine(pool.StaticPool)
    elif kind == "singleton-thread":
        made = memory_engine(pool.SingletonThreadPool)
    elif kind == "null-sqlite-file":
        made = sa.create_engine(f"sqlite:///{tmp_path / 'host.db'}", poolclass=pool.NullPool)
    else:
        from .conftest import require

        backend: Backend = require(_backends, kind.removeprefix("null-"))
        made = sa.create_engine(backend.url, poolclass=pool.NullPool)
    yield made
    made.dispose()


def use_every_service(engine: sa.Engine, table: str) -> tuple[Scheduler, WorkSync]:
    """What a host's code does with worksync_sa; the services stay open, as in an app."""
    upgrade(engine, table=table)
    work = Work("report", "@every 1s", max_run=2)
    scheduler = Scheduler(
        engine, [work], SchedulerConfig(lookahead="3s", interval="1s"), table=table
    )
    scheduler.run_pass(T0)
    sync = WorkSync(engine, table=table)
    claim = sync.acquire("report", default_sequence(T0 + timedelta(seconds=1)))
    assert claim is not None
    with claim:
        pass
    assert sync.recover(now=T0) == 0
    assert Ledger(engine, table=table).summary()
    return scheduler, sync


def host_transaction_rolls_back(engine: sa.Engine) -> None:
    NOTES.create(engine, checkfirst=True)
    with engine.connect() as conn:
        conn.begin()
        conn.execute(NOTES.insert(), {"note": "not kept"})
        conn.rollback()
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(NOTES)).scalar_one() == 0
        kept = conn.in_transaction()
    with engine.begin() as conn:  # and a committed one is kept
        conn.execute(NOTES.insert(), {"note": "kept"})
    with engine.connect() as conn:
        assert conn.execute(sa.select(NOTES.c.note)).scalars().all() == ["kept"]
    assert kept is True  # autobegin: the host's connection is not in autocommit
    NOTES.drop(engine)


def test_a_host_transaction_still_rolls_back_after_the_services_ran(engine: sa.Engine) -> None:
    table = fresh_table_name()
    scheduler, sync = use_every_service(engine, table)
    try:
        host_transaction_rolls_back(engine)
        # the services still work afterwards, and their own writes were committed
        claim = sync.acquire("report", default_sequence(T0 + timedelta(seconds=2)))
        assert claim is not None
        claim.success()
        scheduler.run_pass(T0 + timedelta(seconds=1))
    finally:
        sync.close()
        scheduler.close()
    t = sa.table(table, sa.column("status"))
    with engine.connect() as conn:
        statuses = conn.execute(sa.select(t.c.status)).scalars().all()
    assert statuses.count(WorkStatus.SUCCESS.value) == 2


def test_the_asyncio_twins_on_a_static_pool_leave_the_host_alone() -> None:
    need("greenlet", "async-sqlite")
    need("aiosqlite")
    from sqlalchemy.ext.asyncio import create_async_engine

    from worksync_sa import AsyncScheduler, AsyncWorkSync

    async def main() -> list[str]:
        engine = create_async_engine("sqlite+aiosqlite://", poolclass=pool.StaticPool)
        table = fresh_table_name()
        async with engine.begin() as conn:
            await conn.run_sync(lambda c: upgrade(c.engine, table=table))
        work = Work("report", "@every 1s")
        scheduler = AsyncScheduler(
            engine, [work], SchedulerConfig(lookahead="3s", interval="1s"), table=table
        )
        await scheduler.run_pass(T0)
        await scheduler.close()
        sync = AsyncWorkSync(engine, table=table)
        claim = await sync.acquire("report", default_sequence(T0 + timedelta(seconds=1)))
        assert claim is not None
        async with claim:
            pass
        async with engine.connect() as conn:
            await conn.run_sync(NOTES.create)
            await conn.commit()
            await conn.execute(NOTES.insert(), {"note": "not kept"})
            await conn.rollback()
            notes = (await conn.execute(sa.select(NOTES.c.note))).scalars().all()
        await sync.close()
        await engine.dispose()
        return list(notes)

    assert asyncio.run(main()) == []
