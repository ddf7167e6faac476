"""On a busy SQLite file both twins follow one rule for the writers' lock.

Take it if free; if not, give up at once when nothing is left to claim (the
peek); otherwise queue for it until it is released, however long, and never
write around it. Before, the asyncio twin gave up after ``busy_timeout`` and
wrote without the lock while the blocking one waited.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from worksync_sa import NewRow, RetryPolicy, ScheduleRepository, WorkSync, upgrade
from worksync_sa.models import table_named

from .twins import AsyncTwin

AT = datetime(2030, 1, 1, tzinfo=timezone.utc)
IMPATIENT = RetryPolicy(busy_timeout=0.1)


@pytest.fixture(params=["blocking", "asyncio"])
def make_sync(request: pytest.FixtureRequest) -> Iterator[Callable[..., Any]]:
    if request.param == "blocking":
        yield WorkSync
        return
    twin = AsyncTwin()
    yield twin.WorkSync
    twin.close()


@pytest.fixture
def sqlite_file(tmp_path: Path) -> Iterator[tuple[sa.Engine, Path]]:
    path = tmp_path / "busy.db"
    engine = sa.create_engine(f"sqlite:///{path}")
    upgrade(engine)
    rows = [NewRow("w", "s1", 0, AT)]
    with engine.begin() as conn:
        ScheduleRepository(table_named("works")).insert_queued(conn, rows)
    yield engine, path
    engine.dispose()


def hold_writers_lock(path: Path, seconds: float) -> threading.Thread:
    """Another writer holds the lock (its own open file, as another process would)."""
    fd = os.open(f"{path}-worksync.lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)

    def release() -> None:
        time.sleep(seconds)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    holder = threading.Thread(target=release)
    holder.start()
    return holder


def test_a_claim_queues_for_the_lock_past_busy_timeout(
    sqlite_file: tuple[sa.Engine, Path], make_sync: Callable[..., Any]
) -> None:
    engine, path = sqlite_file
    sync = make_sync(engine, retry=IMPATIENT)
    holder = hold_writers_lock(path, 1.0)
    started = time.monotonic()
    claim = sync.acquire("w", "s1")
    took = time.monotonic() - started
    holder.join()
    assert claim is not None
    assert took >= 0.9  # it waited for the holder, well past busy_timeout (0.1 s)
    sync.close()


def test_a_claim_with_nothing_left_gives_up_without_queueing(
    sqlite_file: tuple[sa.Engine, Path], make_sync: Callable[..., Any]
) -> None:
    engine, path = sqlite_file
    sync = make_sync(engine, retry=IMPATIENT)
    assert sync.acquire("w", "s1") is not None  # the only slot
    holder = hold_writers_lock(path, 1.0)
    started = time.monotonic()
    assert sync.acquire("w", "s1") is None
    took = time.monotonic() - started
    holder.join()
    assert took < 0.5  # the peek saw the tick taken: no wait for the lock
    sync.close()


def test_a_call_that_fails_after_queueing_fails_once(sqlite_file: tuple[sa.Engine, Path]) -> None:
    """The error of a queued call reaches the caller as it is, and its lane is given back once."""
    from worksync_sa import SchemaNotReadyError

    engine, path = sqlite_file
    sync = WorkSync(engine, table="missing", retry=IMPATIENT)
    holder = hold_writers_lock(path, 0.3)
    with pytest.raises(SchemaNotReadyError):
        sync.acquire("w", "s1")
    holder.join()
    assert sync._runner.lanes.idle == 1
    sync.close()
