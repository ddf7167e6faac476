"""A claim's statements: take one queued row, and every later write fenced by its token.

The claim is one statement on every database: an UPDATE guarded by
``status = QUEUED`` whose row count is checked, so at most ``max_run`` claims
of a tick can succeed whatever the concurrency. Its shape differs by
database in how it picks the row and learns which one it took (``RETURNING``
on PostgreSQL and SQLite, ``LAST_INSERT_ID(id)`` read back as ``lastrowid``
on MySQL/MariaDB). A worker's look at several works is one statement too;
on MariaDB it is an INSERT whose ``ON DUPLICATE KEY UPDATE`` is the claim, so
that it can return its rows (``claim_batch_returning``), its every assignment
guarded by the status as well. Correctness never depends on ``SKIP LOCKED``
or ``FOR UPDATE``: the lock clauses only spare workers some waiting.

After the claim, the heartbeat and the finish carry the claim's id and token
(``fenced``), so a worker whose lease was taken back can no longer write.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import Insert, Update

from ..models import (
    CLOSED_BY_WORKER,
    StatusCode,
    UTCDateTime,
    WorkStatus,
)
from .dialect import Family, _grace_seconds, clock, db_now, lease_seconds, shifted


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


class _ClaimDueBatch(_MySQLClaimUpdate):
    """Up to ``:batch_limit`` rows in ``batch_order`` (see ``claim_batch_statement``).

    The order is derived from the batch's shape alone, as is its WHERE
    clause, so statements of different shapes never share a cache key.
    """

    inherit_cache = True
    batch_order: tuple[sa.ColumnElement[Any], ...] = ()


@compiles(_MySQLClaimUpdate, "mysql")
@compiles(_MySQLClaimUpdate, "mariadb")
def _compile_mysql_claim(element: _MySQLClaimUpdate, compiler: SQLCompiler, **kw: Any) -> str:
    text = compiler.visit_update(element, **kw)
    table = element.table
    assert isinstance(table, sa.Table)
    order = ", ".join(compiler.process(table.c[name], **kw) for name in element.order_columns)
    if isinstance(element, _ClaimDueBatch):
        order = ", ".join(compiler.process(item, **kw) for item in element.batch_order)
        limit = compiler.process(sa.bindparam("batch_limit", type_=sa.Integer()), **kw)
        return f"{text} ORDER BY {order} LIMIT {limit}"
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

    ``due=False`` claims a row of the tick ``(:work_name, :tick_sequence)``;
    ``due=True`` claims the earliest queued row of ``:work_name`` whose ``tick_at`` is at most
    the database clock (or the bound ``:now`` when ``explicit_now`` is set) and
    no older than the row's grace. Either way the claim starts a lease of the
    row's ``lease_seconds`` on the database clock.

    The row's grace is a per-row condition that narrows no index range, so a
    due claim also carries a floor, ``tick_at >= now - :floor_seconds`` (the
    caller's grace for the work, or the longest grace a row can have): both
    indexes that hold a work's rows in tick order (the instant key and the
    status index) then start their range there, and
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


def _batch_where(
    table: sa.FromClause, family: Family, groups: tuple[int, ...], *, explicit_now: bool
) -> list[sa.ColumnElement[bool]]:
    """The due slice of a worker's works: each group of works with its own floor.

    ``groups`` gives how many works share each floor (``:work_<g>_<i>``,
    ``:floor_<g>``): a worker's works usually share one grace, so one group,
    one ``name IN (...)`` and one range. Each name is its own bound parameter
    (not an expanding IN), so the statement compiles once per worker and runs
    straight on the cursor. The range of every name then starts at its
    floor on the status index ``(status, name, tick_at)``, whatever the
    statistics say: a claim never walks the history.
    """
    c = table.c
    now = clock(family, explicit_now)

    def names(g: int, size: int) -> list[Any]:
        return [sa.bindparam(f"work_{g}_{i}", type_=sa.String(255)) for i in range(size)]

    ranges = [
        sa.and_(
            c.name.in_(names(g, size)),
            c.tick_at >= shifted(family, now, -sa.bindparam(f"floor_{g}", type_=sa.Integer())),
        )
        for g, size in enumerate(groups)
    ]
    return [
        c.status == WorkStatus.QUEUED.value,
        ranges[0] if len(ranges) == 1 else sa.or_(*ranges),
        c.tick_at <= now,
        c.tick_at >= shifted(family, now, -_grace_seconds(table)),
    ]


def _places(table: sa.FromClause, groups: tuple[int, ...]) -> sa.ColumnElement[int]:
    """Each work's place in the worker's order this look (``:rank_<g>_<i>``), by name."""
    whens = [
        (
            table.c.name == sa.bindparam(f"work_{g}_{i}", type_=sa.String(255)),
            sa.bindparam(f"rank_{g}_{i}", type_=sa.Integer()),
        )
        for g, size in enumerate(groups)
        for i in range(size)
    ]
    return sa.case(*whens, else_=sum(groups))


def claim_batch_statement(
    table: sa.Table, family: Family, groups: tuple[int, ...], *, explicit_now: bool = False
) -> Update:
    """One statement that claims up to ``:batch_limit`` due rows among several works.

    A worker looks once for all its works, asking for as many rows as it has
    free runners, instead of one UPDATE per work: a fleet's statements then
    grow with its workers and its claims, not with workers times works.

    Every row taken gets the same token, ``:claim_token``, the batch's:
    each claim's later writes are fenced by its id and that token
    (``fenced``), so they stay its own. Correctness is the outer guard's,
    ``status = QUEUED``, as for a single claim: an UPDATE takes a row only
    while it is queued, so a tick never runs more than its rows.

    Fairness between works: rows are taken by each work's place
    ``:rank_<g>_<i>`` (the worker's ``Shares``: the work that used the least
    runner time lately first, so slow or hung works cannot starve a quick
    one), then oldest tick first, a tick's slots in order (its shards run
    together). Within one look the first work may take every free runner;
    its claims are charged to it, so at the next look another goes first.

    * MySQL/MariaDB: ``UPDATE ... ORDER BY ... LIMIT``; the caller reads the
      rows back by the token (``batch_by_token``), one read, only when the
      UPDATE took any.
    * PostgreSQL: the rows are picked in a ``FOR UPDATE SKIP LOCKED``
      sub-select, ``RETURNING`` them.
    * SQLite: ``UPDATE ... WHERE id IN (SELECT ... LIMIT) RETURNING``.
    """
    c = table.c
    where = _batch_where(table, family, groups, explicit_now=explicit_now)
    values = _claim_values(table, family)
    order = (_places(table, groups), c.tick_at, c.slot, c.id)
    if family == "mysql":  # the status index forced, as in ``claim_batch_returning``
        update = _ClaimDueBatch(table).where(*where).values(values)
        update.batch_order = order
        hint = "FORCE INDEX (" + status_index(table) + ")"
        for dialect_name in ("mysql", "mariadb"):
            update = update.with_hint(hint, dialect_name=dialect_name)
        return update
    limit = sa.bindparam("batch_limit", type_=sa.Integer())
    pick = sa.select(c.id).where(*where).order_by(*order).limit(limit)
    taken: sa.ColumnElement[bool] = c.id.in_(pick)
    if family == "postgresql":
        # ``WITH picked AS MATERIALIZED (pick) UPDATE ... FROM picked``: the
        # pick runs once, whatever the plan; rows it yields are found again
        # by their key. As a sub-select (``IN (...)``, or joined in FROM)
        # the planner may run it again per row, and SKIP LOCKED hands each
        # run other rows: more than the limit. ``id = ANY(ARRAY(...))`` ran
        # once, but without statistics the outer UPDATE then read every entry
        # of the status index, the finished history's too.
        picked = (
            pick.with_for_update(skip_locked=True)
            .cte("picked")
            .prefix_with("MATERIALIZED", dialect="postgresql")
        )
        taken = c.id == picked.c.id
    return (
        sa.update(table)
        .where(taken, c.status == WorkStatus.QUEUED.value)
        .values(values)
        .returning(c.name, *claim_details(table))
    )


def status_index(table: sa.Table) -> str:
    """The name of the table's index on (status, name, tick_at), as the migrations made it.

    Found among the table's own indexes, not spelled from its name: what goes
    into the SQL is the model's identifier.
    """
    for index in table.indexes:
        if [column.name for column in index.columns] == ["status", "name", "tick_at"]:
            assert index.name is not None
            return str(index.name)
    raise LookupError(f"table {table.name!r} has no index on (status, name, tick_at)")


def _unlike(name: str, alias: str) -> str:
    """``alias``, or another where the work table itself has that name."""
    return alias if alias != name else f"{alias}_rows"


def claim_batch_returning(
    table: sa.Table, groups: tuple[int, ...], *, explicit_now: bool = False
) -> Insert:
    """MariaDB's batch claim that returns its rows: one statement, no read back.

    MariaDB has ``INSERT ... RETURNING`` (10.5) but no ``UPDATE ...
    RETURNING``, so the claim is written as an insert of the picked rows'
    own keys that always collides with them: ``INSERT INTO t (id, ...)
    SELECT ... FOR UPDATE ON DUPLICATE KEY UPDATE <the claim> RETURNING``.
    The pick is ``claim_batch_statement``'s (the same due slice, order and
    ``:batch_limit``), and ``FOR UPDATE`` makes it wait on rows another claim
    is taking, as that UPDATE does, then read their latest version; no row is
    ever inserted, since each picked key exists and stays locked until the
    statement ends. On loopback it costs what the UPDATE and its read by
    token cost together (``benchmarks``), in one statement and one round
    trip instead of two.

    Every assignment is guarded by ``status = QUEUED`` (the status last, as
    MySQL assigns left to right), so even an unlocked pick could not take a
    row twice: a row changed meanwhile is written back as it was and comes
    back under another token, which the caller drops.
    """
    c = table.c
    # The pick reads the table under another name: in ON DUPLICATE KEY UPDATE
    # the table's own name then means the row being updated, unambiguously.
    picked = table.alias(_unlike(table.name, "picked"))
    where = _batch_where(picked, "mysql", groups, explicit_now=explicit_now)
    p = picked.c
    order = (_places(picked, groups), p.tick_at, p.slot, p.id)
    keys = (p.id, p.name, p.sequence, p.status)
    pick = (
        sa.select(*keys)
        .where(*where)
        .order_by(*order)
        .limit(sa.bindparam("batch_limit", type_=sa.Integer()))
        .with_for_update()
    )
    # The status index (status, name, tick_at) holds one range per named work, from its
    # floor to the clock: only the named works' due rows are read, whatever the
    # statistics. Left to choose, the optimizer may take (status, tick_at), which also
    # reads the due rows of every other work in the table (another service's).
    hint = "FORCE INDEX (" + status_index(table) + ")"
    for dialect_name in ("mysql", "mariadb"):
        pick = pick.with_hint(picked, hint, dialect_name)
    queued = c.status == WorkStatus.QUEUED.value
    values = _claim_values(table, "mysql")
    status = values.pop(c.status)
    guarded = [(col.name, sa.case((queued, value), else_=col)) for col, value in values.items()]
    guarded.append((c.status.name, sa.case((queued, status), else_=c.status)))
    # Selected from a derived table, the pick is sorted and cut to its limit
    # first: only the rows taken go through the insert's temporary table.
    chosen = pick.subquery(_unlike(table.name, "chosen"))
    insert = mysql_insert(table).from_select([k.name for k in keys], sa.select(*chosen.c))
    claimed = insert.on_duplicate_key_update(guarded)
    return claimed.returning(c.name, c.token, *claim_details(table))


def batch_by_token(table: sa.Table, size: int) -> sa.Select[Any]:
    """The rows a batch claim took, by its token (MySQL/MariaDB's read back; a lost reply's).

    Looked up among the running rows of the worker's works on the status
    index, so the read costs the batch's rows, not the table.
    """
    c = table.c
    names = [sa.bindparam(f"work_{i}", type_=sa.String(255)) for i in range(size)]
    return sa.select(c.name, *claim_details(table)).where(
        c.status == WorkStatus.RUNNING.value,
        c.name.in_(names),
        c.token == sa.bindparam("claim_token", type_=sa.String(32)),
    )


def batch_left(
    table: sa.Table, family: Family, groups: tuple[int, ...], *, explicit_now: bool
) -> sa.Select[Any]:
    """Whether a batch claim could find a row (a read, no lock): a busy SQLite file's peek."""
    c = table.c
    return (
        sa.select(c.id)
        .where(*_batch_where(table, family, groups, explicit_now=explicit_now))
        .limit(1)
    )


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


def claim_state(table: sa.Table) -> sa.Select[Any]:
    """A row's committed status, token and attempts, by id: is a host's claim of it committed?

    A plain read, no lock clause: on a service's autocommit lane it sees the
    latest committed state and never waits on the row lock a host's open
    transaction holds (a consistent read on MySQL/MariaDB and PostgreSQL; on
    SQLite in WAL mode readers never wait on the writer).
    """
    c = table.c
    return sa.select(c.status, c.token, c.attempts).where(
        c.id == sa.bindparam("claim_id", type_=sa.BigInteger())
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


def claimed_details(table: sa.Table) -> sa.Select[Any]:
    """What a claim learns about a row it just claimed by id (MySQL's claim returns only the id)."""
    return sa.select(*claim_details(table)).where(table.c.id == sa.bindparam("claim_id"))
