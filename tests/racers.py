"""Process bodies for the concurrency tests.

They run in freshly spawned interpreters (no state shared with pytest), each
with its own engine, and report what they did through a queue: ("ok", value)
or ("error", repr).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Coroutine
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from worksync_sa import (
    AsyncScheduler,
    AsyncWorkSync,
    Scheduler,
    SchedulerConfig,
    Work,
    Worker,
    WorkSync,
    upgrade,
)

if TYPE_CHECKING:  # imported by the async bodies only: SQLAlchemy's asyncio needs greenlet
    from sqlalchemy.ext.asyncio import AsyncEngine


def _report(url: str, results: Any, body: Callable[[sa.Engine], object]) -> None:
    engine = sa.create_engine(url, pool_size=2, max_overflow=2, pool_pre_ping=True)
    try:
        results.put(("ok", body(engine)))
    except BaseException as exc:
        results.put(("error", repr(exc)))
        raise
    finally:
        engine.dispose()


def race_acquire(
    url: str, table: str, name: str, sequences: list[str], barrier: Any, results: Any
) -> None:
    """For each tick, wait for every racer, then try to claim one row of it."""

    def body(engine: sa.Engine) -> list[tuple[str, int]]:
        sync = WorkSync(engine, table=table)
        won = []
        for sequence in sequences:
            barrier.wait(timeout=60)
            claim = sync.acquire(name, sequence)
            if claim is not None:
                won.append((sequence, claim.id))
                claim.success()
        return won

    _report(url, results, body)


def race_acquire_due(
    url: str, table: str, name: str, now: datetime, barrier: Any, results: Any
) -> None:
    """Claim due ticks until none is left, all racers starting together."""

    def body(engine: sa.Engine) -> list[tuple[str, int]]:
        sync = WorkSync(engine, table=table)
        won = []
        barrier.wait(timeout=60)
        while (claim := sync.acquire_due(name, now=now)) is not None:
            won.append((claim.sequence, claim.id))
            claim.success()
        return won

    _report(url, results, body)


def race_batch(
    url: str,
    table: str,
    graces: dict[str, float],
    now: datetime,
    limit: int,
    read_back: bool,
    barrier: Any,
    results: Any,
) -> None:
    """Claim due rows of several works with a worker's batch look until none is left.

    ``read_back``: look as on MySQL, whose dialect returns no rows from an
    INSERT (an ``UPDATE ... LIMIT`` and a read by token), even on MariaDB.
    """
    from worksync_sa._core.claims import DuePlan

    plan = DuePlan.of({name: timedelta(seconds=grace) for name, grace in graces.items()})

    def body(engine: sa.Engine) -> list[tuple[str, str, int]]:
        if read_back:
            engine.connect().close()  # the dialect learns the server's version on connecting
            engine.dialect.insert_returning = False
        sync = WorkSync(engine, table=table)
        places = {name: n for n, name in enumerate(plan.names)}
        won = []
        barrier.wait(timeout=60)
        while rows := sync._runner.call(sync._core.acquire_batch(plan, places, limit, now)):
            assert len(rows) <= limit
            for row in rows:
                won.append((row.name, row.sequence, row.id))
                sync.claim_from_row(row).success()
        return won

    _report(url, results, body)


def race_schedule(
    url: str,
    table: str,
    works: list[tuple[str, str, int]],
    passes: list[datetime],
    lookahead_s: float,
    barrier: Any,
    results: Any,
) -> None:
    """Run scheduler passes in lockstep with other scheduler processes.

    A fresh Scheduler per pass, like a restarted process, so nothing is
    skipped because this process remembers having done it.
    """
    config = SchedulerConfig(lookahead=timedelta(seconds=lookahead_s), interval="1s")
    blueprints = [Work(name, cron, max_run) for name, cron, max_run in works]

    def body(engine: sa.Engine) -> int:
        inserted = 0
        for now in passes:
            barrier.wait(timeout=60)
            inserted += Scheduler(engine, blueprints, config, table=table).run_pass(now)
        return inserted

    _report(url, results, body)


class _ActionCounter(logging.Handler):
    """Counts log records by their ``action`` extra (outage, resumed, ...)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.counts: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        action = getattr(record, "action", None)
        if isinstance(action, str):
            self.counts[action] = self.counts.get(action, 0) + 1


