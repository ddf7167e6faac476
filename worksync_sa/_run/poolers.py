"""Server-side prepared statements, and the connection poolers that break them.

psycopg 3 prepares a statement on the server once a connection has run it a
few times (``prepare_threshold``, 5 by default), and from then on sends only
its name. Behind PgBouncer in transaction (or statement) pooling, the next
transaction may run on another server connection: where the name is unknown
the statement fails (``prepared statement "_pg3_1" does not exist``), and
where another client prepared the same name it runs *that client's*
statement with our parameters. So no connection of ours prepares through a
pooler.

A pooler is recognised by the backend key it hands out: a direct connection
(or one through a TCP proxy such as HAProxy, which relays bytes) knows the
pid of its server process, and ``pg_backend_pid()`` returns the same number;
PgBouncer, Pgpool-II, Odyssey and the like give the client a key of their
own. One query, once per lane. Lanes on a direct connection keep their
prepares, which make a claim about 40% cheaper on PostgreSQL.

The few statements worksync_sa runs on the host's own pooled connections
(migrations, start-up checks) do without prepares while they run; the
connection gets its setting back afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from sqlalchemy.engine import Connection


def _psycopg(conn: Connection) -> Any | None:
    """The psycopg 3 connection under ``conn``, or None for any other driver."""
    if conn.dialect.driver != "psycopg":  # blocking and asyncio alike
        return None
    return conn.connection.driver_connection


def behind_pooler(conn: Connection) -> bool:
    """Whether a pooler stands between ``conn`` and its PostgreSQL server process."""
    driver = _psycopg(conn)
    if driver is None:
        return False
    server_pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    return bool(server_pid != driver.pgconn.backend_pid)


def never_prepare(conn: Connection) -> None:
    """No server-side prepares on this (lane) connection, if it is behind a pooler."""
    driver = _psycopg(conn)
    if driver is not None and behind_pooler(conn):
        driver.prepare_threshold = None


@contextlib.contextmanager
def unprepared(conn: Connection) -> Iterator[Connection]:
    """The host's connection with prepares off while worksync_sa uses it."""
    driver = _psycopg(conn)
    if driver is None:
        yield conn
        return
    kept = driver.prepare_threshold
    driver.prepare_threshold = None
    try:
        yield conn
    finally:
        driver.prepare_threshold = kept
