"""Held autocommit connections ("lanes") for the services' single statements.

Every write worksync_sa makes is one guarded statement, so it needs no
transaction of its own: run in autocommit, a claim is one round trip (a due
claim on MySQL/MariaDB adds the read of its row).
Checking a connection out of the host's pool per call would add a BEGIN, a
COMMIT and the pool's reset-on-return (a ROLLBACK, and with mysqlclient an
isolation-level switch each way) to every claim, doubling or tripling its cost.

So each service keeps a few connections of its own, in autocommit mode, one
per thread using it at the same time. They are opened through the host's
engine (same URL, options and events) and then detached from its pool, so
they never use up the host's pool slots and never go back into it with our
settings; they are closed when the service is closed or garbage-collected.
After ``fork()`` a child never touches its parent's lanes; it opens its own.

SQLite's own busy handler sleeps in coarse steps and collapses when several
processes write; lanes on SQLite set ``busy_timeout`` to 0 and the services
retry SQLITE_BUSY themselves, in fine-grained jittered steps (see ``_run.retry``).
Lanes on psycopg send lists as binary arrays (the scheduler's bulk inserts),
and prepare nothing on the server when a pooler sits in between.
Lanes on MySQL/MariaDB must speak utf8mb4, or they are refused.
An engine whose pool shares one connection among all its users
(``StaticPool``, ``SingletonThreadPool``: ``sqlite://``, the usual engine of a
host's own tests) cannot give a lane a connection of its own. It gets no
lanes: each call checks a connection out, runs in an ordinary transaction,
commits and gives it back, so nothing of ours (autocommit, a cursor, a mark)
stays on the connection the host uses next.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from typing import Any

import sqlalchemy as sa
from sqlalchemy import pool
from sqlalchemy.engine import Connection, Engine

from .._sql.direct import mark_lane
from ..engine import shown_url
from ..errors import UnsupportedDatabaseError
from .poolers import never_prepare
from .process import pid

# Lanes inherited through fork(): never used, never closed (their sockets belong
# to the parent), only kept referenced so no finalizer ever touches them.
_INHERITED: list[Any] = []


def inherit(idle: list[Any]) -> None:
    """Set aside a forked child's idle lanes, blocking or asyncio: they are its parent's.

    Using one would interleave two processes' statements on one socket; closing
    one would end the parent's session (a ``COM_QUIT``, a ``Terminate``). So
    they are neither: only kept referenced, so that nothing collects them.
    """
    _INHERITED.extend(idle)
    idle.clear()


SHARED_POOLS = (pool.StaticPool, pool.SingletonThreadPool)
"""Pools that hand every user the same connection: no lane can have one of its own."""


class Lanes:
    """A small stack of idle autocommit connections."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.own = not isinstance(engine.pool, SHARED_POOLS)
        """False when the pool shares one connection: calls then use ordinary transactions."""
        self._idle: list[Connection] = []
        self._lock = threading.Lock()
        self._pid = pid()
        self._closed = False
        self._finalizer = weakref.finalize(self, _close_all, self._idle, self._lock)

    def take(self) -> Connection:
        """An idle lane, or a new one; on a shared pool, a checkout for one transaction."""
        if not self.own:
            return self.engine.connect()
        with self._lock:
            if self._pid != pid():  # we are a forked child
                inherit(self._idle)
                self._pid = pid()
            if self._idle:
                return self._idle.pop()
        return _open(self.engine)

    def give(self, conn: Connection) -> None:
        """Return a healthy lane for reuse (closed instead if the lanes are closed)."""
        if not self.own:
            _close(conn)
            return
        with self._lock:
            if not self._closed and self._pid == pid() and not conn.invalidated:
                self._idle.append(conn)
                return
        _close(conn)

    def release_failed(self, conn: Connection) -> None:
        """After an error: keep the lane if its connection is sound, else drop it."""
        if conn.invalidated:
            self.discard(conn)
            return
        try:
            conn.rollback()  # clears SQLAlchemy's view of the (autocommit) transaction
        except Exception:
            self.discard(conn)
            return
        self.give(conn)

    def discard(self, conn: Connection) -> None:
        """Drop a lane whose connection failed, without the reset a close would try on it."""
        with contextlib.suppress(Exception):
            conn.invalidate()
        _close(conn)

    def close(self) -> None:
        """Close every idle lane (detached: not back to the pool); lanes in use on their return."""
        with self._lock:
            self._closed = True
            if self._pid != pid():  # a forked child: the idle lanes are its parent's
                inherit(self._idle)
        self._finalizer()

    @property
    def idle(self) -> int:
        """How many lanes are waiting for work (for tests and operators)."""
        return len(self._idle)


LOCK_WAIT_SECONDS = 2
"""MySQL/MariaDB: the longest a lane's statement waits for a row lock (the server's default
is 50 s; a host's shorter setting stays). A statement waiting holds the locks it has
taken, so a pass stuck behind a transaction left open would hold up claims in turn;
bounded, it fails, lets go, and is retried, while the scheduler ends or reports what held
it (``_core.blockers``)."""
_WAIT = "SET SESSION innodb_lock_wait_timeout = LEAST(@@SESSION.innodb_lock_wait_timeout, :seconds)"
LANE_SETTINGS = {
    # The lock wait: never longer than a host's own setting (an engine's ``connect`` hook).
    "server's level": sa.text(_WAIT),
    # With READ COMMITTED (``read_committed``), in the same statement; the variable's
    # name differs: MariaDB's tx_isolation (transaction_isolation from 11.1), MySQL 8's
    # transaction_isolation (tx_isolation is gone).
    "mariadb": sa.text(
        "SET SESSION innodb_lock_wait_timeout = LEAST(@@SESSION.innodb_lock_wait_timeout, "
        ":seconds), SESSION tx_isolation = 'READ-COMMITTED'"
    ),
    "mysql": sa.text(
        "SET SESSION innodb_lock_wait_timeout = LEAST(@@SESSION.innodb_lock_wait_timeout, "
        ":seconds), SESSION transaction_isolation = 'READ-COMMITTED'"
    ),
}
"""A MySQL/MariaDB lane's one SET: its lock wait, and its isolation level where it may."""