def _count_actions() -> _ActionCounter:
    counter = _ActionCounter()
    logging.getLogger("worksync_sa").addHandler(counter)
    folder = os.environ.get("WORKSYNC_TEST_LOG_DIR")
    if folder:  # diagnosis: each process's whole log, to a file of its own
        import multiprocessing

        name = multiprocessing.current_process().name
        handler = logging.FileHandler(os.path.join(folder, f"{name}-{os.getpid()}.log"))
        layout = "%(asctime)s.%(msecs)03d %(levelname)s %(name)s %(message)s"
        handler.setFormatter(logging.Formatter(layout, "%H:%M:%S"))
        logging.getLogger("worksync_sa").addHandler(handler)
    logging.getLogger("worksync_sa").setLevel(logging.DEBUG)
    return counter


def blueprints(specs: list[dict[str, Any]]) -> list[Work]:
    """Work objects from picklable specs (seconds for the timedelta fields)."""
    works = []
    for spec in specs:
        fields = dict(spec)
        for key in ("lease", "grace"):
            if key in fields:
                fields[key] = timedelta(seconds=fields[key])
        works.append(Work(**fields))
    return works


def run_scheduler(
    url: str,
    table: str,
    works: list[dict[str, Any]],
    config: dict[str, Any],
    seconds: float,
    barrier: Any,
    results: Any,
) -> None:
    """A scheduler process: start the background loop, run for ``seconds``, stop."""
    counter = _count_actions()

    def body(engine: sa.Engine) -> dict[str, int]:
        scheduler = Scheduler(engine, blueprints(works), SchedulerConfig(**config), table=table)
        if barrier is not None:  # None: a process started on its own, e.g. a restart
            barrier.wait(timeout=120)
        scheduler.start()
        time.sleep(seconds)
        scheduler.stop()
        return counter.counts

    _report(url, results, body)


def run_worker(
    url: str,
    table: str,
    works: list[dict[str, Any]],
    seconds: float,
    log: str | None,
    barrier: Any,
    results: Any,
    skew: float = 0.0,
) -> None:
    """A worker process: claim due ticks with the package's Worker loop for ``seconds``.

    Every claim is also appended to ``log`` (flushed per line) as it happens,
    so claims of a process killed with SIGKILL are still known. ``skew`` shifts
    this process's clock (injected into the Worker, not the system clock).
    ``barrier`` may be None (a process started on its own, e.g. a restart).
    """
    counter = _count_actions()
    journal = open(log, "a", buffering=1) if log else None  # noqa: SIM115

    def handle(claim: Any) -> None:
        if journal is not None:
            journal.write(f"{claim.name}\t{claim.sequence}\t{claim.id}\n")
        time.sleep(0.02)

    def skewed() -> datetime:
        return datetime.now(timezone.utc) + timedelta(seconds=skew)

    def body(engine: sa.Engine) -> dict[str, Any]:
        worker = Worker(
            engine, blueprints(works), handle, table=table, poll="200ms", max_backoff="2s",
            clock=skewed,
        )  # fmt: skip
        # Every racer looks at the tick itself, not up to 0.1 s after it: the races are
        # tighter, and beside the original's workers (which look at the tick) ours get
        # a fair share of the ticks instead of nearly none.
        worker._core.spread = lambda: 0.0
        if barrier is not None:
            barrier.wait(timeout=120)
        worker.run(until=time.time() + seconds)
        return {"handled": worker.handled, "actions": counter.counts}

    _report(url, results, body)


def hold_claim(url: str, table: str, name: str, claims: Any) -> None:
    """Claim one due tick, report it, then run "forever" with heartbeats (until killed)."""
    engine = sa.create_engine(url)
    sync = WorkSync(engine, table=table)
    deadline = time.monotonic() + 30
    while (claim := sync.acquire_due(name)) is None:
        if time.monotonic() > deadline:
            claims.put(None)
            return
        time.sleep(0.1)
    claims.put((claim.id, claim.name, claim.sequence, claim.token, os.getpid()))
    with claim:
        time.sleep(3600)


