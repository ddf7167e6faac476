"""An ``AsyncWorker`` behind the blocking ``Worker``'s face, for ``worksync work``.

``async def`` handlers must be awaited, so the command runs them on an
``AsyncWorker``. The rest of the command (its signals, its wait for the table,
its log lines) is blocking code written once for ``Worker``: rather than a
second copy of it, the async worker runs on an event loop in a thread of its
own, and this class forwards the few calls the command makes.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from ..async_sync import AsyncWorkSync
    from ..async_worker import AsyncWorker

T = TypeVar("T")


class LoopWorker:
    """Runs the ``AsyncWorker`` that ``make`` builds on a loop thread; closes its engine too."""

    def __init__(self, make: Callable[[], AsyncWorker], engine: AsyncEngine) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="worksync-async-worker", daemon=True
        )
        self._thread.start()
        self._engine = engine
        self._closed = False

        async def build() -> AsyncWorker:  # on the loop: its events belong there
            return make()

        try:
            self.worker = self._call(build())
        except BaseException:
            self._end_loop()
            raise

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    @property
    def handled(self) -> int:
        return self.worker.handled

    @property
    def names(self) -> list[str]:
        return self.worker.names

    @property
    def max_concurrency(self) -> int:
        return self.worker.max_concurrency

    @property
    def max_backoff(self) -> float:
        return self.worker.max_backoff

    @property
    def drain(self) -> float:
        return self.worker.drain

    @property
    def cut_off(self) -> int:
        return self.worker.cut_off

    @property
    def max_stuck(self) -> int:
        return self.worker.max_stuck

    @property
    def stuck(self) -> int:
        return self.worker.stuck

    @property
    def gave_up(self) -> bool:
        return self.worker.gave_up

    @property
    def running(self) -> bool:
        return self.worker.running

    @property
    def sync(self) -> AsyncWorkSync:
        return self.worker.sync

    def start(self) -> None:
        async def start() -> None:  # AsyncWorker.start makes a task of the running loop
            self.worker.start()

        self._call(start())

    def run_due(self) -> int:
        return self._call(self.worker.run_due())

    def close(self, timeout: float | None = None) -> None:
        """Stop the worker and wait for its claims (as ``Worker.close``), then end the loop."""
        if self._closed:
            return
        self._call(self.worker.close(timeout))  # a second signal interrupts it: may run again
        self._closed = True
        try:
            self._call(self._engine.dispose())
        finally:
            self._end_loop()

    def _end_loop(self) -> None:
        """Stop the loop and its thread; the loop is left unclosed, on purpose.

        The command ends right after this. A driver's thread still finishing
        a call for a claim that was cut off (aiosqlite's, one per connection)
        hands its result to the loop with ``call_soon_threadsafe``: on a
        closed loop that raises, and the thread prints the traceback as the
        process quits; on a stopped one the result is only never read.
        """
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
