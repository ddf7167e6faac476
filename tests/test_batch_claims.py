"""A worker's look: one claim statement across all its works, on every database.

The look claims up to the worker's free runners among the due rows of all
its works. What it keeps from one claim per work: never more than
``max_run`` claims per tick under racing processes, every due row claimed,
each work's own grace and floor, and fairness between works when runners
are scarce. What it changes: a worker costs one statement per look, whatever
the number of its works.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa

from worksync_sa import Scheduler, SchedulerConfig, Work, Worker, WorkStatus, WorkSync
from worksync_sa._core.claims import DuePlan
from worksync_sa.models import as_utc

from . import racers
from .conftest import Db
from .test_concurrency import run_processes

UTC = timezone.utc
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def plan(**graces: float) -> DuePlan:
    return DuePlan.of({name: timedelta(seconds=grace) for name, grace in graces.items()})


def look(
    db: Db, the_plan: DuePlan, limit: int, now: datetime, places: dict[str, int] | None = None
) -> list[Any]:
    """One batch look with an explicit ``now``, as a worker makes it (the database clock aside)."""
    from worksync_sa import WorkSync

    places = places or {name: n for n, name in enumerate(the_plan.names)}
    with WorkSync(db.engine, table=db.table, keep_alive=False) as sync:
        rows = sync._runner.call(sync._core.acquire_batch(the_plan, places, limit, now))
        return list(rows)


def create(db: Db, works: list[Work], at: datetime, ahead: str = "2m") -> None:
    config = SchedulerConfig(lookahead=ahead, interval="10s")
    Scheduler(db.engine, works, config, table=db.table).run_pass(at)


@contextmanager
def statements(engine: sa.Engine) -> Iterator[list[str]]:
    """Every statement the engine sends (a listener also turns the direct path off: none hides)."""
    seen: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)


def is_look(statement: str) -> bool:
    """A batch look: ``UPDATE ... LIMIT``, or MariaDB's ``INSERT ... SELECT ... LIMIT``."""
    return "LIMIT" in statement and ("UPDATE" in statement or "INSERT" in statement)


