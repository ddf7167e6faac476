"""Wake-ups on PostgreSQL: a listening worker starts run-now, retry and late rows at once.

Every worker here polls every 60 s and serves works whose cron ticks are far
away (or plain names, which it only polls for), so a claim within a few
seconds can only come from a notify. Timings are not asserted tightly: a
deadline of a few seconds against a 60 s poll proves the wake-up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg

from worksync_sa import (
    AsyncClaim,
    AsyncWorker,
    Claim,
    Operator,
    Scheduler,
    SchedulerConfig,
    Work,
    Worker,
    WorkStatus,
)
from worksync_sa._run.listen import application_name
from worksync_sa._sql.wakeups import (
    ANYTHING,
    CHANNEL_MAX_BYTES,
    channel_for,
    listen_sql,
    names_in,
    payload_for,
)
from worksync_sa.errors import InvalidArgumentError

from .conftest import Backend, Db, _table_on, require
from .test_batch_claims import statements

FAR = "0 0 1 1 *"
"""A cron whose next tick is months away: the worker's own clock never wakes it in a test."""
DEADLINE = 5.0
"""Seconds a woken worker has to start a row (its poll is 60 s)."""


@pytest.fixture
def postgresql(_backends: dict[str, Any]) -> Backend:
    return require(_backends, "postgresql")


@pytest.fixture
def pg_db(postgresql: Backend) -> Iterator[Db]:
    """An empty work table on PostgreSQL, where wake-ups work."""
    yield from _table_on(postgresql)


def eventually(predicate: Callable[[], object], timeout: float = DEADLINE) -> bool:
    """Whether ``predicate`` held within ``timeout`` seconds (looked at every 20 ms)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


@contextmanager
def listening(worker: Worker) -> Iterator[Worker]:
    """The worker started, once it hears notifies (and its first looks are over); closed after."""
    with worker:
        assert eventually(lambda: worker.wakeups != "checking"), "its probe never ended"
        assert worker.wakeups == "listening"
        assert worker.poll == 60
        time.sleep(0.2)  # its first look (at start, and after the probe) is over
        yield worker


# -- the channel and its payload (no database) ----------------------------------------------


def test_the_channel_is_the_tables_and_fits_an_identifier() -> None:
    assert channel_for("works") == "worksync_works"
    longest = channel_for("t" * 40)
    assert len(longest.encode()) <= CHANNEL_MAX_BYTES
    dialect = PGDialect_psycopg()  # type: ignore[no-untyped-call]
    assert listen_sql(dialect, channel_for("Works_2")) == 'LISTEN "worksync_Works_2"'
    with pytest.raises(ValueError, match="not a wake-up channel"):
        listen_sql(dialect, 'worksync_x"; DROP TABLE works; --')


def test_a_payload_names_works_or_anything() -> None:
    assert names_in(payload_for(["b", "a", "a"])) == frozenset({"a", "b"})
    assert names_in(payload_for(['né, "x"\n'])) == frozenset({'né, "x"\n'})
    assert payload_for([f"w{n:0>250}" for n in range(40)]) == ANYTHING  # past 8000 bytes
    assert names_in(ANYTHING) is None  # wakes everyone
    assert names_in("probe 1234") == frozenset()  # wakes no one
    assert names_in("[not json") == frozenset()


# -- what the writers send -------------------------------------------------------------------


class Ear:
    """A plain psycopg connection listening on a table's channel."""

    def __init__(self, url: str, table: str) -> None:
        import psycopg

        dsn = sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        self.conn = psycopg.connect(dsn, autocommit=True)
        dialect = PGDialect_psycopg()  # type: ignore[no-untyped-call]
        self.conn.execute(listen_sql(dialect, channel_for(table)))

    def heard(self, wait: float = 0.5) -> list[str]:
        end = time.monotonic() + wait
        found: list[str] = []
        pgconn = self.conn.pgconn
        while time.monotonic() < end:
            import select

            select.select([pgconn.socket], [], [], max(0.0, end - time.monotonic()))
            pgconn.consume_input()
            while (notice := pgconn.notifies()) is not None:
                found.append(notice.extra.decode())
        return found

    def close(self) -> None:
        self.conn.close()


