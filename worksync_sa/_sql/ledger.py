"""The ledger's statements: a tick's rows and counts, and a page of ticks in index order.

Pages are read in index order (the instant key for one work, the ledger
index for all), resumed from a cursor, so a page costs the same on a table
of any size; rows another program
created without a tick time are read separately and dated from their labels.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from ..models import (
    CLOSED_BY_LEASE,
    CLOSED_BY_MISSED,
    CLOSED_BY_WORKER,
    CLOSED_UNCLAIMED,
    UTCDateTime,
    WorkStatus,
)


def rows_of(table: sa.Table) -> sa.Select[Any]:
    """Every row of one work, or of one tick when :sequence is given, in id order."""
    c = table.c
    name = sa.bindparam("name", type_=sa.String(255))
    sequence = sa.bindparam("sequence", type_=sa.String(255))
    return (
        sa.select(table)
        .where(c.name == name, sa.or_(sequence.is_(None), c.sequence == sequence))
        .order_by(c.id)
    )


def tick_counts(table: sa.Table) -> sa.Select[Any]:
    """Rows per status for each (name, sequence), optionally for one work, ticks in order."""
    c = table.c

    def count(status: WorkStatus) -> sa.ColumnElement[Any]:
        return sa.func.count(sa.case((c.status == status.value, 1)))

    name = sa.bindparam("name", type_=sa.String(255))
    return (
        sa.select(
            c.name,
            c.sequence,
            sa.func.min(c.tick_at).label("tick_at"),
            sa.func.count().label("total"),
            count(WorkStatus.QUEUED).label("queued"),
            count(WorkStatus.RUNNING).label("running"),
            count(WorkStatus.SUCCESS).label("succeeded"),
            count(WorkStatus.FAILED).label("failed"),
        )
        .where(sa.or_(name.is_(None), c.name == name))
        .group_by(c.name, c.sequence)
        .order_by(c.name, sa.func.min(c.tick_at), c.sequence)
    )


def ledger_page(
    table: sa.Table, *, one_work: bool, resume: bool, latest_first: bool = False
) -> sa.Select[Any]:
    """One page of the per-tick ledger: one aggregate row per (tick_at, name).

    Binds :since and :until (the tick range, half-open), :limit, :work_name
    when ``one_work``, and the keyset :after_tick, :after_name when
    ``resume``. Groups are formed in index order, so the database aggregates
    as it reads and a page stops at its LIMIT, with no temporary table and
    no sort of the work's history: for one work by ``tick_at`` alone, read
    along the instant key (name, tick_at, slot), and for every work by
    (tick_at, name) along the ledger index. (MariaDB sorted the whole range
    for every page when a group also held the sequence, and still does when
    one work's groups name the constant ``name`` first.)

    A tick has one sequence, except while a fleet changes its sequence
    function: then the rows of the old label are closed as surplus, and the
    tick shows the label of its live rows.

    ``latest_first`` reads the same groups backward along the same index,
    and resumes before the cursor instead of after it: what just happened,
    in one short read however long the range.
    """
    c = table.c

    def count(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[int]:
        return sa.func.sum(sa.case((condition, 1), else_=0))

    since = sa.bindparam("since", type_=UTCDateTime())
    until = sa.bindparam("until", type_=UTCDateTime())
    where: list[sa.ColumnElement[bool]] = [c.tick_at >= since, c.tick_at < until]
    if one_work:
        where.append(c.name == sa.bindparam("work_name", type_=sa.String(255)))
    if resume:
        at = sa.bindparam("after_tick", type_=UTCDateTime())
        if one_work:
            where.append(c.tick_at < at if latest_first else c.tick_at > at)
        else:
            after = sa.bindparam("after_name", type_=sa.String(255))
            if latest_first:
                where.append(sa.or_(c.tick_at < at, sa.and_(c.tick_at == at, c.name < after)))
            else:
                where.append(sa.or_(c.tick_at > at, sa.and_(c.tick_at == at, c.name > after)))
    worker_failed = sa.and_(
        c.status == WorkStatus.FAILED.value,
        sa.func.coalesce(c.closed_by, CLOSED_BY_WORKER) == CLOSED_BY_WORKER,
    )
    # Closed before any claim (settings changed, or the work paused): no run, no budget.
    unclaimed = sa.or_(*(c.closed_by == k for k in CLOSED_UNCLAIMED))
    live = sa.or_(c.closed_by.is_(None), sa.and_(*(c.closed_by != k for k in CLOSED_UNCLAIMED)))
    sequence = sa.func.coalesce(
        sa.func.max(sa.case((live, c.sequence))), sa.func.max(c.sequence)
    ).label("sequence")
    groups = (c.tick_at,) if one_work else (c.tick_at, c.name)
    name = sa.func.max(c.name).label("name") if one_work else c.name  # one name: the work's
    return (
        sa.select(
            c.tick_at,
            name,
            sequence,
            (sa.func.count() - count(unclaimed)).label("max_run"),
            sa.func.count().label("created"),
            count(c.status == WorkStatus.QUEUED.value).label("queued"),
            count(c.status == WorkStatus.RUNNING.value).label("running"),
            count(c.status == WorkStatus.SUCCESS.value).label("succeeded"),
            count(worker_failed).label("failed"),
            count(sa.or_(c.closed_by == CLOSED_BY_LEASE, c.attempts > 1)).label("recovered"),
            count(c.closed_by == CLOSED_BY_MISSED).label("missed"),
            count(unclaimed).label("surplus"),
            sa.func.min(c.started_at).label("first_start"),
            # One failure's text per tick (the largest, for a stable choice): enough to say why.
            sa.func.max(
                sa.case((sa.or_(worker_failed, c.closed_by == CLOSED_BY_LEASE), c.error))
            ).label("error"),
        )
        .where(*where)
        .group_by(*groups)
        .order_by(*(column.desc() for column in groups) if latest_first else groups)
        .limit(sa.bindparam("limit", type_=sa.Integer()))
    )


def unadopted_ledger(table: sa.Table, *, one_work: bool) -> sa.Select[Any]:
    """The ledger's figures for rows without a tick time (another program's), per (name, sequence).

    The ledger reads their tick from the label. Served by the ledger index's
    ``tick_at IS NULL`` range, which a scheduler planning those ticks empties.
    """
    page = ledger_page(table, one_work=one_work, resume=False)
    c = table.c
    where: list[sa.ColumnElement[bool]] = [c.tick_at.is_(None)]
    if one_work:
        where.append(c.name == sa.bindparam("work_name", type_=sa.String(255)))
    plain = {"sequence": c.sequence, "name": c.name}  # grouped by, not aggregated, here
    columns = [
        plain.get(column.name, column)
        for column in page.selected_columns
        if column.name != "tick_at"
    ]
    return sa.select(*columns).where(*where).group_by(c.name, c.sequence)


def latest_spec(table: sa.Table) -> sa.Select[Any]:
    """The ``spec`` of :work_name's latest dated row that has one: its scheduler's settings.

    Read backward along the instant key ``(name, tick_at, slot)`` and stopped
    at the first row with a spec, so it costs a row or two however long the
    work's history. The ledger reads from it the zone our scheduler labels
    the work's ticks in, which the original's undated labels share.
    """
    c = table.c
    return (
        sa.select(c.spec)
        .where(
            c.name == sa.bindparam("work_name", type_=sa.String(255)),
            c.tick_at.is_not(None),
            c.spec.is_not(None),
        )
        .order_by(c.tick_at.desc())
        .limit(1)
    )
