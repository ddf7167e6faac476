"""The cost shape the benchmarks promise, checked exactly (counts, never timings).

A claim is one round trip on a server; lanes stay out of the host's pool; a
host that traces SQL still sees every statement; SQLite writers use their own
busy policy without changing the host's connections.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from worksync_sa import Scheduler, SchedulerConfig, Work, WorkSync, default_sequence

from .conftest import Db
from .proxy import Proxy

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
TICKS = [default_sequence(T0 + timedelta(seconds=n)) for n in range(1, 61)]


def schedule(engine: sa.Engine, table: str, max_run: int = 1) -> Scheduler:
    config = SchedulerConfig(lookahead="1m", interval="10s")
    scheduler = Scheduler(engine, [Work("w", "* * * * * *", max_run=max_run)], config, table=table)
    scheduler.run_pass(T0)
    return scheduler


@pytest.fixture
def counted(server_db: Db) -> Iterator[tuple[Proxy, sa.Engine]]:
    url = server_db.engine.url
    proxy = Proxy(url.host or "127.0.0.1", url.port or 0)
    engine = sa.create_engine(proxy.url_for(server_db.url))
    yield proxy, engine
    engine.dispose()
    proxy.close()


def test_a_claim_is_one_round_trip(server_db: Db, counted: tuple[Proxy, sa.Engine]) -> None:
    proxy, engine = counted
    schedule(server_db.engine, server_db.table)
    with WorkSync(engine, table=server_db.table, keep_alive=False) as sync:
        for sequence in TICKS[:8]:  # opens the lane; psycopg prepares on the 5th run
            assert sync.acquire("w", sequence) is not None
        before = proxy.requests
        for sequence in TICKS[8:28]:
            assert sync.acquire("w", sequence) is not None
        assert proxy.requests - before == 20  # no BEGIN, no COMMIT, no pool reset
        before = proxy.requests
        assert sync.acquire("w", TICKS[0]) is None  # nothing left: still one round trip
        assert proxy.requests - before == 1


def test_finish_and_heartbeat_are_one_round_trip_each(
    server_db: Db, counted: tuple[Proxy, sa.Engine]
) -> None:
    proxy, engine = counted
    schedule(server_db.engine, server_db.table)
    with WorkSync(engine, table=server_db.table, keep_alive=False) as sync:
        claims = [sync.acquire("w", sequence) for sequence in TICKS[:16]]
        for claim in claims[:8]:  # psycopg prepares each statement on its 5th run
            assert claim is not None
            claim.heartbeat()
            claim.success()
        before = proxy.requests
        for claim in claims[8:]:
            assert claim is not None
            claim.heartbeat()
            claim.success()
        assert proxy.requests - before == 2 * 8


def test_a_pass_inserts_in_a_handful_of_statements(db: Db) -> None:
    works = [Work(f"w{n:05d}", f"{n % 60} * * * *", max_run=3) for n in range(4000)]
    scheduler = Scheduler(
        db.engine, works, SchedulerConfig(lookahead="1h", interval="1m"), table=db.table
    )
    assert scheduler.run_pass(datetime(2026, 1, 1, 0, 0, 30, tzinfo=timezone.utc)) == 12_000
    assert scheduler.last_pass is not None
    assert scheduler.last_pass.batches <= 3  # 12,000 rows, 5,000 a batch (one on SQLite)


def test_a_loops_steady_pass_reads_its_window_once_and_recovers_every_five_seconds(
    db: Db,
) -> None:
    """Per pass: the clock, one read of the window with other programs' undated rows
    (``UNION ALL``), the next ticks' insert; recovery's reads on every fifth pass a second."""
    works = [Work(f"w{n}", "* * * * * *") for n in range(5)]
    config = SchedulerConfig(lookahead="5s", interval="1s")
    scheduler = Scheduler(db.engine, works, config, table=db.table)
    scheduler.run_pass()  # the first pass: the horizon, the lanes
    seen: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        seen.append(" ".join(statement.split()))

    sa.event.listen(db.engine, "before_cursor_execute", count)
    try:
        scheduler.start()
        time.sleep(10.5)  # the loop's first pass recovers, then every fifth: three in all
        scheduler.stop()
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", count)
        scheduler.close()
    windows = [s for s in seen if "UNION ALL" in s]
    undated = [s for s in seen if "tick_at IS NULL" in s and "UNION ALL" not in s]
    leases = [s for s in seen if "lease_until <" in s]
    assert 9 <= len(windows) <= 12  # a pass a second
    assert [s for s in undated if "GROUP BY" in s] == []  # no read of its own any more
    # Recovery's read (on PostgreSQL and SQLite, its UPDATE ... RETURNING) finds expired
    # leases: on the loop's first pass and every fifth after it.
    assert 2 <= len(leases) <= 3, leases


def test_tracing_listeners_still_see_every_claim(db: Db) -> None:
    """The direct path steps aside while anyone listens to the engine."""
    schedule(db.engine, db.table)
    seen: list[str] = []

    def trace(conn: object, cursor: object, statement: str, *args: object) -> None:
        seen.append(statement)

    sa.event.listen(db.engine, "before_cursor_execute", trace)
    try:
        with WorkSync(db.engine, table=db.table, keep_alive=False) as sync:
            for sequence in TICKS[:3]:
                claim = sync.acquire("w", sequence)
                assert claim is not None
                claim.success()
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", trace)
    assert len([s for s in seen if s.lstrip().upper().startswith("UPDATE")]) == 6


def test_lanes_stay_out_of_the_hosts_pool(db: Db) -> None:
    schedule(db.engine, db.table)
    sync = WorkSync(db.engine, table=db.table)
    assert sync.acquire("w", TICKS[0]) is not None
    pool = db.engine.pool
    if isinstance(pool, sa.pool.QueuePool):
        assert pool.checkedout() == 0  # the lane is detached: no host slot used
    assert sync._runner.lanes.idle == 1
    sync.close()
    assert sync._runner.lanes.idle == 0


def test_sqlite_lanes_leave_the_hosts_busy_timeout_alone(tmp_path: object) -> None:
    url = f"sqlite:///{tmp_path}/busy.db"
    engine = sa.create_engine(url, connect_args={"timeout": 7})
    from worksync_sa.models import work_table

    work_table("works").create(engine)
    schedule(engine, "works")
    with WorkSync(engine) as sync:
        assert sync.acquire("w", TICKS[0]) is not None
        with engine.connect() as conn:  # a host connection, from the host's pool
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 7000
    assert (tmp_path / "busy.db-worksync.lock").exists()  # type: ignore[operator]
    engine.dispose()
