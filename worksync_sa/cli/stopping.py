"""SIGINT and SIGTERM as a request to stop that the main thread waits for.

Long-running commands (``schedule``, ``work``, ``status --watch``) run their
loop in a background thread or between waits, and stop cleanly on the first
SIGINT or SIGTERM: a scheduler finishes its pass, a worker its running claim.

Why not ``threading.Event.set()`` in the signal handler: the handler runs in
the main thread between two bytecodes, possibly while that thread holds the
very lock ``set()`` needs, which deadlocks. Instead the interpreter writes
each signal to a socket (``signal.set_wakeup_fd``) and the main thread waits
on it with ``select``; the handler itself only records which signal came.

A second signal while stopping raises :class:`ForcedStop` wherever the main
thread is (a join on a stuck handler, say), so an operator can always quit.
"""

from __future__ import annotations

import select
import signal
import socket
import time
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class ForcedStop(KeyboardInterrupt):
    """A second SIGINT/SIGTERM: quit now, without waiting for the running work.

    A ``KeyboardInterrupt``: no ``except Exception`` on the way up swallows it,
    and the loops treat it as the stop signal it is.
    """


class StopSignals:
    """Context manager: while inside, SIGINT and SIGTERM request a stop instead of killing.

    Must be entered in the main thread (Python delivers signals there only).
    """

    def __init__(self) -> None:
        self.received: str | None = None
        """The name of the first signal (``SIGTERM``), once one came."""
        self._count = 0
        self._previous: dict[int, Any] = {}
        self._previous_fd = -1
        self._reader: socket.socket | None = None
        self._writer: socket.socket | None = None

    def __enter__(self) -> StopSignals:
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self._previous_fd = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        signal.set_wakeup_fd(self._previous_fd)
        for sock in (self._reader, self._writer):
            if sock is not None:
                sock.close()
        self._reader = self._writer = None

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._count += 1
        name = signal.Signals(signum).name
        if self._count == 1:
            self.received = name
            return
        raise ForcedStop(f"second signal ({name}) while stopping")

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds (None: forever) for a stop; True once requested."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.received is None:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            if self._reader is None:
                raise RuntimeError("StopSignals.wait() outside its with block")
            readable, _, _ = select.select([self._reader], [], [], remaining)
            if readable:
                self._drain()
        return self.received is not None

    def _drain(self) -> None:
        assert self._reader is not None
        try:
            while self._reader.recv(64):
                pass
        except (BlockingIOError, InterruptedError):
            pass
