"""A scheduler pass's statements: create a tick's rows ahead, and repair ticks not yet due.

Rows are created in batches, each row only while its tick has budget left,
and the unique key refuses duplicates without an error, so racing schedulers
never create more than ``max_run`` rows of a tick (the larger ``max_run``
while two disagree). Every value is validated
before it reaches these statements (MySQL's ``INSERT IGNORE`` would turn a
too-long value into a warning). Also here: reading the window's state,
adopting rows another program created, and closing a tick's surplus.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import Insert, Update

from ..models import (
    CLOSED_BY_SURPLUS,
    CLOSED_UNCLAIMED,
    UTCDateTime,
    WorkStatus,
    as_utc,
)
from .dialect import Family, clock, db_now
from .direct import BY_SQLALCHEMY, ISOLATION


def holds_budget(table: Any) -> sa.ColumnElement[bool]:
    """A row without a slot still counts against its tick: not closed unclaimed.

    Rows closed as surplus or paused gave their slot up and hold nothing.
    Spelled as two comparisons, not ``NOT IN``, whose expanding parameter
    the direct path to the cursor does not take.
    """
    c = table.c
    return sa.or_(
        c.closed_by.is_(None), sa.and_(*(c.closed_by != kind for kind in CLOSED_UNCLAIMED))
    )


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
            holds_budget(held),
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
    statement = statement.execution_options(preserve_rowcount=True)
    if family == "mysql":  # whatever the server's default (see above)
        statement = statement.execution_options(**{ISOLATION: "REPEATABLE READ"})
    elif family == "postgresql":
        statement = statement.execution_options(**{BY_SQLALCHEMY: True})
    return statement


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


def latest_ticks(table: sa.Table) -> sa.Select[Any]:
    """The latest tick each work has rows for: where a restarted scheduler resumes.

    Operators' rows (negative slots: run-now, a retry past grace) are dated
    by when the operator acted, not by the cron: they are no resume point.
    """
    c = table.c
    return (
        sa.select(c.name, sa.func.max(c.tick_at))
        .where(sa.or_(c.slot.is_(None), c.slot >= 0))
        .group_by(c.name)
    )


def window_state(table: sa.Table) -> sa.Select[Any]:
    """What the table holds for the ticks in (:after, :until], per (name, tick, sequence, spec).

    ``slotted``: rows holding a slot (queued, running or finished; surplus rows
    gave theirs up). ``top_queued``: the highest queued slot. ``foreign``: rows
    without a slot that count against the budget (another program's).
    ``touched``: when the group's rows were last created or closed by a
    scheduler, to tell a settings change (older) from a live disagreement.
    Rows closed as paused hold no budget, as surplus ones; operators' rows
    (negative slots) are no scheduler's to reconcile, and are left out.
    """
    c = table.c
    holds = sa.and_(c.slot.is_(None), holds_budget(table))
    surplus = c.closed_by == CLOSED_BY_SURPLUS
    return (
        sa.select(
            c.name,
            c.tick_at,
            c.sequence,
            c.spec,
            sa.func.count(c.slot).label("slotted"),
            sa.func.max(sa.case((c.status == WorkStatus.QUEUED.value, c.slot))).label("top_queued"),
            sa.func.sum(sa.case((holds, 1), else_=0)).label("foreign"),
            sa.func.max(sa.case((surplus, c.finished_at), else_=c.created_at)).label("touched"),
        )
        .where(
            c.tick_at > sa.bindparam("after", type_=UTCDateTime()),
            c.tick_at <= sa.bindparam("until", type_=UTCDateTime()),
            sa.or_(c.slot.is_(None), c.slot >= 0),
        )
        .group_by(c.name, c.tick_at, c.sequence, c.spec)
    )


def pass_view(table: sa.Table, pauses: sa.Table | None) -> sa.CompoundSelect[Any]:
    """What a scheduler pass starts from, in one read: its window, undated rows, pauses.

    A pass needs all three every time, so they share a round trip, ``UNION
    ALL`` told apart by ``kind``: 0, ``window_state``'s rows; 1, the queued
    rows another program wrote without a tick time, counted per (name,
    sequence) in ``foreign``; 2, the rows of the ``pauses`` table (None: the
    table has none), ``paused_until`` as ``tick_at``, ``reason`` as
    ``sequence``, ``paused_by`` as ``spec`` and ``paused_at`` as ``touched``.
    With a pass a second, that is two statements a second fewer, a third of a
    steady pass.
    """
    c = table.c
    window = window_state(table).add_columns(sa.literal(0).label("kind"))
    undated = (
        sa.select(
            c.name,
            sa.null().label("tick_at"),
            c.sequence,
            sa.null().label("spec"),
            sa.literal(0).label("slotted"),
            sa.null().label("top_queued"),
            sa.func.count().label("foreign"),
            sa.null().label("touched"),
            sa.literal(1).label("kind"),
        )
        .where(c.status == WorkStatus.QUEUED.value, c.tick_at.is_(None), c.slot.is_(None))
        .group_by(c.name, c.sequence)
    )
    if pauses is None:
        return sa.union_all(window, undated)
    p = pauses.c
    paused = sa.select(
        p.name,
        p.paused_until,
        p.reason,
        p.paused_by,
        sa.literal(0),
        sa.null(),
        sa.literal(0),
        p.paused_at,
        sa.literal(2),
    )
    return sa.union_all(window, undated, paused)


def adopt(table: sa.Table) -> Update:
    """Give another program's rows of a tick its time and the work's policy, as ours have."""
    c = table.c
    return (
        sa.update(table)
        .where(
            c.name == sa.bindparam("work_name", type_=sa.String(255)),
            c.sequence == sa.bindparam("tick_sequence", type_=sa.String(255)),
            c.tick_at.is_(None),
            c.slot.is_(None),
        )
        .values(
            tick_at=sa.bindparam("new_tick", type_=UTCDateTime()),
            lease_seconds=sa.bindparam("new_lease", type_=sa.Integer()),
            grace_seconds=sa.bindparam("new_grace", type_=sa.Integer()),
            max_attempts=sa.bindparam("new_attempts", type_=sa.Integer()),
        )
    )


def close_surplus(table: sa.Table, family: Family, *, explicit_now: bool) -> Update:
    """Close a tick's queued slots from :keep up, unclaimed, while the tick is not yet due.

    They become FAILED with ``closed_by = 'surplus'`` and the reason in
    ``error``, give up their slot (NULL), and record the closer's :closer
    spec. Running and finished rows are never touched, nor due ticks.
    """
    c = table.c
    return (
        sa.update(table)
        .where(
            c.name == sa.bindparam("work_name", type_=sa.String(255)),
            c.tick_at == sa.bindparam("tick", type_=UTCDateTime()),
            c.sequence == sa.bindparam("tick_sequence", type_=sa.String(255)),
            c.status == WorkStatus.QUEUED.value,
            c.slot >= sa.bindparam("keep", type_=sa.Integer()),
            c.tick_at > clock(family, explicit_now),
        )
        .values(
            status=WorkStatus.FAILED.value,
            closed_by=CLOSED_BY_SURPLUS,
            slot=sa.null(),
            error=sa.bindparam("reason", type_=sa.Text()),
            finished_at=db_now(family),
            spec=sa.bindparam("closer", type_=sa.String(255)),
            lease_until=sa.null(),
        )
    )
