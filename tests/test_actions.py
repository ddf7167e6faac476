"""Operators' actions through the Python API, on every database: what the table then holds.

Every expected value is read from the tables with plain SQL (``rows``,
``queued_ahead``, ``ledger``), never through ``Operator``'s own reads, and
schedulers and workers run on engines of their own, as other hosts would.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa

from worksync_sa import (
    InvalidArgumentError,
    Ledger,
    NewRow,
    Operator,
    SchedulerConfig,
    ScheduleRepository,
    Work,
    WorkStatus,
)
from worksync_sa.models import as_utc, table_named

from . import cron_reference as reference
from .conftest import Backend, Db, _table_on

FAST = SchedulerConfig(lookahead="5s", interval="1s")
NEVER_SOON = "0 0 1 1 *"
"""A cron whose next tick is months away: only the operator's rows are due."""


@pytest.fixture
def other_engine(db: Db) -> Iterator[sa.Engine]:
    """A second engine on the same database: another host's connections."""
    engine = sa.create_engine(db.url)
    yield engine
    engine.dispose()


def now_of(db: Db) -> datetime:
    return as_utc(db.db_now())


def queued_ahead(db: Db, name: str) -> int:
    """QUEUED rows of ``name`` whose tick is still to come, by the database clock."""
    t = table_named(db.table)
    with db.engine.connect() as conn:
        now = now_of(db)
        select = sa.select(sa.func.count()).where(
            t.c.name == name, t.c.status == WorkStatus.QUEUED.value, t.c.tick_at > now
        )
        return int(conn.execute(select).scalar_one())


def ledger(db: Db) -> list[tuple[Any, ...]]:
    """The actions table, oldest first, by plain SQL."""
    actions = sa.table(
        f"{db.table}_actions",
        sa.column("id"),
        sa.column("name"),
        sa.column("action"),
        sa.column("tick"),
        sa.column("actor"),
        sa.column("reason"),
        sa.column("acted_at"),
    )
    c = actions.c
    with db.engine.connect() as conn:
        select = sa.select(c.name, c.action, c.tick, c.actor, c.reason).order_by(c.id)
        return [tuple(row) for row in conn.execute(select)]


def insert(db: Db, *rows: NewRow) -> None:
    with db.engine.begin() as conn:
        ScheduleRepository(table_named(db.table)).insert_queued(conn, rows)


def spec(max_run: int, cron: str = NEVER_SOON) -> str:
    return f"sequence=utc; max_run={max_run}; cron={cron}; timezone=UTC"


# -- pause and resume ------------------------------------------------------------------------


def test_a_pause_stops_two_schedulers_within_a_pass_and_resume_brings_them_back(
    db: Db, other_engine: sa.Engine
) -> None:
    work = Work("w", "@every 1s", max_run=2)
    here = db.Scheduler(db.engine, [work], FAST, table=db.table)
    there = db.Scheduler(other_engine, [work], FAST, table=db.table)
    operator = Operator(db.engine, table=db.table, by="ann@test")
    try:
        here.run_pass()
        there.run_pass()
        assert queued_ahead(db, "w") >= 6  # four or five ticks ahead, two rows each

        paused = operator.pause("w", reason="deploy")
        assert paused.closed >= 6
        assert (paused.pause.until, paused.pause.by) == (None, "ann@test")
        assert queued_ahead(db, "w") == 0
        closed = db.rows(closed_by="paused")
        assert len(closed) == paused.closed
        assert all(row.slot is None and row.status == WorkStatus.FAILED for row in closed)
        assert {row.error for row in closed} == {"paused by ann@test: deploy"}
        for _ in range(2):
            here.run_pass()
            there.run_pass()
            assert queued_ahead(db, "w") == 0

        operator.resume("w", reason="done")
        there.run_pass()
        assert queued_ahead(db, "w") >= 6
        here.run_pass()
        t = table_named(db.table)
        with db.engine.connect() as conn:  # each tick to come: exactly max_run live slots
            per_tick = conn.execute(
                sa.select(t.c.tick_at, sa.func.count())
                .where(t.c.name == "w", t.c.slot.is_not(None), t.c.tick_at > now_of(db))
                .group_by(t.c.tick_at)
            ).all()
        assert per_tick
        assert {count for _, count in per_tick} == {2}
    finally:
        here.close()
        there.close()
    assert ledger(db) == [
        ("w", "pause", None, "ann@test", "deploy"),
        ("w", "resume", None, "ann@test", "done"),
    ]


