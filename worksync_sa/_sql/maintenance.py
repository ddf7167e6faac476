"""Upkeep's statements: take back abandoned rows, close others' missed ticks, prune old ones.

Recovery works in bounded batches (``RECOVERY_BATCH``) so that one pass
never holds many row locks; pruning deletes by id, in batches, and only rows
whose labels a later pass can no longer recreate.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.dml import Update

from ..models import (
    CLOSED_BY_LEASE,
    CLOSED_BY_MISSED,
    DEFAULT_MAX_ATTEMPTS,
    LEASE_EXPIRED,
    MISSED,
    UTCDateTime,
    WorkStatus,
)
from ..sequences import PRUNABLE_KINDS
from .dialect import Family, _grace_seconds, clock, db_now, shifted, utc_label

RECOVERY_BATCH = 1000
"""Most rows one recovery statement touches; the next pass takes the rest."""


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


def prunable_ids(table: sa.Table, family: Family) -> sa.Select[Any]:
    """Up to :batch rows retention may delete (see ``_prunable``), lowest id first.

    A plain (non-locking) read: the delete that follows locks only these rows.
    Primary-key order meets the oldest rows first, as ids grow with time.
    """
    c = table.c
    return (
        sa.select(c.id)
        .where(_prunable(c, family))
        .order_by(c.id)
        .limit(sa.bindparam("batch", type_=sa.Integer()))
    )


def delete_finished(table: sa.Table, family: Family) -> sa.Delete:
    """Delete the listed rows, re-checking that retention may delete them."""
    c = table.c
    return sa.delete(table).where(
        c.id.in_(sa.bindparam("ids", expanding=True)), _prunable(c, family)
    )


def _prunable(
    c: sa.ColumnCollection[str, sa.Column[Any]], family: Family
) -> sa.ColumnElement[bool]:
    """Finished before :cutoff, tick before it too, and holding no budget a later tick could need.

    A row's slot is its tick's budget: deleting it would let a later tick with
    the same label make the slot again and run once more. That cannot happen
    to rows without a slot (surplus, or another program's), nor to labels
    that name one instant, long past (the UTC or local time of the tick, or a
    function declared ``per_tick``). Rows of any other sequence are kept.
    Rows from before ``spec`` existed count as the default's where their
    label is their tick's UTC time.
    """
    cutoff = sa.bindparam("cutoff", type_=UTCDateTime())
    one_instant = sa.or_(
        *(
            c.spec.like(f"sequence={kind}{'' if kind.endswith(':') else ';'}%")
            for kind in PRUNABLE_KINDS
        )
    )
    legacy = sa.and_(c.spec.is_(None), c.sequence == utc_label(family, c.tick_at))
    return sa.and_(
        _finished(c),
        c.finished_at < cutoff,
        sa.or_(c.tick_at.is_(None), c.tick_at < cutoff),
        sa.or_(c.slot.is_(None), one_instant, legacy),
    )


def _finished(c: sa.ColumnCollection[str, sa.Column[Any]]) -> sa.ColumnElement[bool]:
    return c.status.in_((WorkStatus.SUCCESS.value, WorkStatus.FAILED.value))


def foreign_waiting(table: sa.Table, family: Family) -> sa.Select[Any]:
    """Queued rows of other programs no scheduler of ours has dated, whose label reads as a time.

    Each row comes with the database clock, to judge its lateness by.
    """
    c = table.c
    return (
        sa.select(c.id, c.name, c.sequence, c.grace_seconds, db_now(family))
        .where(
            c.status == WorkStatus.QUEUED.value,
            c.tick_at.is_(None),
            c.slot.is_(None),
            c.sequence.like("____-__-__ __:__:__"),
        )
        .order_by(c.id)
        .limit(sa.bindparam("batch", type_=sa.Integer()))
    )


def close_foreign_missed(table: sa.Table, family: Family) -> Update:
    """Close the listed undated queued rows as missed (their lateness was judged from the label)."""
    c = table.c
    return (
        sa.update(table)
        .where(
            c.id.in_(sa.bindparam("ids", expanding=True)),
            c.status == WorkStatus.QUEUED.value,
            c.tick_at.is_(None),
        )
        .values(
            status=WorkStatus.FAILED.value,
            closed_by=CLOSED_BY_MISSED,
            error=MISSED,
            finished_at=db_now(family),
        )
    )
