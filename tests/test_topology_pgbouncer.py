"""Every service through PgBouncer, in transaction and in session pooling, with default engines.

PgBouncer runs on loopback in front of the test PostgreSQL server, with
fewer server connections than clients and ``server_round_robin``, so a
client's transactions really do land on different server connections.
Before worksync_sa recognised poolers, psycopg's server-side prepares broke
here: ``prepared statement "_pg3_1" does not exist``, and lost slots.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from worksync_sa import (
    AsyncScheduler,
    AsyncWorkSync,
    Ledger,
    Scheduler,
    SchedulerConfig,
    Work,
    WorkStatus,
    WorkSync,
    default_sequence,
    downgrade,
    upgrade,
)
from worksync_sa._run.poolers import behind_pooler

from . import racers
from .conftest import Backend, fresh_table_name, require
from .extras import need
from .proxy import Proxy
from .test_concurrency import run_processes
from .topology_pgbouncer import Bouncer, pgbouncer

pytestmark = pytest.mark.topology

UTC = timezone.utc
T0 = datetime(2026, 3, 1, tzinfo=UTC)
S = timedelta(seconds=1)


@pytest.fixture(scope="module")
def postgresql(_backends: dict[str, Any]) -> Backend:
    return require(_backends, "postgresql")


@pytest.fixture(scope="module", params=("transaction", "session"))
def bouncer(request: pytest.FixtureRequest, postgresql: Backend) -> Iterator[Bouncer]:
    with pgbouncer(postgresql.url, request.param) as running:
        yield running


@pytest.fixture
def table(bouncer: Bouncer, postgresql: Backend) -> Iterator[str]:
    """A table name of the test's own; whatever was made under it is dropped afterwards."""
    name = fresh_table_name()
    yield name
    downgrade(postgresql.engine, table=name)


def test_a_pooler_is_recognised_and_a_tcp_proxy_is_not(
    bouncer: Bouncer, postgresql: Backend
) -> None:
    relay = Proxy("127.0.0.1", postgresql.engine.url.port or 5432)
    urls = {
        "pgbouncer": bouncer.url,
        "direct": postgresql.url,
        "tcp proxy": relay.url_for(postgresql.url),
    }
    seen = {}
    for where, url in urls.items():
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            seen[where] = behind_pooler(conn)
        engine.dispose()
    relay.close()
    assert seen == {"pgbouncer": True, "direct": False, "tcp proxy": False}


def test_every_service_through_the_pooler(bouncer: Bouncer, table: str) -> None:
    engine = sa.create_engine(bouncer.url)  # a default engine: no special arguments
    upgrade(engine, table=table)
    upgrade(engine, table=table)  # a second copy starting up finds it at head
    works = [
        Work("pay", "@every 10s", max_run=3, grace=timedelta(days=1), lease=60 * S),
        Work("mail", "@every 10s", max_run=1, grace=20 * S, lease=60 * S),
    ]
    config = SchedulerConfig(lookahead="300s", interval="10s")
    scheduler = Scheduler(engine, works, config, table=table)
    for minute in range(3):  # the same statements, again and again on the same lanes
        scheduler.run_pass(T0 + minute * 60 * S)
    sync = WorkSync(engine, table=table)
    claimed = 0
    for n in range(1, 21):
        sequence = default_sequence(T0 + n * 10 * S)
        for _ in range(4):  # one more than max_run: the last finds nothing
            claim = sync.acquire("pay", sequence)
            if claim is None:
                continue
            claim.heartbeat()
            claim.heartbeat()
            claim.success() if n % 3 else claim.fail("odd one out")
            claimed += 1
    assert claimed == 60
    due = 0
    while (claim := sync.acquire_due("mail", now=T0 + 125 * S)) is not None:
        with claim:
            due += 1
    assert due == 2  # the ticks at 110 s and 120 s; older ones are past their 20 s grace
    assert sync.recover(now=T0 + 400 * S) > 0  # the rest of mail's past ticks: missed
    ledger = Ledger(engine, table=table)
    for _ in range(8):
        page = ledger.page(name="pay", since=T0, limit=50)
    paid = [entry for entry in page.entries if entry.succeeded or entry.failed]
    assert len(paid) == 20
    assert sum(entry.succeeded for entry in paid) == 42
    assert sum(entry.failed for entry in paid) == 18
    summary = {s.name: s for s in ledger.summary(since=T0)}
    assert summary["mail"].missed > 0
    ledger.close()
    sync.close()
    scheduler.close()
    engine.dispose()


def test_the_asyncio_twins_through_the_pooler(bouncer: Bouncer, table: str) -> None:
    need("greenlet", "async-postgresql")
    from sqlalchemy.ext.asyncio import create_async_engine

    async def run() -> int:
        engine = create_async_engine(bouncer.url.replace("+psycopg", "+psycopg_async", 1))
        blocking = sa.create_engine(bouncer.url)
        upgrade(blocking, table=table)
        blocking.dispose()
        work = Work("pay", "@every 10s", max_run=2, grace=timedelta(days=1))
        scheduler = AsyncScheduler(
            engine, [work], SchedulerConfig(lookahead="300s", interval="10s"), table=table
        )
        for minute in range(3):
            await scheduler.run_pass(T0 + minute * 60 * S)
        claimed = 0
        async with AsyncWorkSync(engine, table=table) as sync:
            for n in range(1, 21):
                for _ in range(3):
                    claim = await sync.acquire("pay", default_sequence(T0 + n * 10 * S))
                    if claim is not None:
                        async with claim:
                            await claim.heartbeat()
                            claimed += 1
        await scheduler.close()
        await engine.dispose()
        return claimed

    assert asyncio.run(run()) == 40


