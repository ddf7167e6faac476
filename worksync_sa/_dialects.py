"""Everything that differs between MySQL/MariaDB, PostgreSQL and SQLite.

This is the only module that looks at the dialect. It decides, per database:

* how to read the database clock (claims and finishes are stamped by the
  server, so workers with skewed clocks agree);
* how to insert while letting the unique key refuse duplicates;
* how to claim one queued row in one statement and learn which row it was;
* which driver errors are transient (retry) or mean the schema is missing.

Correctness never depends on ``SKIP LOCKED`` or ``FOR UPDATE``: every claim
is an UPDATE guarded by ``status = QUEUED`` whose row count is checked. The
lock clauses only spare workers some waiting.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import Insert, Update

from .errors import UnsupportedDatabaseError
from .models import UTCDateTime, WorkStatus

Family = Literal["mysql", "postgresql", "sqlite"]

_FAMILIES: dict[str, Family] = {
    "mysql": "mysql",
    "mariadb": "mysql",
    "postgresql": "postgresql",
    "sqlite": "sqlite",
}

# Driver error codes, read from the DB-API exception without importing drivers.
_MYSQL_TRANSIENT = frozenset({1205, 1213})  # lock wait timeout, deadlock
_MYSQL_MISSING = frozenset({1146, 1054})  # no such table, unknown column
_PG_TRANSIENT = frozenset({"40001", "40P01", "55P03"})  # serialization, deadlock, lock timeout
_PG_MISSING = frozenset({"42P01", "42703"})  # undefined table, undefined column
_SQLITE_TRANSIENT = ("database is locked", "database table is locked", "database schema is locked")
_SQLITE_MISSING = ("no such table", "no such column", "has no column named")


def family_of(dialect: Dialect) -> Family:
    """Which of the three supported families a dialect belongs to."""
    try:
        return _FAMILIES[dialect.name]
    except KeyError:
        raise UnsupportedDatabaseError(
            f"database {dialect.name!r} is not supported; use MySQL/MariaDB, PostgreSQL or SQLite"
        ) from None


def db_now(family: Family) -> sa.ColumnElement[datetime]:
    """The database server's current UTC time, microseconds where the server has them."""
    if family == "mysql":
        # The precision must be a literal: MySQL does not accept a placeholder there.
        return sa.func.utc_timestamp(sa.literal_column("6"), type_=UTCDateTime())
    if family == "postgresql":
        return sa.func.statement_timestamp(type_=UTCDateTime())
    # SQLite's %f is SS.SSS; pad to the six digits SQLAlchemy stores, so the
    # text compares correctly with the datetimes it writes.
    return sa.func.strftime("%Y-%m-%d %H:%M:%f000", "now", type_=UTCDateTime())


def insert_ignoring_duplicates(table: sa.Table, family: Family) -> Insert:
    """An INSERT that the unique key may refuse row by row, without an error.

    MySQL's ``INSERT IGNORE`` would also turn other errors (a too-long value)
    into warnings, so every value is validated before it gets here.
    """
    if family == "mysql":
        return sa.insert(table).prefix_with("IGNORE")
    if family == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()


def counts_inserts_by_returning(family: Family) -> bool:
    """psycopg reports rowcount -1 for executemany, so PostgreSQL counts RETURNING rows."""
    return family == "postgresql"


class _MySQLClaimUpdate(Update):
    """``UPDATE ... ORDER BY <order> LIMIT 1``, which SQLAlchemy does not build itself.

    The order is fixed per subclass (derived from the table), so the compiled
    form is safe to cache. ORDER BY makes the chosen row deterministic, which
    statement-based replication needs.
    """

    inherit_cache = True
    order_columns: tuple[str, ...] = ()


class _ClaimOneOfTick(_MySQLClaimUpdate):
    inherit_cache = True
    # Matches the unique key (name, sequence, slot) plus InnoDB's implicit id,
    # so the scan stops at the first queued row without a filesort.
    order_columns = ("slot", "id")


