"""The per-tick ledger: what happened to every tick, read back from the table.

Rows exist before their tick, so the table can answer exactly what people
running cron across a fleet ask first: did every tick run, how many times,
how late, and which one was missed. Each page is one aggregate query served
by an index, plus one for rows another program wrote without a tick time
(dated here from their labels) and, for each work that has such rows near
the range, one indexed row for the zone of its labels. Summaries are
computed by the database (counts summed, lags ranked), not folded from the
pages, so they cost a few rows however long the range.

Per tick of a work (one entry, even while a fleet changes its sequence
function and the tick has rows under two labels; it shows the label of
its live rows):

``created``    rows made for it (``max_run`` of them normally)
``queued``     still waiting to be claimed (future ticks, or not yet due)
``running``    claimed, not finished
``succeeded``  finished with ``success()``
``failed``     finished with ``fail()`` (by the worker)
``recovered``  rows whose lease ran out: failed by recovery, or re-queued and
               claimed again (counted here, and also by their final status)
``missed``     closed because nobody claimed them within the work's grace
``lag``        first claim's start minus the tick time (database clock)
``error``      what one failed run recorded, if any run failed
``surplus``    closed unclaimed: the work's settings changed, or it was paused
``max_run``    the rows the tick holds for runs: ``created`` minus ``surplus``

Rows other programs wrote without a tick time (the Go original's, not yet
dated by a scheduler of ours) are shown at the instant their label reads as
a wall time in the labels' zone: the zone a scheduler of ours records in the
work's rows (``spec``: ``sequence=local:<zone>``), else the ledger's
``sequence_zone``, else UTC. See :func:`~worksync_sa.sequences.label_instant`
for the hours the zone's changes repeat or skip.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ._run.blocking import BlockingRunner
from ._sql.summary import PERCENTS
from ._sql.text import check_text
from .config import RetryPolicy
from .errors import InvalidArgumentError
from .models import DEFAULT_TABLE, checked_moment, table_named, validate_table_name
from .repository import LedgerRepository
from .sequences import label_instant, spec_zone, zone_named

PAGE_LIMIT = 10_000
_EARLIEST = datetime(1970, 1, 1, tzinfo=timezone.utc)
_LATEST = datetime(9999, 1, 1, tzinfo=timezone.utc)
_EARLIEST_OFFSET = timedelta(hours=12)
_LATEST_OFFSET = timedelta(hours=14)
"""The widest UTC offsets a zone has (UTC-12 .. UTC+14): a label's instant lies within them."""


@dataclass(frozen=True, slots=True)
class TickEntry:
    """What happened to one tick of one work."""

    tick_at: datetime
    name: str
    sequence: str
    max_run: int
    created: int
    queued: int
    running: int
    succeeded: int
    failed: int
    recovered: int
    missed: int
    first_start: datetime | None
    error: str | None = None
    """The text one failed run of the tick recorded (by its worker, or recovery), if any."""
    surplus: int = 0
    """Rows closed unclaimed because the work's settings changed (not counted in max_run)."""

    @property
    def lag(self) -> timedelta | None:
        """How long after its tick the first claim started, or None if never claimed."""
        return None if self.first_start is None else self.first_start - self.tick_at

    @property
    def claimed(self) -> int:
        """Rows a worker claimed: the running and the finished, not the missed or surplus."""
        return self.created - self.queued - self.missed - self.surplus


@dataclass(frozen=True, slots=True)
class LedgerPage:
    """One page of entries, and where the next one starts (None: this was the last)."""

    entries: list[TickEntry]
    after: tuple[datetime, str, str] | None


@dataclass(frozen=True, slots=True)
class WorkSummary:
    """One work's record over a range of ticks."""

    name: str
    ticks: int
    claimed: int
    succeeded: int
    failed: int
    recovered: int
    missed: int
    lag_p50: timedelta | None
    lag_p95: timedelta | None

    @property
    def success_rate(self) -> float | None:
        """Succeeded over succeeded, failed and missed; None when all three are 0.

        A row failed by recovery (a lost lease) counts in ``recovered``, not in
        ``failed``, so it is left out of the rate.
        """
        settled = self.succeeded + self.failed + self.missed
        return None if settled == 0 else self.succeeded / settled


