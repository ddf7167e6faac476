"""Names renamed before 1.0 still work, and say what to call instead."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

import worksync_sa as ws

from .extras import need

AT = datetime(2031, 1, 1, tzinfo=timezone.utc)
WORK = ws.Work("report", "*/5 * * * *", max_run=2)
CONFIG = ws.SchedulerConfig(lookahead="10m")


def count(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM works")).scalar_one())


def test_scheduler_tick_is_run_pass_with_a_warning(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'w.db'}")
    ws.upgrade(engine)
    scheduler = ws.Scheduler(engine, [WORK], CONFIG)
    with pytest.warns(DeprecationWarning, match=r"Scheduler\.run_pass\(\)"):
        created = scheduler.tick(AT)
    scheduler.close()
    assert created == 2 * 2  # two ticks in (AT, AT + 10m], two rows each
    assert count(engine) == created


def test_async_scheduler_tick_is_run_pass_with_a_warning(tmp_path: Path) -> None:
    need("greenlet")
    need("aiosqlite")
    from sqlalchemy.ext.asyncio import create_async_engine

    path = tmp_path / "w.db"
    ws.upgrade(sa.create_engine(f"sqlite:///{path}"))

    async def main() -> int:
        engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
        scheduler = ws.AsyncScheduler(engine, [WORK], CONFIG)
        try:
            with pytest.warns(DeprecationWarning, match=r"AsyncScheduler\.run_pass\(\)"):
                return await scheduler.tick(AT)
        finally:
            await scheduler.close()
            await engine.dispose()

    created = asyncio.run(main())
    assert created == 4
    assert count(sa.create_engine(f"sqlite:///{path}")) == 4
