"""The status page's reads; only ``/metrics`` reads elsewhere (``metrics.LedgerCollector``).

It sends no statement itself: ``LedgerRepository`` runs the ledger's and
the page's, so the SQL of every read stays in one layer.

The figures are the ledger's (see ``worksync_sa._sql.page``): per work its counts,
summed by the database over the range, and per tick its figures without
text, for the lag quantiles (folded exactly as ``Ledger.summary`` folds
them), the charts and the timelines. Rows another program wrote without a
tick time are read the ledger's way (in their labels' zone) and added in.
The history is :meth:`Ledger.page` itself, latest first. Every work the
table knows is listed too, ticked in the range or not, with its last and
next tick and whether its schedule is kept (:mod:`.fleet`): a few index
probes per work, at most ``NAMES_LIMIT`` (1,000) works. A work whose rows in the range
record no settings (the original's) shows the cron of the works the page
was given, if one has its name.
Nothing here writes: every statement is a SELECT, and the page has no route
that could send another.

The reads block; the app runs them in worker threads. The ledger keeps one
connection per thread reading at the same time (its lanes); the other reads
borrow one from the engine's pool for the length of the request.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from .._core.reconcile import spec_of
from ..ledger import Ledger, TickEntry, undated_entries
from ..models import WorkStatus, table_named
from ..repository import ActionRepository, LedgerRepository
from ..rows import PauseState
from ..work import Work
from . import texts
from .config import PageConfig
from .fleet import WorkFacts, stale_reason
from .params import LATEST, Filter
from .snapshot import (
    FleetLine,
    HistoryPage,
    Light,
    RunRow,
    Snapshot,
    Totals,
    WorkSettings,
    fold,
    has_run,
    micros,
    outcome_of,
)

PAUSES_RECHECK_SECONDS = 60.0
"""How often a page whose table has no pauses table (not migrated yet) looks again."""


class Reader:
    """Reads what the page shows from one work table."""

    def __init__(
        self,
        engine: sa.Engine,
        table: str,
        config: PageConfig,
        *,
        sequence_zone: str | None = None,
        works: Iterable[Work] = (),
    ) -> None:
        self._engine = engine
        self._reads = LedgerRepository(table_named(table))
        self._ledger = Ledger(engine, table=table, sequence_zone=sequence_zone)
        self._zone = None if sequence_zone is None else ZoneInfo(sequence_zone)  # Ledger checked
        self._config = config
        # The settings a config gives each work, as a scheduler would record them.
        self._known = {work.name: WorkSettings.of(spec_of(work, "utc")) for work in works}
        self._grace = {work.name: work.grace for work in works}
        self._actions = ActionRepository(table)
        self._pauses_missing_at: float | None = None
        """When the pauses table was last found missing (monotonic), None once found."""
        self._pauses_found = False

    def close(self) -> None:
        """Give back the ledger's connections."""
        self._ledger.close()

    def snapshot(self, view: Filter, now: datetime) -> Snapshot:
        """Summary, timelines, lag charts and a history page for ``view`` at ``now``.

        The counts are summed by the database over the whole range; the
        per-tick figures are read for at most ``max_ticks`` ticks (the
        latest, when a range holds more), in one light read, from which the
        lags, charts and timelines are folded.
        """
        since, until = view.bounds(now)
        one_work = view.name is not None
        params: dict[str, Any] = {"since": since, "until": until or LATEST}
        if one_work:
            params["work_name"] = view.name
        limit = self._config.max_ticks
        with self._engine.connect() as conn:
            summed = self._reads.work_totals(conn, params)
            totals = {name: Totals(name, **counts) for name, counts in summed.items()}
            undated = undated_entries(self._reads, conn, params, self._zone)
            capped = sum(t.ticks for t in totals.values()) + len(undated) > limit
            rows = self._reads.tick_figures(conn, {**params, "limit": limit}, latest_first=capped)
            settings = self._settings(conn, params)
            facts = self._reads.work_facts(conn, now, LedgerRepository.NAMES_LIMIT + 1)
            fleet_capped = len(facts) > LedgerRepository.NAMES_LIMIT
            facts = facts[: LedgerRepository.NAMES_LIMIT]
            last = self._reads.ticks_figures(
                conn, [(row.name, row.last_due) for row in facts if row.last_due is not None]
            )
            pauses = self._pauses(conn, now)
        ticks: dict[str, list[Light]] = {}
        for row in reversed(rows) if capped else rows:
            light = Light(*row)
            ticks.setdefault(light.name, []).append(light)
        for entry in undated:  # rare: another program's rows, read as the ledger reads them
            totals.setdefault(entry.name, Totals(entry.name)).add(entry)
            ticks.setdefault(entry.name, []).append(Light.of(entry))
        for name in {entry.name for entry in undated}:
            ticks[name].sort(key=lambda figures: figures.tick_us)
        fleet = self._fleet(facts, last, ticks, pauses, now)
        names = sorted({line.name for line in fleet} | set(totals))
        if one_work:
            fleet = [line for line in fleet if line.name == view.name]
        works = fold(
            totals,
            ticks,
            settings,
            now=now,
            since=since,
            until=until,
            timeline_ticks=self._config.timeline_ticks,
        )
        capped_from = min(
            (t[0].tick_at for t in ticks.values() if t), default=None
        )  # earliest read
        history = self.history(view, now)
        return Snapshot(
            now,
            since,
            until,
            works,
            names,
            history,
            capped_from if capped else None,
            fleet,
            fleet_capped,
        )

    def history(self, view: Filter, now: datetime) -> HistoryPage:
        """The history page of ``view``: the latest ticks, or those before its cursor.

        A request that pages with ``after`` (as the page did before it showed
        the latest first) gets the ticks after it, earliest first.
        """
        since, until = view.bounds(now)
        size = self._config.page_size
        latest_first = view.after is None
        page = self._ledger.page(
            name=view.name,
            since=since,
            until=until,
            after=view.before if latest_first else view.after,
            limit=size + 1,
            latest_first=latest_first,
        )
        return _first_page(page.entries, size, latest_first)

    def _fleet(
        self,
        facts: Sequence[Any],
        last: Sequence[Any],
        ticks: dict[str, list[Light]],
        pauses: dict[str, PauseState],
        now: datetime,
    ) -> list[FleetLine]:
        """Every work the table knows, and the page's works it has no row of, in name order.

        The last due tick is the table's (its figures read by key); for a
        work whose rows carry no tick time (another program's), the latest
        the range shows, dated from its label.
        """
        lights = {row.name: _light(row) for row in last}
        now_us = micros(now)
        for name, mine in ticks.items():
            due = [t for t in mine if t.tick_us <= now_us or has_run(t)]
            known = lights.get(name)
            if due and (known is None or due[-1].tick_us > known.tick_us):
                lights[name] = due[-1]
        lines = {}
        for row in facts:
            recorded = WorkSettings.of(row.spec)
            settings = recorded if recorded.cron else self._known.get(row.name, recorded)
            grace = (
                WorkFacts.grace_of(row.grace_seconds)
                if row.grace_seconds is not None
                else self._grace.get(row.name, WorkFacts.grace_of(None))
            )
            work = WorkFacts(
                name=row.name,
                cron=settings.cron,
                timezone=settings.timezone,
                grace=grace,
                latest_tick=row.latest_tick,
                oldest_queued=row.oldest_queued,
                paused=row.name in pauses,
            )
            light = lights.get(row.name)
            lines[row.name] = FleetLine(
                name=row.name,
                cron_text=settings.cron_text,
                last_tick=None if light is None else light.tick_at,
                outcome=None if light is None else outcome_of(light),
                next_tick=row.next_tick,
                stale=stale_reason(work, now),
                paused=_paused_text(pauses.get(row.name)),
            )
        for name, settings in self._known.items():  # configured, never planned in this table
            if name not in lines and len(lines) < LedgerRepository.NAMES_LIMIT:
                light = lights.get(name)
                lines[name] = FleetLine(
                    name,
                    settings.cron_text,
                    None if light is None else light.tick_at,
                    None if light is None else outcome_of(light),
                    None,
                    None,
                    _paused_text(pauses.get(name)),
                )
        return [lines[name] for name in sorted(lines)]

    def _pauses(self, conn: sa.Connection, now: datetime) -> dict[str, PauseState]:
        """The pauses in force at ``now``, by work.

        A table not yet migrated to ``worksync_0006`` has no pauses table:
        the page then shows no pause, and looks again a minute later rather
        than on every request.
        """
        if not self._pauses_found:
            seen = self._pauses_missing_at
            if seen is not None and time.monotonic() - seen < PAUSES_RECHECK_SECONDS:
                return {}
            self._pauses_found = self._actions.has_pauses(conn)
            self._pauses_missing_at = None if self._pauses_found else time.monotonic()
            if not self._pauses_found:
                return {}
        return {p.name: p for p in self._actions.pauses(conn) if p.active(now)}

    def tick(self, name: str, tick: datetime, label: str) -> list[RunRow]:
        """The rows of one tick of ``name``, slot by slot."""
        with self._engine.connect() as conn:
            rows = list(self._reads.tick_rows(conn, name, tick, label))
        rows.sort(key=lambda row: (row.slot is None, row.slot or 0, row.id))
        return [
            RunRow(
                slot=row.slot,
                status=_status_name(row.status),
                sequence=row.sequence,
                claimed_by=row.claimed_by,
                started_at=row.started_at,
                finished_at=row.finished_at,
                attempts=row.attempts,
                closed_by=row.closed_by,
                error=row.error,
                lease_until=row.lease_until,
            )
            for row in rows
        ]

    def _settings(self, conn: sa.Connection, params: dict[str, Any]) -> dict[str, WorkSettings]:
        """Each work's latest settings in the range (the spec of its latest tick).

        A work whose rows name no cron (the original's rows record no spec)
        takes the cron of the work of that name the page was given, if any.
        """
        latest: dict[str, tuple[datetime, str]] = {}
        for row in self._reads.settings(conn, params):
            seen = latest.get(row.name)
            if seen is None or (row.latest, row.spec) > seen:
                latest[row.name] = (row.latest, row.spec)
        found = {work: WorkSettings.of(spec) for work, (_, spec) in latest.items()}
        for name, known in self._known.items():
            recorded = found.get(name)
            if recorded is None or recorded.cron is None:
                max_run = None if recorded is None else recorded.max_run
                found[name] = WorkSettings(known.cron, known.timezone, max_run)
        return found