def test_run_now_retry_and_a_late_pass_notify_and_a_steady_pass_does_not(pg_db: Db) -> None:
    db = pg_db
    work = Work("w", "* * * * * *", grace="5s")
    ear = Ear(db.url, db.table)
    try:
        operator = Operator(db.engine, table=db.table, works=[Work("w", FAR)])
        done = operator.run_now("w")
        assert ear.heard() == ['["w"]']
        Worker(db.engine, ["w"], _fail, table=db.table).run_once()
        operator.retry("w", done.label)
        assert ear.heard() == ['["w"]']
        config = SchedulerConfig(lookahead="1s", interval="1s", catchup="1m")
        scheduler = Scheduler(db.engine, [work], config, table=db.table)
        scheduler.run_pass(db.db_now() - timedelta(seconds=10))  # its ticks are long gone
        assert ear.heard() == []  # none within their grace: nothing to wake for
        with statements(db.engine) as sent:
            scheduler.run_pass()  # catching up: ticks of the last 5 s are due already
        assert ear.heard() == ['["w"]']
        assert sum("pg_notify" in s for s in sent) == 1
        with statements(db.engine) as sent:
            scheduler.run_pass()  # steady: everything new is ahead
        assert ear.heard() == []
        assert not any("pg_notify" in s for s in sent)
        scheduler.close()
    finally:
        ear.close()


def _fail(claim: Claim) -> None:
    raise RuntimeError("first attempt fails")


def test_a_rolled_back_run_now_wakes_no_one(pg_db: Db) -> None:
    ear = Ear(pg_db.url, pg_db.table)
    try:
        with pytest.raises(InvalidArgumentError, match="unknown"):
            Operator(pg_db.engine, table=pg_db.table).run_now("nobody")
        assert ear.heard() == []
    finally:
        ear.close()


# -- a blocking worker -----------------------------------------------------------------------


def test_run_now_wakes_a_listening_worker(pg_db: Db) -> None:
    db = pg_db
    ran: list[str] = []
    worker = Worker(
        db.engine, [Work("w", FAR)], lambda c: ran.append(c.sequence), table=db.table, wake="notify"
    )
    assert worker.wakeups == "checking"
    with listening(worker):
        done = Operator(db.engine, table=db.table, works=[Work("w", FAR)]).run_now("w")
        assert eventually(lambda: ran == [done.label])
    assert not any(
        name.startswith(application_name("")) for name in _listeners(db.engine)
    )  # close() closed the listening connection
    with listening(worker):  # started again, it checks again
        done = Operator(db.engine, table=db.table, works=[Work("w", FAR)]).run_now("w")
        assert eventually(lambda: ran[-1:] == [done.label])


def _listeners(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.text(
                    "SELECT application_name FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
                )
            ).scalars()
        )


def test_retry_wakes_a_listening_worker(pg_db: Db) -> None:
    db = pg_db
    calls: list[int] = []

    def handler(claim: Claim) -> None:
        calls.append(claim.attempt or 0)
        if len(calls) == 1:
            raise RuntimeError("first attempt fails")

    operator = Operator(db.engine, table=db.table, works=[Work("w", FAR)])
    with listening(Worker(db.engine, ["w"], handler, table=db.table, wake="notify", poll="60s")):
        done = operator.run_now("w")
        assert eventually(lambda: db.rows(status=WorkStatus.FAILED))
        operator.retry("w", done.label)
        assert eventually(lambda: db.rows(status=WorkStatus.SUCCESS))
    assert calls == [1, 2]


def test_a_late_tick_from_a_scheduler_wakes_a_listening_worker(pg_db: Db) -> None:
    db = pg_db
    work = Work("w", "* * * * * *", grace="5s")
    config = SchedulerConfig(lookahead="1s", interval="1s", catchup="1m")
    scheduler = Scheduler(db.engine, [work], config, table=db.table)
    scheduler.run_pass(db.db_now() - timedelta(seconds=10))  # past their grace at once
    ran: list[str] = []
    with listening(Worker(db.engine, ["w"], lambda c: ran.append(c.sequence), table=db.table,
                          wake="notify")):  # fmt: skip
        assert ran == []
        scheduler.run_pass()  # catches up: the last seconds' ticks are due already
        assert eventually(lambda: len(ran) >= 3)
    scheduler.close()


