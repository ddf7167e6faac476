"""The blocking runner: the services' calls, on held autocommit lanes, with bounded retries.

Only the services run their own statements, so only they may retry: a retried
repository call inside a host's transaction could repeat half of it. A
service call is a few guarded statements that each stand on their own (a
claim is one), so it runs in autocommit on a lane (see ``_run.lanes``) and a
retry repeats the whole call.
What is retried, and how a lost reply is resolved, is decided once for both
runners in ``_run.attempts`` and ``_run.retry``; this module only blocks where the
asyncio runner (``_run.async_runner``) awaits.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

from sqlalchemy.engine import Connection, Engine

from ..config import RetryPolicy
from .attempts import (
    BUSY,
    Commit,
    Give,
    Invalidate,
    Locked,
    Release,
    Run,
    Step,
    Take,
    WaitLock,
)
from .engines import checked_engine
from .lanes import Lanes
from .runner import RunnerBase
from .steps import Call, Sleep, drive
from .writelock import WriteLock

logger = logging.getLogger(__name__)

T = TypeVar("T")


class BlockingRunner(RunnerBase):
    """The blocking runner: does each step of a call's attempts (``_run.attempts``) by blocking."""

    def __init__(self, engine: Engine, table: str, policy: RetryPolicy) -> None:
        self.engine = checked_engine(engine)
        super().__init__(engine.url, engine.dialect.name, table, policy)
        self.lanes = Lanes(self.engine)

    def close(self) -> None:
        """Give the held connections back, and the writers' lock; a later call opens new ones.

        The lock too: a Ctrl-C that lands between taking it and the step that
        gives it back (inside the driver, not the call) leaves it taken, and a
        scheduler of the same process would wait for it in the kernel for good,
        holding up its own ``close()``.
        """
        self.lanes.close()
        self.lanes = Lanes(self.engine)
        if self.writer is not None:
            self.writer.release()

    def call(self, call: Call[T]) -> T:
        """Run one call to its end: on a lane, retried as ``Retry`` says."""
        lanes = self.lanes
        steps = self.attempts(call, lanes=lanes.own)
        return drive(steps, partial(self._do, lanes=lanes, writer=self.writer))

    @staticmethod
    def _do(step: Step, lanes: Lanes, writer: WriteLock | None) -> Any:
        """One step, by blocking."""
        if isinstance(step, Run):
            return step.fn(step.conn)
        if isinstance(step, Take):
            return lanes.take()
        if isinstance(step, Give):
            lanes.give(step.conn)
        elif isinstance(step, Commit):
            step.conn.commit()
        elif isinstance(step, (Release, Invalidate)):  # a cut-off lane is dropped, never reused
            (lanes.discard if isinstance(step, Invalidate) else lanes.release_failed)(step.conn)
        elif isinstance(step, Sleep):
            time.sleep(step.seconds)
        elif writer is None:
            raise AssertionError(f"{step!r} without a writers' lock")
        elif isinstance(step, Locked):
            if not writer.try_acquire():
                return BUSY
            try:
                return step.fn(step.conn)
            finally:
                writer.release()
        elif isinstance(step, WaitLock):
            writer.__enter__()
        else:
            writer.release()
        return None

    def run(self, what: str, work: Callable[[Connection], T]) -> T:
        """Run ``work`` as a call of its own (a read, say, that needs no resolve or peek)."""
        return self.call(Call(what, work))
