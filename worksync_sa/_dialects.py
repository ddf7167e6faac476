"""Everything that differs between MySQL/MariaDB, PostgreSQL and SQLite.

The statement builders that differ by database. They decide, per database:

* how to read the database clock (claims and finishes are stamped by the
  server, so workers with skewed clocks agree);
* how to insert while letting the unique key refuse duplicates;
* how to shift a time by a number of seconds held in a column;
* how to claim one queued row in one statement and learn which row it was,
  and how to recover a bounded batch of rows in one statement.

Which driver errors mean what is ``_dbapi_errors``' business; the statements
that read the same on every database are in ``_statements``.

Correctness never depends on ``SKIP LOCKED`` or ``FOR UPDATE``: every claim
is an UPDATE guarded by ``status = QUEUED`` whose row count is checked. The
lock clauses only spare workers some waiting.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import Insert, Update

from .errors import UnsupportedDatabaseError
from .models import (
    CLOSED_BY_LEASE,
    CLOSED_BY_MISSED,
    CLOSED_BY_SURPLUS,
    DEFAULT_GRACE_SECONDS,
    DEFAULT_LEASE_SECONDS,
    DEFAULT_MAX_ATTEMPTS,
    LEASE_EXPIRED,
    MISSED,
    UTCDateTime,
    WorkStatus,
    as_utc,
)

Family = Literal["mysql", "postgresql", "sqlite"]

_FAMILIES: dict[str, Family] = {
    "mysql": "mysql",
    "mariadb": "mysql",
    "postgresql": "postgresql",
    "sqlite": "sqlite",
}


# Driver error codes, read from the DB-API exception without importing drivers.
# Lock wait timeout, deadlock, and a deadlock on the AUTO-INC lock: an INSERT ... SELECT holds
# the table's AUTO-INC lock to its end (innodb_autoinc_lock_mode 1, MariaDB's default), and InnoDB
# reports a deadlock or timeout on it as "Failed to read auto-increment value" (1467).
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


def clock(family: Family, explicit: bool) -> sa.ColumnElement[datetime]:
    """``:now`` when the caller passes an explicit time (tests), else the database clock."""
    return sa.bindparam("now", type_=UTCDateTime()) if explicit else db_now(family)


def utc_label(family: Family, moment: sa.ColumnElement[datetime]) -> sa.ColumnElement[str]:
    """``moment`` as the default sequence writes it (``YYYY-MM-DD HH:MM:SS``, UTC), in SQL."""
    if family == "mysql":
        return sa.func.date_format(moment, "%Y-%m-%d %H:%i:%s", type_=sa.String())
    if family == "postgresql":
        utc = sa.func.timezone("UTC", moment)
        return sa.func.to_char(utc, "YYYY-MM-DD HH24:MI:SS", type_=sa.String())
    return sa.func.substr(moment, 1, 19, type_=sa.String())  # stored as ISO text


def shifted(
    family: Family, moment: sa.ColumnElement[datetime], seconds: sa.ColumnElement[int]
) -> sa.ColumnElement[datetime]:
    """``moment`` plus ``seconds`` (an integer expression, e.g. a column), in SQL."""
    if family == "mysql":
        return sa.func.timestampadd(
            sa.literal_column("SECOND"), seconds, moment, type_=UTCDateTime()
        )
    if family == "postgresql":
        return sa.type_coerce(
            moment + sa.func.make_interval(0, 0, 0, 0, 0, 0, seconds), UTCDateTime()
        )
    return sa.func.strftime(
        "%Y-%m-%d %H:%M:%f000", moment, sa.func.printf("%+d seconds", seconds), type_=UTCDateTime()
    )


def lease_seconds(table: sa.Table) -> sa.ColumnElement[int]:
    """A row's lease in seconds: its own, or the default for rows written without one."""
    return sa.func.coalesce(table.c.lease_seconds, DEFAULT_LEASE_SECONDS)


