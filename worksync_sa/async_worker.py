"""The asyncio twin of :class:`~worksync_sa.Worker`: ``async def`` handlers on one event loop.

It makes the same decisions as the blocking worker (``_core.worker.WorkerCore``:
which works, turns, when to claim, waits, outages, what to log) and differs
only in how it waits and where claims run: as tasks of the running loop, at
most ``max_concurrency`` at once, each claimed only once a slot for it is
free. Handlers must be ``async def``: a blocking function would stall every
other task of the loop, heartbeats included (use :class:`Worker` for those).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from ._core.outage import ended, is_stop
from ._core.wakeups import check_wake_database
from ._core.worker import (
    DEFAULT_DRAIN,
    DEFAULT_MAX_BACKOFF,
    AcquireBatch,
    AwaitOne,
    FreeRunner,
    Launch,
    Round,
    RunHere,
    TakeRunner,
    WorkerCore,
    WorkerSettings,
    is_async_handler,
    report,
    shut_down,
    shut_down_steps,
    timed_out,
    utcnow,
)
from ._run.background import BackgroundTask
from ._run.listen import AsyncListening, async_listen_engine_for
from ._run.steps import Idle, drive_async
from .async_sync import AsyncClaim, AsyncWorkSync
from .config import RetryPolicy
from .errors import ClaimLostError, InvalidArgumentError
from .events import Listener
from .models import DEFAULT_TABLE
from .work import Work

if TYPE_CHECKING:  # at run time only once used: it needs greenlet, an optional extra
    from sqlalchemy.ext.asyncio import AsyncEngine

logger = logging.getLogger(__name__)

CANCEL_SETTLE_SECONDS = 1.0
"""How long a stopping worker waits for cancelled tasks to end: a handler that swallows
its cancellation is then left to end on its own."""

AsyncHandler = Callable[[AsyncClaim], Awaitable[object]]


class AsyncWorker(WorkerSettings):
    """Runs an ``async def`` handler for every due tick of ``works`` this process can claim.

    The arguments are :class:`Worker`'s, on an ``AsyncEngine``. ``async with
    AsyncWorker(...)`` starts it in a task of the running loop and, on exit,
    stops it and waits for the claims in progress (at most ``drain``).

    A handler with a time limit (``timeout``, or its work's) runs in a task
    of its own, cancelled when the limit is up: the claim is recorded FAILED
    ("timed out") and its slot takes new claims at once. A handler that
    ignores its cancellation runs on, counted in ``stuck``; as on
    :class:`Worker`, once more than ``max_stuck`` run on the loop stops.

    ``wake="notify"`` and ``listen_url`` are :class:`Worker`'s; the listener
    is a task of the same loop, on a psycopg ``AsyncConnection`` of its own.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        works: Iterable[Work | str],
        handler: AsyncHandler | Mapping[str, AsyncHandler],
        *,
        max_concurrency: int = 1,
        table: str = DEFAULT_TABLE,
        poll: timedelta | str | None = None,
        worker_id: str | None = None,
        retry: RetryPolicy | None = None,
        max_backoff: timedelta | str = DEFAULT_MAX_BACKOFF,
        clock: Callable[[], datetime] = utcnow,
        listeners: Iterable[Listener] | None = None,
        drain: timedelta | str = DEFAULT_DRAIN,
        timeout: timedelta | str | None = None,
        max_stuck: int | None = None,
        wake: str | None = None,
        listen_url: str | None = None,
    ) -> None:
        self._core = WorkerCore(
            works,
            handler,
            max_concurrency=max_concurrency,
            poll=poll,
            max_backoff=max_backoff,
            clock=clock,
            drain=drain,
            timeout=timeout,
            max_stuck=max_stuck,
            wake=wake,
        )
        dialect = getattr(engine, "dialect", None)
        if dialect is not None:  # else AsyncWorkSync refuses it, naming what it got
            check_wake_database(self._core.wake, dialect.name, dialect.driver, listen_url)
        self._engine = engine
        self.listen_url = listen_url
        """Where the wake-up listener connects, when not through ``engine`` (see ``wake``)."""
        blocking = sorted(n for n, h in self._core.handlers.items() if not is_async_handler(h))
        if blocking:
            raise InvalidArgumentError(
                f"handler for {', '.join(map(repr, blocking))} is not an async function: "
                "AsyncWorker awaits its handlers (use Worker for blocking functions)"
            )
        self.handler = handler
        self.sync = AsyncWorkSync(
            engine, table=table, worker_id=worker_id, retry=retry, listeners=listeners
        )
        self.handled = 0
        """Claims this worker has run (finished or not)."""
        self.cut_off = 0
        """Claims :meth:`close` cancelled as still running when the drain ran out."""
        self._here: AsyncClaim | None = None
        """The claim the loop's own task runs (``max_concurrency`` 1)."""
        self._left: dict[asyncio.Future[object], AsyncClaim] = {}
        """Handlers' tasks cancelled at their timeout that have not ended yet."""
        self.gave_up = False
        """Whether the worker stopped itself: more handlers stuck than ``max_stuck``."""
        self._free = 0
        """Runners left for claims: ``max_concurrency`` minus the claims running."""
        self._claims: dict[asyncio.Task[None], AsyncClaim] = {}
        """The claims running in tasks of their own, by task."""
        self._background = BackgroundTask("worker")
        self._stopping = self._background.stopping
        self._wake = asyncio.Event()
        self._nudge = asyncio.Event()
        """Set by stop() and by a wake-up: ends even a wait for the next tick."""
        self._listener: asyncio.Task[None] | None = None
        self._until: float | None = None

    def __repr__(self) -> str:
        return f"AsyncWorker({self.sync!r}, works={self.names!r})"

    async def run_once(self) -> int:
        """Claim and start everything due right now; returns how many claims it started.

        With ``max_concurrency`` 1 each claim runs here, one after the other.
        Above 1, each claim runs in a task of its own, and a claim is only
        made while fewer than ``max_concurrency`` are running.
        """
        self._free = self.max_concurrency - len(self._claims)
        return await drive_async(self._core.round_steps(self._stopping.is_set), self._do)

    async def run_due(self) -> int:
        """Claim and run everything due now, then return once every claim it started has ended.

        Unlike :meth:`run_once`, it waits for a free runner whenever all are
        busy, so nothing due is left behind. Returns how many claims it ran.
        """
        return await drive_async(self._core.due_steps(), self._do)

    async def _do(self, step: Any) -> Any:
        """One step of a round or of the loop (``WorkerCore``), with tasks."""
        return await self._steps[type(step)](step)

    @functools.cached_property
    def _steps(self) -> dict[type, Callable[[Any], Awaitable[Any]]]:
        return {
            AcquireBatch: lambda step: self.sync._acquire_batch(step.plan, step.places, step.limit),
            RunHere: lambda step: self._run_here(step.claim),
            TakeRunner: lambda _: self._take_runner(),
            FreeRunner: lambda _: self._free_runner(),
            Launch: lambda step: self._launch(step.claim, step.charge),
            Round: lambda _: self.run_once(),
            AwaitOne: lambda _: self._await_one(),
            Idle: lambda step: self._wait(step.seconds, wake=step.wake),
        }

    async def _run_here(self, claim: AsyncClaim) -> None:
        self._here = claim
        try:
            await self._handle(claim)
        finally:
            self._here = None
        self.handled += 1

    async def _await_one(self) -> bool:
        running = set(self._claims)
        if running:
            await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
        return bool(running)

    async def _take_runner(self) -> bool:
        if self._free <= 0:
            return False
        self._free -= 1
        return True

    async def _free_runner(self) -> None:
        self._free += 1

    async def _launch(self, claim: AsyncClaim, charge: float) -> None:
        task = asyncio.get_running_loop().create_task(
            self._run_claim(claim, charge), name=f"worksync-claim-{claim.id}"
        )
        self._claims[task] = claim
        task.add_done_callback(self._claim_ended)

    async def _wait(self, seconds: float, *, wake: bool) -> bool:
        """Sleep ``seconds`` (less on a stop, or, when ``wake``, a claim ending); True: stop.

        As in :class:`Worker`: only a ``wake`` wait consumes the wake signal;
        one set during a backoff is kept, so the next look is at once. Any
        other wait ends on the nudge, which a stop and a wake-up set.
        """
        seconds = self._core.wait_length(seconds, self._until)
        if seconds > 0:
            event = self._wake if wake else self._nudge
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(event.wait(), seconds)
            event.clear()
        return self._stopping.is_set() or self._core.past(self._until)

    async def _run_claim(self, claim: AsyncClaim, charge: float) -> None:
        began = time.monotonic()
        try:
            await self._handle(claim)
        finally:
            self.handled += 1
            self._core.shares.ended(claim.name, charge, time.monotonic() - began)

    def _claim_ended(self, task: asyncio.Task[None]) -> None:
        self._claims.pop(task, None)
        self._wake.set()
        if not task.cancelled() and task.exception() is not None:
            logger.error("claim task ended by %r", task.exception(), extra={"action": "failed"})

    async def _handle(self, claim: AsyncClaim) -> None:
        try:
            async with claim:
                await self._call(claim)
        except BaseException as exc:
            if is_stop(exc):
                raise
            report(claim, exc)

    async def _call(self, claim: AsyncClaim) -> None:
        """The handler; with a time limit, in a task of its own that is cancelled past it."""
        handler = self._core.handlers[claim.name]
        seconds = self._core.timeouts[claim.name]
        if seconds is None:
            await handler(claim)
            return
        task = asyncio.ensure_future(handler(claim))
        try:
            done, _ = await asyncio.wait({task}, timeout=seconds)
        except BaseException as exc:  # this claim cancelled (a stop): its handler with it
            task.cancel(
                exc.args[0] if isinstance(exc, asyncio.CancelledError) and exc.args else None
            )
            raise
        if done:
            task.result()  # the handler's own outcome, its traceback included
            return
        where = io.StringIO()
        task.print_stack(file=where)
        error = timed_out(seconds, where.getvalue())
        try:
            await claim.fail(error)  # first: whatever the handler finishes from now is fenced off
        except ClaimLostError:
            if not claim.finished:
                raise
            return  # the handler finished it itself, just in time; its outcome stands
        finally:
            task.cancel(str(error))
            self._leave(task, claim)
        raise error

    def _leave(self, task: asyncio.Future[object], claim: AsyncClaim) -> None:
        """Keep a cancelled handler's task until it ends; stop once too many ignore it.

        Those cancelled at an earlier timeout and still running are the stuck
        ones: a handler that lets its cancellation through ends at once.
        """
        stuck = self.stuck
        self._left[task] = claim
        task.add_done_callback(self._ended_late)
        if stuck > self.max_stuck and not self.gave_up:
            self.gave_up = True
            logger.critical(
                "%d handlers' tasks still run after being cancelled at their timeouts, more "
                "than max_stuck %d: this worker stops claiming",
                stuck,
                self.max_stuck,
                extra={"action": "stuck", "count": stuck},
            )
            self._stopping.set()
            self._wake.set()
            self._nudge.set()

    def _ended_late(self, task: asyncio.Future[object]) -> None:
        claim = self._left.pop(task, None)
        if claim is not None and not task.cancelled():
            logger.warning(
                "the handler of %r that timed out ended without letting its cancellation "
                "through; what it did after its timeout was not recorded",
                claim,
                extra={"action": "ended-late", "work": claim.name},
            )

    @property
    def stuck(self) -> int:
        """Handlers' tasks cancelled at a timeout that still run (see ``max_stuck``)."""
        return sum(not task.done() for task in self._left)

    async def run(self, *, until: float | None = None) -> None:
        """Loop until :meth:`stop` (or the ``time.time()`` deadline ``until``).

        Only cancellation ends it early, and the log says so when it was not
        :meth:`stop` asking. Claims started on tasks keep running; :meth:`close`
        waits for them.
        """
        self._until = until
        self._listen()
        try:
            await drive_async(self._core.loop_steps(f"worker {self.sync.worker_id}"), self._do)
        except BaseException as exc:
            if not (isinstance(exc, asyncio.CancelledError) and self._stopping.is_set()):
                ended(logger, f"worker {self.sync.worker_id} loop", exc)
            raise
        finally:
            await self._stop_listening()

    def _nudged(self) -> None:
        """A wake-up (or the listener's change of state): look now, whatever the wait."""
        self._nudge.set()
        self._wake.set()

    def _listen(self) -> None:
        """With ``wake="notify"``, start the listener's task (``_core.wakeups`` decides)."""
        wakeups = self._core.wakeups
        if wakeups is None or self._listener is not None:
            return
        listen_engine = async_listen_engine_for(self.listen_url, self._engine)
        listening = AsyncListening(
            self._engine, listen_engine, self.sync.table, self.sync.worker_id, self._nudged
        )
        what = f"worker {self.sync.worker_id}"
        steps = wakeups.listen_steps(what, frozenset(self.names))

        async def listen() -> None:
            try:
                await drive_async(steps, listening.do)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                ended(logger, f"{what} wake-up listener", exc)
            finally:
                await listening.close()
                if listen_engine is not self._engine:
                    await listen_engine.dispose()

        self._listener = asyncio.get_running_loop().create_task(listen(), name="worksync-listen")

    async def _stop_listening(self) -> None:
        """Cancel the listener's task; it closes its connection as it ends."""
        task, self._listener = self._listener, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=CANCEL_SETTLE_SECONDS)

    def start(self) -> None:
        """Run the loop in a task of the running event loop; returns at once."""
        self._background.start(self.run)

    async def stop(self, timeout: float | None = None) -> None:
        """Ask the loop to stop after the claim it is running; waits for it.

        No new claim is made. Claims running in tasks run to their end
        (``close`` waits for them). After ``timeout`` seconds the loop's task
        is cancelled, and a claim it runs itself (``max_concurrency`` 1) with
        it: recorded FAILED where the database allows. (:meth:`Worker.stop`
        cannot cancel a thread: it returns, and the loop ends after the claim.)
        """
        self._stopping.set()  # first: a nudged wait must find the loop stopping
        self._wake.set()
        self._nudge.set()
        await self._background.stop(timeout)

    @property
    def running(self) -> bool:
        """True while the loop's task is alive."""
        return self._background.running

    async def close(self, timeout: float | None = None) -> None:
        """Stop, wait up to ``timeout`` s (None: ``drain``) for running claims, release connections.

        The loop and the claims running in tasks share the wait. Claims still
        running after it are recorded FAILED ("shut down: ...", as on
        :class:`Worker`), then their tasks are cancelled. A handler that
        swallows its cancellation is left to end on its own after a second:
        it cannot hold the shutdown, and what it finishes is fenced off.
        """
        seconds = self.drain if timeout is None else timeout
        deadline = asyncio.get_running_loop().time() + seconds
        self._stopping.set()
        self._wake.set()
        self._nudge.set()
        reason = shut_down(seconds)
        here = self._here

        async def record_here() -> None:
            if here is not None:
                self.cut_off += await self._record_shut_down([here], seconds)

        await self._background.stop(
            seconds, reason, before_cancel=record_here, settle=CANCEL_SETTLE_SECONDS
        )
        if self._claims:
            left = max(0.0, deadline - asyncio.get_running_loop().time())
            _, pending = await asyncio.wait(set(self._claims), timeout=left)
            if pending:
                claims = [self._claims[task] for task in pending if task in self._claims]
                self.cut_off += await self._record_shut_down(claims, seconds)
                for task in pending:
                    task.cancel(reason)
                await asyncio.wait(pending, timeout=CANCEL_SETTLE_SECONDS)
        await self._stop_listening()  # the loop's task does it as it ends, unless cancelled early
        await self.sync.close()

    async def _record_shut_down(self, claims: list[AsyncClaim], seconds: float) -> int:
        """Record the claims still running past the drain FAILED; how many were."""
        steps = shut_down_steps(claims, seconds, "their tasks are cancelled")
        return await drive_async(steps, lambda step: step.claim.fail(step.error))

    async def __aenter__(self) -> AsyncWorker:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
