"""The scheduler on asyncio: ``AsyncScheduler`` on an ``AsyncEngine``.

The twin of :class:`~worksync_sa.Scheduler`: the same pass (``_core.passes``),
the same statements and batches, the same recovery and catch-up; its
background loop is a task instead of a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import warnings
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ._core.outage import ended
from ._core.passes import LoopStep, SchedulerCore, WatchStep
from ._run.async_runner import AsyncRunner
from ._run.background import BackgroundTask
from ._run.steps import Idle, drive_async
from .config import RetryPolicy, SchedulerConfig
from .engine import shown_url
from .events import Listener
from .models import DEFAULT_TABLE
from .work import Work

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

logger = logging.getLogger(__name__)


class AsyncScheduler(SchedulerCore):
    """Creates rows ahead of every tick of its works, and takes back abandoned ones.

    ``await run_pass()`` runs one pass; :meth:`start` runs passes every
    ``config.interval`` in a task of the running loop until ``await stop()``.
    ``async with AsyncScheduler(...):`` does both, and closes its connections.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        works: Iterable[Work],
        config: SchedulerConfig | None = None,
        *,
        table: str = DEFAULT_TABLE,
        retry: RetryPolicy | None = None,
        listeners: Iterable[Listener] | None = None,
    ) -> None:
        super().__init__(works, config, table, retry, listeners)
        self._runner = AsyncRunner(engine, self.table_name, self.policy)
        self._lock = asyncio.Lock()
        self._background = BackgroundTask("scheduler")
        self._stopping = self._background.stopping
        self._engine = engine
        self._watcher = BackgroundTask("lock-watch")
        self._watch_runner: AsyncRunner | None = None
        """Beside the original on MySQL/MariaDB: the watch loop's own connection."""

    def __repr__(self) -> str:
        url = shown_url(self._runner.engine.url)
        return f"AsyncScheduler({url!r}, works={len(self.works)}, table={self._runner.table!r})"

    async def run_pass(self, now: datetime | None = None) -> int:
        """Run one pass; returns how many rows it inserted. See :meth:`Scheduler.run_pass`."""
        return await self._run_pass(now, recover=True)

    async def _run_pass(self, now: datetime | None, *, recover: bool) -> int:
        async with self._lock:
            tx = self._runner
            steps = self._pass(now, tx.sqlite, mysql=tx.mysql, recover=recover)
            return await drive_async(self.pass_after(tx.lost_connections, steps), tx.call)

    async def tick(self, now: datetime | None = None) -> int:
        """Deprecated name of :meth:`run_pass`, kept until 1.0 (see ``Scheduler.tick``)."""
        warnings.warn(
            "AsyncScheduler.tick() is now AsyncScheduler.run_pass(); tick() goes away in 1.0",
            DeprecationWarning,
            stacklevel=2,
        )
        return await self.run_pass(now)

    def start(self) -> None:
        """Run passes every ``config.interval`` in a task of the running loop.

        Beside the Go original on MySQL/MariaDB, a second task ends what it
        leaves open (see :meth:`Scheduler.start`).
        """
        self._background.start(self._run)
        if self.watches(self._runner.mysql) and not self._watcher.running:
            if self._watch_runner is None:
                self._watch_runner = AsyncRunner(self._engine, self.table_name, self.policy)
            self._watcher.start(self._watch_loop)

    async def stop(self, timeout: float | None = None) -> None:
        """Stop the background task after its current pass; a no-op if not running.

        Past ``timeout`` seconds the pass is cancelled instead (safe: a pass
        can be repeated, and an interrupted batch rolls back as a whole).
        (:meth:`Scheduler.stop` cannot cancel a thread: it returns, and the
        pass ends on its own.)
        """
        await self._watcher.stop(timeout)
        await self._background.stop(timeout)

    async def close(self) -> None:
        """Stop, and close the connections the scheduler holds (its passes', its watch's)."""
        await self.stop()
        await self._runner.close()
        if self._watch_runner is not None:
            await self._watch_runner.close()
            self._watch_runner = None

    @property
    def running(self) -> bool:
        """True while the background task is alive."""
        return self._background.running

    async def __aenter__(self) -> AsyncScheduler:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _run(self) -> None:
        try:
            await self._loop()
        except BaseException as exc:
            if not isinstance(exc, asyncio.CancelledError):  # a cancel is how stop() ends it
                ended(logger, "scheduler loop", exc)
            raise

    async def _loop(self) -> None:
        await drive_async(self._loop_steps(), self._do)

    async def _do(self, step: LoopStep) -> Any:
        """One step of the background loop (``SchedulerCore._loop_steps``), by awaiting."""
        if isinstance(step, Idle):
            await self._pause(step.seconds)
            return self._stopping.is_set()
        return await self._run_pass(None, recover=step.recover)

    async def _watch_loop(self) -> None:
        try:
            await drive_async(self._watch_steps(), self._look)
        except BaseException as exc:
            if not isinstance(exc, asyncio.CancelledError):
                ended(logger, "lock watch", exc)
            raise

    async def _look(self, step: WatchStep) -> Any:
        """One step of the watch loop (``SchedulerCore._watch_steps``), by awaiting."""
        if isinstance(step, Idle):
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._watcher.stopping.wait(), step.seconds)
            return self._watcher.stopping.is_set()
        runner = self._watch_runner
        assert runner is not None  # made before the task starts
        return await drive_async(self.look_steps(), runner.call)

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if :meth:`stop` is called meanwhile."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