# -- the asyncio twins, through the async driver ------------------------------------------


def _report_async(
    url: str, results: Any, body: Callable[[AsyncEngine], Coroutine[Any, Any, object]]
) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    async def main() -> object:
        engine = create_async_engine(url, pool_size=4, max_overflow=4)
        try:
            return await body(engine)
        finally:
            await engine.dispose()

    try:
        results.put(("ok", asyncio.run(main())))
    except BaseException as exc:
        results.put(("error", repr(exc)))
        raise


def race_acquire_async(
    url: str,
    table: str,
    name: str,
    sequences: list[str],
    tasks: int,
    barrier: Any,
    results: Any,
) -> None:
    """For each tick, wait for every racer process, then claim with ``tasks`` tasks at once."""

    async def body(engine: AsyncEngine) -> list[tuple[str, int]]:
        won: list[tuple[str, int]] = []
        async with AsyncWorkSync(engine, table=table) as sync:

            async def one(sequence: str) -> None:
                claim = await sync.acquire(name, sequence)
                if claim is not None:
                    won.append((sequence, claim.id))
                    await claim.success()

            for sequence in sequences:
                barrier.wait(timeout=60)  # blocks the loop on purpose: nothing else runs yet
                await asyncio.gather(*(one(sequence) for _ in range(tasks)))
        return won

    _report_async(url, results, body)


def race_schedule_async(
    url: str,
    table: str,
    works: list[tuple[str, str, int]],
    passes: list[datetime],
    lookahead_s: float,
    barrier: Any,
    results: Any,
) -> None:
    """``race_schedule`` with AsyncScheduler: a fresh one per pass, passes in lockstep."""
    config = SchedulerConfig(lookahead=timedelta(seconds=lookahead_s), interval="1s")
    blueprints = [Work(name, cron, max_run) for name, cron, max_run in works]

    async def body(engine: AsyncEngine) -> int:
        inserted = 0
        for now in passes:
            barrier.wait(timeout=60)
            scheduler = AsyncScheduler(engine, blueprints, config, table=table)
            inserted += await scheduler.run_pass(now)
            await scheduler.close()
        return inserted

    _report_async(url, results, body)


def race_upgrade(url: str, table: str, barrier: Any, results: Any) -> None:
    """Migrate the same table as other processes do at the same moment (pods starting)."""

    def body(engine: sa.Engine) -> bool:
        barrier.wait(timeout=60)
        upgrade(engine, table=table)
        return True

    _report(url, results, body)


def iso_week(tick: datetime) -> str:
    """A custom sequence for the retention tests: one label per ISO week."""
    return tick.strftime("%G-W%V")


def tagged(tick: datetime) -> str:
    """A custom sequence for the rolling-change tests: another label for every tick."""
    return f"v2 {tick.astimezone(timezone.utc):%Y-%m-%d %H:%M:%S}"


def race_days(
    url: str,
    table: str,
    role: str,
    works: list[dict[str, Any]],
    config: dict[str, Any],
    mornings: list[datetime],
    barrier: Any,
    results: Any,
) -> None:
    """Step through simulated days in lockstep with the other processes.

    Each morning every "scheduler" process runs one pass (a fresh Scheduler,
    like a restarted process) at that explicit instant, then every "worker"
    process claims what is due an hour and a half later. Returns the claims.
    """

    def body(engine: sa.Engine) -> list[tuple[str, str]]:
        claims: list[tuple[str, str]] = []
        sync = WorkSync(engine, table=table, keep_alive=False)
        for morning in mornings:
            barrier.wait(timeout=120)
            if role == "scheduler":
                scheduler = Scheduler(
                    engine, blueprints(works), SchedulerConfig(**config), table=table
                )
                scheduler.run_pass(morning)
                scheduler.close()
            barrier.wait(timeout=120)
            if role == "worker":
                later = morning + timedelta(hours=1, minutes=30)
                for work in works:
                    while (claim := sync.acquire_due(work["name"], now=later)) is not None:
                        claims.append((claim.name, claim.sequence))
                        claim.success()
        sync.close()
        return claims

    _report(url, results, body)
