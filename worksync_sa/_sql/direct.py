"""The one way the repositories run a statement, and the claim's hot path within it.

Every statement a repository runs goes through :func:`execute`, so how a
statement reaches the database is decided in one place: straight to the
cursor or through SQLAlchemy, and under which isolation level where a
statement needs one (an execution option, :data:`ISOLATION`, set by the
statement's builder where a dialect needs it).

A claim is one round trip; on a loopback server that is a few hundred
microseconds, and SQLAlchemy's general execution machinery (parameter
processing, result objects, event dispatch) adds a third again on top. For
the few statements workers run all the time (claim, heartbeat, finish), on
the services' own autocommit lanes, we compile the Core statement once and
hand its SQL string and bound parameters straight to the DB-API cursor.

The SQL is still SQLAlchemy's, and every value is still a bound parameter.
The scheduler's batched INSERT on MySQL/MariaDB and SQLite goes the same way:
one statement with one JSON parameter per batch. Reads (SELECTs) always go
through SQLAlchemy, whose rows carry column names.

The direct path is only taken where a host would see no difference in its
statements: on lanes (autocommit connections the services own and have
detached from the host's pool, so never a host's transaction),
with each column type's own bind conversion applied, and only while the
engine has no cursor-execute listeners and no echo, so a host's tracing and
SQL logging still see every statement. Driver errors are wrapped as
SQLAlchemy's ``DBAPIError`` and a lost connection is invalidated, but
``handle_error`` listeners are not called and the pool is not marked stale.
"""

from __future__ import annotations

import functools
import operator
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.sql.compiler import SQLCompiler

_LANES: dict[int, weakref.ref[Connection]] = {}
"""The services' autocommit lanes, by identity, held weakly. Kept here, not marked on
the connection: a mark in ``Connection.info`` would live on in the pool's record of
it, where a host's later checkout of the same connection would find it. (A dict of
weak references rather than a ``WeakSet``: a claim asks on every statement, and
this lookup makes no new reference.)"""
_CURSOR = "worksync_cursor"


def mark_lane(conn: Connection) -> None:
    """Record ``conn`` as a lane: a connection of the services' own, in autocommit."""
    key = id(conn)
    _LANES[key] = weakref.ref(conn, lambda gone: _forget(key, gone))


def _forget(key: int, gone: weakref.ref[Connection]) -> None:
    if _LANES.get(key) is gone:
        del _LANES[key]


def is_lane(conn: Connection) -> bool:
    found = _LANES.get(id(conn))
    return found is not None and found() is conn


def in_others_transaction(conn: Connection) -> bool:
    """True when ``conn`` is no lane and its driver connection is inside a transaction.

    Only a pool that shares one connection among all its users (``sqlite://``,
    see ``_run.lanes``) hands a service the very connection a host is using,
    transaction and all; a read there would see the host's uncommitted rows as
    committed, and the runner's commit would commit them. Asked before
    anything runs on ``conn``, so any transaction open on it is the host's.
    Drivers that do not say (no ``in_transaction``) are taken as not in one.
    """
    if is_lane(conn):
        return False
    return bool(getattr(conn.connection.driver_connection, "in_transaction", False))


ISOLATION = "worksync_isolation"
"""Execution option: the isolation level a statement must run under on a lane.

A lane is in autocommit, so ``SET TRANSACTION ISOLATION LEVEL`` applies to the
statement's own transaction and no further. In a host's transaction the
host's level stands: a level cannot change once a transaction has begun."""
BY_SQLALCHEMY = "worksync_by_sqlalchemy"
"""Execution option: never take the direct path. PostgreSQL's batched INSERT binds
one array per column, which SQLAlchemy's ARRAY type adapts; the direct path has
no reason to repeat that for a statement run once a pass."""
_LEVELS = frozenset({"READ UNCOMMITTED", "READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE"})


def _by_sqlalchemy(statement: Any) -> bool:
    return bool(statement.get_execution_options().get(BY_SQLALCHEMY))