class _ClaimEarliestDue(_MySQLClaimUpdate):
    inherit_cache = True
    # Matches the due index (name, status, tick_at) plus the implicit id.
    order_columns = ("tick_at", "id")


@compiles(_MySQLClaimUpdate, "mysql")
@compiles(_MySQLClaimUpdate, "mariadb")
def _compile_mysql_claim(element: _MySQLClaimUpdate, compiler: SQLCompiler, **kw: Any) -> str:
    text = compiler.visit_update(element, **kw)
    table = element.table
    assert isinstance(table, sa.Table)
    order = ", ".join(compiler.process(table.c[name], **kw) for name in element.order_columns)
    return f"{text} ORDER BY {order} LIMIT 1"


def _claim_values(table: sa.Table, family: Family) -> dict[Any, Any]:
    return {
        table.c.status: WorkStatus.RUNNING.value,
        table.c.started_at: db_now(family),
        table.c.finished_at: sa.null(),
        table.c.token: sa.bindparam("claim_token", type_=sa.String(32)),
        table.c.claimed_by: sa.bindparam("worker", type_=sa.String(255)),
        table.c.error: sa.null(),
    }


def claim_statement(
    table: sa.Table, family: Family, *, due: bool, explicit_now: bool = False
) -> Update:
    """One statement that claims one queued row; it touches at most one row.

    ``due=False`` claims a row of the tick ``(:name, :sequence)``; ``due=True``
    claims the earliest queued row of ``:name`` whose ``tick_at`` is at most
    the database clock, or the bound ``:now`` when ``explicit_now`` is set.

    * MySQL/MariaDB have no ``UPDATE ... RETURNING``: ``id = LAST_INSERT_ID(id)``
      hands the claimed id back in the same round trip, read as ``lastrowid``.
    * PostgreSQL picks the row in a ``FOR UPDATE SKIP LOCKED`` sub-select, so
      racing workers take different rows instead of queueing on one.
    * SQLite serialises writers, so a plain sub-select is enough.
    """
    c = table.c
    if due:
        now = sa.bindparam("now", type_=UTCDateTime()) if explicit_now else db_now(family)
        where: list[sa.ColumnElement[bool]] = [
            c.name == sa.bindparam("work_name", type_=sa.String(255)),
            c.status == WorkStatus.QUEUED.value,
            c.tick_at <= now,
        ]
        order: tuple[sa.ColumnElement[Any], ...] = (c.tick_at, c.id)
    else:
        where = [
            c.name == sa.bindparam("work_name", type_=sa.String(255)),
            c.sequence == sa.bindparam("tick_sequence", type_=sa.String(255)),
            c.status == WorkStatus.QUEUED.value,
        ]
        order = (c.slot, c.id)
    values = _claim_values(table, family)
    if family == "mysql":
        cls = _ClaimEarliestDue if due else _ClaimOneOfTick
        values[c.id] = sa.func.last_insert_id(c.id)
        return cls(table).where(*where).values(values)
    pick = sa.select(c.id).where(*where).order_by(*order).limit(1)
    if family == "postgresql":
        pick = pick.with_for_update(skip_locked=True)
    return (
        sa.update(table)
        # The outer status check keeps the claim correct even where the
        # sub-select's lock clause is ignored.
        .where(c.id == pick.scalar_subquery(), c.status == WorkStatus.QUEUED.value)
        .values(values)
        .returning(c.id, c.sequence)
    )


def claim_returns_rows(family: Family) -> bool:
    """False where the claimed id comes back as ``lastrowid`` (MySQL/MariaDB)."""
    return family != "mysql"


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


def is_missing_schema(exc: BaseException) -> bool:
    """True when the error says the table or one of its columns does not exist."""
    return _matches(exc, _MYSQL_MISSING, _PG_MISSING, _SQLITE_MISSING)
