"""The statements the status page adds to the ledger's: pure builders, no I/O.

The figures are the ledger's: the two reads a range needs are derived from
the ledger's own page statement (``ledger_page``), so every
count keeps the one definition the ledger, ``worksync status`` and this
page share. They differ only in what they return, which is what keeps the
first page fast whatever the range holds:

* per work, the ledger's counts summed by the database (a few rows, where
  ``Ledger.summary`` folds one Python object per tick);
* per tick, its figures without the label and the error text, for the lag
  quantiles, the charts and the timelines (the work's name and numbers: the
  tick and its lag come as microseconds).

Statements are built once per table (they are immutable), so a request
spends its time reading, not compiling.

Then more reads, each bounded and served by an index:

* the settings (``spec``) rows in the range were made with, for the cron and
  ``max_run`` of each work: the range's rows, along the ledger index
  ``(tick_at, name, sequence)``;
* the rows of one tick, for its details: along the instant key
  ``(name, tick_at, slot)``, and for rows another program wrote without a
  tick time along the label key ``(name, sequence, slot)``;
* the works that have ticks in the range, for the filter: the ledger index;
* every work the table knows, whether or not it ticked in the range, with
  the facts that say whether its schedule is still kept (:func:`work_facts`):
  the names by a loose index scan (a recursive CTE that jumps from one name
  to the next along an index starting with ``name``, so it costs a few
  index probes per work, not a read of the table), and per name a handful
  of one-row probes of the instant key and the status index;
* the figures of each work's last due tick (:func:`ticks_figures`).

Nothing here writes: the page is read only.
"""

from __future__ import annotations

import functools
from typing import Any

import sqlalchemy as sa

from ..models import CLOSED_UNCLAIMED, UTCDateTime, WorkStatus
from .dialect import Family
from .elapsed import EPOCH, microseconds_between
from .ledger import ledger_page

TICK_ROWS_LIMIT = 1_000
"""Most rows one tick's details show (``max_run`` can reach 10,000)."""
NAMES_LIMIT = 1_000
"""Most works the filter offers and the page lists: a bound on the reads, not a fleet's size."""


COUNTS = ("created", "queued", "running", "succeeded", "failed", "recovered", "missed")
"""The ledger's per-tick counts that add up over a work's ticks."""
TOTALS = (*COUNTS, "surplus")
"""What a work's totals sum: the counts, and the surplus rows its ``claimed`` leaves out."""


@functools.cache
def work_totals(table: sa.Table, *, one_work: bool) -> sa.Select[Any]:
    """Per work in [:since, :until): its ticks, and the ledger's counts summed over them.

    The ledger page's own count columns, grouped by work instead of by tick:
    each is a sum over the work's rows, so the sum of the per-tick figures.
    """
    page = ledger_page(table, one_work=one_work, resume=False)
    columns = {column.name: column for column in page.selected_columns}
    c = table.c
    return (
        page.with_only_columns(
            c.name,
            sa.func.count(sa.distinct(c.tick_at)).label("ticks"),
            *(columns[name] for name in TOTALS),
            maintain_column_froms=True,
        )
        .group_by(None)
        .group_by(c.name)
        .order_by(None)
        .order_by(c.name)
        .limit(None)
    )


FIGURES = ("name", "max_run", *COUNTS)
"""What the light read keeps of the ledger page as it is: no label, no error text."""


@functools.cache
def tick_figures(table: sa.Table, *, one_work: bool, latest_first: bool) -> sa.Select[Any]:
    """Per tick in [:since, :until): the ledger page's figures without its text, :limit of them.

    In the ledger's order, or the latest ticks first when a range holds more
    than the page reads. Leaving out the label and the error, and reading the
    tick and its first start as microseconds (``tick_us`` since the epoch,
    ``lag_us`` since the tick), keeps each row to the name and numbers: no
    driver parses a date, which is most of the cost of a row on MariaDB.
    """
    page = ledger_page(table, one_work=one_work, resume=False)
    columns = {column.name: column for column in page.selected_columns}
    c = table.c
    epoch = sa.literal(EPOCH, UTCDateTime())
    light = page.with_only_columns(
        microseconds_between(c.tick_at, epoch).label("tick_us"),
        *(columns[name] for name in FIGURES),
        microseconds_between(columns["first_start"], c.tick_at).label("lag_us"),
        maintain_column_froms=True,
    )
    if not latest_first:
        return light
    groups = (c.tick_at,) if one_work else (c.tick_at, c.name)
    return light.order_by(None).order_by(*(column.desc() for column in groups))


def _in_range(table: sa.Table) -> list[sa.ColumnElement[bool]]:
    c = table.c
    return [
        c.tick_at >= sa.bindparam("since", type_=UTCDateTime()),
        c.tick_at < sa.bindparam("until", type_=UTCDateTime()),
    ]


@functools.cache
def settings_in_range(table: sa.Table, *, one_work: bool) -> sa.Select[Any]:
    """Per (work, spec): the latest tick in [:since, :until) made with those settings.

    The page shows each work's latest settings; rows closed as surplus carry
    the closing scheduler's spec, not their own, so they are left out.
    """
    c = table.c
    where = [
        *_in_range(table),
        c.spec.is_not(None),
        sa.or_(c.closed_by.is_(None), sa.and_(*(c.closed_by != k for k in CLOSED_UNCLAIMED))),
    ]
    if one_work:
        where.append(c.name == sa.bindparam("work_name", type_=sa.String(255)))
    return (
        sa.select(c.name, c.spec, sa.func.max(c.tick_at).label("latest"))
        .where(*where)
        .group_by(c.name, c.spec)
    )


