"""One handler run in a child process: the worker's side that supervises it, and the child's.

The worker (``Worker(isolation="process")``) keeps the claim: ``with claim:``,
its heartbeat and the outcome stay in the parent, which only waits here for
the child to say how the handler ended, or for its time to run out. This
module never touches the database, and decides nothing about a claim.

Why "spawn": the parent is threaded (heartbeats, runners, the loop) and holds
database connections. A plain fork copies every lock some other thread held
at that instant (a logging handler's, an allocator's) into a child that can
then hang on it for good, and hands the child sockets of connections it must
never use. "forkserver" avoids that too, but its children are the server's,
not the worker's: they are not the worker's to reap, they outlive it with the
server, and an operator looking for the worker's children does not find
them. "spawn" starts a fresh interpreter that is the worker's own child,
inherits only the pipe it is given, and behaves the same on Linux and macOS.
Its cost, a new interpreter per claim, is the price of the mode.

What crosses: the handler (pickled by reference, re-imported by the child)
and a :class:`~worksync_sa.isolation.ClaimView` go in; one message comes
back (after ``("started",)``, once the handler is called), ``("returned",)``
or ``("raised", text, traceback)``, texts only, since
an exception need not pickle. A child killed by the worker first sends
``("stack", text)`` from its SIGTERM handler, so the timeout's log line can
say where the handler was, as it does in thread mode.

No orphans: the worker kills its children past a timeout and on ``close()``;
an atexit hook kills any still alive when the interpreter ends; and each
child watches its parent and exits if the parent dies without doing either
(``kill -9``, a second signal's ``os._exit``).
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from types import FrameType, TracebackType
from typing import Any

from ..errors import describe

SPAWN = multiprocessing.get_context("spawn")
START_SECONDS = 30.0
"""How long a child may take to start (an interpreter, the handler's imports) when the
work's timeout is shorter: the timeout is the handler's own time."""
KILL_GRACE_SECONDS = 1.0
"""How long a child has after SIGTERM (to send its stack and die) before SIGKILL."""
EXIT_GRACE_SECONDS = 2.0
"""How long a child that has reported its outcome may take to exit before it is stopped."""
PARENT_GONE_EXIT = 70
"""The exit code of a child whose worker died: it is nobody's to wait for any more."""

_alive: set[Child] = set()
"""The children started and not reaped yet, for :func:`kill_all` (a thread that died before
reaping its child leaves it here, to be killed at exit)."""
_alive_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a handler's process ended: ``error`` None when it returned."""

    error: str | None = None
    """``Type: message`` of what it raised, or how its process died."""
    traceback: str = ""
    """Where it raised, in the child (empty when the process died without saying)."""


RETURNED = Outcome()


class Child:
    """A handler called in a spawned process with a claim's view, and the wait for its end.

    Only the thread that started it waits for it and reaps it (``outcome``,
    ``end``); any other thread may only :func:`stop` it, which signals and
    then waits for that thread to have reaped it. One reaper: a pid reaped twice
    could by then be another process's.
    """

    def __init__(self, handler: Callable[[Any], object], view: Any) -> None:
        self._reader, writer = SPAWN.Pipe(duplex=False)
        self._process = SPAWN.Process(
            target=child_main,
            args=(handler, view, writer),
            name=f"worksync-handler-{view.id}",
        )
        self._lock = threading.Lock()
        self._reaped = threading.Event()
        self.stopped = False
        """Whether another thread stopped it (``close()``): its outcome no longer counts."""
        self.stack = ""
        """Where the handler was when it was asked to end (its SIGTERM handler's report)."""
        try:
            self._process.start()
        finally:
            writer.close()  # the child's end: EOF here once the child is gone
        self.pid: int = self._process.pid or 0
        with _alive_lock:
            _alive.add(self)

    def outcome(self, seconds: float | None) -> Outcome | None:
        """Wait up to ``seconds`` (None: for ever) for the handler to end; None: still running.

        ``seconds`` counts from the handler's call, as in thread mode; the
        process start before it (an interpreter, the handler's imports) has
        ``START_SECONDS`` (or ``seconds``, if longer) of its own: a slow start
        on a busy host does not eat the handler's time, and a start that
        hangs (an import) still ends.

        The child's exit is waited for too (a few seconds at most: it is
        stopped past that), so no process is left behind once this returns.
        """
        start = None if seconds is None else max(seconds, START_SECONDS)
        deadline = None if start is None else time.monotonic() + start
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not wait([self._reader, self._process.sentinel], left):
                return None
            message = self._receive()
            if message is None:  # it is gone without a word: how it died is the outcome
                self._reap()
                return Outcome(self._death())
            if message[0] == "stack":  # SIGTERMed by someone: its death comes next
                continue
            if message[0] == "started":  # the handler's own time starts now
                deadline = None if seconds is None else time.monotonic() + seconds
                continue
            self._reap(grace=EXIT_GRACE_SECONDS)
            if message[0] == "raised":
                return Outcome(str(message[1]), str(message[2]))
            return RETURNED

    def end(self) -> None:
        """SIGTERM, then SIGKILL past a short grace; returns once the child is reaped."""
        if self._reaped.is_set():
            return
        self._signal(signal.SIGTERM)
        deadline = time.monotonic() + KILL_GRACE_SECONDS
        while wait([self._reader], max(0.0, deadline - time.monotonic())):
            if self._receive() is None:  # its end of the pipe closed: it has exited
                break
        if not wait([self._process.sentinel], 0):
            self._signal(signal.SIGKILL)  # deaf to SIGTERM: spinning in C code, say
        self._reap()

    def kill(self) -> None:
        """SIGKILL now, reaping left to its thread (the interpreter is ending)."""
        self._signal(signal.SIGKILL)

    def _signal(self, sig: signal.Signals) -> None:
        with self._lock:
            if not self._reaped.is_set() and self._process.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, sig)

    def _receive(self) -> tuple[Any, ...] | None:
        """The child's next message; None once its end is closed (it exited)."""
        try:
            message: tuple[Any, ...] = self._reader.recv()
        except (EOFError, OSError):
            return None
        if message[0] == "stack":
            self.stack = str(message[1])
        return message

    def _reap(self, grace: float | None = None) -> None:
        """Wait for the child's exit (past ``grace`` seconds: end it), then free what it held.

        Past the grace, SIGTERM and then SIGKILL: a handler spinning in C code
        never runs its SIGTERM handler, and nothing else ends it.
        """
        sentinel = self._process.sentinel
        if grace is not None and not wait([sentinel], grace):
            self._signal(signal.SIGTERM)
            if not wait([sentinel], KILL_GRACE_SECONDS):
                self._signal(signal.SIGKILL)
        wait([sentinel])
        with self._lock:  # it has exited: the join is at once, and no signal can race it
            self._process.join()
            self._reaped.set()
        with _alive_lock:
            _alive.discard(self)
        self._reader.close()

    def _death(self) -> str:
        """How the process ended, for the row: its exit code or the signal that killed it."""
        code = self._process.exitcode
        for _ in range(100):  # another thread's waitpid (multiprocessing's cleanup) may be
            if code is not None:  # storing it this very moment
                break
            time.sleep(0.01)
            code = self._process.exitcode
        if code is None:
            return "HandlerProcessError: the handler's process ended; how could not be read"
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = str(-code)
            return f"HandlerProcessError: the handler's process was killed by signal {name}"
        return f"HandlerProcessError: the handler's process exited with code {code}"

    def close(self) -> None:
        """Free the process object's pipes (once reaped)."""
        if self._reaped.is_set():
            self._process.close()