def _grace_seconds(table: sa.Table) -> sa.ColumnElement[int]:
    return sa.func.coalesce(table.c.grace_seconds, DEFAULT_GRACE_SECONDS)


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


QUEUED_COLUMNS = (
    "name",
    "sequence",
    "slot",
    "tick_at",
    "lease_seconds",
    "grace_seconds",
    "max_attempts",
    "spec",
)
"""The per-row values of a QUEUED row, in the order bulk inserts take them."""
BATCH_FIELDS = (*QUEUED_COLUMNS, "max_run")
"""What each row of a creation batch carries: its values, then its tick's ``max_run``."""
_BATCH_TYPES: dict[str, sa.types.TypeEngine[Any]] = {"max_run": sa.Integer()}


def _field_type(table: sa.Table, name: str) -> sa.types.TypeEngine[Any]:
    return _BATCH_TYPES[name] if name in _BATCH_TYPES else table.c[name].type


def insert_batch(table: sa.Table, family: Family) -> Insert:
    """Insert a batch of QUEUED rows, each only while its tick has budget left.

    Every row is one slot of one tick, with the tick's ``max_run``. Rows that
    other programs wrote for the same (name, sequence) carry no slot (the Go
    original's, say) and use up the budget first: slot ``s`` is inserted only
    while ``s`` plus their number stays under ``max_run``, so a tick created
    by the original and by us together still has at most ``max_run`` rows.
    Duplicates of an existing slot are skipped by the unique keys.

    The rows arrive in one parameter per field, or one in all, so a batch is
    one statement whatever its size, and nothing is parsed per row:

    * PostgreSQL: ``unnest`` over one array per field;
    * MySQL/MariaDB: ``JSON_TABLE`` over a JSON array of rows (see
      ``json_batch``). Run it under REPEATABLE READ: the count of the other
      rows is then a locking read, which makes it wait for, or deadlock
      with, a concurrent count-then-insert such as the original's;
    * SQLite: ``json_each`` over the same JSON; its writers are serialised.

    ``created_at`` is the database clock.
    """
    if family == "postgresql":
        batch: Any = (
            sa.func.unnest(
                *(
                    sa.bindparam(f"{name}_list", type_=postgresql.ARRAY(_field_type(table, name)))
                    for name in BATCH_FIELDS
                )
            )
            .table_valued(*(sa.column(name, _field_type(table, name)) for name in BATCH_FIELDS))
            .render_derived(name="batch")
        )
        fields = {name: batch.c[name] for name in BATCH_FIELDS}
    elif family == "mysql":
        batch = _JsonBatch(table)
        fields = {name: batch.c[name] for name in BATCH_FIELDS}
    else:
        batch = sa.func.json_each(sa.bindparam("batch", type_=sa.Text())).table_valued("value")
        batch = batch.alias("batch")
        fields = {
            name: sa.func.json_extract(batch.c.value, f"$[{index}]", type_=_field_type(table, name))
            for index, name in enumerate(BATCH_FIELDS)
        }
    held = table.alias("held")
    others = (
        sa.select(sa.func.count())
        .where(
            held.c.name == fields["name"],
            held.c.sequence == fields["sequence"],
            held.c.slot.is_(None),
            sa.or_(held.c.closed_by.is_(None), held.c.closed_by != CLOSED_BY_SURPLUS),
        )
        .scalar_subquery()
    )
    picked = sa.select(
        db_now(family),
        sa.literal(WorkStatus.QUEUED.value, sa.SmallInteger()),
        *(fields[name] for name in QUEUED_COLUMNS),
    ).where(fields["slot"] + others < fields["max_run"])
    picked = picked.select_from(batch)
    if family == "postgresql":  # lock order: concurrent schedulers wait, never deadlock
        picked = picked.order_by(batch.c.name, batch.c.sequence, batch.c.slot)
    statement = insert_ignoring_duplicates(table, family).from_select(
        ["created_at", "status", *QUEUED_COLUMNS], picked
    )
    # SQLAlchemy keeps an INSERT's row count only when asked.
    return statement.execution_options(preserve_rowcount=True)


