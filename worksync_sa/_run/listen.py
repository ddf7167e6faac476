"""The listening connection of a worker's wake-ups, blocking or asyncio (PostgreSQL, psycopg 3).

``_core.wakeups`` decides; this module only performs its steps: open a
connection of its own and ``LISTEN`` on it, send a probe through the worker's
engine, wait for notifies, close. It reads notifies from libpq itself (wait
for the socket, ``consume_input``, ``notifies``) rather than with psycopg's
``Connection.notifies(timeout=...)``, which psycopg 3.1, the lowest version
the extras admit, does not have; waiting on the socket also lets a stop end
the wait at once (a second socket, written by :meth:`Listening.stop`).

The listening connection comes from the worker's engine, or from
``listen_url`` when that engine goes through PgBouncer in transaction pooling
(LISTEN needs a session that stays with the client). It is detached from the
engine's pool at once: a connection still listening must never be handed to
other code, which would then receive its notifies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import selectors
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from .._sql.wakeups import channel_for, listen_sql, name_session, notify
from .poolers import unprepared

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

logger = logging.getLogger("worksync_sa.worker")

APPLICATION_NAME = "worksync-listen"
"""How a listening connection names itself (``pg_stat_activity.application_name``), with
its worker's id after a space."""


@dataclass(frozen=True, slots=True)
class Connect:
    """Open the listening connection and ``LISTEN`` on the table's channel."""


@dataclass(frozen=True, slots=True)
class Probe:
    """Notify ``payload`` on the channel through the worker's engine (not the listener's)."""

    payload: str


@dataclass(frozen=True, slots=True)
class Receive:
    """Wait up to ``seconds`` (None: until one comes) for notifies.

    The answer: their payloads (maybe none), or None once the listener is
    asked to stop. A lost connection raises.
    """

    seconds: float | None


@dataclass(frozen=True, slots=True)
class Disconnect:
    """Close the listening connection, if open; never raises."""


@dataclass(frozen=True, slots=True)
class Nudge:
    """Wake the worker for one look."""


@dataclass(frozen=True, slots=True)
class Pause:
    """Wait ``seconds`` before connecting again; the answer: True once asked to stop."""

    seconds: float


CONNECT = Connect()
DISCONNECT = Disconnect()
NUDGE = Nudge()


def application_name(worker_id: str) -> str:
    return f"{APPLICATION_NAME} {worker_id}"[:63]


def _drain(pgconn: Any) -> list[str]:
    """The notifies libpq holds already, as payload text."""
    found = []
    while (notice := pgconn.notifies()) is not None:
        found.append(notice.extra.decode("utf-8", "replace"))
    return found


def _consume(pgconn: Any) -> list[str]:
    """Read what the socket holds; raises once the server has closed the connection."""
    pgconn.consume_input()  # psycopg raises OperationalError when libpq fails to read
    found = _drain(pgconn)
    if pgconn.status != 0:  # not CONNECTION_OK: the server ended this session
        raise ConnectionError("the listening connection was closed by the server")
    return found


def _detach(conn: Connection) -> Any:
    """Take the connection out of its pool, first; the psycopg connection, ours to close.

    First, so that it never goes back to a pool named or listening, even when
    LISTEN fails. Once detached, closing ``conn`` no longer closes the
    driver's connection (on the asyncio side at least): the listener does.
    """
    driver = conn.connection.driver_connection
    conn.connection.detach()
    return driver


def _listen(conn: Connection, table: str, name: str) -> None:
    """Name the session (``pg_stat_activity`` shows whose it is), and LISTEN."""
    conn.execute(name_session(), {"name": name})
    conn.exec_driver_sql(listen_sql(conn.dialect, channel_for(table)))


def _probe(conn: Connection, table: str, payload: str) -> None:
    with unprepared(conn):  # the host's pooled connection, perhaps through a pooler
        conn.execute(notify(), {"channel": channel_for(table), "payload": payload})


