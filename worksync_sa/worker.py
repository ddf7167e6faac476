"""A worker loop: claim the due ticks of some works and run a function for each.

The original left the loop to the host ("fancyWorker.do(...)"); this one is
for hosts that want it done right. It claims with ``acquire_due`` (database
clock, grace respected), runs the handler inside ``with claim:`` (heartbeat
while it runs, SUCCESS or FAILED after), and survives database outages:
it logs once, backs off with jitter up to a cap, and resumes by itself.

Its own clock only decides when to look again; whether a tick is due is the
database's call, so a worker whose clock is off still claims the right ticks.
"""

from __future__ import annotations

import functools
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine

from ._core.outage import ended, is_stop
from ._core.wakeups import check_wake_database
from ._core.worker import (
    DEFAULT_DRAIN,
    DEFAULT_MAX_BACKOFF,
    DEFAULT_POLL,
    MAX_CONCURRENCY_LIMIT,
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
    shut_down_steps,
    timed_out,
    utcnow,
)
from ._run import child as children
from ._run.background import BackgroundThread
from ._run.listen import Listening, listen_engine_for
from ._run.steps import Idle, drive
from .config import RetryPolicy
from .errors import ClaimLostError, HandlerProcessError, InvalidArgumentError
from .events import Listener
from .isolation import ClaimView, ProcessHandler, check_isolation, check_picklable
from .models import DEFAULT_TABLE
from .sync import Claim, WorkSync
from .work import Work

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_DRAIN",
    "DEFAULT_MAX_BACKOFF",
    "DEFAULT_POLL",
    "MAX_CONCURRENCY_LIMIT",
    "Handler",
    "Worker",
]

Handler = Callable[[Claim], object]

LISTENER_STOP_SECONDS = 5.0
"""How long stopping waits for the wake-up listener's thread; it waits on the network only
while it connects (a wait for notifies ends at once), and is a daemon thread anyway."""