@pytest.fixture(params=["own form", "read back"])
def form(request: pytest.FixtureRequest, db: Db, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each database's own look; on MySQL/MariaDB also MySQL's, which reads its rows back.

    MariaDB returns a look's rows from an ``INSERT ... RETURNING``; MySQL has
    no RETURNING, so its look is an ``UPDATE ... LIMIT`` and a read by token.
    Its dialect says so (``insert_returning`` False), as this one then does.
    """
    if request.param == "read back":
        if db.name != "mysql":
            pytest.skip("only MySQL reads a look's rows back")
        db.engine.connect().close()  # the dialect learns the server's version on connecting
        monkeypatch.setattr(db.engine.dialect, "insert_returning", False)
    return str(request.param)


# -- what a look claims ---------------------------------------------------------------------


def test_a_look_claims_up_to_its_limit_across_works_each_tick_in_slot_order(
    db: Db, form: str
) -> None:
    works = [Work("a", "* * * * * *", max_run=2, grace="1h"), Work("b", "* * * * * *", grace="1h")]
    create(db, works, T0)
    now = T0 + timedelta(seconds=3)  # ticks 1, 2 and 3 are due: 6 rows of a, 3 of b
    got = look(db, plan(a=3600, b=3600), 4, now)
    assert [(row.name, row.tick_at, row.slot) for row in got] == [
        ("a", T0 + timedelta(seconds=1), 0),
        ("a", T0 + timedelta(seconds=1), 1),
        ("a", T0 + timedelta(seconds=2), 0),
        ("a", T0 + timedelta(seconds=2), 1),
    ]  # a goes first this look (its place), oldest tick first, a tick's slots together
    assert len({row.token for row in got}) == 1  # one batch token ...
    running = db.rows(status=WorkStatus.RUNNING)
    assert sorted(row.id for row in running) == sorted(row.id for row in got)
    first = look(db, plan(a=3600, b=3600), 3, now, places={"b": 0, "a": 1})
    assert sorted((row.name, row.tick_at) for row in first) == [
        ("b", T0 + timedelta(seconds=n)) for n in (1, 2, 3)
    ]  # b first this look
    rest = look(db, plan(a=3600, b=3600), 10, now)
    assert [(row.name, row.tick_at) for row in rest] == [("a", now)] * 2  # a's third tick
    assert look(db, plan(a=3600, b=3600), 10, now) == []


def test_each_claim_of_a_batch_is_fenced_by_its_own_row(db: Db, form: str) -> None:
    """All share the batch's token; the id keeps each claim's finish to its own row."""
    from worksync_sa import WorkSync

    create(db, [Work("a", "* * * * * *", max_run=3, grace="1h")], T0)
    got = look(db, plan(a=3600), 3, T0 + timedelta(seconds=1))
    assert len(got) == 3
    with WorkSync(db.engine, table=db.table, keep_alive=False) as sync:
        first, second, third = (sync.claim_from_row(row) for row in got)
        first.success()
        second.fail("no")
        assert not third.finished
    status = {row.id: row.status for row in db.rows(name="a") if row.id in {r.id for r in got}}
    assert [status[row.id] for row in got] == [
        WorkStatus.SUCCESS,
        WorkStatus.FAILED,
        WorkStatus.RUNNING,
    ]


def test_a_row_past_its_works_grace_is_never_claimed(db: Db, form: str) -> None:
    """The worker's grace for a work bounds its range; the row's own grace still holds too."""
    works = [Work("a", "* * * * * *", grace="1h"), Work("b", "* * * * * *", grace="1h")]
    create(db, works, T0)
    now = T0 + timedelta(seconds=40)
    # The worker knows a with a 10 s grace: a's ticks 1..29 are past it, b's all within.
    got = look(db, plan(a=10, b=3600), 100, now)
    a_ticks = sorted(row.tick_at for row in got if row.name == "a")
    assert a_ticks[0] == now - timedelta(seconds=10)
    assert len(a_ticks) == 11
    assert len([row for row in got if row.name == "b"]) == 40
    # And a row's own grace (5 s here) holds whatever the worker's floor.
    create(db, [Work("c", "* * * * * *", grace="5s")], T0)
    got = look(db, plan(c=3600), 100, now)
    assert sorted(row.tick_at for row in got) == [
        now - timedelta(seconds=n) for n in range(5, -1, -1)
    ]


def test_scarce_runners_go_to_the_work_that_ran_least_lately_not_the_oldest_tick(
    db: Db, form: str
) -> None:
    """Two works with a backlog of old ticks cannot starve a third's newest one."""
    works = [Work(name, "* * * * * *", grace="1h") for name in ("hang-a", "hang-b", "beat")]
    create(db, works, T0)
    now = T0 + timedelta(seconds=10)
    places = {"beat": 0, "hang-a": 1, "hang-b": 2}
    got = look(db, plan(**{"hang-a": 3600, "hang-b": 3600, "beat": 3600}), 1, now, places)
    assert [(row.name, row.tick_at) for row in got] == [("beat", T0 + timedelta(seconds=1))]


def test_a_worker_with_one_runner_drains_every_works_due_rows_one_look_each(
    db: Db, form: str
) -> None:
    works = [Work(f"w{n}", "* * * * * *", max_run=2) for n in range(3)]
    create(db, works, as_utc(db.db_now()) - timedelta(seconds=2))
    ran: Counter[str] = Counter()
    worker = Worker(db.engine, works, lambda claim: ran.update([claim.name]), table=db.table)
    with statements(db.engine) as sent:
        started = worker.run_once()
    worker.close()
    assert started == sum(ran.values()) >= 3 * 2 * 2  # two due ticks at least, two slots each
    assert set(ran) == {"w0", "w1", "w2"}
    claims = [s for s in sent if is_look(s)]
    assert len(claims) == started + 1  # one look per claim, and the one that found none


# -- what a worker costs --------------------------------------------------------------------


@pytest.mark.parametrize("works", [1, 10, 100])
def test_an_idle_worker_makes_one_statement_per_look_whatever_its_works(db: Db, works: int) -> None:
    many = [Work(f"w{n:03d}", "0 0 1 1 *") for n in range(works)]  # not due for months
    worker = Worker(db.engine, many, lambda claim: None, table=db.table)
    worker.run_once()  # opens the lane
    with statements(db.engine) as sent:
        for _ in range(5):
            assert worker.run_once() == 0
    worker.close()
    assert len(sent) == 5  # one look each: the claim statement that found nothing


def test_a_steady_worker_makes_under_two_statements_per_claim(server_db: Db) -> None:
    """Per tick: one look for the rows of every work (plus, on MySQL/MariaDB, its read by
    token), then one finish per claim; a look that got fewer rows than it asked for waits
    for the next tick. (SQLite's writers queue on one lock: its finishes retry, and are
    counted by its own tests.)"""
    db = server_db
    works = [Work(f"w{n}", "* * * * * *", grace="5s") for n in range(10)]
    create(db, works, as_utc(db.db_now()) - timedelta(seconds=1), ahead="30s")
    worker = Worker(db.engine, works, lambda claim: None, table=db.table, max_concurrency=20)
    worker.run(until=time.time() + 1.5)  # opens the lanes
    before = worker.handled
    with statements(db.engine) as sent:
        worker.run(until=time.time() + 4)
        worker.close()  # inside: a claim still running as run() returns finishes here
    claims = worker.handled - before
    ours = [s for s in sent if db.table in s]
    finishes = [s for s in ours if s.lstrip().upper().startswith("UPDATE") and "LIMIT" not in s]
    assert claims >= 30  # 10 per second
    assert len(finishes) == claims
    assert len(ours) / claims <= 2.0
    # MariaDB's look returns its rows (INSERT ... RETURNING), as PostgreSQL's does: no reads.
    assert [s for s in ours if s.lstrip().upper().startswith("SELECT")] == []


# -- racing processes -----------------------------------------------------------------------


@pytest.mark.slow
def test_racing_batch_looks_never_exceed_max_run_and_take_every_due_row(db: Db, form: str) -> None:
    works = [
        Work("a", "@every 10s", max_run=3, grace="1h"),
        Work("b", "@every 10s", max_run=2, grace="1h"),
        Work("c", "@every 10s", max_run=1, grace="1h"),
    ]
    ticks = 30
    config = SchedulerConfig(lookahead=timedelta(seconds=10 * ticks), interval="10s")
    Scheduler(db.engine, works, config, table=db.table).run_pass(T0)
    now = T0 + timedelta(seconds=10 * ticks)
    graces = {"a": 3600.0, "b": 3600.0, "c": 3600.0}

    read_back = form == "read back"
    reports = run_processes(racers.race_batch, [(db.url, db.table, graces, now, 4, read_back)] * 12)

    wins = [win for report in reports for win in report]
    per_tick = Counter((name, sequence) for name, sequence, _ in wins)
    budget = {"a": 3, "b": 2, "c": 1}
    assert len(per_tick) == 3 * ticks
    assert {key: count for key, count in per_tick.items() if count != budget[key[0]]} == {}
    assert len({row_id for _, _, row_id in wins}) == len(wins) == ticks * 6
    assert Counter(row.status for row in db.rows()) == {WorkStatus.SUCCESS: ticks * 6}


# -- MySQL/MariaDB: the look's locks ---------------------------------------------------------


def test_on_mariadb_a_look_inserts_nothing_and_leaves_the_key_counter_alone(
    server_db: Db,
) -> None:
    """MariaDB's look is an INSERT whose every row collides with a row it picked."""
    db = server_db
    if db.name != "mysql":
        pytest.skip("MariaDB's look")
    create(db, [Work("a", "* * * * * *", max_run=2, grace="1h")], T0)

    def counter() -> int:
        with db.engine.connect() as conn:
            return int(
                conn.execute(
                    sa.text(
                        "SELECT auto_increment FROM information_schema.tables "
                        "WHERE table_schema = DATABASE() AND table_name = :t"
                    ),
                    {"t": db.table},
                ).scalar_one()
            )

    rows, before = db.count(), counter()
    taken = []
    while got := look(db, plan(a=3600), 3, T0 + timedelta(seconds=5)):
        taken.extend(got)
    assert len(taken) == 10  # five due ticks, two slots each
    assert (db.count(), counter()) == (rows, before)
    running = {row.id: row.token for row in db.rows(status=WorkStatus.RUNNING)}
    assert running == {row.id: row.token for row in taken}


@pytest.mark.parametrize("returning", [True, False], ids=["mariadb insert", "mysql update"])
def test_on_mysql_a_look_leaves_the_scheduler_room_to_insert_the_next_ticks(
    server_db: Db, returning: bool
) -> None:
    """Lanes run in READ COMMITTED: a look locks the rows it read, never the gaps after them.

    Under REPEATABLE READ the look (an ``UPDATE ... ORDER BY ... LIMIT`` that
    reads every due row of its works) also locked the gap past each work's
    last due row, where the scheduler inserts the next ticks; at 100 works
    and 128 workers the two queued on each other until waits timed out.
    Here a look is held open in a transaction on a lane while the next tick's
    row goes in beside it, with a one-second lock wait.
    """
    from benchmarks.harness import raw_connection, raw_stamp

    from .plans import batch, load

    db = server_db
    if db.name != "mysql":
        pytest.skip("gap locks are InnoDB's")
    load(db.engine, db.table, 3, 0, 2, "none")
    sync = WorkSync(db.engine, table=db.table)
    try:
        level = sync._runner.run(
            "isolation", lambda conn: conn.exec_driver_sql("SELECT @@tx_isolation").scalar()
        )
        assert level == "READ-COMMITTED"
        sql, params = batch(db.engine, db.table, 3, 10, returning)
        held = raw_connection(db.engine)
        other = raw_connection(db.engine)
        try:
            looking = held.cursor()
            looking.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
            looking.execute("BEGIN")
            looking.execute(sql, params)
            taken = len(looking.fetchall()) if returning else looking.rowcount
            assert taken == 6  # two due rows of each of the three works, held
            inserting = other.cursor()
            inserting.execute("SET SESSION innodb_lock_wait_timeout = 1")
            moment = raw_stamp(db.engine, as_utc(db.db_now()) + timedelta(seconds=30))
            insert = sa.insert(sa.table(db.table, *(sa.column(c) for c in COLUMNS)))
            compiled = insert.values({c: sa.bindparam(c) for c in COLUMNS}).compile(
                dialect=db.engine.dialect
            )
            row = {"name": "w000", "status": 1, "sequence": "next", "slot": 0, "tick_at": moment}
            assert compiled.positiontup is not None
            inserting.execute(compiled.string, tuple(row[k] for k in compiled.positiontup))
            assert inserting.rowcount == 1  # not held behind the look
            looking.execute("ROLLBACK")
        finally:
            held.close()
            other.close()
    finally:
        sync.close()


COLUMNS = ("name", "status", "sequence", "slot", "tick_at")
