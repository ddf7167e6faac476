"""Operators' statements: pauses, the actions ledger, run-now rows and retries.

Pure builders, no I/O, like every ``_sql`` module. The pauses table is read
whole by every scheduler pass (``pauses``): one short statement over a table
holding a row per paused work. The rest runs only when an operator acts, in
the action's own transaction with its ledger entry (``record_action``).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.dml import Delete, Insert, Update

from ..models import (
    CLOSED_BY_PAUSED,
    CLOSED_UNCLAIMED,
    UTCDateTime,
    WorkStatus,
)
from .dialect import Family, clock, db_now

FOREVER = datetime(9999, 12, 31, tzinfo=timezone.utc)
"""The ``:until`` bound of a pause without an end (a typed value: no ``:until IS NULL``,
which PostgreSQL cannot type)."""


def pauses(pause_table: sa.Table) -> sa.Select[Any]:
    """Every pause, ended or not: the pass and ``Operator.paused`` judge them by the clock."""
    c = pause_table.c
    return sa.select(c.name, c.paused_until, c.reason, c.paused_by, c.paused_at).order_by(c.name)


def pause_of(pause_table: sa.Table) -> sa.Select[Any]:
    """One work's pause, if any."""
    c = pause_table.c
    return sa.select(c.name, c.paused_until, c.reason, c.paused_by, c.paused_at).where(
        c.name == sa.bindparam("work_name", type_=sa.String(255))
    )


def delete_pause(pause_table: sa.Table) -> Delete:
    """Forget one work's pause (resume, or before a new pause replaces it)."""
    return sa.delete(pause_table).where(
        pause_table.c.name == sa.bindparam("work_name", type_=sa.String(255))
    )


def insert_pause(pause_table: sa.Table, family: Family) -> Insert:
    """Record a pause, stamped by the database clock."""
    return sa.insert(pause_table).values(
        name=sa.bindparam("work_name", type_=sa.String(255)),
        paused_until=sa.bindparam("until", type_=UTCDateTime()),
        reason=sa.bindparam("reason", type_=sa.String(255)),
        paused_by=sa.bindparam("actor", type_=sa.String(255)),
        paused_at=db_now(family),
    )


def close_paused(table: sa.Table, family: Family, *, explicit_now: bool) -> Update:
    """Close a paused work's queued rows of ticks not yet due, up to :until.

    As a surplus close does: FAILED with ``closed_by = 'paused'``, the reason
    in ``error``, the slot given up (NULL) so that a resumed work's ticks can
    be made again. Only scheduler slots (0 up): an operator's own rows
    (run-now, a retry past grace) have negative slots and are due anyway.
    Running and finished rows, and due ticks, are never touched.
    """
    c = table.c
    now = clock(family, explicit_now)
    return (
        sa.update(table)
        .where(
            c.name == sa.bindparam("work_name", type_=sa.String(255)),
            c.status == WorkStatus.QUEUED.value,
            c.slot >= 0,
            c.tick_at > now,
            c.tick_at <= sa.bindparam("until", type_=UTCDateTime()),
        )
        .values(
            status=WorkStatus.FAILED.value,
            closed_by=CLOSED_BY_PAUSED,
            slot=sa.null(),
            error=sa.bindparam("reason", type_=sa.Text()),
            finished_at=db_now(family),
            lease_until=sa.null(),
        )
    )


def record_action(action_table: sa.Table, family: Family) -> Insert:
    """Append one action to the ledger, stamped by the database clock."""
    return sa.insert(action_table).values(
        acted_at=db_now(family),
        name=sa.bindparam("work_name", type_=sa.String(255)),
        action=sa.bindparam("action", type_=sa.String(16)),
        tick=sa.bindparam("tick", type_=sa.String(255)),
        actor=sa.bindparam("actor", type_=sa.String(255)),
        reason=sa.bindparam("reason", type_=sa.String(255)),
        detail=sa.bindparam("detail", type_=sa.Text()),
    )


def actions_page(action_table: sa.Table, *, one_work: bool) -> sa.Select[Any]:
    """The latest :limit actions, newest first; of :work_name alone when ``one_work``."""
    c = action_table.c
    select = sa.select(
        c.id, c.acted_at, c.name, c.action, c.tick, c.actor, c.reason, c.detail
    ).order_by(c.id.desc())
    if one_work:
        select = select.where(c.name == sa.bindparam("work_name", type_=sa.String(255)))
    return select.limit(sa.bindparam("limit", type_=sa.Integer()))


