"""The services' held connections (lanes), the same on both runners.

Each test runs calls on the twin's own runner (``BlockingRunner`` on the
engine, ``AsyncRunner`` on an ``AsyncEngine`` over the same database) and
looks at which driver connection each call ran on: the lanes are the
runners' own, so there is no service-level way to see them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy.engine import Connection

from worksync_sa._run import lanes, process
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


FORK = object()
"""In place of a call: this process becomes a forked child (what the fork hook records)."""
CLOSE = object()
"""In place of a call: close the runner (it opens new lanes if used again)."""


@dataclass
class Ran:
    outcomes: list[Any]
    """What each call returned or raised."""
    idle: int
    """Lanes idle at the end."""
    inherited: list[bool]
    """Lanes set aside as a parent's after a FORK: whether each had been closed."""


def run_calls(db: Db, *steps: Work | object) -> Ran:
    """Run each of ``steps`` as a call on the twin's runner (or FORK, CLOSE)."""
    policy = RetryPolicy()
    pid, inherited = process._pid, len(lanes._INHERITED)
    if db.twin == "blocking":
        runner = BlockingRunner(db.engine, db.table, policy)
        outcomes: list[Any] = []
        try:
            for step in steps:
                if step is FORK:
                    process._pid = pid + 1
                elif step is CLOSE:
                    runner.close()
                else:
                    try:
                        outcomes.append(runner.call(Call("test", step)))  # type: ignore[arg-type]
                    except BaseException as exc:
                        outcomes.append(exc)
            return Ran(outcomes, runner.lanes.idle, set_aside(inherited))
        finally:
            process._pid = pid
            KEPT.clear()
            runner.close()
            for conn in lanes._INHERITED[inherited:]:
                conn.close()  # the parent's, in truth this process's own
            del lanes._INHERITED[inherited:]

    url = async_url(db.engine.url)

    async def main() -> Ran:
        engine = async_engine(url)
        runner = AsyncRunner(engine, db.table, policy)
        outcomes: list[Any] = []
        try:
            for step in steps:
                if step is FORK:
                    process._pid = pid + 1
                elif step is CLOSE:
                    await runner.close()
                else:
                    try:
                        outcomes.append(await runner.call(Call("test", step)))  # type: ignore[arg-type]
                    except BaseException as exc:
                        outcomes.append(exc)
            return Ran(outcomes, runner.lanes.idle, set_aside(inherited))
        finally:
            process._pid = pid
            KEPT.clear()
            await runner.close()
            for conn in lanes._INHERITED[inherited:]:
                await conn.close()
            del lanes._INHERITED[inherited:]
            await engine.dispose()

    return asyncio.run(main())


def set_aside(before: int) -> list[bool]:
    return [conn.closed for conn in lanes._INHERITED[before:]]


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

    ran = run_calls(db, note, cut_off, note)
    assert isinstance(ran.outcomes[1], cut)
    before, during, after = seen
    assert during == before  # a healthy lane is used again...
    assert after != during  # ...a cut-off one never
    assert ran.idle == 1


@pytest.mark.parametrize("closing", [False, True])
def test_a_forked_child_never_uses_or_closes_its_parents_lanes(db: Db, closing: bool) -> None:
    """Using one would mix two processes' statements on a socket; closing one ends the
    parent's session. The child opens lanes of its own instead."""
    seen: list[int] = []
    note = on_driver(seen)
    steps = [note, FORK, CLOSE, note] if closing else [note, FORK, note]
    ran = run_calls(db, *steps)
    parents, childs = seen
    assert childs != parents
    assert ran.inherited == [False]  # the parent's one lane: set aside, still open
    assert ran.idle == 1
