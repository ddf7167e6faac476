"""What a driver's error means: retry it, the connection is gone, or the schema is missing.

Codes per driver: MySQL/MariaDB error numbers, PostgreSQL SQLSTATEs, and
SQLite's messages (``sqlite3`` exposes its codes only from Python 3.11). The runners
retry transient errors and lost connections; a missing table or column
becomes ``SchemaNotReadyError``.
"""

from __future__ import annotations

import sqlalchemy as sa

_MYSQL_LOCK_WAIT = 1205
_MYSQL_AUTOINC_WAIT = 1467
"""InnoDB's "Failed to read auto-increment value": the wait for the table's AUTO-INC lock
timed out (or deadlocked). An insert holds that lock while it waits for a row lock, so
an insert stuck behind a transaction left open holds up every insert into the table."""
_MYSQL_TRANSIENT = frozenset({_MYSQL_LOCK_WAIT, 1213, _MYSQL_AUTOINC_WAIT})
_MYSQL_MISSING = frozenset({1146, 1054})  # no such table, unknown column
_PG_TRANSIENT = frozenset({"40001", "40P01", "55P03"})  # serialization, deadlock, lock timeout
_PG_MISSING = frozenset({"42P01", "42703"})  # undefined table, undefined column
# Lost or refused connections: server gone, reset, killed, shutting down.
_MYSQL_DISCONNECT = frozenset({1053, 1927, 2002, 2003, 2005, 2006, 2013, 2055, 4031})
_WSREP_NOT_READY = 1047
"""Galera: "WSREP has not yet prepared node for application use" (joining, or cut off)."""
_PG_DISCONNECT_PREFIXES = ("08", "57P01", "57P02", "57P03")
_SQLITE_TRANSIENT = ("database is locked", "database table is locked", "database schema is locked")
_SQLITE_MISSING = ("no such table", "no such column", "has no column named")


def _orig(exc: BaseException) -> BaseException:
    orig = getattr(exc, "orig", None)
    return orig if isinstance(orig, BaseException) else exc


def _mysql_code(orig: BaseException) -> int | None:
    args = getattr(orig, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def _matches(
    exc: BaseException,
    mysql_codes: frozenset[int],
    pg_states: frozenset[str],
    sqlite: tuple[str, ...],
) -> bool:
    orig = _orig(exc)
    if _mysql_code(orig) in mysql_codes or getattr(orig, "sqlstate", None) in pg_states:
        return True
    message = str(orig).lower()
    return type(orig).__module__ == "sqlite3" and any(m in message for m in sqlite)


def is_transient(exc: BaseException) -> bool:
    """True for errors where the same transaction, run again, may succeed."""
    return _matches(exc, _MYSQL_TRANSIENT, _PG_TRANSIENT, _SQLITE_TRANSIENT)


def is_lock_wait(exc: BaseException) -> bool:
    """MySQL/MariaDB: the statement gave up waiting for a lock.

    A row lock (1205), or the table's AUTO-INC lock (1467): another insert
    holds that one while it waits behind a row lock, so both mean a
    transaction holds up our write, and both call for a look at who it is.
    """
    return _mysql_code(_orig(exc)) in (_MYSQL_LOCK_WAIT, _MYSQL_AUTOINC_WAIT)


def is_database_away(exc: BaseException) -> bool:
    """An error saying the database was unreachable or busy, not that the call was wrong."""
    return isinstance(exc, sa.exc.DBAPIError) and (is_disconnect(exc) or is_transient(exc))


def is_disconnect(exc: BaseException) -> bool:
    """True when the connection was lost or could not be made.

    If it was lost after a statement was sent, that statement may or may not
    have committed: callers resolve that before retrying.
    """
    if getattr(exc, "connection_invalidated", False):
        return True
    orig = _orig(exc)
    code = _mysql_code(orig)
    if code in _MYSQL_DISCONNECT:
        return True
    if code == _WSREP_NOT_READY and "WSREP" in str(orig):
        return True  # a Galera node not (or no longer) synced: another connection may reach one
    sqlstate = getattr(orig, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate.startswith(_PG_DISCONNECT_PREFIXES):
        return True
    # psycopg reports a refused or broken connection without a SQLSTATE.
    return (
        type(orig).__module__.startswith("psycopg")
        and type(orig).__name__ == "OperationalError"
        and sqlstate is None
    )


def is_missing_schema(exc: BaseException) -> bool:
    """True when the error says the table or one of its columns does not exist."""
    return _matches(exc, _MYSQL_MISSING, _PG_MISSING, _SQLITE_MISSING)