class Ledger:
    """Reads the per-tick ledger of a work table.

    ``sequence_zone`` is the IANA zone the Go original's labels are in where
    the table does not say (its ``TZ``, e.g. ``"Europe/Berlin"``; the config
    file's ``[scheduler] sequence_zone``). It dates only the rows no scheduler
    of ours dated: a work whose rows of ours record a local sequence
    (``local_sequence``) has its undated labels read in that zone instead;
    with neither, they are read as UTC. Rows of ours carry their tick time
    and need no zone.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        table: str = DEFAULT_TABLE,
        retry: RetryPolicy | None = None,
        sequence_zone: str | None = None,
    ) -> None:
        table = validate_table_name(table)
        zone = None if sequence_zone is None else zone_named(sequence_zone, "sequence_zone")
        self._runner = BlockingRunner(engine, table, retry or RetryPolicy())
        self._reads = LedgerRepository(table_named(table))
        self._zone = zone

    @property
    def sequence_zone(self) -> str | None:
        """The zone undated labels are read in where the table names none (None: UTC)."""
        return None if self._zone is None else self._zone.key

    def close(self) -> None:
        """Give back the connections the ledger holds (one per thread that read at once)."""
        self._runner.close()

    def page(
        self,
        *,
        name: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after: tuple[datetime, str, str] | None = None,
        limit: int = 500,
        latest_first: bool = False,
    ) -> LedgerPage:
        """Ticks in ``[since, until)`` (UTC), earliest first, resuming ``after`` a page's end.

        ``latest_first`` pages backward from the end of the range (its
        ``after`` then resumes before the previous page's last entry): the
        latest ticks cost one short read however long the range.
        """
        params = self._range(name, since, until)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= PAGE_LIMIT:
            raise InvalidArgumentError(
                f"limit must be an int from 1 to {PAGE_LIMIT}, got {limit!r}"
            )
        params["limit"] = limit
        cursor = None
        if after is not None:
            if not (isinstance(after, tuple) and len(after) == 3):
                raise InvalidArgumentError(
                    "after must be a page's after value: (tick, name, sequence)"
                )
            cursor = (checked_moment(after[0], "after"), after[1], after[2])
            params["after_tick"] = cursor[0]
            params["after_name"], params["after_sequence"] = after[1], after[2]

        def key(entry: TickEntry) -> tuple[datetime, str, str]:
            return (entry.tick_at, entry.name, entry.sequence)

        def read(conn: sa.Connection) -> list[TickEntry]:
            # Times come back aware UTC: the columns' type converts them.
            rows = self._reads.page(conn, params, latest_first=latest_first)
            entries = [_entry(row, row.tick_at) for row in rows]
            entries += undated_entries(self._reads, conn, params, self._zone, latest_first)
            entries.sort(
                key=lambda entry: (entry.tick_at, entry.name, entry.sequence),
                reverse=latest_first,
            )
            return entries[:limit]

        entries = self._runner.run("ledger", read)
        last = entries[-1] if len(entries) == limit else None
        return LedgerPage(entries, None if last is None else key(last))

    def entries(
        self,
        *,
        name: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        page_size: int = 1000,
        latest_first: bool = False,
    ) -> Iterator[TickEntry]:
        """Every tick in the range, page after page (the latest first, with ``latest_first``)."""
        after = None
        while True:
            page = self.page(
                name=name,
                since=since,
                until=until,
                after=after,
                limit=page_size,
                latest_first=latest_first,
            )
            yield from page.entries
            if page.after is None:
                return
            after = page.after

    def summary(
        self,
        *,
        name: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[WorkSummary]:
        """Per work: ticks, claims, outcomes, success rate and start lag (p50, p95).

        Computed by the database over the whole range, a row per read
        whatever it holds: the ledger's counts summed per work, then for each
        work its ticks counted and ranked by lag, returning the two lags each
        quantile interpolates between (one statement per work: ranking all
        works at once partitions by name, which MariaDB does slowly); and the
        rows other programs wrote without a tick time, dated and added here as
        :meth:`entries` dates them. Equal, figure for figure, to
        :func:`summarise_each` over :meth:`entries`; only a work that has
        such undated ticks with a lag has its lags read whole, to rank them
        among the others here.
        """
        params = self._range(name, since, until)

        def read(conn: sa.Connection) -> list[WorkSummary]:
            counts = self._reads.work_counts(conn, params)
            extra: dict[str, list[TickEntry]] = {}
            for entry in undated_entries(self._reads, conn, params, self._zone):
                extra.setdefault(entry.name, []).append(entry)
            summaries = []
            for work in sorted(counts.keys() | extra.keys()):
                own = extra.get(work, [])
                figures: dict[str, int | None] = {**counts.get(work, {})}
                if work in counts:
                    figures.update(self._reads.lag_ranks(conn, {**params, "work_name": work}))
                lagged = [lag for entry in own if (lag := entry.lag) is not None]
                if lagged:  # rare: rank the undated lags among the database's here
                    dated = self._reads.work_lags(conn, {**params, "work_name": work})
                    lags = sorted([*(_micros(lag) for lag in dated), *lagged])
                    p50, p95 = _quantile(lags, 0.5), _quantile(lags, 0.95)
                else:
                    p50, p95 = (_ranked(figures, percent) for percent in PERCENTS)
                summaries.append(_summary(work, figures, own, p50, p95))
            return summaries

        return self._runner.run("ledger", read)

    def clock(self) -> datetime:
        """The database's clock now (aware UTC): ticks at or before it have come.

        ``worksync status`` splits what happened from what is planned by it,
        as a due claim does, so a host's clock running ahead or behind moves
        nothing.
        """
        return self._runner.run("ledger", self._reads.clock)

    def _range(
        self, name: str | None, since: datetime | None, until: datetime | None
    ) -> dict[str, object]:
        params: dict[str, object] = {
            "since": _EARLIEST if since is None else checked_moment(since, "since"),
            "until": _LATEST if until is None else checked_moment(until, "until"),
        }
        if name is not None:
            params["work_name"] = check_text(name, "name")
        return params


def _entry(row: Any, tick: datetime) -> TickEntry:
    return TickEntry(
        tick,
        row.name,
        row.sequence,
        int(row.max_run),
        int(row.created),
        int(row.queued),
        int(row.running),
        int(row.succeeded),
        int(row.failed),
        int(row.recovered),
        int(row.missed),
        row.first_start,
        row.error,
        int(row.surplus),
    )


def undated_entries(
    reads: LedgerRepository,
    conn: sa.Connection,
    params: Mapping[str, Any],
    zone: ZoneInfo | None = None,
    latest_first: bool = False,
) -> list[TickEntry]:
    """The entries of rows no scheduler of ours dated, on the page's range and cursor.

    Each work's labels are read in the zone its rows of ours record (the
    latest ``spec`` naming ``sequence=local:<zone>``), else in ``zone``, else
    as UTC. The spec is read only for works with an undated label that could
    fall in the range in some zone, one indexed row each.
    """
    rows = reads.undated(conn, params)
    since, until = params["since"], params["until"]
    names = set()
    for row in rows:
        read = label_instant(row.sequence)
        if read is not None and read - _LATEST_OFFSET < until and read + _EARLIEST_OFFSET >= since:
            names.add(row.name)
    zones: dict[str, tzinfo] = {}
    for name in names:
        recorded = spec_zone(reads.latest_spec(conn, name))
        # A zone a row of ours records was valid when written; tzdata may since have lost it.
        named = _zone_or_none(recorded)
        zones[name] = named or zone or timezone.utc
    return _undated([row for row in rows if row.name in names], params, zones, latest_first)


def _zone_or_none(name: str | None) -> ZoneInfo | None:
    if name is None:
        return None
    try:
        return zone_named(name, "spec")
    except InvalidArgumentError:
        return None


def _undated(
    rows: Iterable[Any],
    params: Mapping[str, Any],
    zones: Mapping[str, tzinfo],
    latest_first: bool = False,
) -> list[TickEntry]:
    """Rows of other programs that no scheduler of ours dated, on the page's range and cursor.

    Their tick is read from the label (the original's ``YYYY-MM-DD HH:MM:SS``)
    as a wall time in their work's zone in ``zones`` (UTC if it has none);
    labels that are no time are left out. A scheduler planning the tick gives
    them its exact time.
    """
    since, until = params["since"], params["until"]
    after = params.get("after_tick"), params.get("after_name"), params.get("after_sequence")
    found = []
    for row in rows:
        tick = label_instant(row.sequence, zones.get(row.name, timezone.utc))
        if tick is None or not since <= tick < until:
            continue
        if after[0] is not None:
            key = (tick, row.name, row.sequence)
            if (key >= after) if latest_first else (key <= after):
                continue
        found.append(_entry(row, tick))
    return found


def summarise_each(entries: Iterable[TickEntry]) -> list[WorkSummary]:
    """One summary per work among ``entries``, in name order."""
    by_work: dict[str, list[TickEntry]] = {}
    for entry in entries:
        by_work.setdefault(entry.name, []).append(entry)
    return [summarise(work, group) for work, group in sorted(by_work.items())]


def summarise(name: str, entries: list[TickEntry]) -> WorkSummary:
    """Fold one work's entries into its summary."""
    lags = sorted(lag for entry in entries if (lag := entry.lag) is not None)
    return WorkSummary(
        name=name,
        ticks=len(entries),
        claimed=sum(e.claimed for e in entries),
        succeeded=sum(e.succeeded for e in entries),
        failed=sum(e.failed for e in entries),
        recovered=sum(e.recovered for e in entries),
        missed=sum(e.missed for e in entries),
        lag_p50=_quantile(lags, 0.5),
        lag_p95=_quantile(lags, 0.95),
    )


def _quantile(ordered: list[timedelta], q: float) -> timedelta | None:
    """The ``q`` quantile of sorted lags, by :func:`quantile_at`'s one rule."""
    return quantile_at(ordered.__getitem__, len(ordered), round(q * 100))


def quantile_at(value: Callable[[int], timedelta], count: int, percent: int) -> timedelta | None:
    """The ``percent`` quantile of ``count`` sorted lags, reading only the two it needs.

    ``value(i)`` is the lag of rank ``i`` (from 0). The rule is
    ``statistics.quantiles(..., n=100, method="inclusive")``, float for float:
    linear between ranks ``j`` and ``j + 1``, ``j = percent * (count - 1) // 100``.
    Written out so the database can rank the lags and hand back just those two
    (``_sql.summary.lag_ranks``), and the ledger's fold and the database's
    ranks cannot disagree.
    """
    if count == 0:
        return None
    if count == 1:
        return value(0)
    j, delta = divmod(percent * (count - 1), 100)
    low = value(j).total_seconds()
    high = value(j + 1).total_seconds() if delta else 0.0
    return timedelta(seconds=(low * (100 - delta) + high * delta) / 100)


def _ranked(figures: Mapping[str, int | None], percent: int) -> timedelta | None:
    """A quantile from the two lags the database picked for it (``_sql.summary``)."""
    picked = (figures.get(f"p{percent}_low"), figures.get(f"p{percent}_high"))

    def value(rank: int) -> timedelta:
        lag = picked[rank - percent * ((figures.get("n") or 0) - 1) // 100]
        assert lag is not None  # the rule reads only the ranks the statement picked
        return _micros(lag)

    return quantile_at(value, figures.get("n") or 0, percent)


def _micros(lag: int | timedelta) -> timedelta:
    return lag if isinstance(lag, timedelta) else timedelta(microseconds=lag)


def _summary(
    name: str,
    totals: Mapping[str, int | None],
    undated: list[TickEntry],
    p50: timedelta | None,
    p95: timedelta | None,
) -> WorkSummary:
    """A work's summary from its summed counts (none: only undated ticks) and undated entries."""
    counts = dict.fromkeys(("ticks", "created", "queued", "surplus", *_OUTCOMES), 0)
    counts.update((key, value or 0) for key, value in totals.items() if key in counts)
    for entry in undated:
        counts["ticks"] += 1
        for key in ("created", "queued", "surplus", *_OUTCOMES):
            counts[key] += getattr(entry, key)
    return WorkSummary(
        name=name,
        ticks=counts["ticks"],
        claimed=counts["created"] - counts["queued"] - counts["missed"] - counts["surplus"],
        succeeded=counts["succeeded"],
        failed=counts["failed"],
        recovered=counts["recovered"],
        missed=counts["missed"],
        lag_p50=p50,
        lag_p95=p95,
    )


_OUTCOMES = ("succeeded", "failed", "recovered", "missed")