def test_a_notify_for_another_work_makes_no_look_and_an_idle_worker_sends_nothing(
    pg_db: Db,
) -> None:
    db = pg_db
    engine = sa.create_engine(db.url)  # the worker's own: its statements alone are counted
    ran: list[str] = []
    worker = Worker(engine, [Work("a", FAR)], lambda c: ran.append(c.name), table=db.table,
                    wake="notify")  # fmt: skip
    with listening(worker), statements(engine) as sent:
        time.sleep(2)
        idle = list(sent)
        Operator(db.engine, table=db.table, works=[Work("b", FAR)]).run_now("b")
        time.sleep(1)
        other = sent[len(idle) :]
    engine.dispose()
    assert idle == []  # two seconds idle: not one statement
    assert other == []  # b is not its work: no look
    assert ran == []
    assert [row.name for row in db.rows(status=WorkStatus.QUEUED)] == ["b"]


def test_a_burst_of_notifies_is_few_looks(pg_db: Db) -> None:
    db = pg_db
    engine = sa.create_engine(db.url)
    ran: list[str] = []
    operator = Operator(db.engine, table=db.table, works=[Work("w", FAR)])
    with listening(
        Worker(engine, ["w"], lambda c: ran.append(c.name), table=db.table, wake="notify")
    ):
        with statements(engine) as sent:
            with db.engine.begin() as conn:  # twenty notifies, delivered at one commit
                for _ in range(20):
                    conn.execute(sa.select(sa.func.pg_notify(channel_for(db.table), '["w"]')))
            time.sleep(1)
        operator.run_now("w")
        assert eventually(lambda: len(ran) == 1)
    engine.dispose()
    looks = [s for s in sent if db.table in s]
    assert 1 <= len(looks) <= 3, looks  # coalesced: not one look per notify


def test_the_listener_reconnects_after_its_connection_is_killed(
    pg_db: Db, caplog: pytest.LogCaptureFixture
) -> None:
    db = pg_db
    ran: list[str] = []
    operator = Operator(db.engine, table=db.table, works=[Work("w", FAR)])
    worker = Worker(db.engine, ["w"], lambda c: ran.append(c.name), table=db.table, wake="notify")
    with caplog.at_level(logging.WARNING, logger="worksync_sa"), listening(worker) as w:
        name = application_name(w.sync.worker_id)
        assert _terminate(db.engine, name) == 1
        assert eventually(lambda: _pids(db.engine, name) and w.wakeups == "listening")
        operator.run_now("w")
        assert eventually(lambda: len(ran) == 1)
    outage = [r for r in caplog.records if getattr(r, "action", None) == "outage"]
    resumed = [r for r in caplog.records if getattr(r, "action", None) == "resumed"]
    assert len(outage) == 1
    assert len(resumed) == 1
    assert "wake-up listener" in outage[0].getMessage()


def _pids(engine: sa.Engine, name: str) -> list[int]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.text("SELECT pid FROM pg_stat_activity WHERE application_name = :name"),
                {"name": name},
            ).scalars()
        )


def _terminate(engine: sa.Engine, name: str) -> int:
    with engine.connect() as conn:
        return sum(
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = :name"
                ),
                {"name": name},
            ).scalars()
        )


# -- bad arguments ---------------------------------------------------------------------------


def test_wake_must_be_none_or_notify(db: Db) -> None:
    with pytest.raises(InvalidArgumentError, match="'bogus'"):
        Worker(db.engine, ["w"], print, table=db.table, wake="bogus")
    with pytest.raises(InvalidArgumentError, match="listen_url is only for wake='notify'"):
        Worker(db.engine, ["w"], print, table=db.table, listen_url=db.url)
    if db.name == "postgresql":
        for url in ("postgresql+pg8000://postgres@127.0.0.1/test", "sqlite:///x.db", "not a url"):
            with pytest.raises(InvalidArgumentError, match="listen_url"):
                Worker(db.engine, ["w"], print, table=db.table, wake="notify", listen_url=url)
        return
    with pytest.raises(InvalidArgumentError, match="needs PostgreSQL"):
        Worker(db.engine, ["w"], print, table=db.table, wake="notify")
    assert db.count() == 0