def test_rows_an_older_scheduler_makes_while_paused_are_closed_by_the_next_pass(db: Db) -> None:
    """A scheduler of the previous release reads no pauses: its rows do not outlive a pass."""
    work = Work("w", "@every 1s", max_run=2)
    scheduler = db.Scheduler(db.engine, [work], FAST, table=db.table)
    try:
        scheduler.run_pass()
        Operator(db.engine, table=db.table, by="ann@test").pause("w")
        ahead = now_of(db).replace(microsecond=0) + timedelta(seconds=3)
        label = ahead.strftime("%Y-%m-%d %H:%M:%S")
        # What a scheduler of 0.2 writes for a tick ahead: slots 0 and 1, a spec of its own.
        insert(db, *(NewRow("w", label, slot, ahead, spec="old", max_run=2) for slot in (0, 1)))
        assert queued_ahead(db, "w") == 2
        scheduler.run_pass()
        assert scheduler.last_pass is not None
        assert scheduler.last_pass.paused == 2
        assert queued_ahead(db, "w") == 0
    finally:
        scheduler.close()


def test_ticks_closed_by_a_pause_show_in_the_ledger_as_closed_unclaimed(db: Db) -> None:
    """No budget, no run, nothing missed: the ledger counts them with the surplus rows."""
    work = Work("w", "@every 1s", max_run=2)
    scheduler = db.Scheduler(db.engine, [work], FAST, table=db.table)
    try:
        scheduler.run_pass()
    finally:
        scheduler.close()
    since = now_of(db)  # before the pause: a loaded machine may pass a closed tick meanwhile
    paused = Operator(db.engine, table=db.table, by="ann@test").pause("w")
    closed_ticks = {as_utc(row.tick_at) for row in db.rows(closed_by="paused")}
    assert len(closed_ticks) * 2 == paused.closed
    ledger_ = Ledger(db.engine, table=db.table)
    try:
        entries = [e for e in ledger_.entries(name="w", since=since) if e.tick_at in closed_ticks]
    finally:
        ledger_.close()
    assert {e.tick_at for e in entries} == closed_ticks
    figures = {
        (e.created, e.surplus, e.max_run, e.queued, e.failed, e.missed, e.claimed) for e in entries
    }
    assert figures == {(2, 2, 0, 0, 0, 0, 0)}


def test_operators_pausing_one_work_at_once_all_succeed_and_one_pause_stands(
    db: Db, other_engine: sa.Engine
) -> None:
    """Each pause replaces the one before: a racing one is run again, never an error."""
    old = datetime(2001, 1, 1, tzinfo=timezone.utc)
    insert(db, NewRow("w", "2001-01-01 00:00:00", 0, old, spec=spec(1), max_run=1))
    operators = [
        Operator(engine, table=db.table, by=f"op{i}@test")
        for i, engine in enumerate([db.engine, other_engine] * 2)
    ]
    start = threading.Barrier(len(operators))
    errors: list[BaseException] = []

    def pause(operator: Operator) -> None:
        try:
            for round_ in range(5):
                start.wait()
                operator.pause("w", reason=f"round {round_}")
        except BaseException as exc:  # reported below, with the others
            errors.append(exc)
            start.abort()

    threads = [threading.Thread(target=pause, args=(op,)) for op in operators]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    with db.engine.connect() as conn:
        names = conn.execute(sa.text(f"SELECT name FROM {db.table}_pauses")).scalars().all()
    assert names == ["w"]
    assert [entry[1] for entry in ledger(db)] == ["pause"] * 20


def test_a_pause_with_an_end_lets_the_ticks_after_it_be_made(db: Db) -> None:
    work = Work("w", "@every 1s", max_run=1)
    config = SchedulerConfig(lookahead="8s", interval="1s")
    scheduler = db.Scheduler(db.engine, [work], config, table=db.table)
    try:  # a work with no rows yet: known from the works given
        operator = Operator(db.engine, table=db.table, works=[work])
        paused = operator.pause("w", timedelta(seconds=4))
        until = paused.pause.until
        assert until is not None
        scheduler.run_pass()
        t = table_named(db.table)
        with db.engine.connect() as conn:
            ticks = [
                as_utc(tick)
                for tick in conn.execute(
                    sa.select(t.c.tick_at).where(
                        t.c.name == "w", t.c.status == WorkStatus.QUEUED.value
                    )
                ).scalars()
            ]
        assert ticks
        assert all(tick > until for tick in ticks)
    finally:
        scheduler.close()