def isolation_sql(statement: Any) -> str | None:
    """The ``SET TRANSACTION`` a statement asks for on a lane, or None."""
    level = statement.get_execution_options().get(ISOLATION)
    if level is None:
        return None
    if level not in _LEVELS:  # the level is SQL text: only the four the standard names
        raise ValueError(f"unknown isolation level {level!r}")
    return f"SET TRANSACTION ISOLATION LEVEL {level}"


class Outcome(NamedTuple):
    """What one statement did, whichever way it ran, read as a SQLAlchemy result reads."""

    rowcount: int
    lastrowid: int | None
    rows: list[Any]

    def first(self) -> Any | None:
        """The first row, or None."""
        return self.rows[0] if self.rows else None

    def one(self) -> Any:
        """The only row; an error unless there is exactly one."""
        if len(self.rows) != 1:
            raise (
                sa.exc.NoResultFound("no row")
                if not self.rows
                else sa.exc.MultipleResultsFound(f"{len(self.rows)} rows where one was expected")
            )
        return self.rows[0]

    def one_or_none(self) -> Any | None:
        """The only row, or None; an error for more than one."""
        return self.one() if self.rows else None

    def scalars(self) -> list[Any]:
        """The first column of every row."""
        return [row[0] for row in self.rows]

    def scalar_one(self) -> Any:
        """The first column of the only row."""
        return self.one()[0]

    def scalar_one_or_none(self) -> Any | None:
        """The first column of the only row, or None when there is none."""
        row = self.one_or_none()
        return None if row is None else row[0]


@dataclass(frozen=True)
class Compiled:
    """A statement's SQL for one dialect, its constant parameters and parameter order."""

    sql: str
    constants: dict[str, Any]
    order: tuple[str, ...] | None  # None: the driver takes named parameters
    returns_rows: bool
    direct: bool  # a write that may skip SQLAlchemy (reads never do: their rows need names)
    isolation: str | None  # the SET TRANSACTION the statement runs after, on a lane
    processors: dict[str, Callable[[Any], Any]]  # the column types' own bind conversions
    results: tuple[Callable[[Any], Any] | None, ...]  # and their result conversions, per column

    @classmethod
    def of(cls, statement: Any, dialect: Dialect) -> Compiled:
        """Compile ``statement`` for ``dialect``, once."""
        compiled = statement.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)
        required = frozenset(name for name, bind in compiled.binds.items() if bind.required)
        constants = dict(compiled.construct_params(dict.fromkeys(required)))
        processors: dict[str, Callable[[Any], Any]] = {}
        for name, bind in compiled.binds.items():
            # The dialect's own version of the type carries its conversion (SQLite: text).
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None and name in required:
                processors[name] = processor
        order = compiled.positiontup
        results: tuple[Callable[[Any], Any] | None, ...] = ()
        if compiled.returning:
            # What the driver returns raw (SQLite's datetimes are text) converted as a
            # result object would: the column types' own result processors.
            results = tuple(
                column.type.dialect_impl(dialect).result_processor(dialect, None)
                for column in statement.exported_columns
            )
            if not any(results):
                results = ()
        return cls(
            sql=compiled.string,
            constants={k: v for k, v in constants.items() if k not in required},
            order=tuple(order) if order is not None else None,
            returns_rows=bool(compiled.returning),
            # An IN list is rendered per call (post-compile): only SQLAlchemy does that.
            direct=bool(statement.is_dml)
            and not _by_sqlalchemy(statement)
            and not compiled.post_compile_params
            and not compiled.literal_execute_params,
            isolation=isolation_sql(statement),
            processors=processors,
            results=results,
        )

    @functools.cached_property
    def _pick(self) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
        assert self.order is not None
        if len(self.order) == 1:
            only = self.order[0]
            return lambda merged: (merged[only],)
        return operator.itemgetter(*self.order)

    def converted(self, row: Any) -> tuple[Any, ...]:
        """One returned row with each column's result conversion applied."""
        return tuple(
            value if value is None or convert is None else convert(value)
            for value, convert in zip(row, self.results, strict=True)
        )

    def arguments(self, params: dict[str, Any]) -> Any:
        """The driver's arguments (a missing one fails in the driver, or here as KeyError)."""
        merged = {**self.constants, **params}
        for name, processor in self.processors.items():
            merged[name] = processor(merged[name])
        return merged if self.order is None else self._pick(merged)


