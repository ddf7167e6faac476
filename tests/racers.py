"""Process bodies for the concurrency tests.

They run in freshly spawned interpreters (no state shared with pytest), each
with its own engine, and report what they did through a queue: ("ok", value)
or ("error", repr).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from worksync_sa import Scheduler, SchedulerConfig, Work, WorkSync


def _report(url: str, results: Any, body: Callable[[sa.Engine], object]) -> None:
    engine = sa.create_engine(url, pool_size=1, max_overflow=0)
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
            inserted += Scheduler(engine, blueprints, config, table=table).tick(now)
        return inserted

    _report(url, results, body)