def json_batch(rows: Sequence[Sequence[Any]]) -> str:
    """MySQL/MariaDB and SQLite: a batch as JSON, rows in ``BATCH_FIELDS`` order.

    Times go as naive UTC text with microseconds, as both store them (a batch
    repeats a few ticks many times, so each is formatted once); text goes as
    UTF-8, not escaped.
    """
    at = BATCH_FIELDS.index("tick_at")
    stamps: dict[datetime, str] = {}
    batch = []
    for row in rows:
        tick = row[at]
        stamp = stamps.get(tick)
        if stamp is None:
            stamp = stamps[tick] = as_utc(tick).strftime("%Y-%m-%d %H:%M:%S.%f")
        batch.append([*row[:at], stamp, *row[at + 1 :]])
    return json.dumps(batch, ensure_ascii=False, separators=(",", ":"))


class _JsonBatch(sa.sql.expression.TableClause):
    """MySQL/MariaDB: the rows of a batch, from one JSON parameter ``:batch``.

    ``JSON_TABLE(:batch, '$[*]' COLUMNS (name VARCHAR(255) PATH '$[0]', ...)) AS batch``:
    each element of the array is one row, its fields in ``BATCH_FIELDS``
    order. One statement and one parameter per batch, whatever its size
    (mysqlclient cannot fold an INSERT ... SELECT into one statement).
    """

    inherit_cache = True

    def __init__(self, table: sa.Table) -> None:
        super().__init__("batch", *(sa.column(n, _field_type(table, n)) for n in BATCH_FIELDS))


@compiles(_JsonBatch, "mysql")
@compiles(_JsonBatch, "mariadb")
def _compile_json_batch(element: _JsonBatch, compiler: SQLCompiler, **kw: Any) -> str:
    dialect = compiler.dialect

    def declared(column: sa.ColumnClause[Any]) -> str:
        kind = column.type.dialect_impl(dialect).compile(dialect)
        # Text compares as the table does (binary), not in the connection's default collation.
        exact = (
            " CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
            if isinstance(column.type, sa.String)
            else ""
        )
        return f"{compiler.preparer.quote(column.name)} {kind}{exact}"

    fields = ", ".join(
        f"{declared(column)} PATH '$[{index}]'" for index, column in enumerate(element.columns)
    )
    batch = compiler.process(sa.bindparam("batch", type_=sa.Text()), **kw)
    return f"JSON_TABLE({batch}, '$[*]' COLUMNS ({fields})) AS batch"


RECOVERY_BATCH = 1000
"""Most rows one recovery statement touches; the next pass takes the rest."""


class _MySQLClaimUpdate(Update):
    """``UPDATE ... ORDER BY <order> LIMIT <n>``, which SQLAlchemy does not build itself.

    Order and limit are fixed per subclass (derived from the table), so the
    compiled form is safe to cache. ORDER BY makes the chosen rows
    deterministic, which statement-based replication needs.
    """

    inherit_cache = True
    order_columns: tuple[str, ...] = ()
    limit = 1


class _ClaimOneOfTick(_MySQLClaimUpdate):
    inherit_cache = True
    # Matches the unique key (name, sequence, slot) plus InnoDB's implicit id,
    # so the scan stops at the first queued row without a filesort.
    order_columns = ("slot", "id")


class _ClaimEarliestDue(_MySQLClaimUpdate):
    inherit_cache = True
    # Matches the status index (status, name, tick_at) plus the implicit id.
    order_columns = ("tick_at", "id")