def quiet(engine: Engine) -> bool:
    """True when nobody watches the engine's statements (no cursor listeners, no echo)."""
    dispatch = engine.dispatch
    return not (engine.echo or dispatch.before_cursor_execute or dispatch.after_cursor_execute)


_COMPILED: dict[tuple[int, str], tuple[Any, Compiled]] = {}
"""Each statement's compiled form per dialect, by the statement's identity (the value
keeps the statement alive, so an id is never reused for another)."""


Params = dict[str, Any] | list[dict[str, Any]]
"""One statement's values, or a list of them to run it once per item (executemany)."""


def execute(conn: Connection, statement: Any, params: Params | None = None) -> Outcome:
    """Execute ``statement``: straight on the lane's cursor when it may, else by SQLAlchemy.

    The repositories run every statement through here and never choose a
    path themselves. The direct path is taken for single writes on a lane
    while nobody watches the engine's statements; errors come out as SQLAlchemy's
    ``DBAPIError``, and a lost connection is invalidated (see the module's
    docstring for what differs from SQLAlchemy's own handling).
    """
    params = {} if params is None else params
    dialect = conn.dialect
    found = _LANES.get(id(conn))
    if found is None or found() is not conn:
        return _through_sqlalchemy(conn, statement, params, lane=False)
    if not statement.is_dml or isinstance(params, list) or not quiet(conn.engine):
        return _through_sqlalchemy(conn, statement, params, lane=True)
    key = (id(statement), dialect.name)
    entry = _COMPILED.get(key)
    if entry is None:
        entry = _COMPILED[key] = (statement, Compiled.of(statement, dialect))
    compiled = entry[1]
    if not compiled.direct:
        return _through_sqlalchemy(conn, statement, params, lane=True)
    arguments = compiled.arguments(params)
    info = conn.info
    # One cursor per lane, kept: creating a cursor per claim costs more than it should.
    cursor = info.get(_CURSOR)
    if cursor is None:
        dbapi_connection: Any = conn.connection.dbapi_connection
        cursor = info[_CURSOR] = dbapi_connection.cursor()
    try:
        if compiled.isolation is not None:
            cursor.execute(compiled.isolation)
        cursor.execute(compiled.sql, arguments)
        rows = list(cursor.fetchall()) if compiled.returns_rows else []
        if rows and compiled.results:
            rows = [compiled.converted(row) for row in rows]
        return Outcome(cursor.rowcount, getattr(cursor, "lastrowid", None), rows)
    except dialect.loaded_dbapi.Error as exc:
        info.pop(_CURSOR, None)
        lost = dialect.is_disconnect(exc, conn.connection.dbapi_connection, cursor)
        if lost:
            conn.invalidate(exc)
        raise sa.exc.DBAPIError.instance(
            compiled.sql,
            arguments,
            exc,
            dialect.loaded_dbapi.Error,
            connection_invalidated=lost,
            dialect=dialect,
        ) from exc


def _through_sqlalchemy(conn: Connection, statement: Any, params: Params, *, lane: bool) -> Outcome:
    if lane:
        isolation = isolation_sql(statement)
        if isolation is not None:
            conn.exec_driver_sql(isolation)
    result = conn.execute(statement, params)
    rows: list[Any] = list(result.all()) if result.returns_rows else []
    lastrowid = result.lastrowid if conn.dialect.name in ("mysql", "mariadb") else None
    return Outcome(result.rowcount, lastrowid, rows)
