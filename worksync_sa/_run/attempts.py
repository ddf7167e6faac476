"""One service call's attempts, written once for both runners.

A call (``_run.steps.Call``) runs on a lane, is retried on transient errors and
lost connections, resolves an attempt whose reply was lost before trying
again, and on a SQLite file queues for the writers' lock. That is a small
state machine; :func:`attempts` is it, as a generator that yields what it
needs done (take a lane, run a function on it, sleep, take the lock...) and
receives the result. The blocking runner (``_run.blocking``) does each step by
blocking, the asyncio runner (``_run.async_runner``) by awaiting; neither decides
anything itself, so the two cannot drift apart.

The writers' lock follows one rule on both: take it if it is free; if not,
and the call's ``peek`` says there is nothing left to write (a claim whose
tick is taken), give up at once; otherwise queue for it in the kernel until
it is released. A holder that dies releases it with its process; one that
is stuck is stuck inside its SQLite write, which nobody could pass anyway.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .._sql.driver_errors import is_disconnect
from .retry import Retry
from .steps import Call, Sleep

T = TypeVar("T")


class Take:
    """Take an idle lane, or open one; the answer is the connection."""


@dataclass(frozen=True, slots=True)
class Run:
    """Run ``fn`` on ``conn``; the answer is what it returns."""

    conn: Any
    fn: Callable[[Connection], Any]


@dataclass(frozen=True, slots=True)
class Commit:
    """Commit ``conn``'s transaction (only off lanes: lanes are in autocommit)."""

    conn: Any


@dataclass(frozen=True, slots=True)
class Give:
    """Give a healthy lane back for the next call."""

    conn: Any


@dataclass(frozen=True, slots=True)
class Release:
    """After an error: keep the lane if its connection is sound (rolled back), else drop it."""

    conn: Any


@dataclass(frozen=True, slots=True)
class Invalidate:
    """Drop a lane whose statement was cut off half-way: never reuse it, on either runner.

    A cancelled task, or Ctrl-C landing inside the driver: the connection's
    protocol state is unknown, so even a rollback on it could read the reply
    meant for the cut-off statement.
    """

    conn: Any


@dataclass(frozen=True, slots=True)
class Locked:
    """Run ``fn`` on ``conn`` holding the SQLite writers' lock, if it is free right now.

    The answer is what ``fn`` returns, or ``BUSY`` when another writer holds
    the lock (nothing ran). One step for the common case, a free lock.
    """

    conn: Any
    fn: Callable[[Connection], Any]


BUSY = object()
"""The answer to ``Locked`` when the lock was taken."""


class WaitLock:
    """Queue for the writers' lock until it is released."""


class Unlock:
    """Release the writers' lock."""


TAKE, WAIT_LOCK, UNLOCK = Take(), WaitLock(), Unlock()

Step = Take | Run | Locked | Commit | Give | Release | Invalidate | Sleep | WaitLock | Unlock
Attempts = Generator[Step, Any, T]


@dataclass(slots=True)
class Counters:
    """What a runner has seen so far, kept across calls."""

    lost_connections: int = 0
    """Connections lost or refused: after one, the server may be another one (a failover)
    that lacks this process's latest writes."""


@dataclass(frozen=True, slots=True)
class Failure:
    """How an attempt failed: decided at the top of the next turn."""

    conn: Any
    """The lane it had taken, or None."""
    error: BaseException
    sent: bool
    """Whether the statement may have gone out (its outcome is then unknown)."""


_CUT_OFF = (asyncio.CancelledError, KeyboardInterrupt)
"""Errors that can land in the middle of a statement: its lane is dropped (``Invalidate``)."""


def attempts(
    call: Call[T],
    retry: Retry,
    counters: Counters,
    *,
    transactional: bool,
    locked: bool,
) -> Attempts[T]:
    """The steps of ``call`` until it succeeds, or fails for good.

    ``transactional``: the connection is an ordinary one (a pool sharing one
    connection gives no lanes), so a successful call commits. ``locked``:
    each attempt's work, reads included, runs under the SQLite writers' lock.
    """
    failure: Failure | None = None
    while True:
        if failure is not None:
            conn, error, sent = failure.conn, failure.error, failure.sent
            failure = None
            if not isinstance(error, sa.exc.DBAPIError):
                if conn is not None:
                    cut = isinstance(error, _CUT_OFF)
                    yield Invalidate(conn) if cut else Release(conn)
                raise error
            if conn is not None:
                yield Release(conn)
            counters.lost_connections += is_disconnect(error)
            yield Sleep(retry.delay_after(error, sent))
        conn = None
        sent = False
        try:
            conn = yield TAKE
            if retry.unknown_outcome and call.resolve is not None:
                found = yield Run(conn, call.resolve)
                if found is not None:
                    yield Give(conn)
                    return found  # type: ignore[no-any-return]
            sent = True
            if locked:
                result = yield from _under_lock(call, conn)
            else:
                result = yield Run(conn, call.work)
            if transactional:
                yield Commit(conn)
        except GeneratorExit:
            raise
        except BaseException as exc:
            failure = Failure(conn, exc, sent)  # decided at the top of the next turn
            continue
        yield Give(conn)
        return result


def _under_lock(call: Call[T], conn: Any) -> Generator[Step, Any, T]:
    result = yield Locked(conn, call.work)
    if result is not BUSY:
        return result  # type: ignore[no-any-return]
    if call.peek is not None and not (yield Run(conn, call.peek)):
        return call.nothing  # type: ignore[return-value]
    yield WAIT_LOCK
    try:
        queued: T = yield Run(conn, call.work)
    finally:
        yield UNLOCK
    return queued