@functools.cache
def tick_rows(table: sa.Table) -> sa.CompoundSelect[Any]:
    """The rows of one tick of :work_name: those dated :tick, and undated ones labelled :label.

    Rows another program wrote carry no tick time until a scheduler of ours
    dates them; the ledger shows them at the time their label reads, so their
    details are found by that label.
    """
    c = table.c
    columns = (
        c.id, c.slot, c.status, c.sequence, c.claimed_by, c.started_at, c.finished_at,
        c.attempts, c.closed_by, c.error, c.lease_until,
    )  # fmt: skip
    name = c.name == sa.bindparam("work_name", type_=sa.String(255))
    dated = sa.select(*columns).where(name, c.tick_at == sa.bindparam("tick", type_=UTCDateTime()))
    undated = sa.select(*columns).where(
        name, c.tick_at.is_(None), c.sequence == sa.bindparam("label", type_=sa.String(255))
    )
    return sa.union_all(dated, undated).order_by("slot", "id").limit(TICK_ROWS_LIMIT)


@functools.cache
def names_in_range(table: sa.Table) -> sa.Select[Any]:
    """The works with ticks in [:since, :until), in name order."""
    c = table.c
    return (
        sa.select(c.name).where(*_in_range(table)).group_by(c.name).order_by(c.name)
        .limit(NAMES_LIMIT)
    )  # fmt: skip


def known_names(table: sa.Table, family: Family) -> sa.FromClause:
    """Every work name in the table, in order, at most :limit: a loose index scan.

    Each step asks the index for the least name above the last one found,
    one probe of an index that starts with ``name`` (the instant key, the
    tick key), so the read costs the number of works, not of rows. On
    PostgreSQL and SQLite that takes a recursive CTE (their GROUP BY reads
    every row's entry). MariaDB and MySQL do it by themselves for a GROUP
    BY (``Using index for group-by``), and run the CTE's step as a scan of
    the whole index instead (a million rows: 0.6 s), so they get the GROUP BY.
    """
    c = table.c
    if family == "mysql":
        return (
            sa.select(c.name)
            .group_by(c.name)
            .order_by(c.name)
            .limit(sa.bindparam("limit", type_=sa.Integer()))
            .subquery("known_names")
        )
    step = sa.literal_column("1", sa.Integer()).label("step")
    found = sa.select(sa.func.min(c.name).label("name"), step).cte("known_names", recursive=True)
    inner = table.alias("later")
    following = (
        sa.select(sa.func.min(inner.c.name)).where(inner.c.name > found.c.name).scalar_subquery()
    )
    return found.union_all(
        sa.select(following, found.c.step + 1).where(
            found.c.name.is_not(None),
            found.c.step < sa.bindparam("limit", type_=sa.Integer()),
        )
    )


@functools.cache
def work_facts(table: sa.Table, family: Family) -> sa.Select[Any]:
    """Per work the table knows: what says whether its schedule is kept, at :now.

    ``latest_tick``: its latest dated tick, upcoming ones included (the
    scheduler's reach); ``last_due`` and ``next_tick``: the ticks on either
    side of now; ``oldest_queued``: its earliest tick still queued at or
    before now (nobody claimed it yet); ``spec`` and ``grace_seconds``: the
    settings its latest dated row records (NULL there is NULL here: looking
    further back for a row that records them could read a whole history
    that never did, the original's). Each a one-row probe of
    the instant key ``(name, tick_at, slot)`` or the status index ``(status,
    name, tick_at)``, however long the work's history.
    """
    names = known_names(table, family)
    now = sa.bindparam("now", type_=UTCDateTime())

    # Each probe is ORDER BY ... LIMIT 1, never MIN or MAX: MariaDB reads a correlated
    # MAX over every entry of the work (a million: half a second), a LIMIT 1 stops at one.
    def probe(alias: str, column: str, side: str, *, latest: bool) -> sa.ScalarSelect[Any]:
        row = table.alias(alias)
        where = [row.c.name == names.c.name, row.c.tick_at.is_not(None)]
        if side == "due":
            where.append(row.c.tick_at <= now)
        elif side == "upcoming":
            where.append(row.c.tick_at > now)
        elif side == "queued":
            where += [row.c.status == WorkStatus.QUEUED.value, row.c.tick_at <= now]
        order: list[sa.ColumnElement[Any]] = [row.c.tick_at.desc() if latest else row.c.tick_at]
        if side == "queued":  # the status index's order, so it serves the probe
            order[:0] = [row.c.status, row.c.name]
        found = sa.select(row.c[column]).where(*where).order_by(*order).limit(1)
        return found.scalar_subquery()

    return (
        sa.select(
            names.c.name,
            probe("latest", "tick_at", "", latest=True).label("latest_tick"),
            probe("due", "tick_at", "due", latest=True).label("last_due"),
            probe("upcoming", "tick_at", "upcoming", latest=False).label("next_tick"),
            probe("queued", "tick_at", "queued", latest=False).label("oldest_queued"),
            probe("spec", "spec", "", latest=True).label("spec"),
            probe("grace", "grace_seconds", "", latest=True).label("grace_seconds"),
        )
        .where(names.c.name.is_not(None))
        .order_by(names.c.name)
    )


@functools.cache
def ticks_figures(table: sa.Table) -> sa.Select[Any]:
    """The ledger's figures of the ticks :ticks names, as (work, tick) pairs.

    The ledger page's own columns, for a work's last due tick: its outcome
    is worked out from the same counts the history shows. Each pair is a
    probe of the instant key.
    """
    page = ledger_page(table, one_work=False, resume=False)
    c = table.c
    pairs = sa.tuple_(c.name, c.tick_at).in_(sa.bindparam("ticks", expanding=True))
    return page.where(pairs).limit(None)
