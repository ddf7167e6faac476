"""Transient errors are retried a bounded number of times; others raise at once.

Every error here is produced by a real server: a real lock-wait timeout, a
real deadlock, a real "database is locked".
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from worksync_sa import RetryPolicy, Scheduler, SchedulerConfig, Work, WorkSync, default_sequence
from worksync_sa._run.blocking import BlockingRunner
from worksync_sa._sql.driver_errors import is_missing_schema, is_transient
from worksync_sa.models import table_named

from .conftest import Backend, Db

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
TICK = default_sequence(T0 + timedelta(seconds=30))
FAST = RetryPolicy(attempts=20, base_delay=0.05, max_delay=0.2)


def schedule(db: Db) -> None:
    config = SchedulerConfig(lookahead=timedelta(minutes=1), interval="10s")
    Scheduler(db.engine, [Work("w", "@every 30s")], config, table=db.table).run_pass(T0)


@pytest.fixture
def impatient_mariadb(maria_db: Db) -> Iterator[sa.Engine]:
    """An engine whose lock waits give up after one second."""
    engine = sa.create_engine(maria_db.url)

    @sa.event.listens_for(engine, "connect")
    def short_lock_wait(dbapi_conn: object, record: object) -> None:
        cursor = dbapi_conn.cursor()  # type: ignore[attr-defined]
        cursor.execute("SET SESSION innodb_lock_wait_timeout = 1")
        cursor.close()

    yield engine
    engine.dispose()


def hold_tick_locked(db: Db, seconds: float) -> threading.Thread:
    """Lock the tick's rows in another transaction, release them after ``seconds``."""
    table = table_named(db.table)
    locked = threading.Event()

    def hold() -> None:
        with db.engine.connect() as conn, conn.begin():
            conn.execute(sa.select(table.c.id).where(table.c.name == "w").with_for_update()).all()
            locked.set()
            time.sleep(seconds)

    thread = threading.Thread(target=hold)
    thread.start()
    assert locked.wait(10)
    return thread


def test_lock_wait_timeouts_are_retried_until_the_lock_goes(
    maria_db: Db, impatient_mariadb: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    schedule(maria_db)
    holder = hold_tick_locked(maria_db, seconds=2.5)
    with caplog.at_level(logging.DEBUG, logger="worksync_sa"):
        claim = WorkSync(impatient_mariadb, table=maria_db.table, retry=FAST).acquire("w", TICK)
    holder.join()
    assert claim is not None
    assert any("1205" in record.getMessage() for record in caplog.records)
    claim.success()


def test_retries_are_bounded(maria_db: Db, impatient_mariadb: sa.Engine) -> None:
    schedule(maria_db)
    holder = hold_tick_locked(maria_db, seconds=6)
    sync = WorkSync(impatient_mariadb, table=maria_db.table, retry=RetryPolicy(attempts=2))
    started = time.monotonic()
    try:
        with pytest.raises(sa.exc.OperationalError) as caught:
            sync.acquire("w", TICK)
        elapsed = time.monotonic() - started
    finally:
        holder.join()
    assert caught.value.orig.args[0] == 1205  # type: ignore[union-attr]
    assert elapsed < 5  # two one-second waits, not forever
    assert maria_db.rows()[0].status == 1  # nothing was claimed


def test_sqlite_busy_is_retried(tmp_path: object) -> None:
    url = f"sqlite:///{tmp_path}/busy.db"
    engine = sa.create_engine(url, connect_args={"timeout": 0.1})
    table_named("works").create(engine)
    db = Db(Backend("sqlite", url, engine), "works")
    schedule(db)
    locker = sa.create_engine(url)
    released = threading.Event()

    def hold() -> None:
        with locker.connect() as conn:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            released.wait(10)
            conn.exec_driver_sql("ROLLBACK")

    thread = threading.Thread(target=hold)
    thread.start()
    time.sleep(0.2)
    threading.Timer(0.8, released.set).start()
    claim = WorkSync(engine, retry=FAST).acquire("w", TICK)
    thread.join()
    assert claim is not None
    engine.dispose()
    locker.dispose()


def deadlock(engine: sa.Engine, table: sa.Table, ids: tuple[int, int]) -> BaseException:
    """Two transactions lock two rows in opposite orders; return the loser's real error."""
    errors: list[BaseException] = []
    first_locked = threading.Barrier(2)

    def run(mine: int, theirs: int) -> None:
        try:
            with engine.connect() as conn, conn.begin():
                conn.execute(sa.update(table).where(table.c.id == mine).values(error="x"))
                first_locked.wait(10)
                conn.execute(sa.update(table).where(table.c.id == theirs).values(error="y"))
        except sa.exc.DBAPIError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=pair) for pair in (ids, ids[::-1])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(errors) == 1, errors
    return errors[0]


def test_real_deadlocks_are_classified_transient(server_db: Db) -> None:
    """SQLite serialises writers, so it reports busy (tested above), never a deadlock."""
    db = server_db
    table = table_named(db.table)
    with db.engine.begin() as conn:
        conn.execute(
            table.insert(), [{"name": "d", "status": 1, "sequence": str(n)} for n in (1, 2)]
        )
    ids = tuple(r.id for r in db.rows())
    error = deadlock(db.engine, table, (ids[0], ids[1]))
    assert is_transient(error)
    assert not is_missing_schema(error)


def test_missing_tables_are_classified(db: Db) -> None:
    with pytest.raises(sa.exc.DBAPIError) as caught, db.engine.connect() as conn:
        conn.execute(sa.text("SELECT * FROM no_such_table_here"))
    assert is_missing_schema(caught.value)
    assert not is_transient(caught.value)


def test_other_errors_raise_on_the_first_attempt(db: Db) -> None:
    table = table_named(db.table)
    attempts = 0

    def no_name(conn: sa.Connection) -> None:
        nonlocal attempts
        attempts += 1
        conn.execute(table.insert(), {"id": 1, "name": None, "status": 1, "sequence": "s"})

    with pytest.raises(sa.exc.IntegrityError):
        BlockingRunner(db.engine, db.table, FAST).run("test", no_name)
    assert attempts == 1
    assert db.count() == 0
