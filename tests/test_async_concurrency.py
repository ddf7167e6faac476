"""The asyncio twins keep the promise under real concurrency, through the async drivers.

Sixteen OS processes race on MariaDB, each claiming with two tasks at once
through AsyncWorkSync (aiomysql, and asyncmy as well); async schedulers race
to create rows. Same assertions as the blocking suite in test_concurrency.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest

from worksync_sa import Scheduler, SchedulerConfig, Work, WorkStatus, default_sequence

from . import racers
from .conftest import Db
from .test_concurrency import MAX_RUN, RACERS, T0, TICKS, run_processes
from .twins import async_url

pytestmark = pytest.mark.slow

TASKS_PER_RACER = 2


@pytest.mark.parametrize("driver", ["aiomysql", "asyncmy"])
def test_racing_async_workers_never_exceed_max_run(maria_db: Db, driver: str) -> None:
    db = maria_db
    work = Work("race", "@every 10s", max_run=MAX_RUN)
    config = SchedulerConfig(lookahead=timedelta(seconds=10 * TICKS), interval="10s")
    Scheduler(db.engine, [work], config, table=db.table).run_pass(T0)
    sequences = [default_sequence(T0 + timedelta(seconds=10 * n)) for n in range(1, TICKS + 1)]
    url = async_url(db.url).set(drivername=f"mysql+{driver}").render_as_string(False)

    reports = run_processes(
        racers.race_acquire_async, [(url, db.table, "race", sequences, TASKS_PER_RACER)] * RACERS
    )

    wins = [win for report in reports for win in report]
    per_tick = Counter(sequence for sequence, _ in wins)
    assert set(per_tick) == set(sequences)
    assert set(per_tick.values()) == {MAX_RUN}  # never more, and 32 racers take every row
    ids = [row_id for _, row_id in wins]
    assert len(ids) == len(set(ids)) == TICKS * MAX_RUN  # each claim on its own row
    rows = db.rows()
    assert Counter(r.status for r in rows) == {WorkStatus.SUCCESS: TICKS * MAX_RUN}
    assert {r.id for r in rows} == set(ids)


def test_racing_async_schedulers_create_exactly_max_run_rows(maria_db: Db) -> None:
    db = maria_db
    works = [("a", "*/5 * * * * *", 3), ("b", "@every 7s", 2)]
    passes = [T0 + timedelta(seconds=15 * n) for n in range(6)]
    url = async_url(db.url).render_as_string(False)

    reports = run_processes(racers.race_schedule_async, [(url, db.table, works, passes, 120.0)] * 4)

    rows = db.rows()
    assert sum(reports) == len(rows)  # every insert counted once, by exactly one scheduler
    budget = {name: max_run for name, _, max_run in works}
    per_tick = Counter((r.name, r.sequence) for r in rows)
    assert all(count == budget[name] for (name, _), count in per_tick.items())
    config = SchedulerConfig(lookahead="120s", interval="1s")
    planner = Scheduler(db.engine, [Work(n, c, m) for n, c, m in works], config)
    expected = {
        (row.name, row.sequence)
        for now in passes
        for row in planner.plan(now, now + timedelta(seconds=120))
    }
    assert set(per_tick) == expected
