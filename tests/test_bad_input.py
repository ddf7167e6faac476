"""Every public entry point refuses bad values with a clear error and writes nothing.

One table: (entry point, bad call, error type, words the message must contain).
Each call runs against a table that already holds rows; after the refusal the
table must be exactly as it was.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

import worksync_sa as ws
from worksync_sa import (
    InvalidArgumentError,
    InvalidConfigError,
    InvalidWorkError,
    SchedulerConfig,
    Work,
)
from worksync_sa.models import table_named
from worksync_sa.repository import NewRow

from .conftest import Db

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
GOOD = Work("w", "@every 10s", max_run=2)
CONFIG = SchedulerConfig(lookahead="1m", interval="10s")

Call = Callable[[Db], object]


def scheduler(db: Db) -> ws.Scheduler:
    return ws.Scheduler(db.engine, [GOOD], CONFIG, table=db.table)


def sync(db: Db) -> ws.WorkSync:
    return ws.WorkSync(db.engine, table=db.table)


HELD: dict[str, ws.Claim] = {}
"""A claim each test takes before its snapshot, for the cases that need one."""


def in_transaction(db: Db, action: Callable[[Any], object]) -> object:
    with db.engine.begin() as conn:
        return action(conn)


CASES: list[tuple[str, Call, type[Exception], str]] = [
    # Work blueprints
    ("Work name", lambda db: Work("", "* * * * *"), InvalidWorkError, "name is empty"),
    ("Work name", lambda db: Work("n" * 256, "* * * * *"), InvalidWorkError, "256 characters"),
    ("Work cron", lambda db: Work("w", "61 * * * *"), InvalidWorkError, "cron"),
    ("Work max_run", lambda db: Work("w", "* * * * *", 0), InvalidWorkError, "max_run"),
    ("Work timezone", lambda db: Work("w", "* * * * *", timezone="Nowhere/City"), InvalidWorkError, "timezone"),
    ("Work lease", lambda db: Work("w", "* * * * *", lease=timedelta(0)), InvalidWorkError, "lease"),
    ("Work grace", lambda db: Work("w", "* * * * *", grace="soon"), InvalidWorkError, "grace"),
    ("Work max_attempts", lambda db: Work("w", "* * * * *", max_attempts=-1), InvalidWorkError, "max_attempts"),
    ("Work.ticks", lambda db: GOOD.ticks("today", T0), InvalidArgumentError, "after"),  # type: ignore[arg-type]
    ("default_sequence", lambda db: ws.default_sequence("2026-01-01"), InvalidArgumentError, "tick"),  # type: ignore[arg-type]
    # Settings
    ("SchedulerConfig", lambda db: SchedulerConfig(interval="@every never"), InvalidConfigError, "interval"),
    ("SchedulerConfig", lambda db: SchedulerConfig(lookahead="1s", interval="1m"), InvalidConfigError, "lookahead"),
    ("SchedulerConfig", lambda db: SchedulerConfig(retention="1h"), InvalidConfigError, "retention"),
    ("RetryPolicy", lambda db: ws.RetryPolicy(attempts=0), InvalidConfigError, "attempts"),
    ("work_table", lambda db: ws.work_table("works; DROP TABLE x"), InvalidConfigError, "table name"),
    ("include_object_for", lambda db: ws.include_object_for("bad name"), InvalidConfigError, "table name"),
    # Scheduler
    ("Scheduler engine", lambda db: ws.Scheduler("mysql://x", [GOOD]), InvalidArgumentError, "engine"),  # type: ignore[arg-type]
    ("Scheduler works", lambda db: ws.Scheduler(db.engine, [GOOD, GOOD], table=db.table), InvalidWorkError, "two works"),
    ("Scheduler works", lambda db: ws.Scheduler(db.engine, ["w"], table=db.table), InvalidWorkError, "Work objects"),  # type: ignore[list-item]
    ("Scheduler config", lambda db: ws.Scheduler(db.engine, [GOOD], {"lookahead": 5}, table=db.table), InvalidConfigError, "SchedulerConfig"),  # type: ignore[arg-type]
    ("Scheduler table", lambda db: ws.Scheduler(db.engine, [GOOD], table="1st"), InvalidConfigError, "table name"),
    ("Scheduler retry", lambda db: ws.Scheduler(db.engine, [GOOD], retry=3, table=db.table), InvalidConfigError, "RetryPolicy"),  # type: ignore[arg-type]
    ("Scheduler.run_pass", lambda db: scheduler(db).run_pass("now"), InvalidArgumentError, "now"),  # type: ignore[arg-type]
    ("Scheduler.plan", lambda db: scheduler(db).plan(T0, 5), InvalidArgumentError, "until"),  # type: ignore[arg-type]
    # WorkSync and Claim
    ("WorkSync engine", lambda db: ws.WorkSync(None), InvalidArgumentError, "engine"),  # type: ignore[arg-type]
    ("WorkSync worker_id", lambda db: ws.WorkSync(db.engine, worker_id=""), InvalidWorkError, "worker_id"),
    ("WorkSync keep_alive", lambda db: ws.WorkSync(db.engine, keep_alive="yes"), InvalidArgumentError, "keep_alive"),  # type: ignore[arg-type]
    ("WorkSync retry", lambda db: ws.WorkSync(db.engine, retry={}), InvalidArgumentError, "RetryPolicy"),  # type: ignore[arg-type]
    ("acquire name", lambda db: sync(db).acquire("", "s"), InvalidWorkError, "name"),
    ("acquire sequence", lambda db: sync(db).acquire("w", "s" * 300), InvalidWorkError, "300 characters"),
    ("acquire sequence", lambda db: sync(db).acquire("w", "nul\x00"), InvalidWorkError, "NUL"),
    ("acquire_due name", lambda db: sync(db).acquire_due(b"w"), InvalidWorkError, "string"),  # type: ignore[arg-type]
    ("acquire_due now", lambda db: sync(db).acquire_due("w", now=1.5), InvalidArgumentError, "now"),  # type: ignore[arg-type]
    ("recover now", lambda db: sync(db).recover(now="soon"), InvalidArgumentError, "now"),  # type: ignore[arg-type]
    ("prune older_than", lambda db: sync(db).prune(timedelta(minutes=5)), InvalidArgumentError, "older_than"),
    ("prune batch_size", lambda db: sync(db).prune(timedelta(days=3), 0), InvalidArgumentError, "batch_size"),
    ("Claim.fail", lambda db: HELD[db.table].fail(["not", "text"]), InvalidArgumentError, "error"),  # type: ignore[arg-type]
    # Worker loop
    ("Worker works", lambda db: ws.Worker(db.engine, [], print), InvalidArgumentError, "empty"),
    ("Worker works", lambda db: ws.Worker(db.engine, "w", print), InvalidArgumentError, "list"),
    ("Worker handler", lambda db: ws.Worker(db.engine, ["w"], None), InvalidArgumentError, "handler"),  # type: ignore[arg-type]
    ("Worker poll", lambda db: ws.Worker(db.engine, ["w"], print, poll="-1s"), InvalidArgumentError, "poll"),
    ("Worker name", lambda db: ws.Worker(db.engine, ["w "], print), InvalidArgumentError, "whitespace"),
    # Schema management
    ("upgrade engine", lambda db: ws.upgrade("sqlite://"), InvalidArgumentError, "engine"),  # type: ignore[arg-type]
    ("upgrade table", lambda db: ws.upgrade(db.engine, table="x-y"), InvalidConfigError, "table name"),
    ("downgrade table", lambda db: ws.downgrade(db.engine, table=""), InvalidConfigError, "table name"),
    # Repositories (a host may call them directly)
    ("ScheduleRepository", lambda db: ws.ScheduleRepository(42), InvalidArgumentError, "Table"),  # type: ignore[arg-type]
    ("ScheduleRepository name", lambda db: ws.ScheduleRepository("x-y"), InvalidConfigError, "table name"),
    ("NewRow", lambda db: NewRow("w", "s", -1, T0), InvalidArgumentError, "slot"),
    ("NewRow", lambda db: NewRow("w", "s" * 256, 0, T0), InvalidArgumentError, "sequence"),
    ("NewRow", lambda db: NewRow("w", "s", 0, "T0"), InvalidArgumentError, "tick_at"),  # type: ignore[arg-type]
    ("ClaimRepository.claim", lambda db: in_transaction(db, lambda c: ws.ClaimRepository(table_named(db.table)).claim(c, "w", "", "t" * 32, "me")), InvalidArgumentError, "sequence"),
    ("ClaimRepository.claim", lambda db: in_transaction(db, lambda c: ws.ClaimRepository(table_named(db.table)).claim(c, "w", "s", "t" * 40, "me")), InvalidArgumentError, "token"),
    ("MaintenanceRepository.prune_batch", lambda db: in_transaction(db, lambda c: ws.MaintenanceRepository(table_named(db.table)).prune_batch(c, T0, 0)), InvalidArgumentError, "batch_size"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("entry", "call", "error", "words"), CASES, ids=[f"{n}-{c[0]}" for n, c in enumerate(CASES)]
)
def test_bad_input_raises_clearly_and_writes_nothing(
    db: Db, entry: str, call: Call, error: type[Exception], words: str
) -> None:
    scheduler(db).run_pass(T0)
    held = sync(db).acquire("w", ws.default_sequence(T0 + timedelta(seconds=10)))
    assert held is not None
    HELD[db.table] = held
    before = db.rows()
    with pytest.raises(error) as caught:
        call(db)
    assert isinstance(caught.value, ValueError)  # every refusal is also a ValueError
    assert words.lower() in str(caught.value).lower(), str(caught.value)
    assert db.rows() == before
    del HELD[db.table]


# -- the asyncio twins refuse the same things, the same way ---------------------------------

AsyncCall = Callable[[Db, Any], Awaitable[object]]
SNAPSHOT: dict[str, list[Any]] = {}
"""The table as a case left it after its own set-up, if it has one."""


async def _async_sync_call(
    db: Db, engine: Any, action: Callable[[Any], Awaitable[object]]
) -> object:
    async with ws.AsyncWorkSync(engine, table=db.table) as sync:
        return await action(sync)


async def _async_claim_fail(db: Db, engine: Any) -> object:
    async with ws.AsyncWorkSync(engine, table=db.table) as sync:
        claim = await sync.acquire("w", ws.default_sequence(T0 + timedelta(seconds=20)))
        assert claim is not None
        SNAPSHOT[db.table] = db.rows()  # what the refused call must leave as it is
        await claim.fail(["not", "text"])  # type: ignore[arg-type]
        return None


async def _made(make: Callable[[], object]) -> object:
    return make()


ASYNC_CASES: list[tuple[str, AsyncCall, type[Exception], str]] = [
    ("AsyncScheduler engine", lambda db, e: _made(lambda: ws.AsyncScheduler(db.engine, [GOOD])), InvalidArgumentError, "AsyncEngine"),  # type: ignore[arg-type]
    ("AsyncScheduler works", lambda db, e: _made(lambda: ws.AsyncScheduler(e, [GOOD, GOOD], table=db.table)), InvalidWorkError, "two works"),
    ("AsyncScheduler config", lambda db, e: _made(lambda: ws.AsyncScheduler(e, [GOOD], {"lookahead": 5})), InvalidConfigError, "SchedulerConfig"),  # type: ignore[arg-type]
    ("AsyncScheduler table", lambda db, e: _made(lambda: ws.AsyncScheduler(e, [GOOD], table="1st")), InvalidConfigError, "table name"),
    ("AsyncScheduler.run_pass", lambda db, e: ws.AsyncScheduler(e, [GOOD], CONFIG, table=db.table).run_pass("now"), InvalidArgumentError, "now"),  # type: ignore[arg-type]
    ("AsyncWorkSync engine", lambda db, e: _made(lambda: ws.AsyncWorkSync(db.engine)), InvalidArgumentError, "AsyncEngine"),  # type: ignore[arg-type]
    ("AsyncWorkSync worker_id", lambda db, e: _made(lambda: ws.AsyncWorkSync(e, worker_id="")), InvalidWorkError, "worker_id"),
    ("AsyncWorkSync keep_alive", lambda db, e: _made(lambda: ws.AsyncWorkSync(e, keep_alive=1)), InvalidArgumentError, "keep_alive"),  # type: ignore[arg-type]
    ("acquire sequence", lambda db, e: _async_sync_call(db, e, lambda s: s.acquire("w", "nul\x00")), InvalidWorkError, "NUL"),
    ("acquire_due now", lambda db, e: _async_sync_call(db, e, lambda s: s.acquire_due("w", now=1.5)), InvalidArgumentError, "now"),
    ("recover now", lambda db, e: _async_sync_call(db, e, lambda s: s.recover(now="soon")), InvalidArgumentError, "now"),
    ("prune older_than", lambda db, e: _async_sync_call(db, e, lambda s: s.prune(timedelta(minutes=5))), InvalidArgumentError, "older_than"),
    ("AsyncClaim.fail", _async_claim_fail, InvalidArgumentError, "error"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("entry", "call", "error", "words"),
    ASYNC_CASES,
    ids=[f"{n}-{c[0]}" for n, c in enumerate(ASYNC_CASES)],
)
def test_the_async_twins_refuse_bad_input_the_same_way(
    db: Db, entry: str, call: AsyncCall, error: type[Exception], words: str
) -> None:
    from .twins import async_engine, async_url

    url = async_url(db.engine.url)  # skips, naming the extra, without greenlet or the driver
    scheduler(db).run_pass(T0)
    before = db.rows()

    async def attempt() -> BaseException:
        engine = async_engine(url)
        try:
            with pytest.raises(error) as caught:
                await call(db, engine)
            return caught.value
        finally:
            await engine.dispose()

    refused = asyncio.run(attempt())
    assert isinstance(refused, ValueError)
    assert words.lower() in str(refused).lower(), str(refused)
    assert db.rows() == SNAPSHOT.pop(db.table, before)