def test_without_wake_the_worker_polls_as_before(db: Db) -> None:
    worker = Worker(db.engine, ["w"], print, table=db.table)
    assert (worker.wakeups, worker.poll) == ("polling", 1.0)
    worker = Worker(db.engine, ["w"], print, table=db.table, poll="5s")
    assert worker.poll == 5.0


# -- the asyncio twin ------------------------------------------------------------------------


def test_the_async_worker_wakes_for_run_now_and_retry_and_reconnects(pg_db: Db) -> None:
    db = pg_db
    operator = Operator(db.engine, table=db.table, works=[Work("w", FAR)])
    calls: list[int] = []

    async def handler(claim: AsyncClaim) -> None:
        calls.append(claim.attempt or 0)
        if len(calls) == 1:
            raise RuntimeError("first attempt fails")

    async def until(predicate: Callable[[], object]) -> bool:
        end = time.monotonic() + DEADLINE
        while not predicate() and time.monotonic() < end:
            await asyncio.sleep(0.02)
        return bool(predicate())

    from .twins import async_engine  # skips, naming the extra, without greenlet or the driver

    async def main() -> None:
        engine = async_engine(db.url)
        worker = AsyncWorker(
            engine, [Work("w", FAR)], handler, table=db.table, wake="notify", poll="60s"
        )
        with pytest.raises(InvalidArgumentError, match="'bogus'"):
            AsyncWorker(engine, ["w"], handler, table=db.table, wake="bogus")
        async with worker:
            assert await until(lambda: worker.wakeups == "listening")
            done = await asyncio.to_thread(operator.run_now, "w")
            assert await until(lambda: calls == [1])
            await asyncio.sleep(0.2)  # its claim recorded FAILED
            await asyncio.to_thread(operator.retry, "w", done.label)
            assert await until(lambda: calls == [1, 2])
            name = application_name(worker.sync.worker_id)
            assert await asyncio.to_thread(_terminate, db.engine, name) == 1
            assert await until(lambda: worker.wakeups == "listening" and _pids(db.engine, name))
            await asyncio.to_thread(operator.run_now, "w")
            assert await until(lambda: len(calls) == 3)
        assert _pids(db.engine, name) == [] or await until(lambda: not _pids(db.engine, name))
        await engine.dispose()

    asyncio.run(main())
    assert [row.status for row in db.rows()].count(WorkStatus.SUCCESS) == 2


def test_the_async_worker_refuses_wake_ups_off_postgresql(db: Db) -> None:
    if db.name == "postgresql":
        pytest.skip("wake-ups work here")
    from .twins import async_engine  # skips, naming the extra, without greenlet or the driver

    engine = async_engine(db.url)

    async def handler(claim: AsyncClaim) -> None:
        return None

    with pytest.raises(InvalidArgumentError, match="needs PostgreSQL"):
        AsyncWorker(engine, ["w"], handler, table=db.table, wake="notify")
    assert db.count() == 0
    asyncio.run(engine.dispose())


# -- behind PgBouncer in transaction pooling -------------------------------------------------


@pytest.mark.topology
def test_behind_pgbouncer_in_transaction_pooling_it_polls_unless_given_listen_url(
    pg_db: Db, caplog: pytest.LogCaptureFixture
) -> None:
    from .topology_pgbouncer import pgbouncer

    db = pg_db
    operator = Operator(db.engine, table=db.table, works=[Work("w", FAR)])
    with pgbouncer(db.url, "transaction") as bouncer:
        engine = sa.create_engine(bouncer.url)
        with caplog.at_level(logging.WARNING, logger="worksync_sa"):
            worker = Worker(engine, ["w"], print, table=db.table, wake="notify")
            with worker:
                assert eventually(lambda: worker.wakeups != "checking")
                assert worker.wakeups == "polling"
                assert worker.poll == 1.0  # back to the short poll
        off = [r for r in caplog.records if getattr(r, "action", None) == "wakeups-off"]
        assert len(off) == 1
        assert "listen_url=" in off[0].getMessage()
        assert "PgBouncer" in off[0].getMessage()
        ran: list[str] = []
        direct = Worker(
            engine,
            ["w"],
            lambda c: ran.append(c.name),
            table=db.table,
            wake="notify",
            listen_url=db.url,
        )
        with listening(direct):
            operator.run_now("w")
            assert eventually(lambda: len(ran) == 1)
        engine.dispose()
