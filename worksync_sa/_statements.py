"""Statement builders: pure functions from a table to a Core statement, no I/O.

Each builder returns a statement with named bind parameters, so the repository
can build it once per table and database family and reuse the compiled form.
The statements here have one shape on every database; the pieces that differ
(the database clock, shifting a time by seconds, a label's text) come from
``_dialects`` through the ``family`` a builder takes. The statements whose
shape itself differs (the claim, the batched insert, recovery) are built in
``_dialects``. Unit tests compile both per dialect and read the SQL.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.dml import Update

from ._dialects import Family, claim_details, clock, db_now, lease_seconds, shifted, utc_label
from .models import (
    CLOSED_BY_LEASE,
    CLOSED_BY_MISSED,
    CLOSED_BY_SURPLUS,
    CLOSED_BY_WORKER,
    MISSED,
    StatusCode,
    UTCDateTime,
    WorkStatus,
)
from .sequences import PRUNABLE_KINDS


def queued_left(
    table: sa.Table, family: Family, *, due: bool, explicit_now: bool
) -> sa.Select[Any]:
    """Whether any QUEUED row is left to claim (a read: it takes no write lock).

    ``due=False``: of the tick (:work_name, :tick_sequence). ``due=True``: of
    :work_name, due by the database clock or :now, and no older than the
    claim's floor (:floor_seconds); each row's own grace is left to the claim.
    """
    c = table.c
    where = [c.status == WorkStatus.QUEUED.value, c.name == sa.bindparam("work_name")]
    if due:
        now = sa.bindparam("now", type_=UTCDateTime()) if explicit_now else db_now(family)
        floor = shifted(family, now, -sa.bindparam("floor_seconds", type_=sa.Integer()))
        where.extend((c.tick_at <= now, c.tick_at >= floor))
    else:
        where.append(c.sequence == sa.bindparam("tick_sequence"))
    return sa.select(c.id).where(*where).limit(1)


def claim_by_token(table: sa.Table) -> sa.Select[Any]:
    """A running claim found by its token, to learn whether a claim whose reply was lost landed."""
    c = table.c
    return sa.select(*claim_details(table)).where(
        c.status == WorkStatus.RUNNING.value,
        c.name == sa.bindparam("work_name", type_=sa.String(255)),
        c.token == sa.bindparam("claim_token", type_=sa.String(32)),
    )


def finished_by_claim(table: sa.Table) -> sa.Select[Any]:
    """Whether this claim itself already recorded this outcome (its reply was lost)."""
    c = table.c
    return sa.select(c.id).where(
        c.id == sa.bindparam("claim_id", type_=sa.BigInteger()),
        c.token == sa.bindparam("claim_token", type_=sa.String(32)),
        c.status == sa.bindparam("final_status", type_=StatusCode()),
        c.closed_by == CLOSED_BY_WORKER,
    )


def lease_of(table: sa.Table) -> sa.Select[Any]:
    """A claimed row's lease length (MySQL's claim returns only the id)."""
    c = table.c
    return sa.select(c.lease_seconds).where(c.id == sa.bindparam("claim_id"))


def fenced(table: sa.Table) -> tuple[sa.ColumnElement[bool], ...]:
    """The guard of every write a claim makes after it claimed: its row, its token, RUNNING.

    A row recovered after its lease ran out, finished already, or claimed
    again by someone else fails it, and the write changes nothing.
    """
    c = table.c
    return (
        c.id == sa.bindparam("claim_id", type_=sa.BigInteger()),
        c.token == sa.bindparam("claim_token", type_=sa.String(32)),
        c.status == WorkStatus.RUNNING.value,
    )


def heartbeat(table: sa.Table, family: Family) -> Update:
    """Extend a claim's lease by the row's lease, from the database clock; fenced."""
    return (
        sa.update(table)
        .where(*fenced(table))
        .values({table.c.lease_until: shifted(family, db_now(family), lease_seconds(table))})
    )


def finish(table: sa.Table, family: Family) -> Update:
    """Record SUCCESS or FAILED; fenced. A row count of zero: the row is no longer the claim's."""
    return (
        sa.update(table)
        .where(*fenced(table))
        .values(
            status=sa.bindparam("final_status", type_=StatusCode()),
            finished_at=db_now(family),
            error=sa.bindparam("error_text", type_=sa.Text()),
            closed_by=CLOSED_BY_WORKER,
            lease_until=sa.null(),
        )
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


def latest_ticks(table: sa.Table) -> sa.Select[Any]:
    """The latest tick each work has rows for: where a restarted scheduler resumes."""
    c = table.c
    return sa.select(c.name, sa.func.max(c.tick_at)).group_by(c.name)


def claimed_details(table: sa.Table) -> sa.Select[Any]:
    """What a claim learns about a row it just claimed by id (MySQL's claim returns only the id)."""
    return sa.select(*claim_details(table)).where(table.c.id == sa.bindparam("claim_id"))


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


def ledger_page(table: sa.Table, *, one_work: bool, resume: bool) -> sa.Select[Any]:
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
            where.append(c.tick_at > at)
        else:
            after = sa.bindparam("after_name", type_=sa.String(255))
            where.append(sa.or_(c.tick_at > at, sa.and_(c.tick_at == at, c.name > after)))
    worker_failed = sa.and_(
        c.status == WorkStatus.FAILED.value,
        sa.func.coalesce(c.closed_by, CLOSED_BY_WORKER) == CLOSED_BY_WORKER,
    )
    live = sa.or_(c.closed_by.is_(None), c.closed_by != CLOSED_BY_SURPLUS)
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
            (sa.func.count() - count(c.closed_by == CLOSED_BY_SURPLUS)).label("max_run"),
            sa.func.count().label("created"),
            count(c.status == WorkStatus.QUEUED.value).label("queued"),
            count(c.status == WorkStatus.RUNNING.value).label("running"),
            count(c.status == WorkStatus.SUCCESS.value).label("succeeded"),
            count(worker_failed).label("failed"),
            count(sa.or_(c.closed_by == CLOSED_BY_LEASE, c.attempts > 1)).label("recovered"),
            count(c.closed_by == CLOSED_BY_MISSED).label("missed"),
            count(c.closed_by == CLOSED_BY_SURPLUS).label("surplus"),
            sa.func.min(c.started_at).label("first_start"),
            # One failure's text per tick (the largest, for a stable choice): enough to say why.
            sa.func.max(
                sa.case((sa.or_(worker_failed, c.closed_by == CLOSED_BY_LEASE), c.error))
            ).label("error"),
        )
        .where(*where)
        .group_by(*groups)
        .order_by(*groups)
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


# -- the scheduler's view of its window, and what it changes there --------------------


def window_state(table: sa.Table) -> sa.Select[Any]:
    """What the table holds for the ticks in (:after, :until], per (name, tick, sequence, spec).

    ``slotted``: rows holding a slot (queued, running or finished; surplus rows
    gave theirs up). ``top_queued``: the highest queued slot. ``foreign``: rows
    without a slot that count against the budget (another program's).
    ``touched``: when the group's rows were last created or closed by a
    scheduler, to tell a settings change (older) from a live disagreement.
    """
    c = table.c
    holds = sa.and_(
        c.slot.is_(None), sa.or_(c.closed_by.is_(None), c.closed_by != CLOSED_BY_SURPLUS)
    )
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
        )
        .group_by(c.name, c.tick_at, c.sequence, c.spec)
    )


def unadopted(table: sa.Table) -> sa.Select[Any]:
    """Queued rows another program wrote without a tick time, per (name, sequence)."""
    c = table.c
    return (
        sa.select(c.name, c.sequence, sa.func.count())
        .where(c.status == WorkStatus.QUEUED.value, c.tick_at.is_(None), c.slot.is_(None))
        .group_by(c.name, c.sequence)
    )


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
