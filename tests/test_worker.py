"""The Worker loop: claims due ticks of its works, runs the handler, records the outcome."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest

from worksync_sa import Claim, Scheduler, SchedulerConfig, Work, Worker, WorkStatus

from .conftest import Db


def schedule_due(db: Db, *works: Work) -> None:
    """Rows for ticks that came in the last few seconds (and the next minute)."""
    config = SchedulerConfig(lookahead="1m", interval="10s")
    Scheduler(db.engine, list(works), config, table=db.table).tick(
        db.db_now() - timedelta(seconds=3)
    )


def test_run_once_claims_every_due_tick_and_records_each_outcome(db: Db) -> None:
    schedule_due(db, Work("good", "* * * * * *", max_run=2), Work("bad", "* * * * * *"))
    seen: list[tuple[str, str]] = []

    def handler(claim: Claim) -> None:
        seen.append((claim.name, claim.sequence))
        if claim.name == "bad":
            raise RuntimeError("it broke")

    worker = Worker(db.engine, ["good", "bad"], handler, table=db.table)
    ran = worker.run_once()
    worker.close()
    assert ran == len(seen) > 0
    good = db.rows(name="good", status=WorkStatus.SUCCESS)
    bad = db.rows(name="bad", status=WorkStatus.FAILED)
    assert len(good) + len(bad) == ran
    assert all(row.error == "RuntimeError: it broke" for row in bad)
    per_tick = {(r.name, r.sequence) for r in good}
    assert all(sum(1 for s in seen if s == tick) <= 2 for tick in per_tick)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_running_tells_whether_the_loop_is_alive(db: Db) -> None:
    schedule_due(db, Work("w", "* * * * * *"))
    started = threading.Event()

    def handler(claim: Claim) -> None:
        started.set()
        raise SystemExit  # not an Exception: it ends the loop's thread

    worker = Worker(db.engine, ["w"], handler, table=db.table, poll="100ms")
    assert not worker.running
    worker.start()
    assert started.wait(10)
    deadline = time.monotonic() + 10
    while worker.running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not worker.running  # a host can notice its worker died, and restart or exit
    worker.close()
