"""Create-ahead scheduling on every backend."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from worksync_sa import (
    InvalidArgumentError,
    InvalidConfigError,
    InvalidWorkError,
    Scheduler,
    SchedulerConfig,
    SchemaNotReadyError,
    Work,
    WorkStatus,
    default_sequence,
)

from ..conftest import Db

UTC = timezone.utc
T0 = datetime(2026, 1, 1, tzinfo=UTC)
MINUTE = SchedulerConfig(lookahead=timedelta(minutes=1), interval=timedelta(seconds=10))
WORKS = [Work("ten", "*/10 * * * * *", max_run=2), Work("half", "@every 30s", max_run=3)]


def scheduler(db: Db, works: list[Work] = WORKS, config: SchedulerConfig = MINUTE) -> Scheduler:
    return db.Scheduler(db.engine, works, config, table=db.table)


def test_a_pass_creates_max_run_queued_rows_for_each_tick_in_the_window(db: Db) -> None:
    assert scheduler(db).run_pass(T0) == 6 * 2 + 2 * 3
    ten = db.rows(name="ten")
    assert {r.sequence for r in ten} == {
        default_sequence(T0 + timedelta(seconds=s)) for s in (10, 20, 30, 40, 50, 60)
    }
    for row in ten + db.rows(name="half"):
        assert row.status == WorkStatus.QUEUED
        assert row.tick_at is not None
        assert default_sequence(row.tick_at) == row.sequence
        assert row.created_at is not None
        assert row.started_at is row.finished_at is row.token is None
    slots = {(r.sequence, r.slot) for r in db.rows(name="half")}
    assert slots == {
        (default_sequence(T0 + timedelta(seconds=s)), n) for s in (30, 60) for n in range(3)
    }


def test_window_excludes_now_and_includes_the_horizon(db: Db) -> None:
    scheduler(db, [Work("w", "*/30 * * * * *")]).run_pass(T0)
    assert [r.tick_at for r in db.rows()] == [T0 + timedelta(seconds=30), T0 + timedelta(minutes=1)]


def test_passes_are_idempotent_across_restarts_and_schedulers(db: Db) -> None:
    first = scheduler(db)
    created = first.run_pass(T0)
    assert first.run_pass(T0) == 0
    assert scheduler(db).run_pass(T0) == 0  # a restarted process
    assert scheduler(db).run_pass(T0 + timedelta(seconds=5)) == 0
    assert db.count() == created


def test_a_later_pass_adds_only_the_new_ticks(db: Db) -> None:
    s = scheduler(db)
    s.run_pass(T0)
    assert s.run_pass(T0 + timedelta(seconds=10)) == 2  # one new tick of "ten"
    assert s.run_pass(T0 + timedelta(seconds=30)) == 2 * 2 + 3  # two of "ten", one of "half"
    assert db.count() == 18 + 2 + 7


def test_going_back_in_time_replans_the_whole_window(db: Db) -> None:
    s = scheduler(db)
    s.run_pass(T0 + timedelta(hours=1))
    assert s.run_pass(T0) == 18


def test_created_at_comes_from_the_database_clock(db: Db) -> None:
    before = db.db_now()
    scheduler(db).run_pass(T0)
    after = db.db_now()
    for row in db.rows():
        assert before - timedelta(seconds=1) <= row.created_at <= after + timedelta(seconds=1)
        assert row.created_at.tzinfo is not None


def test_naive_now_is_taken_as_utc(db: Db) -> None:
    scheduler(db, [Work("w", "@every 30s")]).run_pass(datetime(2026, 1, 1))
    assert db.rows()[0].tick_at == T0 + timedelta(seconds=30)


def test_default_now_is_the_database_clock(db: Db) -> None:
    now = db.db_now()
    scheduler(db, [Work("w", "@every 30s")]).run_pass()
    ticks = sorted({r.tick_at for r in db.rows()})
    assert len(ticks) == 2
    assert now < ticks[0] <= now + timedelta(seconds=31)


def test_ticks_with_equal_sequences_share_one_budget(db: Db) -> None:
    def per_minute(tick: datetime) -> str:
        return tick.strftime("%Y-%m-%d %H:%M")

    config = SchedulerConfig(lookahead=timedelta(minutes=3), interval="10s", sequence=per_minute)
    scheduler(db, [Work("w", "*/10 * * * * *", max_run=2)], config).run_pass(T0)
    rows = db.rows()
    assert sorted(r.sequence for r in rows) == [
        "2026-01-01 00:00", "2026-01-01 00:00",
        "2026-01-01 00:01", "2026-01-01 00:01",
        "2026-01-01 00:02", "2026-01-01 00:02",
        "2026-01-01 00:03", "2026-01-01 00:03",
    ]  # fmt: skip
    # Each budget's rows carry the earliest tick that mapped to it.
    assert min(r.tick_at for r in rows if r.sequence == "2026-01-01 00:01") == T0 + timedelta(
        minutes=1
    )


@pytest.mark.parametrize(
    "generator",
    [
        lambda tick: "x" * 256,
        lambda tick: "",
        lambda tick: 42,
        lambda tick: "trailing ",
        lambda tick: 1 / 0,
    ],
    ids=["too-long", "empty", "not-a-string", "trailing-space", "raises"],
)
def test_a_bad_sequence_generator_writes_nothing(db: Db, generator: object) -> None:
    config = SchedulerConfig(lookahead=timedelta(minutes=1), interval="10s", sequence=generator)  # type: ignore[arg-type]
    with pytest.raises(InvalidConfigError, match="sequence"):
        scheduler(db, WORKS, config).run_pass(T0)
    assert db.count() == 0


def test_rows_go_in_sorted_order_in_a_few_batched_statements(db: Db) -> None:
    works = [Work(f"w{n}", "* * * * * *", max_run=5) for n in (3, 1, 2)]
    config = SchedulerConfig(lookahead=timedelta(seconds=200), interval="10s")
    inserts: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement.lstrip().upper().startswith("INSERT"):
            inserts.append(statement)

    sa.event.listen(db.traced(db.engine), "before_cursor_execute", count)
    try:
        assert scheduler(db, works, config).run_pass(T0) == 3 * 200 * 5
    finally:
        sa.event.remove(db.traced(db.engine), "before_cursor_execute", count)
    assert 1 <= len(inserts) <= 4  # 3,000 rows in batches of 1,000, never one per row
    keys = [(r.name, r.sequence, r.slot) for r in db.rows()]
    assert keys == sorted(keys)


def test_background_thread_creates_rows_until_stopped(db: Db) -> None:
    config = SchedulerConfig(lookahead=timedelta(seconds=5), interval=timedelta(seconds=1))
    s = scheduler(db, [Work("w", "* * * * * *")], config)
    s.start()
    try:
        with pytest.raises(RuntimeError, match="already running"):
            s.start()
        deadline = time.monotonic() + 10
        while db.count() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert db.count() >= 5
        assert s.running
    finally:
        s.stop(timeout=10)
    assert not s.running
    settled = db.count()
    time.sleep(1.5)
    assert db.count() == settled


def test_stop_without_start_is_harmless(db: Db) -> None:
    scheduler(db).stop()


def test_missing_table_says_to_run_the_migrations(db: Db) -> None:
    s = db.Scheduler(db.engine, WORKS, MINUTE, table="no_such_table")
    with pytest.raises(SchemaNotReadyError, match="alembic upgrade head"):
        s.run_pass(T0)


@pytest.mark.parametrize(
    ("works", "message"),
    [
        ([Work("a", "* * * * *"), Work("a", "*/5 * * * *")], "used by two works"),
        (["a"], "Work objects"),
        (Work("a", "* * * * *"), "list of Work"),
    ],
)
def test_bad_work_lists_are_refused(db: Db, works: object, message: str) -> None:
    with pytest.raises(InvalidWorkError, match=message):
        db.Scheduler(db.engine, works, MINUTE, table=db.table)


def test_bad_now_is_refused(db: Db) -> None:
    with pytest.raises(InvalidArgumentError, match="now"):
        scheduler(db).run_pass("2026-01-01")  # type: ignore[arg-type]
    assert db.count() == 0


def test_works_that_read_one_cron_string_two_ways_get_their_own_ticks(db: Db) -> None:
    """The same text under the two readings is two schedules, not one shared expansion."""
    works = [
        Work("unix", "0 6 * * *"),  # 06:00 daily
        Work("original", "0 6 * * *", cron_syntax="original"),  # second 0, minute 6, every hour
    ]
    config = SchedulerConfig(lookahead="7h", interval="1m")
    db.Scheduler(db.engine, works, config, table=db.table).run_pass(T0)
    unix = [(row.tick_at.hour, row.tick_at.minute) for row in db.rows(name="unix")]
    original = [(row.tick_at.hour, row.tick_at.minute) for row in db.rows(name="original")]
    assert unix == [(6, 0)]
    assert original == [(hour, 6) for hour in range(7)]