def _first_page(entries: list[TickEntry], size: int, latest_first: bool) -> HistoryPage:
    """The first ``size`` entries, and a cursor if at least one more follows."""
    page = entries[:size]
    if len(entries) <= size:
        return HistoryPage(page, None, latest_first)
    last = page[-1]
    return HistoryPage(page, (last.tick_at, last.name, last.sequence), latest_first)


def _light(row: Any) -> Light:
    """A tick's ledger figures (a ``ledger_page`` row) as the light read has them."""
    first_start = row.first_start
    return Light(
        tick_us=micros(row.tick_at),
        name=row.name,
        max_run=int(row.max_run),
        created=int(row.created),
        queued=int(row.queued),
        running=int(row.running),
        succeeded=int(row.succeeded),
        failed=int(row.failed),
        recovered=int(row.recovered),
        missed=int(row.missed),
        lag_us=None if first_start is None else micros(first_start) - micros(row.tick_at),
        sequence=row.sequence,
    )


def _status_name(code: int) -> str:
    try:
        return WorkStatus(code).name.lower()
    except ValueError:  # another program's status code
        return str(code)


def _paused_text(pause: PauseState | None) -> str | None:
    """A pause as the page states it: until when, by whom, and why."""
    if pause is None:
        return None
    until = "until resumed" if pause.until is None else f"until {texts.moment(pause.until)} UTC"
    why = f": {texts.shown(pause.reason)}" if pause.reason else ""
    return f"paused {until} by {texts.shown(pause.paused_by)}{why}"
