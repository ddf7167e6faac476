"""One service call's attempts, written once for both runners.

A call (``_calls.Call``) runs on a lane, is retried on transient errors and
lost connections, resolves an attempt whose reply was lost before trying
again, and on a SQLite file queues for the writers' lock. That is a small
state machine; :func:`attempts` is it, as a generator that yields what it
needs done (take a lane, run a function on it, sleep, take the lock...) and
receives the result. The blocking runner (``_tx``) does each step by
blocking, the asyncio runner (``_async_tx``) by awaiting; neither decides
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

from ._calls import Call
from ._dbapi_errors import is_disconnect
from ._retry import Retry

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
    """Drop a lane whose statement was cut off half-way (a cancelled task): never reuse it."""

    conn: Any


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


class TryLock:
    """Take the SQLite writers' lock if it is free; the answer says whether it was."""


class WaitLock:
    """Queue for the writers' lock until it is released."""


class Unlock:
    """Release the writers' lock."""


TAKE, TRY_LOCK, WAIT_LOCK, UNLOCK = Take(), TryLock(), WaitLock(), Unlock()

Step = Take | Run | Commit | Give | Release | Invalidate | Sleep | TryLock | WaitLock | Unlock
Attempts = Generator[Step, Any, T]


@dataclass(slots=True)
class Counters:
    """What a runner has seen so far, kept across calls."""

    lost_connections: int = 0
    """Connections lost or refused: after one, the server may be another one (a failover)
    that lacks this process's latest writes."""


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
    writes queue for the SQLite writers' lock first.
    """
    while True:
        conn: Any = None
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
        except sa.exc.DBAPIError as exc:
            if conn is not None:
                yield Release(conn)
            counters.lost_connections += is_disconnect(exc)
            yield Sleep(retry.delay_after(exc, sent))
            continue
        except BaseException as exc:
            if conn is not None:
                yield Invalidate(conn) if isinstance(exc, asyncio.CancelledError) else Release(conn)
            raise
        yield Give(conn)
        return result


def _under_lock(call: Call[T], conn: Any) -> Generator[Step, Any, T]:
    held = yield TRY_LOCK
    if not held:
        if call.peek is not None and not (yield Run(conn, call.peek)):
            return call.nothing  # type: ignore[return-value]
        yield WAIT_LOCK
    try:
        result: T = yield Run(conn, call.work)
    finally:
        yield UNLOCK
    return result
