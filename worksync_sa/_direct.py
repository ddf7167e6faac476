"""The claim's hot path: a Core statement compiled once, run on the driver's cursor.

A claim is one round trip; on a loopback server that is a few hundred
microseconds, and SQLAlchemy's general execution machinery (parameter
processing, result objects, event dispatch) adds a third again on top. For
the few statements workers run all the time (claim, heartbeat, finish), on
the services' own autocommit lanes, we compile the Core statement once and
hand its SQL string and bound parameters straight to the DB-API cursor.

The SQL is still SQLAlchemy's, and every value is still a bound parameter.
The scheduler's bulk INSERT goes the same way, as the driver's own
``executemany``: SQLAlchemy's generic batching renders a multi-row statement
whose every placeholder psycopg then parses again, a fifth of the speed of
psycopg's pipelined executemany.

The direct path is only taken where it changes nothing observable: on lanes
(autocommit connections the services own, never a host's transaction),
with each column type's own bind conversion applied, and only while the
engine has no cursor-execute listeners and no echo, so a host's tracing and
SQL logging still see every statement. Driver errors are wrapped and lost
connections invalidated exactly as SQLAlchemy does.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.sql.compiler import SQLCompiler

LANE = "worksync_lane"
"""Key in ``Connection.info`` marking a services' autocommit lane."""
_CURSOR = "worksync_cursor"


class Outcome(NamedTuple):
    """What one statement did, whichever way it ran."""

    rowcount: int
    lastrowid: int | None
    rows: list[Any]


@dataclass(frozen=True)
class Compiled:
    """A statement's SQL for one dialect, its constant parameters and parameter order."""

    sql: str
    constants: dict[str, Any]
    order: tuple[str, ...] | None  # None: the driver takes named parameters
    returns_rows: bool
    processors: dict[str, Callable[[Any], Any]]  # the column types' own bind conversions

    @classmethod
    def of(cls, statement: Any, dialect: Dialect, column_keys: list[str] | None = None) -> Compiled:
        """Compile ``statement`` (for an executemany INSERT, name its ``column_keys``)."""
        many = column_keys is not None  # no implicit RETURNING of the new key per row
        compiled = statement.compile(dialect=dialect, column_keys=column_keys, for_executemany=many)
        assert isinstance(compiled, SQLCompiler)
        required = frozenset(name for name, bind in compiled.binds.items() if bind.required)
        constants = dict(compiled.construct_params(dict.fromkeys(required)))
        processors: dict[str, Callable[[Any], Any]] = {}
        for name, bind in compiled.binds.items():
            # The dialect's own version of the type carries its conversion (SQLite: text).
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None and name in required:
                processors[name] = _remembering(processor)
        order = compiled.positiontup
        return cls(
            sql=compiled.string,
            constants={k: v for k, v in constants.items() if k not in required},
            order=tuple(order) if order is not None else None,
            returns_rows=bool(compiled.returning),
            processors=processors,
        )

    @functools.cached_property
    def _pick(self) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
        assert self.order is not None
        if len(self.order) == 1:
            only = self.order[0]
            return lambda merged: (merged[only],)
        return operator.itemgetter(*self.order)

    def arguments(self, params: dict[str, Any]) -> Any:
        """The driver's arguments (a missing one fails in the driver, or here as KeyError)."""
        merged = {**self.constants, **params}
        for name, processor in self.processors.items():
            merged[name] = processor(merged[name])
        return merged if self.order is None else self._pick(merged)