# -- run-now ---------------------------------------------------------------------------------


def claim_all(db: Db, engines: list[sa.Engine], work: Work, seen: list[tuple[str, int]]) -> None:
    """Workers on their own engines, all at once, each claiming until nothing is due."""
    lock = threading.Lock()
    start = threading.Barrier(len(engines))

    def handler(claim: Any) -> None:
        with lock:
            seen.append((claim.sequence, claim.slot))

    def run(engine: sa.Engine) -> None:
        worker = db.Worker(engine, [work], handler, table=db.table)
        try:
            start.wait()
            worker.run_due()
        finally:
            worker.close()

    threads = [threading.Thread(target=run, args=(engine,)) for engine in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)


def test_run_now_makes_one_due_tick_of_max_run_rows_that_workers_claim_exactly(
    db: Db, other_engine: sa.Engine
) -> None:
    work = Work("w", NEVER_SOON, max_run=3)
    # History from an earlier run: the operator reads max_run and the policy from it.
    insert(
        db,
        NewRow(
            "w",
            "2020-01-01 00:00:00",
            0,
            datetime(2020, 1, 1, tzinfo=timezone.utc),
            90,
            45,
            2,
            spec(3),
        ),
    )
    made = Operator(db.engine, table=db.table, by="ann@test").run_now("w", reason="backfill")
    assert made.rows == 3
    assert made.label.startswith("run-now ")
    rows = db.rows(sequence=made.label)
    assert sorted(row.slot for row in rows) == [-3, -2, -1]
    assert {(r.lease_seconds, r.grace_seconds, r.max_attempts, r.spec) for r in rows} == {
        (90, 45, 2, spec(3))
    }
    # A scheduler's pass neither closes nor adopts them, and makes no rows for the instant.
    scheduler = db.Scheduler(db.engine, [work], FAST, table=db.table)
    try:
        scheduler.run_pass()
    finally:
        scheduler.close()
    assert {row.status for row in db.rows(sequence=made.label)} == {WorkStatus.QUEUED}
    seen: list[tuple[str, int]] = []
    claim_all(db, [db.engine, other_engine, db.engine, other_engine], work, seen)
    assert sorted(seen) == [(made.label, -3), (made.label, -2), (made.label, -1)]
    assert [row.status for row in db.rows(sequence=made.label)] == [WorkStatus.SUCCESS] * 3
    assert ledger(db) == [("w", "run-now", made.label, "ann@test", "backfill")]


def test_run_now_takes_its_settings_from_the_works_given(db: Db) -> None:
    work = Work("w", NEVER_SOON, max_run=2, lease="7m", grace="2m", max_attempts=3)
    made = Operator(db.engine, table=db.table, works=[work]).run_now("w")
    rows = db.rows(sequence=made.label)
    assert [(r.slot, r.lease_seconds, r.grace_seconds, r.max_attempts) for r in rows] == [
        (-1, 420, 120, 3),
        (-2, 420, 120, 3),
    ]


# -- retry -----------------------------------------------------------------------------------


def failing_once(db: Db, work: Work, tick: datetime) -> str:
    """A tick whose only run failed: its label."""
    label = tick.strftime("%Y-%m-%d %H:%M:%S")
    insert(db, NewRow("w", label, 0, tick, 300, 60, 1, spec(1, work.cron), max_run=1))

    def handler(claim: Any) -> None:
        raise RuntimeError("boom")

    worker = db.Worker(db.engine, [work], handler, table=db.table)
    try:
        assert worker.run_due() == 1
    finally:
        worker.close()
    (row,) = db.rows(sequence=label)
    assert (row.status, row.attempts) == (WorkStatus.FAILED, 1)
    return label


