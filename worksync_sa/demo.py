"""``worksync demo``: a scheduler and racing worker processes, live, then the proof.

It runs the package the way a fleet would: one scheduler creating rows ahead
of each tick, and several worker processes that all fire on the same crons
and race to claim each tick (the original's worker pattern). At the end it
prints every tick with how many claims it got, which never exceeds max_run.
"""

from __future__ import annotations

import multiprocessing
import random
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa

from .config import SchedulerConfig
from .engine import create_engine, shown_url
from .models import DEFAULT_TABLE, table_named, validate_table_name
from .repository import QueryRepository
from .rows import TickCount
from .scheduler import Scheduler
from .schema import upgrade
from .sequences import default_sequence
from .sync import WorkSync
from .work import Work

DEFAULT_URL = "sqlite:///worksync-demo.db"
WORKS = (
    Work("demo.report", "*/2 * * * * *", max_run=1),  # every 2 s, once per tick
    Work("demo.sync", "*/3 * * * * *", max_run=2),  # every 3 s, twice per tick
    Work("demo.cleanup", "@every 5s", max_run=1),  # epoch-aligned, once per tick
)
CONFIG = SchedulerConfig(lookahead=timedelta(seconds=10), interval="@every 2s")


def worker(
    number: int, url: str, table: str, failure_rate: float, ready: Any, go: Any, until: Any
) -> None:
    """Fire on every work's cron like a fleet member and race for each tick."""
    engine = create_engine(url)
    sync = WorkSync(engine, table=table, worker_id=f"demo-worker-{number}")
    rng = random.Random(number)
    try:
        ready.put(number)
        go.wait()
        while time.time() < until.value:
            now = datetime.now(timezone.utc)
            tick = min(work.next_tick(now) for work in WORKS)
            pause = (tick - datetime.now(timezone.utc)).total_seconds()
            if tick.timestamp() > until.value:
                break
            time.sleep(max(0.0, pause))
            for work in WORKS:
                if tick not in work.ticks(tick - timedelta(seconds=1), tick):
                    continue
                claim = sync.acquire(work.name, default_sequence(tick))
                if claim is None:
                    continue
                with claim:
                    print(
                        f"  worker {number} claimed {work.name:<13} @ {claim.sequence} "
                        f"(row {claim.id})",
                        flush=True,
                    )
                    time.sleep(rng.uniform(0.05, 0.3))
                    if rng.random() < failure_rate:
                        claim.fail("simulated failure")
    finally:
        engine.dispose()


@dataclass
class Outcome:
    """The run's verdict."""

    ticks: int
    claims: int
    over: int


def report(engine: sa.Engine, table: str, start: datetime, end: datetime) -> Outcome:
    """Print one line per tick of this run and check the promise."""
    budget = {work.name: work.max_run for work in WORKS}
    with engine.connect() as conn:
        counts = [
            c
            for c in QueryRepository(table_named(table)).tick_counts(conn)
            if c.name in budget and c.tick_at is not None and start < c.tick_at <= end
        ]
    counts.sort(key=lambda c: (c.tick_at or start, c.name))
    header = ("work", "tick (UTC)", "max_run", "claimed", "succeeded", "failed", "")
    lines = [header] + [_line(c, budget[c.name]) for c in counts]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    print()
    for line in lines:
        print(
            "  "
            + "  ".join(
                cell.ljust(width) for cell, width in zip(line, widths, strict=True)
            ).rstrip()
        )
    over = sum(1 for c in counts if c.claimed > budget[c.name])
    return Outcome(len(counts), sum(c.claimed for c in counts), over)


def _line(count: TickCount, max_run: int) -> tuple[str, ...]:
    verdict = "OVER max_run!" if count.claimed > max_run else ""
    return (
        count.name,
        count.sequence,
        str(max_run),
        str(count.claimed),
        str(count.succeeded),
        str(count.failed),
        verdict,
    )


def run_demo(
    url: str | None = None,
    *,
    seconds: float = 20.0,
    workers: int = 4,
    table: str = DEFAULT_TABLE,
    failure_rate: float = 0.1,
) -> int:
    """Run the demo; returns the process exit code (0 when no tick exceeded max_run)."""
    url = url or DEFAULT_URL
    table = validate_table_name(table)
    engine = create_engine(url)
    shown = shown_url(engine.url)
    print(f"worksync demo on {shown} (table {table!r}), {workers} workers, {seconds:g} s")
    upgrade(engine, table=table)
    print("  schema at head (alembic upgrade head)")
    for work in WORKS:
        print(f"  work {work.name:<13} cron {work.cron!r:<18} max_run {work.max_run}")
    scheduler = Scheduler(engine, WORKS, CONFIG, table=table)
    scheduler.run_pass()  # rows for the first ticks exist before any worker fires
    scheduler.start()
    ctx = multiprocessing.get_context("spawn")
    ready, go, until = ctx.Queue(), ctx.Event(), ctx.Value("d", 0.0)
    procs = [
        ctx.Process(
            target=worker, args=(n, url, table, failure_rate, ready, go, until), daemon=True
        )
        for n in range(1, workers + 1)
    ]
    for proc in procs:
        proc.start()
    try:
        for _ in procs:
            ready.get(timeout=120)  # every worker is up: from here on, every tick is raced
        start = datetime.now(timezone.utc)
        until.value = start.timestamp() + seconds
        go.set()
        for proc in procs:
            proc.join(timeout=seconds + 60)
    finally:
        scheduler.stop()
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
    end = min(datetime.now(timezone.utc), datetime.fromtimestamp(until.value, timezone.utc))
    outcome = report(engine, table, start, end - timedelta(seconds=1))
    engine.dispose()
    print()
    if outcome.over:
        print(f"FAILED: {outcome.over} of {outcome.ticks} ticks got more claims than max_run")
        return 1
    print(
        f"OK: {outcome.ticks} ticks, {outcome.claims} claims by {workers} racing workers; "
        "no tick ever got more claims than its max_run"
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_demo())
