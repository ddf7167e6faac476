"""Catch-up after downtime: ticks missed by at most ``catchup`` are created, older ones skipped."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

import pytest

from worksync_sa import InvalidConfigError, SchedulerConfig, Work, default_sequence

from ..conftest import Db

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
SECOND = timedelta(seconds=1)
# lookahead 30 s, passes every 10 s, catch-up 25 s
CONFIG = SchedulerConfig(lookahead="30s", interval="10s", catchup="25s")
WORK = Work("w", "@every 5s", max_run=2, grace=timedelta(seconds=10))


def ticks_with_rows(db: Db) -> list[datetime]:
    return sorted({r.tick_at for r in db.rows()})


def test_a_restart_after_a_long_outage_catches_up_and_skips_the_rest(
    db: Db, caplog: pytest.LogCaptureFixture
) -> None:
    db.Scheduler(db.engine, [WORK], CONFIG, table=db.table).run_pass(T0)  # rows up to T0+30s
    restarted = db.Scheduler(db.engine, [WORK], CONFIG, table=db.table)
    with caplog.at_level(logging.WARNING, logger="worksync_sa"):
        restarted.run_pass(T0 + timedelta(minutes=2))  # down for 90 s beyond its horizon
    report = restarted.last_pass
    assert report is not None
    # (T0+30, T0+95]: older than catch-up -> skipped; (T0+95, T0+150]: created.
    assert report.skipped == {"w": 13}
    skipped = [r for r in caplog.records if getattr(r, "action", None) == "skipped"]
    assert len(skipped) == 1
    assert "skipped 13 ticks" in skipped[0].getMessage()
    expected = [T0 + n * 5 * SECOND for n in range(1, 7)] + [
        T0 + n * 5 * SECOND for n in range(20, 31)
    ]
    assert ticks_with_rows(db) == expected
    # Caught-up ticks older than their grace are closed as missed at once; the rest wait.
    missed = {r.tick_at for r in db.rows(closed_by="missed")}
    assert missed == {T0 + 100 * SECOND, T0 + 105 * SECOND} | {
        T0 + n * 5 * SECOND for n in range(1, 7)
    }
    # The next pass neither skips again nor logs again.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="worksync_sa"):
        restarted.run_pass(T0 + timedelta(minutes=2, seconds=10))
    assert restarted.last_pass is not None
    assert restarted.last_pass.skipped == {}
    assert not [r for r in caplog.records if getattr(r, "action", None) == "skipped"]


def test_the_same_process_catches_up_after_its_passes_failed(db: Db) -> None:
    scheduler = db.Scheduler(db.engine, [WORK], CONFIG, table=db.table)
    scheduler.run_pass(T0)
    scheduler.run_pass(T0 + timedelta(minutes=2))  # as if every pass in between had failed
    assert scheduler.last_pass is not None
    assert scheduler.last_pass.skipped == {"w": 13}


def test_a_short_outage_loses_nothing(db: Db) -> None:
    db.Scheduler(db.engine, [WORK], CONFIG, table=db.table).run_pass(T0)
    restarted = db.Scheduler(db.engine, [WORK], CONFIG, table=db.table)
    created = restarted.run_pass(T0 + 40 * SECOND)  # horizon was T0+30: 10 s were missed
    assert restarted.last_pass is not None
    assert restarted.last_pass.skipped == {}
    assert created == 2 * 8  # (T0+30, T0+70]
    assert ticks_with_rows(db) == [T0 + n * 5 * SECOND for n in range(1, 15)]
    per_tick: dict[str, int] = {}
    for row in db.rows():
        per_tick[row.sequence] = per_tick.get(row.sequence, 0) + 1
    assert set(per_tick.values()) == {2}  # no duplicates across the restart


def test_a_new_work_starts_now_without_catching_up(db: Db) -> None:
    db.Scheduler(db.engine, [WORK], CONFIG, table=db.table).run_pass(T0)
    newcomer = Work("new", "@every 5s")
    later = db.Scheduler(db.engine, [WORK, newcomer], CONFIG, table=db.table)
    later.run_pass(T0 + 20 * SECOND)
    assert later.last_pass is not None
    assert "new" not in later.last_pass.skipped
    assert min(r.tick_at for r in db.rows(name="new")) == T0 + 25 * SECOND


def test_skipped_counting_is_bounded(db: Db) -> None:
    fast = Work("fast", "* * * * * *")
    db.Scheduler(db.engine, [fast], CONFIG, table=db.table).run_pass(T0)
    restarted = db.Scheduler(db.engine, [fast], CONFIG, table=db.table)
    restarted.run_pass(T0 + timedelta(days=2))  # 172,800 ticks missed
    assert restarted.last_pass is not None
    assert restarted.last_pass.skipped == {"fast": 10_000}
    assert default_sequence(T0 + timedelta(days=2, seconds=1)) in {r.sequence for r in db.rows()}


def test_default_catchup_is_one_and_a_half_intervals() -> None:
    assert SchedulerConfig(interval="1m").catchup == timedelta(seconds=90)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"catchup": "2d"}, "catchup"),
        ({"catchup": timedelta(0)}, "catchup"),
        ({"lookahead": "25h"}, "lookahead"),
        ({"retention": "1h"}, "retention"),
        ({"max_backoff": "0s"}, "max_backoff"),
    ],
)
def test_bad_catchup_settings(kwargs: dict[str, object], named: str) -> None:
    with pytest.raises(InvalidConfigError, match=named):
        SchedulerConfig(**kwargs)  # type: ignore[arg-type]
