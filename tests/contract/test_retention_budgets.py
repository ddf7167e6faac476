"""Retention never reopens a budget: a (name, sequence) gets at most max_run claims, for ever.

A custom sequence may give a later tick a label it gave before (one label a
week, say); deleting that label's rows would let the later tick run again.
So retention deletes only rows whose label names one instant, long past.
Time runs forward here a day per pass, with explicit instants: each day a
fresh scheduler (a restarted process) plans the 06:00 tick and prunes at the
two-day minimum, and a worker claims what is due.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from worksync_sa import SchedulerConfig, Work, default_sequence, local_sequence, per_tick
from worksync_sa.models import table_named

from ..conftest import Db

UTC = timezone.utc
MONDAY = datetime(2027, 1, 4, 5, 0, tzinfo=UTC)  # ISO week 2027-W01; after today's real clock
DAILY = Work("report", "0 6 * * *", grace=timedelta(hours=1))


def iso_week(tick: datetime) -> str:
    """At most once per ISO week: every day of a week shares one label."""
    return tick.strftime("%G-W%V")


def run_days(db: Db, sequence: Callable[[datetime], str], days: int = 14) -> Counter[str]:
    """Each morning a fresh scheduler passes (and prunes), then the 06:00 tick is claimed."""
    config = SchedulerConfig(lookahead="2h", interval="1h", retention="2d", sequence=sequence)
    sync = db.WorkSync(db.engine, table=db.table, keep_alive=False)
    runs: Counter[str] = Counter()
    for day in range(days):
        morning = MONDAY + timedelta(days=day)
        scheduler = db.Scheduler(db.engine, [DAILY], config, table=db.table)
        scheduler.run_pass(morning)
        scheduler.close()
        claim = sync.acquire_due("report", now=morning + timedelta(hours=1, seconds=30))
        if claim is not None:
            runs[claim.sequence] += 1
            claim.success()
    return runs


def test_a_weekly_label_runs_once_a_week_though_retention_is_two_days(db: Db) -> None:
    assert run_days(db, iso_week) == {"2027-W01": 1, "2027-W02": 1}
    assert {row.sequence for row in db.rows()} == {"2027-W01", "2027-W02"}  # kept


def test_labels_that_name_their_instant_are_still_pruned(db: Db) -> None:
    runs = run_days(db, default_sequence)
    assert len(runs) == 14
    assert set(runs.values()) == {1}
    # On the last morning retention had deleted every row finished before two days earlier.
    last = MONDAY + timedelta(days=13)
    assert {row.tick_at for row in db.rows()} == {
        last.replace(hour=6) - timedelta(days=d) for d in range(3)
    }


@pytest.mark.parametrize(
    "sequence",
    [local_sequence("Europe/Berlin"), per_tick(lambda tick: tick.isoformat())],
    ids=["local_sequence", "per_tick"],
)
def test_local_and_declared_per_tick_labels_are_pruned_too(
    db: Db, sequence: Callable[[datetime], str]
) -> None:
    runs = run_days(db, sequence, days=7)
    assert len(runs) == 7
    assert len(db.rows()) == 3


def test_rows_from_before_settings_were_recorded_are_judged_by_their_label(db: Db) -> None:
    """Rows an older worksync_sa made carry no spec: only a tick's own UTC label is prunable."""
    t = table_named(db.table)
    tick = MONDAY - timedelta(days=10)
    old = {"created_at": tick, "status": 3, "slot": 0, "tick_at": tick, "finished_at": tick}
    with db.engine.begin() as conn:
        conn.execute(
            sa.insert(t),
            [
                {**old, "name": "utc", "sequence": default_sequence(tick)},
                {**old, "name": "weekly", "sequence": iso_week(tick)},
            ],
        )
    run_days(db, iso_week, days=1)  # one pass with retention
    assert {row.name for row in db.rows() if row.tick_at == tick} == {"weekly"}