def _remembering(processor: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A conversion that remembers recent results: a batch repeats the same few ticks."""
    seen: dict[Any, Any] = {}

    def convert(value: Any) -> Any:
        try:
            return seen[value]
        except KeyError:
            if len(seen) > 4096:
                seen.clear()
            converted = seen[value] = processor(value)
            return converted
        except TypeError:  # unhashable
            return processor(value)

    return convert


def quiet(engine: Engine) -> bool:
    """True when nobody watches the engine's statements (no cursor listeners, no echo)."""
    dispatch = engine.dispatch
    return not (engine.echo or dispatch.before_cursor_execute or dispatch.after_cursor_execute)


@dataclass(frozen=True)
class Bulk:
    """An executemany INSERT: rows arrive as tuples in a fixed column order.

    Each row becomes the driver's argument tuple with one tuple concatenation
    and one C-level item pick; the column types' conversions run once per
    distinct value (a batch repeats the same few ticks thousands of times).
    """

    sql: str
    constants: tuple[Any, ...]
    pick: Callable[[tuple[Any, ...]], tuple[Any, ...]]
    conversions: tuple[tuple[int, Callable[[Any], Any]], ...]

    @classmethod
    def of(cls, statement: Any, dialect: Dialect, columns: tuple[str, ...]) -> Bulk:
        """``statement``'s bound parameters named ``columns`` take each row's values in order.

        An INSERT ... VALUES names its columns; an INSERT ... SELECT of bound
        parameters (which may repeat one) names the parameters.
        """
        from_select = getattr(statement, "select", None) is not None
        compiled = Compiled.of(statement, dialect, [] if from_select else list(columns))
        order = compiled.order
        if order is None:
            raise TypeError("Bulk needs a driver with positional parameters (MySQL, SQLite)")
        constant_names = [name for name in order if name not in columns]
        constants = tuple(compiled.constants[name] for name in constant_names)
        where = {name: i for i, name in enumerate(constant_names)}
        where.update({name: len(constants) + i for i, name in enumerate(columns)})
        positions = [where[name] for name in order]
        pick = operator.itemgetter(*positions)
        conversions = tuple(
            (columns.index(name), processor)
            for name, processor in compiled.processors.items()
            if name in columns
        )
        return cls(compiled.sql, constants, pick, conversions)

    def arguments(self, rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        constants, pick = self.constants, self.pick
        if len(self.conversions) == 1:  # the usual case: tick_at, in one pass over the rows
            (index, convert), after = self.conversions[0], self.conversions[0][0] + 1
            done = {value: convert(value) for value in {row[index] for row in rows}}
            return [
                pick(constants + row[:index] + (done[row[index]],) + row[after:]) for row in rows
            ]
        for index, convert in self.conversions:
            done = {value: convert(value) for value in {row[index] for row in rows}}
            rows = [(*row[:index], done[row[index]], *row[index + 1 :]) for row in rows]
        return [pick(constants + row) for row in rows]


def run_bulk(
    conn: Connection, info: dict[Any, Any], bulk: Bulk, rows: Sequence[tuple[Any, ...]]
) -> int:
    """``executemany`` on the lane's cursor; returns the driver's total row count.

    mysqlclient folds the rows into multi-row INSERTs and sqlite3 steps one
    prepared statement: each driver's fastest bulk path.
    """
    compiled = Compiled(bulk.sql, {}, None, returns_rows=False, processors={})
    return _on_cursor(conn, info, compiled, bulk.arguments(rows), many=True)[0]


def run_direct(
    conn: Connection, info: dict[Any, Any], compiled: Compiled, params: dict[str, Any]
) -> Outcome:
    """Execute on the lane's DB-API cursor; errors come out as SQLAlchemy's DBAPIError.

    ``info`` is ``conn.info``, which the caller has already looked up.
    """
    return _on_cursor(conn, info, compiled, compiled.arguments(params), many=False)


def _on_cursor(
    conn: Connection, info: dict[Any, Any], compiled: Compiled, arguments: Any, *, many: bool
) -> Outcome:
    dialect = conn.dialect
    # One cursor per lane, kept: creating a cursor per claim costs more than it should.
    cursor = info.get(_CURSOR)
    if cursor is None:
        dbapi_connection: Any = conn.connection.dbapi_connection
        cursor = info[_CURSOR] = dbapi_connection.cursor()
    try:
        if many:
            cursor.executemany(compiled.sql, arguments)
        else:
            cursor.execute(compiled.sql, arguments)
        rows = list(cursor.fetchall()) if compiled.returns_rows else []
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