def stop(children: list[Child]) -> None:
    """From threads other than theirs: end the children (SIGTERM, then SIGKILL past a grace).

    Returns once each has been reaped by the thread that runs it, so none
    outlives the call; their outcomes no longer count (``stopped``).
    """
    for child in children:
        child.stopped = True
        child._signal(signal.SIGTERM)
    deadline = time.monotonic() + KILL_GRACE_SECONDS
    for child in children:
        if not child._reaped.wait(max(0.0, deadline - time.monotonic())):
            child._signal(signal.SIGKILL)
    for child in children:
        child._reaped.wait(KILL_GRACE_SECONDS)


@atexit.register  # registered after multiprocessing's own hook, so it runs before it
def kill_all() -> None:
    """SIGKILL every child still alive: at exit, a worker never closed (multiprocessing would
    join them for ever), or a second signal's quit, which has no time to wait."""
    with _alive_lock:
        left = list(_alive)
    for child in left:
        child.kill()


# -- the child's side ------------------------------------------------------------------

_done = threading.Event()


def child_main(handler: Callable[[Any], object], view: Any, results: Connection) -> None:
    """In the child: call the handler with the view, and send back how it ended.

    SIGINT is ignored (a Ctrl-C in a terminal reaches the whole process group;
    the worker decides what a stop means for its claims); SIGTERM, the
    worker's "your time is up", first sends where the handler was.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda signum, frame: _terminated(results, frame))
    threading.Thread(target=_exit_with_parent, name="worksync-parent-watch", daemon=True).start()
    results.send(("started",))
    try:
        handler(view)
    except BaseException as exc:  # even SystemExit: it is the handler's outcome
        _done.set()
        where = traceback.format_exception(type(exc), exc, _below(exc.__traceback__))
        results.send(("raised", describe(exc), "".join(where)))
    else:
        _done.set()
        results.send(("returned",))
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # a closed stream: nothing to save
                stream.flush()


def _below(tb: TracebackType | None) -> TracebackType | None:
    """A handler's traceback without this module's frame: where the handler's own code begins."""
    return tb.tb_next if tb is not None and tb.tb_next is not None else tb


def _terminated(results: Connection, frame: FrameType | None) -> None:
    """SIGTERM in the child: say where the handler was (unless it has ended), then die of it."""
    if not _done.is_set():
        _done.set()
        try:
            stack = traceback.extract_stack(frame)
            mine = [i for i, at in enumerate(stack) if at.name == child_main.__name__]
            results.send(("stack", "".join(stack.format()[mine[-1] + 1 if mine else 0 :])))
        except Exception:  # noqa: S110 (the worker is gone: nothing to tell)
            pass
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _exit_with_parent() -> None:
    """Exit once the worker is gone: a child must not outlive it, even a ``kill -9``."""
    parent = multiprocessing.parent_process()
    if parent is None or parent.sentinel is None:
        return
    wait([parent.sentinel])
    os._exit(PARENT_GONE_EXIT)