def test_a_failed_tick_retried_runs_again_and_succeeds_on_its_second_attempt(db: Db) -> None:
    work = Work("w", NEVER_SOON)
    label = failing_once(db, work, now_of(db).replace(microsecond=0) - timedelta(seconds=2))
    operator = Operator(db.engine, table=db.table, by="ann@test")
    retried = operator.retry("w", label, reason="flaky")
    assert (retried.rows, retried.past_grace) == (1, False)
    (row,) = db.rows(sequence=label)
    assert (row.status, row.token, row.attempts, row.max_attempts) == (
        WorkStatus.QUEUED,
        None,
        1,
        2,
    )
    seen: list[tuple[str, int]] = []
    claim_all(db, [db.engine], work, seen)
    assert seen == [(label, 0)]
    (row,) = db.rows(sequence=label)
    assert (row.status, row.attempts, row.slot) == (WorkStatus.SUCCESS, 2, 0)
    with pytest.raises(InvalidArgumentError, match="succeeded"):
        operator.retry("w", label)
    assert ledger(db) == [("w", "retry", label, "ann@test", "flaky")]


def test_a_missed_tick_past_its_grace_is_retried_only_when_asked_and_then_claimed(db: Db) -> None:
    work = Work("w", NEVER_SOON)
    tick = now_of(db).replace(microsecond=0) - timedelta(minutes=10)
    label = tick.strftime("%Y-%m-%d %H:%M:%S")
    insert(db, NewRow("w", label, 0, tick, 300, 60, 1, spec(1), max_run=1))
    sync = db.WorkSync(db.engine, table=db.table)
    try:
        assert sync.recover() == 1  # nobody claimed it in its grace: missed
    finally:
        sync.close()
    operator = Operator(db.engine, table=db.table)
    with pytest.raises(InvalidArgumentError, match="past its grace"):
        operator.retry("w", label)
    assert db.rows(sequence=label)[0].closed_by == "missed"
    retried = operator.retry("w", tick.isoformat(), past_grace=True)  # by its UTC time
    assert retried.past_grace
    assert retried.moved_to is not None
    seen: list[tuple[str, int]] = []
    claim_all(db, [db.engine], work, seen)  # a worker whose floor is the work's 60 s grace
    assert seen == [(label, -1)]
    (row,) = db.rows(sequence=label)
    assert (row.status, row.attempts, row.slot) == (WorkStatus.SUCCESS, 1, -1)
    assert as_utc(row.tick_at) == retried.moved_to


# -- bad input ---------------------------------------------------------------------------------


def test_bad_input_is_refused_with_its_reason_and_writes_nothing(db: Db) -> None:
    work = Work("w", NEVER_SOON)
    label = failing_once(db, work, now_of(db).replace(microsecond=0) - timedelta(seconds=2))
    before = [tuple(row) for row in db.rows()]
    operator = Operator(db.engine, table=db.table)
    refusals: list[tuple[Callable[[], object], str]] = [
        (lambda: operator.pause("nope"), "work 'nope' is unknown"),
        (lambda: operator.run_now("nope"), "work 'nope' is unknown"),
        (lambda: operator.next_ticks("nope"), "work 'nope' is unknown"),
        (lambda: operator.retry("w", "2001-01-01 00:00:00"), "has no tick"),
        (lambda: operator.retry("w", "no such label"), "has no tick"),
        (lambda: operator.pause("w", reason="x" * 256), "reason has 256 characters"),
        (lambda: operator.pause("w", timedelta(0)), "positive duration"),
        (
            lambda: operator.pause("w", datetime(2001, 1, 1, tzinfo=timezone.utc)),
            "not in the future",
        ),
        (lambda: operator.pause("w", "tomorrow"), "until must be a datetime"),  # type: ignore[arg-type]
        (lambda: operator.resume("w"), "is not paused"),
        (lambda: operator.retry("w", label, past_grace="yes"), "past_grace"),  # type: ignore[arg-type]
        (lambda: operator.next_ticks("w", 0), "n must be"),
        (lambda: operator.actions(limit=0), "limit must be"),
        (lambda: Operator(db.engine, table=db.table, by=""), "by is empty"),
    ]
    for call, message in refusals:
        with pytest.raises(InvalidArgumentError, match=message):
            call()
    assert [tuple(row) for row in db.rows()] == before
    assert ledger(db) == []


