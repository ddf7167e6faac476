"""Statement builders: pure functions from a table to a Core statement, no I/O.

Each builder returns a statement with named bind parameters, so the repository
can build it once per table and database family and reuse the compiled form.
Dialect-specific pieces (the claim itself, insert-ignore, the database clock)
come from ``_dialects``; everything here is the same SQL on every database.
Unit tests compile these per dialect and read the SQL.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.dml import Insert, Update

from ._dialects import Family, db_now, insert_ignoring_duplicates
from .models import CLOSED_BY_LEASE, CLOSED_BY_MISSED, CLOSED_BY_WORKER, UTCDateTime, WorkStatus


def insert_queued(table: sa.Table, family: Family) -> Insert:
    """Insert QUEUED rows, one per parameter set.

    Parameters: name, sequence, slot, tick_at and the work's policy
    (lease_seconds, grace_seconds, max_attempts). Meant for executemany.
    ``created_at`` is the database clock. Duplicates of an existing
    (name, sequence, slot) are skipped by the unique key. (On PostgreSQL the
    repository uses ``insert_from_arrays`` instead: one statement per batch.)
    """
    statement = insert_ignoring_duplicates(table, family).values(
        status=WorkStatus.QUEUED.value, created_at=db_now(family)
    )
    # SQLAlchemy keeps an INSERT's row count only when asked.
    return statement.execution_options(preserve_rowcount=True)


def queued_left(
    table: sa.Table, family: Family, *, due: bool, explicit_now: bool
) -> sa.Select[Any]:
    """Whether any QUEUED row is left to claim (a read: it takes no write lock).

    ``due=False``: of the tick (:work_name, :tick_sequence). ``due=True``: of
    :work_name, due by the database clock or :now. Grace is left to the claim.
    """
    c = table.c
    where = [c.status == WorkStatus.QUEUED.value, c.name == sa.bindparam("work_name")]
    if due:
        now = sa.bindparam("now", type_=UTCDateTime()) if explicit_now else db_now(family)
        where.append(c.tick_at <= now)
    else:
        where.append(c.sequence == sa.bindparam("tick_sequence"))
    return sa.select(c.id).where(*where).limit(1)


def claim_by_token(table: sa.Table) -> sa.Select[Any]:
    """A running claim found by its token, to learn whether a claim whose reply was lost landed."""
    c = table.c
    return sa.select(c.id, c.sequence, c.lease_seconds).where(
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
        c.status == sa.bindparam("final_status", type_=sa.SmallInteger()),
        c.closed_by == CLOSED_BY_WORKER,
    )


def lease_of(table: sa.Table) -> sa.Select[Any]:
    """A claimed row's lease length (MySQL's claim returns only the id)."""
    c = table.c
    return sa.select(c.lease_seconds).where(c.id == sa.bindparam("claim_id"))


def finish(table: sa.Table, family: Family) -> Update:
    """Record SUCCESS or FAILED, fenced by the claim's id, token and RUNNING status.

    A row count of zero means the row is no longer this claim's.
    """
    c = table.c
    return (
        sa.update(table)
        .where(
            c.id == sa.bindparam("claim_id", type_=sa.BigInteger()),
            c.token == sa.bindparam("claim_token", type_=sa.String(32)),
            c.status == WorkStatus.RUNNING.value,
        )
        .values(
            status=sa.bindparam("final_status", type_=sa.SmallInteger()),
            finished_at=db_now(family),
            error=sa.bindparam("error_text", type_=sa.Text()),
            closed_by=CLOSED_BY_WORKER,
            lease_until=sa.null(),
        )
    )


def prunable_ids(table: sa.Table) -> sa.Select[Any]:
    """Up to :batch finished rows that finished before :cutoff, lowest id first.

    A plain (non-locking) read: the delete that follows locks only these rows.
    Primary-key order meets the oldest rows first, as ids grow with time.
    """
    c = table.c
    return (
        sa.select(c.id)
        .where(_finished(c), c.finished_at < sa.bindparam("cutoff", type_=UTCDateTime()))
        .order_by(c.id)
        .limit(sa.bindparam("batch", type_=sa.Integer()))
    )


def delete_finished(table: sa.Table) -> sa.Delete:
    """Delete the listed rows, re-checking that they are finished and old enough."""
    c = table.c
    return sa.delete(table).where(
        c.id.in_(sa.bindparam("ids", expanding=True)),
        _finished(c),
        c.finished_at < sa.bindparam("cutoff", type_=UTCDateTime()),
    )


def _finished(c: sa.ColumnCollection[str, sa.Column[Any]]) -> sa.ColumnElement[bool]:
    return c.status.in_((WorkStatus.SUCCESS.value, WorkStatus.FAILED.value))


def latest_ticks(table: sa.Table) -> sa.Select[Any]:
    """The latest tick each work has rows for: where a restarted scheduler resumes."""
    c = table.c
    return sa.select(c.name, sa.func.max(c.tick_at)).group_by(c.name)


def claimed_sequence(table: sa.Table) -> sa.Select[Any]:
    """The sequence of a row just claimed by id (MySQL's claim returns only the id)."""
    return sa.select(table.c.sequence).where(table.c.id == sa.bindparam("claim_id"))


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
    """One page of the per-tick ledger: one aggregate row per (tick_at, name, sequence).

    Binds :since and :until (the tick range, half-open), :limit, :work_name
    when ``one_work``, and the keyset :after_tick, :after_name, :after_sequence
    when ``resume``. Rows are read in index order ((name, tick_at) for one
    work, (tick_at, name, sequence) for all), so a page stops at its LIMIT.
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
        name = sa.bindparam("after_name", type_=sa.String(255))
        sequence = sa.bindparam("after_sequence", type_=sa.String(255))
        where.append(
            sa.or_(
                c.tick_at > at,
                sa.and_(c.tick_at == at, c.name > name),
                sa.and_(c.tick_at == at, c.name == name, c.sequence > sequence),
            )
        )
    worker_failed = sa.and_(
        c.status == WorkStatus.FAILED.value,
        sa.func.coalesce(c.closed_by, CLOSED_BY_WORKER) == CLOSED_BY_WORKER,
    )
    return (
        sa.select(
            c.tick_at,
            c.name,
            c.sequence,
            sa.func.coalesce(sa.func.max(c.slot) + 1, sa.func.count()).label("max_run"),
            sa.func.count().label("created"),
            count(c.status == WorkStatus.QUEUED.value).label("queued"),
            count(c.status == WorkStatus.RUNNING.value).label("running"),
            count(c.status == WorkStatus.SUCCESS.value).label("succeeded"),
            count(worker_failed).label("failed"),
            count(sa.or_(c.closed_by == CLOSED_BY_LEASE, c.attempts > 1)).label("recovered"),
            count(c.closed_by == CLOSED_BY_MISSED).label("missed"),
            sa.func.min(c.started_at).label("first_start"),
            # One failure's text per tick (the largest, for a stable choice): enough to say why.
            sa.func.max(
                sa.case((sa.or_(worker_failed, c.closed_by == CLOSED_BY_LEASE), c.error))
            ).label("error"),
        )
        .where(*where)
        .group_by(c.tick_at, c.name, c.sequence)
        .order_by(c.tick_at, c.name, c.sequence)
        .limit(sa.bindparam("limit", type_=sa.Integer()))
    )