def latest_policy(table: sa.Table) -> sa.Select[Any]:
    """The latest dated row of :work_name: the settings its rows carry now.

    Read backward along the instant key (name, tick_at, slot): one row.
    """
    c = table.c
    return (
        sa.select(c.tick_at, c.lease_seconds, c.grace_seconds, c.max_attempts, c.spec, c.sequence)
        .where(
            c.name == sa.bindparam("work_name", type_=sa.String(255)),
            c.tick_at.is_not(None),
        )
        .order_by(c.tick_at.desc(), c.slot.desc())
        .limit(1)
    )


def slots_of_tick(table: sa.Table) -> sa.Select[Any]:
    """How many scheduler slots (0 up) one tick of :work_name at :tick holds."""
    c = table.c
    return sa.select(sa.func.count()).where(
        c.name == sa.bindparam("work_name", type_=sa.String(255)),
        c.tick_at == sa.bindparam("tick", type_=UTCDateTime()),
        c.slot >= 0,
    )


def insert_operator_row(table: sa.Table, family: Family) -> Insert:
    """A QUEUED row an operator makes (run-now), created by the database clock."""
    return sa.insert(table).values(
        created_at=db_now(family),
        status=WorkStatus.QUEUED.value,
        name=sa.bindparam("work_name", type_=sa.String(255)),
        sequence=sa.bindparam("label", type_=sa.String(255)),
        slot=sa.bindparam("new_slot", type_=sa.Integer()),
        tick_at=sa.bindparam("tick", type_=UTCDateTime()),
        lease_seconds=sa.bindparam("lease", type_=sa.Integer()),
        grace_seconds=sa.bindparam("grace", type_=sa.Integer()),
        max_attempts=sa.bindparam("tries", type_=sa.Integer()),
        attempts=sa.literal(0, sa.Integer()),
        spec=sa.bindparam("row_spec", type_=sa.String(255)),
    )


_TICK_COLUMNS = (
    "id",
    "sequence",
    "slot",
    "tick_at",
    "status",
    "closed_by",
    "attempts",
    "max_attempts",
    "grace_seconds",
)


def rows_of_tick(table: sa.Table, *, by_label: bool) -> sa.Select[Any]:
    """Every row of one tick of :work_name: by its label (:label) or its instant (:tick)."""
    c = table.c
    where = c.name == sa.bindparam("work_name", type_=sa.String(255))
    if by_label:
        found = c.sequence == sa.bindparam("label", type_=sa.String(255))
    else:
        found = c.tick_at == sa.bindparam("tick", type_=UTCDateTime())
    return sa.select(*(c[name] for name in _TICK_COLUMNS)).where(where, found).order_by(c.id)


def requeue(table: sa.Table, family: Family, *, redate: bool) -> Update:
    """Offer one failed row (:row_id) again: QUEUED, its claim's fields cleared.

    ``attempts`` stays, so the next claim counts on from it; ``max_attempts``
    grows to that next attempt if it must, so recovery's arithmetic still
    holds. Guarded by ``status = FAILED`` with a slot held: a row closed as
    surplus or paused gave its slot up and is not retried, and a row someone
    else already re-queued is left alone (row count 0).

    ``redate`` (a retry past grace): the row also moves to :new_tick (the
    database clock when the retry was taken) and :new_slot (negative): a due
    claim looks back only as far as its floor (the work's grace), so the row
    must be recent for a worker to take it; a negative slot cannot meet a
    scheduler's row at that instant on the unique key.
    """
    c = table.c
    next_attempt = sa.func.coalesce(c.attempts, 0) + 1
    allowed = sa.func.coalesce(c.max_attempts, 1)
    values: dict[Any, Any] = {
        c.status: WorkStatus.QUEUED.value,
        c.token: sa.null(),
        c.claimed_by: sa.null(),
        c.started_at: sa.null(),
        c.finished_at: sa.null(),
        c.lease_until: sa.null(),
        c.closed_by: sa.null(),
        c.max_attempts: sa.case((next_attempt > allowed, next_attempt), else_=allowed),
    }
    if redate:
        values[c.tick_at] = sa.bindparam("new_tick", type_=UTCDateTime())
        values[c.slot] = sa.bindparam("new_slot", type_=sa.Integer())
    return (
        sa.update(table)
        .where(
            c.id == sa.bindparam("row_id", type_=sa.BigInteger()),
            c.status == WorkStatus.FAILED.value,
            c.slot.is_not(None),
            sa.or_(c.closed_by.is_(None), sa.and_(*(c.closed_by != k for k in CLOSED_UNCLAIMED))),
        )
        .values(values)
    )