class Listening:
    """The blocking side: a daemon thread's connection, and the socket that stops its waits."""

    def __init__(
        self,
        engine: Engine,
        listen_engine: Engine,
        table: str,
        worker_id: str,
        nudge: Callable[[], None],
    ) -> None:
        self.engine = engine
        self.listen_engine = listen_engine
        self.table = table
        self.name = application_name(worker_id)
        self.nudge = nudge
        self.stopping = threading.Event()
        self._conn: Connection | None = None
        self._driver: Any = None
        self._bell, self._ear = socket.socketpair()
        """Written by :meth:`stop`; a wait on the listening socket also watches ``_ear``."""

    def stop(self) -> None:
        self.stopping.set()
        with contextlib.suppress(OSError):
            self._bell.send(b"x")

    def close(self) -> None:
        """Close the connection and the stop sockets (the thread has ended)."""
        self._disconnect()
        self._bell.close()
        self._ear.close()

    def do(self, step: Any) -> Any:
        if isinstance(step, Receive):
            return self._receive(step.seconds)
        if isinstance(step, Nudge):
            self.nudge()
            return None
        if isinstance(step, Connect):
            self._connect()
            return None
        if isinstance(step, Probe):
            with self.engine.begin() as conn:
                _probe(conn, self.table, step.payload)
            return None
        if isinstance(step, Disconnect):
            self._disconnect()
            return None
        if isinstance(step, Pause):
            return self.stopping.wait(step.seconds)
        raise TypeError(f"not a listener step: {step!r}")  # pragma: no cover

    def _connect(self) -> None:
        self._disconnect()
        conn = self.listen_engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        self._conn = conn
        self._driver = _detach(conn)
        _listen(conn, self.table, self.name)

    def _disconnect(self) -> None:
        conn, driver, self._conn, self._driver = self._conn, self._driver, None, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
        if driver is not None:
            with contextlib.suppress(Exception):
                driver.close()

    def _receive(self, seconds: float | None) -> list[str] | None:
        if self._driver is None:
            raise ConnectionError("the listening connection is not open")
        pgconn = self._driver.pgconn
        found = _drain(pgconn)
        if found or self.stopping.is_set():
            return None if self.stopping.is_set() else found
        with selectors.DefaultSelector() as selector:  # select() fails past descriptor 1023
            selector.register(pgconn.socket, selectors.EVENT_READ)
            selector.register(self._ear, selectors.EVENT_READ)
            ready = selector.select(seconds)
        if self.stopping.is_set():
            return None
        return _consume(pgconn) if ready else []


class AsyncListening:
    """The asyncio side: the same steps, in a task of the worker's loop; a stop cancels it."""

    def __init__(
        self,
        engine: AsyncEngine,
        listen_engine: AsyncEngine,
        table: str,
        worker_id: str,
        nudge: Callable[[], None],
    ) -> None:
        self.engine = engine
        self.listen_engine = listen_engine
        self.table = table
        self.name = application_name(worker_id)
        self.nudge = nudge
        self._conn: AsyncConnection | None = None
        self._driver: Any = None

    async def do(self, step: Any) -> Any:
        if isinstance(step, Receive):
            return await self._receive(step.seconds)
        if isinstance(step, Nudge):
            self.nudge()
            return None
        if isinstance(step, Connect):
            await self._connect()
            return None
        if isinstance(step, Probe):
            async with self.engine.begin() as conn:
                await conn.run_sync(_probe, self.table, step.payload)
            return None
        if isinstance(step, Disconnect):
            await self.close()
            return None
        if isinstance(step, Pause):
            await asyncio.sleep(step.seconds)  # a stop cancels the task
            return False
        raise TypeError(f"not a listener step: {step!r}")  # pragma: no cover

    async def _connect(self) -> None:
        await self.close()
        conn = await self.listen_engine.connect()
        self._conn = conn
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        self._driver = await conn.run_sync(_detach)
        await conn.run_sync(_listen, self.table, self.name)

    async def close(self) -> None:
        """Close the connection, if open; never raises."""
        conn, driver, self._conn, self._driver = self._conn, self._driver, None, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()
        if driver is not None:
            with contextlib.suppress(Exception):
                await driver.close()

    async def _receive(self, seconds: float | None) -> list[str]:
        if self._driver is None:
            raise ConnectionError("the listening connection is not open")
        pgconn = self._driver.pgconn
        found = _drain(pgconn)
        if found:
            return found
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        fd = pgconn.socket
        loop.add_reader(fd, ready.set)
        try:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(ready.wait(), seconds)
        finally:
            loop.remove_reader(fd)
        return _consume(pgconn) if ready.is_set() else []


def listen_engine_for(url: str | None, engine: Engine) -> Engine:
    """The engine the listening connection comes from: ``url``'s, else the worker's.

    ``url``'s has no pool: its one connection is detached at once anyway.
    """
    if url is None:
        return engine
    return sa.create_engine(url, poolclass=sa.pool.NullPool)


def async_listen_engine_for(url: str | None, engine: AsyncEngine) -> AsyncEngine:
    """:func:`listen_engine_for`, asyncio (only imported here: it needs greenlet)."""
    if url is None:
        return engine
    from sqlalchemy.ext.asyncio import create_async_engine  # noqa: PLC0415 (asyncio when asked)

    return create_async_engine(url, poolclass=sa.pool.NullPool)
