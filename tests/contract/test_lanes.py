"""The services' held connections (lanes), the same on both runners.

Each test runs calls on the twin's own runner (``BlockingRunner`` on the
engine, ``AsyncRunner`` on an ``AsyncEngine`` over the same database) and
looks at which driver connection each call ran on: the lanes are the
runners' own, so there is no service-level way to see them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.engine import Connection

from worksync_sa._run.async_runner import AsyncRunner
from worksync_sa._run.blocking import BlockingRunner
from worksync_sa._run.steps import Call
from worksync_sa.config import RetryPolicy

from ..conftest import Db
from ..twins import async_engine, async_url

Work = Callable[[Connection], Any]


KEPT: list[Any] = []
"""The driver connections seen, kept alive (so their ids stay theirs) until the runner closes."""


def on_driver(seen: list[int]) -> Work:
    """A call that runs one statement and notes which driver connection it ran on."""

    def work(conn: Connection) -> None:
        conn.exec_driver_sql("SELECT 1")
        KEPT.append(conn.connection.dbapi_connection)
        seen.append(id(KEPT[-1]))

    return work


def run_calls(db: Db, *works: Work) -> tuple[list[Any], int]:
    """Run each of ``works`` as a call on the twin's runner: what each returned or raised,
    and how many lanes were idle at the end."""
    policy = RetryPolicy()
    if db.twin == "blocking":
        runner = BlockingRunner(db.engine, db.table, policy)
        outcomes: list[Any] = []
        try:
            for work in works:
                try:
                    outcomes.append(runner.call(Call("test", work)))
                except BaseException as exc:
                    outcomes.append(exc)
            return outcomes, runner.lanes.idle
        finally:
            KEPT.clear()
            runner.close()

    url = async_url(db.engine.url)

    async def main() -> tuple[list[Any], int]:
        engine = async_engine(url)
        runner = AsyncRunner(engine, db.table, policy)
        outcomes: list[Any] = []
        try:
            for work in works:
                try:
                    outcomes.append(await runner.call(Call("test", work)))
                except BaseException as exc:
                    outcomes.append(exc)
            return outcomes, runner.lanes.idle
        finally:
            KEPT.clear()
            await runner.close()
            await engine.dispose()

    return asyncio.run(main())


@pytest.mark.parametrize("cut", [KeyboardInterrupt, asyncio.CancelledError])
def test_a_call_cut_off_half_way_never_gives_its_lane_back(
    db: Db, cut: type[BaseException]
) -> None:
    """Its connection's protocol state is unknown: the next call must run on another one."""
    seen: list[int] = []
    note = on_driver(seen)

    def cut_off(conn: Connection) -> None:
        note(conn)
        raise cut

    outcomes, idle = run_calls(db, note, cut_off, note)
    assert isinstance(outcomes[1], cut)
    before, during, after = seen
    assert during == before  # a healthy lane is used again...
    assert after != during  # ...a cut-off one never
    assert idle == 1