TICKS = 200
MAX_RUN = 3
RACERS = 8


@pytest.mark.slow
def test_racing_processes_through_the_pooler_lose_nothing(bouncer: Bouncer, table: str) -> None:
    """The issue's trial: 8 processes racing over 200 ticks of max_run 3."""
    engine = sa.create_engine(bouncer.url)
    upgrade(engine, table=table)
    work = Work("race", "@every 10s", max_run=MAX_RUN)
    config = SchedulerConfig(lookahead=timedelta(seconds=10 * TICKS), interval="10s")
    Scheduler(engine, [work], config, table=table).run_pass(T0)
    sequences = [default_sequence(T0 + n * 10 * S) for n in range(1, TICKS + 1)]

    reports = run_processes(racers.race_acquire, [(bouncer.url, table, "race", sequences)] * RACERS)

    per_tick = Counter(sequence for report in reports for sequence, _ in report)
    assert per_tick == dict.fromkeys(sequences, MAX_RUN)  # every slot taken, none twice
    with engine.connect() as conn:
        statuses = conn.execute(
            sa.text(f"SELECT status, count(*) FROM {table} GROUP BY status")  # our own name
        ).all()
    assert dict(statuses) == {WorkStatus.SUCCESS: TICKS * MAX_RUN}
    engine.dispose()


@pytest.mark.slow
def test_a_live_fleet_through_the_pooler(bouncer: Bouncer, table: str, tmp_path: Path) -> None:
    """Two schedulers and four Worker processes on per-second ticks, with heartbeats."""
    engine = sa.create_engine(bouncer.url)
    upgrade(engine, table=table)
    works: list[dict[str, Any]] = [
        {"name": "a", "cron": "* * * * * *", "max_run": 2, "lease": 3, "grace": 10},
        {"name": "b", "cron": "*/2 * * * * *", "max_run": 1, "lease": 3, "grace": 10},
    ]
    config = {"lookahead": "4s", "interval": "1s"}
    seconds = 12.0
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    procs = [
        ctx.Process(
            target=racers.run_scheduler,
            args=(bouncer.url, table, works, config, seconds + 3, None, results),
        )
        for _ in range(2)
    ] + [
        ctx.Process(
            target=racers.run_worker,
            args=(bouncer.url, table, works, seconds, str(tmp_path / f"w{n}.log"), None, results),
        )
        for n in range(4)
    ]
    for proc in procs:
        proc.start()
    try:
        reports = [results.get(timeout=120) for _ in procs]
    finally:
        for proc in procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
    assert [status for status, _ in reports] == ["ok"] * len(procs), reports
    handled = sum(value["handled"] for status, value in reports if "handled" in value)
    assert handled > 0
    logged: Counter[str] = Counter()
    for _, value in reports:
        logged.update(value.get("actions", value))
    trouble = {action: logged[action] for action in ("outage", "retry", "lost", "failed")}
    assert trouble == dict.fromkeys(trouble, 0), logged  # no process saw an error
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(f"SELECT name, sequence, status, tick_at FROM {table}")  # our own name
        ).all()
    budget = {"a": 2, "b": 1}
    per_tick = Counter((row.name, row.sequence) for row in rows)
    assert all(count == budget[name] for (name, _), count in per_tick.items())
    # Ticks well inside the run were all claimed and finished by the workers.
    ticks = sorted({row.tick_at for row in rows})
    middle = [row for row in rows if ticks[0] + 4 * S < row.tick_at < ticks[0] + 9 * S]
    assert middle
    assert {row.status for row in middle} == {WorkStatus.SUCCESS}
    journal = Counter(
        line.split("\t")[2]
        for log in tmp_path.glob("w*.log")
        for line in log.read_text().splitlines()
    )
    assert max(journal.values()) == 1  # each row run once
    engine.dispose()


def test_the_command_line_through_the_pooler(bouncer: Bouncer, table: str, tmp_path: Path) -> None:
    def worksync(*args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "worksync_sa", *args, "--db", bouncer.url, "--table", table],
            cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        return result

    (tmp_path / "works.toml").write_text(
        '[scheduler]\nlookahead = "30s"\ninterval = "10s"\n\n'
        '[[works]]\nname = "tick"\ncron = "@every 2s"\nmax_run = 2\ngrace = "1h"\n'
    )
    (tmp_path / "handlers.py").write_text("def handle(claim):\n    pass\n")
    worksync("migrate")
    worksync("check")
    for _ in range(3):
        worksync("schedule", "--config", "works.toml", "--once")
    time.sleep(4.5)  # two ticks come due
    ran = worksync("work", "--config", "works.toml", "--run", "handlers:handle", "--once")
    match = re.search(r"ran (\d+) claims of tick", ran.stdout)
    assert match, ran.stdout
    engine = sa.create_engine(bouncer.url)
    with engine.connect() as conn:
        succeeded = conn.execute(
            sa.text(f"SELECT count(*) FROM {table} WHERE status = 3")  # our own name
        ).scalar_one()
    engine.dispose()
    assert int(match.group(1)) == succeeded >= 4  # two ticks or more, both slots each
    status = worksync("status", "--name", "tick", "--last", "5")
    assert "tick" in status.stdout
    worksync("prune", "--older-than", "7d")
