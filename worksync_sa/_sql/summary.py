"""The per-work summary, computed by the database: pure builders, no I/O.

A summary sums the ledger's per-tick counts over a range and reads two
quantiles of its start lags. A range of a per-second work holds 86,400
ticks: folded in Python, one object per tick, that was most of ``worksync
status``'s seconds. Here two statements return a row per work whatever the
range holds: the ledger's counts summed over the range's rows, and, per
work, its ticks grouped as the ledger's page groups them, ranked by lag
with a window function, and reduced to the two lags each quantile
interpolates between.

The lag is the ledger's (``ledger_page``'s ``first_start`` minus the tick,
read as whole microseconds), and the ranks are the ones ``Ledger``'s
quantile rule reads (``statistics.quantiles(method="inclusive")``: the value
at ``j = p * (n - 1) // 100`` and the next one). Window functions
(``ROW_NUMBER``, ``COUNT ... OVER``) are in every database the package
supports: SQLite 3.25, MariaDB 10.2, MySQL 8 and PostgreSQL. There
is no index on a lag (an aggregate per tick), so the range's ticks are still
grouped and sorted once, in the database, read along the index the ledger's
page reads.
"""

from __future__ import annotations

import functools
from typing import Any

import sqlalchemy as sa

from .elapsed import microseconds_between
from .ledger import ledger_page

PERCENTS = (50, 95)
"""The quantiles a summary shows, in percent: lag p50 and p95."""
TOTALS = ("created", "queued", "running", "succeeded", "failed", "recovered", "missed", "surplus")
"""The ledger's per-tick counts a summary sums (``claimed`` is derived from them)."""


def _ledger_columns(table: sa.Table, *, one_work: bool) -> tuple[sa.Select[Any], dict[str, Any]]:
    page = ledger_page(table, one_work=one_work, resume=False)
    return page, {column.name: column for column in page.selected_columns}


@functools.cache
def work_counts(table: sa.Table, *, one_work: bool) -> sa.Select[Any]:
    """Per work in [:since, :until): the ledger's counts of :data:`TOTALS`, summed.

    The ledger page's own count columns over the range's rows at once: each
    is a sum over rows, so the sum of its per-tick figures, with no per-tick
    groups to form. One work's is a single row (all zeros if it has none)
    with no ``GROUP BY``; the page's ``work_totals`` counts the same, but its
    ``COUNT(DISTINCT tick_at)`` per name had MariaDB sort the range, at
    about twice the cost. The ticks are counted by :func:`lag_ranks`.
    """
    page, columns = _ledger_columns(table, one_work=one_work)
    c = table.c
    names = () if one_work else (c.name,)
    return (
        page.with_only_columns(
            *names, *(columns[name] for name in TOTALS), maintain_column_froms=True
        )
        .group_by(None)
        .group_by(*names)
        .order_by(None)
        .order_by(*names)
        .limit(None)
    )


def _lags(table: sa.Table) -> sa.Select[Any]:
    """Per tick of :work_name in [:since, :until): its start lag in µs (NULL: nobody claimed it).

    The ledger page's own groups and ``first_start``, so a lag here is the
    one its tick line shows. No name: a constant here, and MariaDB spent
    most of its time carrying a ``VARCHAR(255)`` through its temporary tables.
    """
    page, columns = _ledger_columns(table, one_work=True)
    first_start = columns["first_start"].element
    return (
        page.with_only_columns(
            microseconds_between(first_start, table.c.tick_at).label("lag_us"),
            maintain_column_froms=True,
        )
        .order_by(None)
        .limit(None)
    )


QUANTILE_COLUMNS = tuple(f"p{percent}_{side}" for percent in PERCENTS for side in ("low", "high"))
"""The lags :func:`lag_ranks` returns for each quantile: at ranks ``j`` and ``j + 1``."""


@functools.cache
def lag_ranks(table: sa.Table) -> sa.Select[Any]:
    """:work_name's ticks in [:since, :until), and the lags its quantiles read: one row.

    Each tick ranked by its lag (``ROW_NUMBER``, ticks without a lag last),
    then reduced to ``ticks`` (how many), ``n`` (how many have a lag) and, for
    each percent ``p`` of :data:`PERCENTS`, the lags at ranks ``j`` and
    ``j + 1`` where ``j = p * (n - 1) // 100`` (``p50_low``, ``p50_high``, ...;
    NULL where there is no such rank). Picked in integers, so no database
    rounds a division: rank ``i`` is ``j`` exactly when
    ``100 * i <= p * (n - 1) < 100 * i + 100``. Nothing is subtracted from a
    rank below 1: MySQL's ``ROW_NUMBER`` is unsigned.

    One work at a time: ranking every work at once partitions by name, which
    took MariaDB seconds over two works' days of per-second ticks.
    """
    lags = _lags(table).subquery("lags")
    lagless = sa.case((lags.c.lag_us.is_(None), 1), else_=0)
    ranked = sa.select(
        lags.c.lag_us,
        (sa.func.row_number().over(order_by=(lagless, lags.c.lag_us)) - 1).label("i"),
        sa.func.count(lags.c.lag_us).over().label("n"),
        sa.func.count().over().label("ticks"),
    ).subquery("ranked")
    i, n = ranked.c.i, ranked.c.n

    def lag_at(percent: int, after: int) -> sa.ColumnElement[Any]:
        """The lag at rank ``j + after``: ``100 * (i - after) <= p * (n - 1) < ... + 100``."""
        at = sa.and_(
            100 * i <= percent * (n - 1) + 100 * after,
            percent * (n - 1) < 100 * i + 100 * (1 - after),
            i < n,
        )
        return sa.func.max(sa.case((at, ranked.c.lag_us)))

    return sa.select(
        sa.func.coalesce(sa.func.max(ranked.c.ticks), 0).label("ticks"),
        sa.func.coalesce(sa.func.max(n), 0).label("n"),
        *(
            lag_at(percent, after).label(f"p{percent}_{side}")
            for percent in PERCENTS
            for after, side in ((0, "low"), (1, "high"))
        ),
    )


@functools.cache
def work_lags(table: sa.Table) -> sa.Select[Any]:
    """Every claimed tick's start lag (µs) of :work_name in [:since, :until), in no order.

    For the rare work that also has ticks another program wrote without a
    tick time: those are dated from their labels outside the database, so
    that work's quantiles are folded from all its lags instead of ranked.
    """
    lags = _lags(table).subquery("lags")
    return sa.select(lags.c.lag_us).where(lags.c.lag_us.is_not(None))