# -- next ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cron", "zone"),
    [("*/7 9-17 * * MON-FRI", "Europe/Berlin"), ("30 2 * * *", "America/New_York")],
)
def test_next_ticks_match_a_brute_force_cron_matcher(db: Db, cron: str, zone: str) -> None:
    # A row as a scheduler records it (its spec holds the cron and zone): next reads them there.
    recorded = f"sequence=utc; max_run=1; cron={cron}; timezone={zone}"
    insert(db, NewRow("w", "x", 0, datetime(2020, 1, 1, tzinfo=timezone.utc), spec=recorded))
    operator = Operator(db.engine, table=db.table)
    now = now_of(db)
    found = operator.next_ticks("w", n=12)
    expected = reference.ticks_in_zone(reference.parse(cron), zone, now, now + timedelta(days=30))
    assert found.source == "spec"
    assert [tick.tick_at for tick in found.ticks] == expected[:12]
    assert [tick.label for tick in found.ticks] == [
        t.strftime("%Y-%m-%d %H:%M:%S") for t in expected[:12]
    ]
    assert found.pause is None
    assert not any(tick.paused for tick in found.ticks)
    until = expected[4] + timedelta(seconds=1)
    operator.pause("w", until)
    found = operator.next_ticks("w", n=12)
    assert found.pause is not None
    assert found.pause.until == until
    assert [tick.paused for tick in found.ticks] == [True] * 5 + [False] * 7
    given = Operator(db.engine, table=db.table, works=[Work("w", "0 12 * * *")])
    assert given.next_ticks("w", n=1).source == "works"


def test_paused_lists_the_pauses_in_force(db: Db) -> None:
    insert(db, NewRow("a", "x", 0, datetime(2020, 1, 1, tzinfo=timezone.utc), spec=spec(1)))
    insert(db, NewRow("b", "x", 0, datetime(2020, 1, 1, tzinfo=timezone.utc), spec=spec(1)))
    operator = Operator(db.engine, table=db.table, by="ann@test")
    operator.pause("a", reason="one")
    operator.pause("b", timedelta(hours=1))
    assert [(p.name, p.reason, p.by) for p in operator.paused()] == [
        ("a", "one", "ann@test"),
        ("b", "", "ann@test"),
    ]
    entries = operator.actions()
    assert [(e.name, e.action) for e in entries] == [("b", "pause"), ("a", "pause")]
    assert [e.name for e in operator.actions("a")] == ["a"]


def test_a_pass_reads_the_pauses_in_one_statement_whatever_the_number_of_works(db: Db) -> None:
    works = [Work(f"w{index}", "@every 1s") for index in range(40)]
    operator = Operator(db.engine, table=db.table, works=works)
    for work in works[::4]:
        operator.pause(work.name)
    engine = sa.create_engine(db.url)
    statements: list[str] = []
    sa.event.listen(
        engine, "before_cursor_execute", lambda c, cur, text, *_: statements.append(text)
    )
    scheduler = db.Scheduler(engine, works, FAST, table=db.table)
    try:
        scheduler.run_pass()
        statements.clear()
        scheduler.run_pass()
    finally:
        scheduler.close()
        engine.dispose()
    pauses = f"{db.table}_pauses"
    reads = [text for text in statements if pauses in text]
    assert len(reads) == 1, reads  # the pass's one read of its window, with the pauses
    read_of_pauses = reads[0].split("UNION ALL")[-1]
    assert pauses in read_of_pauses
    assert "WHERE" not in read_of_pauses  # the whole (small) table, not a read per work
    t = table_named(db.table)
    with db.engine.connect() as conn:  # and no paused work has a row ahead
        names = conn.execute(
            sa.select(t.c.name)
            .where(t.c.status == WorkStatus.QUEUED.value, t.c.tick_at > now_of(db))
            .distinct()
        ).scalars()
        assert not {work.name for work in works[::4]} & set(names)


@pytest.fixture
def maria_db(mariadb: Backend) -> Iterator[Db]:
    yield from _table_on(mariadb)


def test_racing_processes_claim_a_run_now_tick_exactly_max_run_times(maria_db: Db) -> None:
    """Six spawned processes race on MariaDB for a run-now tick of three runs."""
    from . import racers
    from .test_concurrency import run_processes

    db = maria_db
    made = Operator(db.engine, table=db.table, works=[Work("w", NEVER_SOON, max_run=3)]).run_now(
        "w"
    )
    at = made.tick_at + timedelta(seconds=1)
    reports = run_processes(racers.race_acquire_due, [(db.url, db.table, "w", at)] * 6)
    won = [claim for report in reports for claim in report]
    assert len(won) == 3
    assert {sequence for sequence, _ in won} == {made.label}
    assert [row.status for row in db.rows(sequence=made.label)] == [WorkStatus.SUCCESS] * 3