def prepare_lane(conn: Connection) -> None:
    """A lane's own settings, then out of the host's pool (blocking and asyncio lanes alike).

    SQLite's busy timeout goes to 0: writers queue on the lock file instead
    (``_run.writelock``). On psycopg the scheduler's batches travel as arrays,
    and binary arrays need no per-element quoting, which halves the time of
    a large batch, and behind a pooler (PgBouncer) nothing is prepared on
    the server (``_run.poolers``).
    """
    if conn.dialect.name in ("mysql", "mariadb"):
        log_bin, binlog_format = require_utf8mb4(conn)
        server = "mariadb" if getattr(conn.dialect, "is_mariadb", False) else "mysql"
        settings = server if read_committed(log_bin, binlog_format) else "server's level"
        conn.execute(LANE_SETTINGS[settings], {"seconds": LOCK_WAIT_SECONDS})
    elif conn.dialect.name == "sqlite":
        conn.exec_driver_sql("PRAGMA busy_timeout = 0")
    elif conn.dialect.driver == "psycopg":
        from psycopg.types.array import ListBinaryDumper  # noqa: PLC0415

        driver: Any = conn.connection.driver_connection
        driver.adapters.register_dumper(list, ListBinaryDumper)
        never_prepare(conn)
    conn.connection.detach()


def read_committed(log_bin: object, binlog_format: object) -> bool:
    """MySQL/MariaDB: whether a lane runs in READ COMMITTED (unless the binlog forbids it).

    A worker's look is one ``UPDATE ... ORDER BY <its order> LIMIT n``; the
    order is the worker's own (which work ran least lately), so the server
    reads and sorts every due row of the worker's works, locking each. Under
    REPEATABLE READ it also locks the gaps after them, where the scheduler
    inserts the next ticks: at M = 100 works and W = 128 workers the looks
    and the passes queued on each other until lock waits timed out, and a
    third of the ticks ran late by seconds or were missed. Under READ
    COMMITTED there are no gap locks, and each look waits only for the rows
    another look is claiming at that moment (measured: lag p99 0.36 s, no
    tick missed). Correctness never rested on the level: every claim is
    guarded by ``status = QUEUED``.

    With statement-based binary logging the server refuses InnoDB writes
    under READ COMMITTED, so there the server's level stays.
    """
    return not (log_bin and str(binlog_format).upper() == "STATEMENT")


MYSQL_LEAST = (8, 0, 4)
MARIADB_LEAST = (10, 6)
"""The first versions with ``SKIP LOCKED`` and ``JSON_TABLE``, which the statements use."""


def require_utf8mb4(conn: Connection) -> tuple[object, object]:
    """Refuse a MySQL/MariaDB connection that would not store every character as given.

    Over a ``utf8`` (utf8mb3) or ``latin1`` connection the server turns what
    it cannot encode into ``?``, silently: ``report-😀`` and ``report-💩`` both
    become ``report-?`` and then share one work's rows. One query per lane.
    A server older than MariaDB 10.6 or MySQL 8.0.4 is refused here too, by
    the version the dialect read when it connected.
    """
    dialect = conn.dialect
    version = tuple(dialect.server_version_info or ())
    least = MARIADB_LEAST if getattr(dialect, "is_mariadb", False) else MYSQL_LEAST
    if version and version < least:
        raise UnsupportedDatabaseError(
            f"{'MariaDB' if least == MARIADB_LEAST else 'MySQL'} "
            f"{'.'.join(map(str, version))} is too old: worksync_sa needs MariaDB 10.6+ or "
            "MySQL 8.0.4+ (SKIP LOCKED, JSON_TABLE)"
        )
    client, connection, log_bin, binlog_format = conn.exec_driver_sql(
        "SELECT @@character_set_client, @@character_set_connection, @@log_bin, @@binlog_format"
    ).one()
    if client == connection == "utf8mb4":
        return log_bin, binlog_format  # read in the same query, for ``read_committed``
    url = shown_url(conn.engine.url)
    raise UnsupportedDatabaseError(
        f"the connection to {url} uses character set {client!r}, not utf8mb4: names and "
        "errors with characters outside it would be stored as '?' and collide; add "
        "charset=utf8mb4 to the URL (mysql+mysqldb://user@host/db?charset=utf8mb4), or make "
        "the engine with worksync_sa.create_engine, which adds it"
    )


def _open(engine: Engine) -> Connection:
    conn = engine.connect()
    try:
        conn.execution_options(isolation_level="AUTOCOMMIT")
        prepare_lane(conn)
        mark_lane(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _close(conn: Connection) -> None:
    try:
        conn.close()
    except Exception:  # a dead connection: make sure it is dropped, whatever state it is in
        with contextlib.suppress(Exception):
            conn.invalidate()


def _close_all(idle: list[Connection], lock: threading.Lock) -> None:
    with lock:
        lanes, idle[:] = list(idle), []
    for conn in lanes:
        _close(conn)
