"""The scheduler side: create each tick's rows before the tick comes, and repair.

A pass looks at ``(now, now + lookahead]`` and, for every tick of every work
in it, inserts ``max_run`` QUEUED rows (slots ``0 .. max_run-1``). The unique
key on (name, sequence, slot) makes a pass idempotent, so any number of
schedulers can run at once and a restart is harmless: the database refuses
what already exists, and no scheduler is a leader.

Each pass then runs recovery (rows whose lease ran out, ticks nobody claimed
within grace) and, if ``retention`` is set, prunes old finished rows every few
minutes. After downtime it catches up: ticks missed by at most ``catchup`` are
still created; older ones are skipped, counted and logged once.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine

from ._core.outage import ended
from ._core.passes import LoopStep, PassReport, SchedulerCore, WatchStep
from ._run.background import BackgroundThread
from ._run.blocking import BlockingRunner
from ._run.steps import Idle, drive
from .config import RetryPolicy, SchedulerConfig
from .engine import shown_url
from .events import Listener
from .models import DEFAULT_TABLE
from .work import Work

logger = logging.getLogger(__name__)

__all__ = ["PassReport", "Scheduler"]


class Scheduler(SchedulerCore):
    """Creates rows ahead of every tick of its works, and takes back abandoned ones.

    Call :meth:`run_pass` yourself (one pass, returns rows inserted), or
    :meth:`start` a background thread that passes every ``config.interval``
    until :meth:`stop`. The thread survives database outages: it logs once,
    backs off, and resumes by itself.
    """

    def __init__(
        self,
        engine: Engine,
        works: Iterable[Work],
        config: SchedulerConfig | None = None,
        *,
        table: str = DEFAULT_TABLE,
        retry: RetryPolicy | None = None,
        listeners: Iterable[Listener] | None = None,
    ) -> None:
        super().__init__(works, config, table, retry, listeners)
        self._runner = BlockingRunner(engine, self.table_name, self.policy)
        self._lock = threading.Lock()
        self._background = BackgroundThread("scheduler")
        self._stopping = self._background.stopping
        self._engine = engine
        self._watcher = BackgroundThread("lock-watch")
        self._watch_runner: BlockingRunner | None = None
        """Beside the original on MySQL/MariaDB: the watch loop's own connection."""

    def __repr__(self) -> str:
        url = shown_url(self._runner.engine.url)
        return f"Scheduler({url!r}, works={len(self.works)}, table={self._runner.table!r})"

    def run_pass(self, now: datetime | None = None) -> int:
        """Run one pass; returns how many rows it inserted.

        Creates the rows of every tick in ``(now, now + lookahead]`` (and,
        after downtime, of ticks missed by at most ``catchup``), then recovers
        abandoned rows, then prunes if ``retention`` is set and the last prune
        is a few minutes old. ``now`` defaults to the database clock; a naive
        value is taken as UTC. Rows go in batches of ``BATCH_ROWS``
        (``SQLITE_BATCH_ROWS`` on SQLite), each in a short transaction.
        :attr:`last_pass` tells what else the pass did.
        """
        return self._run_pass(now, recover=True)

    def _run_pass(self, now: datetime | None, *, recover: bool) -> int:
        with self._lock:
            tx = self._runner
            steps = self._pass(now, tx.sqlite, mysql=tx.mysql, recover=recover)
            return drive(self.pass_after(tx.lost_connections, steps), tx.call)

    def tick(self, now: datetime | None = None) -> int:
        """Deprecated name of :meth:`run_pass`, kept until 1.0.

        "Tick" means a cron instant everywhere else in the package; a pass covers many.
        """
        warnings.warn(
            "Scheduler.tick() is now Scheduler.run_pass(); tick() goes away in 1.0",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.run_pass(now)

    # -- in the background -------------------------------------------------------------

    def start(self) -> None:
        """Run passes every ``config.interval`` in a background thread; returns at once.

        Beside the Go original (``leave_to_original``) on MySQL/MariaDB, a
        second thread, on a connection of its own, ends the transactions the
        original leaves open a second after it did (``_core.passes.WATCH_EVERY``).
        """
        self._background.start(self._run)
        if self.watches(self._runner.mysql) and not self._watcher.running:
            if self._watch_runner is None:
                self._watch_runner = BlockingRunner(self._engine, self.table_name, self.policy)
            self._watcher.start(self._watch_loop)

    def stop(self, timeout: float | None = None) -> None:
        """Stop the background thread after its current pass; a no-op if not running.

        ``timeout`` bounds the wait for the thread. A thread cannot be
        cancelled: past it this returns, the pass ends on its own and
        ``running`` stays True until then. (:meth:`AsyncScheduler.stop` cancels
        its pass instead.)
        """
        self._watcher.stop(timeout)
        self._background.stop(timeout)

    def close(self) -> None:
        """Stop, and give back the connections the scheduler holds (its passes', its watch's)."""
        self.stop()
        self._runner.close()
        if self._watch_runner is not None:
            self._watch_runner.close()
            self._watch_runner = None

    @property
    def running(self) -> bool:
        """True while the background thread is alive."""
        return self._background.running

    def __enter__(self) -> Scheduler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:
            ended(logger, "scheduler loop", exc)
            raise

    def _loop(self) -> None:
        drive(self._loop_steps(), self._do)

    def _do(self, step: LoopStep) -> Any:
        """One step of the background loop (``SchedulerCore._loop_steps``), by blocking."""
        if isinstance(step, Idle):
            return self._stopping.wait(step.seconds)
        return self._run_pass(None, recover=step.recover)

    def _watch_loop(self) -> None:
        try:
            drive(self._watch_steps(), self._look)
        except BaseException as exc:
            ended(logger, "lock watch", exc)
            raise

    def _look(self, step: WatchStep) -> Any:
        """One step of the watch loop (``SchedulerCore._watch_steps``), by blocking."""
        if isinstance(step, Idle):
            return self._watcher.stopping.wait(step.seconds)
        runner = self._watch_runner
        assert runner is not None  # made before the thread starts
        return drive(self.look_steps(), runner.call)