@compiles(_MySQLClaimUpdate, "mysql")
@compiles(_MySQLClaimUpdate, "mariadb")
def _compile_mysql_claim(element: _MySQLClaimUpdate, compiler: SQLCompiler, **kw: Any) -> str:
    text = compiler.visit_update(element, **kw)
    table = element.table
    assert isinstance(table, sa.Table)
    order = ", ".join(compiler.process(table.c[name], **kw) for name in element.order_columns)
    return f"{text} ORDER BY {order} LIMIT {int(element.limit)}"


def _claim_values(table: sa.Table, family: Family) -> dict[Any, Any]:
    c = table.c
    now = db_now(family)
    return {
        c.status: WorkStatus.RUNNING.value,
        c.started_at: now,
        c.finished_at: sa.null(),
        c.token: sa.bindparam("claim_token", type_=sa.String(32)),
        c.claimed_by: sa.bindparam("worker", type_=sa.String(255)),
        c.error: sa.null(),
        c.closed_by: sa.null(),
        c.attempts: sa.func.coalesce(c.attempts, 0) + 1,
        c.lease_until: shifted(family, now, lease_seconds(table)),
    }


def claim_details(table: sa.Table) -> tuple[sa.Column[Any], ...]:
    """What a claim learns about its row, in :class:`ClaimedRow`'s order after the token."""
    c = table.c
    return (c.id, c.sequence, c.lease_seconds, c.slot, c.tick_at, c.attempts, c.started_at)


def claim_statement(
    table: sa.Table, family: Family, *, due: bool, explicit_now: bool = False
) -> Update:
    """One statement that claims one queued row; it touches at most one row.

    ``due=False`` claims a row of the tick ``(:name, :sequence)``; ``due=True``
    claims the earliest queued row of ``:name`` whose ``tick_at`` is at most
    the database clock (or the bound ``:now`` when ``explicit_now`` is set) and
    no older than the row's grace. Either way the claim starts a lease of the
    row's ``lease_seconds`` on the database clock.

    The row's grace is a per-row condition that narrows no index range, so a
    due claim also carries a floor, ``tick_at >= now - :floor_seconds`` (the
    caller's grace for the work, or the longest grace a row can have): both
    indexes that lead with the work's name then start their range there, and
    a claim never walks the work's finished history, or the index entries
    its earlier claims left behind, whatever plan the statistics pick.

    * MySQL/MariaDB have no ``UPDATE ... RETURNING``: ``id = LAST_INSERT_ID(id)``
      hands the claimed id back in the same round trip, read as ``lastrowid``.
    * PostgreSQL picks the row in a ``FOR UPDATE SKIP LOCKED`` sub-select, so
      racing workers take different rows instead of queueing on one.
    * SQLite serialises writers, so a plain sub-select is enough.
    """
    c = table.c
    if due:
        now = clock(family, explicit_now)
        where: list[sa.ColumnElement[bool]] = [
            c.status == WorkStatus.QUEUED.value,
            c.name == sa.bindparam("work_name", type_=sa.String(255)),
            c.tick_at <= now,
            c.tick_at >= shifted(family, now, -_grace_seconds(table)),
            c.tick_at >= shifted(family, now, -sa.bindparam("floor_seconds", type_=sa.Integer())),
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
        .returning(*claim_details(table))
    )