class Worker(WorkerSettings):
    """Runs a handler for every due tick of ``works`` this process can claim.

    ``works`` are :class:`Work` objects (the loop then also sleeps until the
    next tick) or plain names (it polls). ``handler`` is one function for
    every work, or a mapping from each work's name to its own function.
    Up to ``max_concurrency`` claims run at once, above one each on a thread
    of its own (see :meth:`run_once`). ``poll`` is the longest wait between
    looks. ``drain`` is how long :meth:`close` (and leaving ``with``) waits
    for running claims (see there). ``clock`` is this process's idea of the
    time, injectable for tests.

    ``isolation="process"`` runs each claim's handler in a child process of
    its own instead of on a thread (see :mod:`worksync_sa.isolation`): the
    worker keeps the claim and its heartbeat, and the handler gets a
    :class:`~worksync_sa.isolation.ClaimView`, so it cannot call
    ``success()``, ``fail()`` or ``heartbeat()``: it returns (SUCCESS) or
    raises (FAILED). Past its timeout, or still running when :meth:`close`'s
    drain runs out, the child is killed: nothing is left running, and
    ``stuck`` stays 0. Each handler must be a module-level function (the
    child imports it), and each claim costs a process start (~50 ms, plus the imports).

    ``wake="notify"`` (PostgreSQL, psycopg 3): the worker also listens on
    the table's channel, where operators' run-now and retry and late
    scheduler passes notify, so it starts those rows at once and may poll
    rarely: ``poll`` defaults to 60 s then (1 s without). It listens on a
    connection of its own, from ``listen_url`` when given (needed when
    ``engine`` goes through PgBouncer in transaction pooling, where LISTEN
    does not work: a URL of PostgreSQL itself or of a session-mode pool),
    else from ``engine``. ``wakeups`` says whether notifies are heard; when
    they cannot be, the worker logs a WARNING saying why and polls every 1 s
    (or ``poll`` when given).
    """

    def __init__(
        self,
        engine: Engine,
        works: Iterable[Work | str],
        handler: Handler | ProcessHandler | Mapping[str, Handler | ProcessHandler],
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
        isolation: str = "thread",
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
        if dialect is not None:  # else WorkSync refuses it, naming what it got
            check_wake_database(self._core.wake, dialect.name, dialect.driver, listen_url)
        self._engine = engine
        self.listen_url = listen_url
        """Where the wake-up listener connects, when not through ``engine`` (see ``wake``)."""
        coroutines = sorted(n for n, h in self._core.handlers.items() if is_async_handler(h))
        if coroutines:  # called here, it would return a coroutine never awaited: work not done
            raise InvalidArgumentError(
                f"handler for {', '.join(map(repr, coroutines))} is an async function: Worker "
                "calls its handlers on threads and would never await it (use AsyncWorker)"
            )
        self.isolation = check_isolation(isolation)
        """``thread`` (handlers on threads) or ``process`` (each claim in a child process)."""
        if self.isolation == "process":
            check_picklable(self._core.handlers)
        self.handler = handler
        self._free = threading.BoundedSemaphore(max_concurrency)
        """One permit per claim this worker can run at once: it never holds more."""
        self._wake = threading.Event()
        """Set by stop() and whenever a running claim ends: look again now."""
        self._nudge = threading.Event()
        """Set by stop() and by a wake-up: ends even a wait for the next tick."""
        self._listening: tuple[Listening, threading.Thread] | None = None
        self._count_lock = threading.Lock()
        self.sync = WorkSync(
            engine, table=table, worker_id=worker_id, retry=retry, listeners=listeners
        )
        self.handled = 0
        """Claims this worker has run (finished or not)."""
        self.cut_off = 0
        """Claims :meth:`close` recorded FAILED as still running when the drain ran out."""
        self._background = BackgroundThread("worker")
        self._stopping = self._background.stopping
        self._until: float | None = None
        self._running: dict[Future[None], Claim] = {}
        """The claims running on threads of their own, each with its thread's end."""
        self._here: Claim | None = None
        """The claim the loop's own thread runs (``max_concurrency`` 1)."""
        self._stuck: dict[threading.Thread, Claim] = {}
        """Handlers' threads left running past their timeout, with the claims they had."""
        self.gave_up = False
        """Whether the worker stopped itself: more handlers' threads stuck than ``max_stuck``."""
        self._children: dict[int, children.Child] = {}
        """By claim id, the child processes running handlers (``isolation="process"``)."""
        self._children_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Worker({self.sync!r}, works={self.names!r})"

    def run_once(self) -> int:
        """Claim and run everything due right now; returns how many claims it started.

        With ``max_concurrency`` 1 each claim runs here, one after the other.
        Above 1, each claim runs on a thread of its own, at most that many at
        once, and a claim is only made while a thread is free to run it, so
        the worker never holds a claim it cannot run. Each free thread goes to
        the due work that has used the least thread time lately: a slow (or
        hung) job never keeps a quick work from its ticks.
        """
        return drive(self._core.round_steps(self._stopping.is_set), self._do)

    def run_due(self) -> int:
        """Claim and run everything due now, then return once every claim it started has ended.

        Unlike :meth:`run_once`, it waits for a free thread whenever all are
        busy, so nothing due is left behind: what ``worksync work --once`` does.
        Returns how many claims it ran.
        """
        return drive(self._core.due_steps(), self._do)

    def _do(self, step: Any) -> Any:
        """One step of a round or of the loop (``WorkerCore``), with threads."""
        return self._steps[type(step)](step)

    @functools.cached_property
    def _steps(self) -> dict[type, Callable[[Any], Any]]:
        return {
            AcquireBatch: lambda step: self.sync._acquire_batch(step.plan, step.places, step.limit),
            RunHere: lambda step: self._run_here(step.claim),
            TakeRunner: lambda _: self._free.acquire(blocking=False),
            FreeRunner: lambda _: self._free.release(),
            Launch: lambda step: self._launch(step.claim, step.charge),
            Round: lambda _: self.run_once(),
            AwaitOne: lambda _: self._await_one(),
            Idle: lambda step: self._wait(step.seconds, wake=step.wake),
        }

    def _run_here(self, claim: Claim) -> None:
        self._here = claim
        try:
            self._handle(claim)
        finally:
            self._here = None
        with self._count_lock:
            self.handled += 1

    def _await_one(self) -> bool:
        running = set(self._running)
        if running:
            wait(running, return_when=FIRST_COMPLETED)
        return bool(running)

    def _launch(self, claim: Claim, charge: float) -> None:
        """Run the claim on a daemon thread of its own.

        Not a pool: a pool's threads are joined when the interpreter exits, so one
        hung handler kept a stopped process alive for good; and a thread left to a
        hung handler past the drain must not take a pool's place.
        """
        ended: Future[None] = Future()

        def run() -> None:
            began = time.monotonic()
            try:
                self._run_and_free(claim)
            finally:
                self._core.shares.ended(claim.name, charge, time.monotonic() - began)
                ended.set_result(None)

        self._running[ended] = claim
        ended.add_done_callback(lambda done: self._running.pop(done, None))
        threading.Thread(target=run, name=f"worksync-work-{claim.id}", daemon=True).start()

    def _wait(self, seconds: float, *, wake: bool) -> bool:
        """Sleep ``seconds`` (less on a stop, or, when ``wake``, a claim ending); True: stop.

        As in :class:`AsyncWorker`: only a ``wake`` wait consumes the wake
        signal; one set during a backoff is kept, so the next look is at once.
        Any other wait (for the next tick, or a backoff) ends on the nudge,
        which a stop and a wake-up set (``wake="notify"``): a notify sent while
        the loop was busy is not lost, its look comes at once.
        """
        seconds = self._core.wait_length(seconds, self._until)
        if seconds > 0:
            (self._wake if wake else self._nudge).wait(seconds)
            (self._wake if wake else self._nudge).clear()
        return self._stopping.is_set() or self._core.past(self._until)

    def _nudged(self) -> None:
        """A wake-up (or the listener's change of state): look now, whatever the wait."""
        self._nudge.set()
        self._wake.set()

    def _run_and_free(self, claim: Claim) -> None:
        try:
            self._handle(claim)
        finally:
            with self._count_lock:
                self.handled += 1
            self._free.release()
            self._wake.set()

    def _handle(self, claim: Claim) -> None:
        try:
            with claim:
                self._call(claim)
        except BaseException as exc:
            if is_stop(exc) and threading.current_thread() is threading.main_thread():
                raise  # Ctrl-C on a loop run in the main thread: stop (elsewhere, the handler's)
            report(claim, exc)

    def _call(self, claim: Claim) -> None:
        """The handler, on a thread of its own when it has a time limit (then left past it)."""
        if self.isolation == "process":
            self._call_in_process(claim)
            return
        handler = self._core.handlers[claim.name]
        seconds = self._core.timeouts[claim.name]
        if seconds is None:
            handler(claim)
            return
        outcome: Future[object] = Future()

        def call() -> None:
            try:
                outcome.set_result(handler(claim))
            except BaseException as exc:  # even SystemExit: the claim's thread records it
                outcome.set_exception(exc)
            self._ended_late(threading.current_thread(), claim)

        thread = threading.Thread(target=call, name=f"worksync-handler-{claim.id}", daemon=True)
        thread.start()
        try:
            outcome.result(seconds)
            return
        except FutureTimeout:
            pass
        frame = sys._current_frames().get(thread.ident or -1)
        error = timed_out(seconds, "".join(traceback.format_stack(frame)) if frame else "")
        try:
            claim.fail(error)  # first: whatever the handler finishes from now is fenced off
        except ClaimLostError:
            if not claim.finished:
                raise
            return  # the handler finished it itself, just in time; its outcome stands
        finally:
            self._leave(thread, claim)
        raise error

    def _call_in_process(self, claim: Claim) -> None:
        """The handler in a child process, supervised from here: past its timeout, killed.

        Returns when the handler returned, raises :class:`HandlerProcessError`
        with its text when it raised or its process died, and
        :class:`HandlerTimeoutError` past its timeout, once the claim is
        recorded FAILED and the child is gone.
        """
        view = ClaimView(
            id=claim.id,
            name=claim.name,
            sequence=claim.sequence,
            slot=claim.slot,
            tick_at=claim.tick_at,
            attempt=claim.attempt,
            worker_id=self.sync.worker_id,
        )
        seconds = self._core.timeouts[claim.name]
        with self._children_lock:  # close() either finds this child or finds the claim finished
            if claim.finished:
                return
            child = children.Child(self._core.handlers[claim.name], view)
            self._children[claim.id] = child
        try:
            try:
                outcome = child.outcome(seconds)
            except BaseException:  # Ctrl-C on a loop run in the main thread: not alone
                child.end()
                raise
            if outcome is None:
                assert seconds is not None
                error = timed_out(seconds, "")
                try:
                    claim.fail(error)  # first: nothing the child does from now on counts
                finally:
                    child.end()
                error.where = child.stack
                raise error
        finally:
            with self._children_lock:
                self._children.pop(claim.id, None)
            child.close()
        if child.stopped or outcome.error is None:  # stopped: close() recorded it, killed it
            return
        failed = HandlerProcessError(outcome.error, outcome.traceback)
        if not outcome.traceback:  # its process died: nothing was raised, nowhere to show
            raise failed from None
        raise failed from _ChildTraceback(outcome.traceback)

    def _leave(self, thread: threading.Thread, claim: Claim) -> None:
        """Leave a handler's thread past its timeout; stop the worker if too many are left."""
        with self._count_lock:
            self._stuck = {t: c for t, c in self._stuck.items() if t.is_alive()}
            self._stuck[thread] = claim
            stuck = len(self._stuck)
        if stuck > self.max_stuck and not self.gave_up:
            self.gave_up = True
            logger.critical(
                "%d handlers' threads still run past their timeouts, more than max_stuck %d: "
                "this worker stops claiming; restart the process to free them",
                stuck,
                self.max_stuck,
                extra={"action": "stuck", "count": stuck},
            )
            self._stopping.set()
            self._wake.set()
            self._nudge.set()

    def _ended_late(self, thread: threading.Thread, claim: Claim) -> None:
        with self._count_lock:
            left = self._stuck.pop(thread, None) is not None
        if left:
            logger.warning(
                "the handler of %r that timed out has ended; what it did after its timeout "
                "was not recorded",
                claim,
                extra={"action": "ended-late", "work": claim.name},
            )

    @property
    def stuck(self) -> int:
        """Handlers' threads left running past their timeouts (see ``max_stuck``)."""
        with self._count_lock:
            return sum(thread.is_alive() for thread in self._stuck)

    def run(self, *, until: float | None = None) -> None:
        """Loop until :meth:`stop` (or the ``time.time()`` deadline ``until``).

        Only a stop signal (Ctrl-C) ends it early, and the log says so.
        """
        self._until = until
        self._listen()
        try:
            drive(self._core.loop_steps(f"worker {self.sync.worker_id}"), self._do)
        except BaseException as exc:
            ended(logger, f"worker {self.sync.worker_id} loop", exc)
            raise
        finally:
            self._stop_listening()

    def _listen(self) -> None:
        """With ``wake="notify"``, start the listener's thread (``_core.wakeups`` decides)."""
        wakeups = self._core.wakeups
        if wakeups is None:
            return
        self._stop_listening()
        listening = Listening(
            self._engine,
            listen_engine_for(self.listen_url, self._engine),
            self.sync.table,
            self.sync.worker_id,
            self._nudged,
        )
        what = f"worker {self.sync.worker_id}"
        steps = wakeups.listen_steps(what, frozenset(self.names))

        def listen() -> None:
            try:
                drive(steps, listening.do)
            except BaseException as exc:
                ended(logger, f"{what} wake-up listener", exc)
            finally:
                listening.close()
                if listening.listen_engine is not self._engine:
                    listening.listen_engine.dispose()

        thread = threading.Thread(target=listen, name="worksync-listen", daemon=True)
        self._listening = (listening, thread)
        thread.start()

    def _stop_listening(self) -> None:
        """Stop the listener and wait (a little) for its thread to close its connection."""
        found, self._listening = self._listening, None
        if found is not None:
            listening, thread = found
            listening.stop()
            thread.join(LISTENER_STOP_SECONDS)

    def start(self) -> None:
        """Run the loop in a background thread; returns at once."""
        self._background.start(self.run)

    def stop(self, timeout: float | None = None) -> None:
        """Ask the loop to stop after the claim it is running; waits for its thread.

        No new claim is made. Claims running on their threads run on (``close``
        waits for them). ``timeout`` bounds the wait: a thread cannot be
        cancelled, so if the loop is still running a claim itself
        (``max_concurrency`` 1) when the time is up, this returns and the loop
        ends after that claim; ``running`` stays True until then.
        """
        self._stopping.set()  # first: a nudged wait must find the loop stopping
        self._wake.set()
        self._nudge.set()
        self._background.stop(timeout)

    @property
    def running(self) -> bool:
        """True while the background thread is alive (False once it has died or stopped)."""
        return self._background.running

    def close(self, timeout: float | None = None) -> None:
        """Stop, wait up to ``timeout`` s (None: ``drain``) for running claims, release connections.

        Claims still running then are recorded FAILED ("shut down: ..."), their
        heartbeats stop, and whatever their handlers finish later is fenced off.
        Their threads cannot be killed: they are daemon threads, left to end on
        their own, and they never keep the process from exiting. With
        ``isolation="process"`` their child processes are killed instead, and
        this returns once they are gone and the loop has ended.
        (:meth:`AsyncWorker.close` cancels its claims' tasks.)
        """
        seconds = self.drain if timeout is None else timeout
        deadline = time.monotonic() + seconds
        self.stop(seconds)
        running = set(self._running)
        if running:
            wait(running, max(0.0, deadline - time.monotonic()))
        left = [claim for done, claim in list(self._running.items()) if not done.done()]
        here = self._here  # not ``running``: a join a signal interrupted can report it dead
        if here is not None:
            left.append(here)
        if left:
            self._shut_down(left, seconds)
            if self.isolation == "process":  # their children killed, their threads end now
                self._background.stop(children.KILL_GRACE_SECONDS)
                wait(set(self._running), children.KILL_GRACE_SECONDS)
        self._stop_listening()  # the loop's thread does it as it ends, unless a claim holds it
        self.sync.close()

    def _shut_down(self, claims: list[Claim], seconds: float) -> None:
        """Record the claims still running past the drain FAILED; their handlers run on.

        Unless they run in child processes: those are killed once every claim
        is recorded (recording first, so nothing a child finishes counts).
        """
        then = (
            "their handlers' processes are killed"
            if self.isolation == "process"
            else "their handlers' threads are left to end on their own"
        )
        try:
            steps = shut_down_steps(claims, seconds, then)
            self.cut_off += drive(steps, lambda step: step.claim.fail(step.error))
        finally:
            with self._children_lock:
                left = [self._children[c.id] for c in claims if c.id in self._children]
            children.stop(left)

    def __enter__(self) -> Worker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _ChildTraceback(Exception):
    """The traceback of a handler's exception in its child process, as text.

    The cause of the :class:`HandlerProcessError` raised in the worker, so the
    ERROR log line shows where the handler failed, as in thread mode
    (``concurrent.futures`` shows a process pool's failures the same way).
    """

    def __str__(self) -> str:
        return f'\n"""\n{self.args[0].rstrip()}\n"""' if self.args and self.args[0] else ""
