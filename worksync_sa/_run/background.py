"""A service's background loop, one helper per side: a daemon thread, or a task.

``Scheduler`` and ``Worker`` each run one loop in the background, and so do their
asyncio twins: started once, asked to stop by an event, waited for with an
optional bound. Written once per side, the four services cannot drift in how
they start, refuse a second start, or report ``running``.

What the two sides cannot share is what a bound does when it runs out. A
thread cannot be cancelled: :meth:`BackgroundThread.stop` returns and the
loop ends on its own, ``running`` staying True until then. A task can:
:meth:`BackgroundTask.stop` cancels it (a pass repeats safely; a claim the
loop runs itself is recorded FAILED).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any


class BackgroundThread:
    """One loop on a daemon thread named ``worksync-<what>``."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.stopping = threading.Event()
        """Set by :meth:`stop`: the loop's waits end on it and it ends at the next step."""
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        """True while the thread is alive (False once it has died or stopped)."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def start(self, loop: Callable[[], object]) -> None:
        """Run ``loop`` on a new thread; an error if one is still running."""
        if self.running:
            raise RuntimeError(f"{self.what} is already running")
        self.stopping.clear()
        self._thread = threading.Thread(target=loop, name=f"worksync-{self.what}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Ask the loop to stop, and wait for its thread (at most ``timeout`` seconds)."""
        self.stopping.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if not thread.is_alive():
                self._thread = None


class BackgroundTask:
    """One loop as a task of the running event loop, named ``worksync-<what>``."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.stopping = asyncio.Event()
        """Set by :meth:`stop`: the loop's waits end on it and it ends at the next step."""
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        """True while the task has not finished."""
        task = self._task
        return task is not None and not task.done()

    def start(self, loop: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``loop()`` as a task of the running loop; an error if one is still running."""
        if self.running:
            raise RuntimeError(f"{self.what} is already running")
        self.stopping.clear()
        self._task = asyncio.get_running_loop().create_task(loop(), name=f"worksync-{self.what}")

    async def stop(
        self,
        timeout: float | None = None,
        reason: str | None = None,
        *,
        before_cancel: Callable[[], Awaitable[object]] | None = None,
        settle: float | None = None,
    ) -> bool:
        """Ask the loop to stop and wait for it; past ``timeout`` seconds, cancel it.

        ``reason``: the cancellation's message, which a claim the loop runs records.
        ``before_cancel`` runs first when it comes to that (to record what the
        loop was running). ``settle`` bounds the wait for the cancelled task:
        code that swallows its cancellation must not hold the caller for good
        (the task is then left to end on its own). Returns whether it had to cancel.
        """
        self.stopping.set()
        task = self._task
        if task is None:
            return False
        _, pending = await asyncio.wait({task}, timeout=timeout)
        if pending:
            if before_cancel is not None:
                await before_cancel()
            task.cancel(reason)
            # not `await task`: our own cancellation must propagate
            await asyncio.wait({task}, timeout=settle)
        self._task = None
        return bool(pending)