def _abandoned(table: sa.Table, family: Family, explicit_now: bool) -> Any:
    """The conditions and the assignments of recovery (see ``recovery_statement``)."""
    c = table.c
    now = clock(family, explicit_now)
    running = c.status == WorkStatus.RUNNING.value
    expired = sa.and_(running, c.lease_until.is_not(None), c.lease_until < now)
    missed = sa.and_(
        c.status == WorkStatus.QUEUED.value,
        # Every grace is at least a second: this bound lets the overdue index
        # skip the queued rows of upcoming ticks; the next line is exact.
        c.tick_at < shifted(family, now, sa.literal_column("-1")),
        c.tick_at < shifted(family, now, -_grace_seconds(table)),
    )
    due = sa.or_(expired, missed)  # each branch a range of the overdue index
    requeue = sa.and_(
        running,
        sa.func.coalesce(c.attempts, 0) < sa.func.coalesce(c.max_attempts, DEFAULT_MAX_ATTEMPTS),
    )
    # MySQL evaluates SET left to right with the new values, so status goes last.
    assignments: list[tuple[Any, Any]] = [
        (c.error, sa.case((running, LEASE_EXPIRED), else_=MISSED)),
        (
            c.closed_by,
            sa.case((requeue, sa.null()), (running, CLOSED_BY_LEASE), else_=CLOSED_BY_MISSED),
        ),
        (c.finished_at, sa.case((requeue, sa.null()), else_=now)),
        (c.started_at, sa.case((requeue, sa.null()), else_=c.started_at)),
        (c.token, sa.case((requeue, sa.null()), else_=c.token)),
        (c.claimed_by, sa.case((requeue, sa.null()), else_=c.claimed_by)),
        (c.lease_until, sa.null()),
        (
            c.status,
            sa.case((requeue, WorkStatus.QUEUED.value), else_=WorkStatus.FAILED.value),
        ),
    ]
    return due, assignments


RECOVERED_COLUMNS = ("name", "sequence", "status", "closed_by")
"""What recovery reports of each row it changed (kind: closed_by, or re-queued)."""


def recovery_statement(table: sa.Table, family: Family, *, explicit_now: bool) -> Update:
    """Take back, in one bounded statement, every row the fleet has given up on.

    * RUNNING rows whose lease ran out (the worker is presumed lost): FAILED
      with reason "lease expired", or back to QUEUED for the same tick when the
      row has attempts left (``attempts < max_attempts``).
    * QUEUED rows whose tick is older than its grace: FAILED, "missed".

    At most ``RECOVERY_BATCH`` rows, read through the overdue index, so the
    scan stays within overdue and running rows however large the table grows;
    the rest wait for the next pass. Every condition is in the WHERE clause,
    so a worker finishing or heartbeating at the same moment wins or loses
    cleanly. The changed rows come back (``RECOVERED_COLUMNS``) for events.

    MySQL/MariaDB cannot return rows from an UPDATE: there the batch is
    ``recovery_candidates`` (a read) then this statement over ``:ids``.
    """
    c = table.c
    due, assignments = _abandoned(table, family, explicit_now)
    if family == "mysql":
        ids = c.id.in_(sa.bindparam("ids", expanding=True))
        return sa.update(table).where(ids, due).ordered_values(*assignments)
    # No ORDER BY here: it would make PostgreSQL walk the index in order and
    # filter, instead of reading just the two ranges. Which rows of a batch go
    # first does not matter.
    pick = sa.select(c.id).where(due).limit(RECOVERY_BATCH)
    returned = [c[name] for name in RECOVERED_COLUMNS]
    if family == "postgresql":
        # A materialized CTE runs once. As "id IN (subquery)" the planner may
        # rescan the locking sub-select per row, and each rescan skips the rows
        # this statement already changed: the batch would grow without bound.
        locked = pick.with_for_update(skip_locked=True)
        picked = locked.cte("picked").prefix_with("MATERIALIZED")
        statement = sa.update(table).where(c.id == picked.c.id, due)
    else:
        statement = sa.update(table).where(c.id.in_(pick.scalar_subquery()), due)
    return statement.ordered_values(*assignments).returning(*returned)


def recovery_candidates(table: sa.Table, *, explicit_now: bool) -> sa.Select[Any]:
    """MySQL/MariaDB: the ids (and kinds) of the next batch to recover; a plain read.

    In the overdue index's order, so InnoDB reads only overdue queued rows
    and running rows, never the finished history.
    """
    c = table.c
    due, _ = _abandoned(table, "mysql", explicit_now)
    return (
        sa.select(c.id, c.name, c.sequence, c.status, c.attempts, c.max_attempts)
        .where(due)
        .order_by(c.status, c.tick_at, c.id)
        .limit(RECOVERY_BATCH)
    )
