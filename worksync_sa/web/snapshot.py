"""The page's figures folded from the ledger's: pure, no I/O, no clock.

A :class:`Snapshot` is everything the page shows for one filter at one
instant; :mod:`.reading` fills it from the database and :mod:`.render`
turns it into HTML and JSON, so the first page and each live refresh show
the same numbers written the same way.

Its cost is bounded whatever the history: the counts come summed from the
database, the per-tick figures of at most ``max_ticks`` ticks are folded
here (lags, charts), and a timeline keeps only the last ticks of each work.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple

from .._sql.elapsed import EPOCH
from ..ledger import (
    TickEntry,
    WorkSummary,
    _quantile,  # the ledger's quantile rule, not a copy of it
)
from . import texts
from .params import Cursor

OUTCOMES = ("failed", "recovered", "missed", "running", "queued", "succeeded", "surplus")
"""A tick's colour, worst first: a tick shows the first of these that any of its rows has.

A finished failure outranks a run still going, and anything that went
wrong outranks success, so a glance at the timeline finds the trouble. A
tick whose rows were all closed as surplus (settings changed) has run none.
"""
UPCOMING_CELLS = 5
"""Ticks not yet due shown after the timeline's due ones, so the next runs are visible."""
CHART_WIDTH = 1000
CHART_HEIGHT = 100
CHART_DRAWN = 90
"""Height of the y axis's top value: the worst lag stays clear of the frame."""
CHART_POINTS = 200
CHART_SPAN_MIN = timedelta(seconds=60)
"""The shortest x axis: a lone tick, or a few seconds of them, still shows as a point."""
"""Most points in a lag chart: a per-second work's hour is folded to the worst lag per slice."""

SUMMARY_COLUMNS = (
    "work", "cron", "max_run", "ticks", "claimed", "succeeded", "failed", "recovered",
    "missed", "success", "lag p50", "lag p95",
)  # fmt: skip
HISTORY_COLUMNS = (
    "tick (UTC)", "work", "sequence", "max_run", "created", "queued", "running", "succeeded",
    "failed", "recovered", "missed", "lag", "error",
)  # fmt: skip


class Light(NamedTuple):
    """A tick's ledger figures as the page's light read returns them, in its column order.

    No label and no error text (the history and the tick details have them),
    and times as whole microseconds: the tick since the epoch, the start lag
    since the tick. Numbers and a tuple, so folding thousands of them costs
    little; another program's ticks, which the ledger reads, keep their label
    (``sequence``), the one thing their details need to find them.
    """

    tick_us: int
    name: str
    max_run: int
    created: int
    queued: int
    running: int
    succeeded: int
    failed: int
    recovered: int
    missed: int
    lag_us: int | None
    sequence: str = ""

    @property
    def tick_at(self) -> datetime:
        return EPOCH + timedelta(microseconds=self.tick_us)

    @classmethod
    def of(cls, entry: TickEntry) -> Light:
        lag = entry.lag
        counts = (entry.created, entry.queued, entry.running, entry.succeeded, entry.failed)
        return cls(
            micros(entry.tick_at),
            entry.name,
            entry.max_run,
            *counts,
            entry.recovered,
            entry.missed,
            None if lag is None else lag // timedelta(microseconds=1),
            entry.sequence,
        )


def has_run(entry: Light) -> bool:
    """Whether a worker claimed any of the tick's rows: a tick that ran is never upcoming.

    Ours are claimed once due, but the original's workers claim by their own
    clock, which may run a little ahead of the database's.
    """
    return bool(entry.running or entry.succeeded or entry.failed or entry.recovered)


def micros(moment: datetime) -> int:
    """An aware instant as whole microseconds since the epoch, as the light read counts."""
    return (moment - EPOCH) // timedelta(microseconds=1)


def lag_of(figures: Light) -> timedelta | None:
    """The tick's start lag, or None if nobody claimed it."""
    return None if figures.lag_us is None else timedelta(microseconds=figures.lag_us)


def outcome_of(entry: Light) -> str:
    """The tick's colour: the worst thing any of its rows shows (see :data:`OUTCOMES`)."""
    if entry.failed:
        return "failed"
    if entry.recovered:
        return "recovered"
    if entry.missed:
        return "missed"
    if entry.running:
        return "running"
    if entry.queued:
        return "queued"
    return "succeeded" if entry.succeeded else "surplus"


def tick_title(entry: Light) -> str:
    """What hovering over a tick says: when, how it went, how many runs, how late.

    The rows themselves (who, when, how long, the error) are one click away.
    """
    counts = [
        f"{count} {label}"
        for label, count in (
            ("succeeded", entry.succeeded),
            ("failed", entry.failed),
            ("recovered", entry.recovered),
            ("missed", entry.missed),
            ("running", entry.running),
            ("queued", entry.queued),
        )
        if count
    ]
    return (
        f"{texts.moment(entry.tick_at)} UTC · {outcome_of(entry)} · "
        f"{', '.join(counts) or 'no runs'} of max_run {entry.max_run} · "
        f"lag {texts.duration(lag_of(entry))}"
    )


def history_row(entry: TickEntry) -> list[str]:
    """One history line's cells, in :data:`HISTORY_COLUMNS` order, as shown (escaped).

    The error is its first line; :func:`texts.error_full` is the whole text.
    """
    figures = (
        entry.max_run, entry.created, entry.queued, entry.running, entry.succeeded,
        entry.failed, entry.recovered, entry.missed,
    )  # fmt: skip
    return [
        texts.moment(entry.tick_at),
        texts.shown(entry.name),
        texts.shown(entry.sequence),
        *map(str, figures),
        texts.duration(entry.lag),
        texts.error_line(entry.error),
    ]


@dataclass(frozen=True, slots=True)
class WorkSettings:
    """A work's settings as its newest rows in the range record them (``spec``)."""

    cron: str | None = None
    timezone: str | None = None
    max_run: int | None = None

    @classmethod
    def of(cls, spec: str | None) -> WorkSettings:
        """Read a scheduler's ``spec`` (``sequence=...; max_run=3; cron=...; timezone=...``).

        Rows another program wrote, or rows from before specs existed, have
        none: the page then shows no cron, and the ticks' own ``max_run``.
        """
        if not spec:
            return cls()
        fields = dict(part.partition("=")[::2] for part in spec.split("; "))
        max_run = fields.get("max_run", "")
        return cls(
            cron=fields.get("cron") or None,
            timezone=fields.get("timezone") or None,
            max_run=int(max_run) if max_run.isdigit() else None,
        )

    @property
    def cron_text(self) -> str:
        """The cron, with its zone when that is not UTC."""
        if self.cron is None:
            return texts.NONE
        return self.cron if self.timezone in (None, "UTC") else f"{self.cron} ({self.timezone})"


@dataclass(frozen=True, slots=True)
class Cell:
    """One tick in a work's timeline."""

    tick_at: datetime
    name: str
    sequence: str
    """The tick's label where the read has it (another program's ticks); else empty."""
    outcome: str
    upcoming: bool
    title: str

    @classmethod
    def of(cls, entry: Light, now: datetime) -> Cell:
        return cls(
            entry.tick_at,
            entry.name,
            entry.sequence,
            outcome_of(entry),
            entry.tick_at > now and not has_run(entry),
            tick_title(entry),
        )


@dataclass(frozen=True, slots=True)
class LagChart:
    """A work's start lag over the range, as an SVG polyline in a fixed view box."""

    points: str
    top: str
    start: str
    end: str
    ticks: int
    """How many ticks with a lag the chart folds."""


@dataclass(frozen=True, slots=True)
class WorkView:
    """One work: its summary line, its timeline and its lag chart."""

    summary: WorkSummary
    settings: WorkSettings
    max_run: int
    cells: list[Cell]
    chart: LagChart

    @property
    def name(self) -> str:
        return self.summary.name

    @property
    def shown_name(self) -> str:
        """The name as the page shows it (escaped); :attr:`name` is the raw value."""
        return texts.shown(self.summary.name)

    @property
    def row(self) -> list[str]:
        """The summary line's cells, in :data:`SUMMARY_COLUMNS` order."""
        s = self.summary
        figures = (self.max_run, s.ticks, s.claimed, s.succeeded, s.failed, s.recovered, s.missed)
        return [
            texts.shown(s.name),
            texts.shown(self.settings.cron_text),
            *map(str, figures),
            texts.rate(s.success_rate),
            texts.duration(s.lag_p50),
            texts.duration(s.lag_p95),
        ]


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """One keyset page of the history, and where the next one starts (None: no more).

    Latest first, the next page holding older ticks (``before``), unless the
    request paged with ``after``, as the page did before it showed the
    latest first: then earliest first, the next page holding later ticks.
    """

    entries: list[TickEntry]
    next: Cursor | None
    latest_first: bool = True


FLEET_COLUMNS = (
    "work", "cron", "last tick (UTC)", "outcome", "age", "next tick (UTC)", "in", "state",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class FleetLine:
    """One work the table knows, whether or not it ticked in the range."""

    name: str
    cron_text: str
    last_tick: datetime | None
    outcome: str | None
    """The last due tick's colour (see :data:`OUTCOMES`), None if its figures are unknown."""
    next_tick: datetime | None
    stale: str | None
    """Why its schedule is not kept (``fleet.stale_reason``), None if it is."""
    paused: str | None = None
    """Its pause in words (until when, by whom, why), None if it is not paused."""

    def row(self, now: datetime) -> list[str]:
        """The line's cells as shown, in :data:`FLEET_COLUMNS` order."""
        last, upcoming = self.last_tick, self.next_tick
        return [
            texts.shown(self.name),
            texts.shown(self.cron_text),
            texts.moment(last),
            self.outcome or texts.NONE,
            texts.NONE if last is None else texts.age(now - last) + " ago",
            texts.moment(upcoming),
            texts.NONE if upcoming is None else texts.age(upcoming - now),
            "paused" if self.paused else "stale" if self.stale else "ok",
        ]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the page shows for one filter at one instant."""

    now: datetime
    since: datetime
    until: datetime | None
    works: list[WorkView]
    names: list[str]
    history: HistoryPage
    capped_from: datetime | None = None
    fleet: list[FleetLine] = field(default_factory=list)
    """Every work the table knows (or the one the filter names), ticked in the range or not."""
    fleet_capped: bool = False
    """Set when the table knows more works than the page lists."""
    """Set when the range held more than ``max_ticks`` ticks: the earliest tick whose lag the
    quantiles and charts cover (the counts cover every tick)."""


@dataclass(slots=True)
class Totals:
    """One work's ledger counts over a range, summed (by the database, plus undated ticks)."""

    name: str
    ticks: int = 0
    created: int = 0
    queued: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    recovered: int = 0
    missed: int = 0
    surplus: int = 0

    def add(self, entry: TickEntry) -> None:
        """Count one more tick (another program's, which the database sum leaves out)."""
        self.ticks += 1
        self.created += entry.created
        self.queued += entry.queued
        self.running += entry.running
        self.succeeded += entry.succeeded
        self.failed += entry.failed
        self.recovered += entry.recovered
        self.missed += entry.missed
        self.surplus += entry.surplus

    def summary(self, lags: list[timedelta]) -> WorkSummary:
        """The work's :class:`WorkSummary`, as ``Ledger.summary`` would fold it from its ticks."""
        ordered = sorted(lags)
        return WorkSummary(
            name=self.name,
            ticks=self.ticks,
            claimed=self.created - self.queued - self.missed - self.surplus,
            succeeded=self.succeeded,
            failed=self.failed,
            recovered=self.recovered,
            missed=self.missed,
            lag_p50=quantile(ordered, 0.5),
            lag_p95=quantile(ordered, 0.95),
        )


def fold(
    totals: dict[str, Totals],
    ticks: dict[str, list[Light]],
    settings: dict[str, WorkSettings],
    *,
    now: datetime,
    since: datetime,
    until: datetime | None,
    timeline_ticks: int,
) -> list[WorkView]:
    """One :class:`WorkView` per work, in name order; ``ticks`` holds each work's, in time order."""
    end = now if until is None else min(now, until)
    views = []
    for name in sorted(totals):
        own = settings.get(name, WorkSettings())
        mine = ticks.get(name, [])
        lags = [timedelta(microseconds=t.lag_us) for t in mine if t.lag_us is not None]
        now_us = micros(now)
        due = [t for t in mine if t.tick_us <= now_us or has_run(t)]
        upcoming = [t for t in mine if t.tick_us > now_us and not has_run(t)]
        cells = [Cell.of(t, now) for t in (*due[-timeline_ticks:], *upcoming[:UPCOMING_CELLS])]
        latest = due[-1] if due else (mine[0] if mine else None)
        max_run = own.max_run if own.max_run is not None else int(latest.max_run) if latest else 0
        views.append(
            WorkView(
                summary=totals[name].summary(lags),
                settings=own,
                max_run=max_run,
                cells=cells,
                chart=lag_chart(due, *chart_span(due, since, end)),
            )
        )
    return views


def quantile(ordered: list[timedelta], q: float) -> timedelta | None:
    """The ledger's own quantile of sorted lags (one definition for every view of them)."""
    return _quantile(ordered, q)


def chart_span(ticks: Sequence[Light], since: datetime, end: datetime) -> tuple[datetime, datetime]:
    """The x axis of a lag chart: from the first tick with a lag to the last.

    The data's own span, not the range's: a fleet that started five minutes
    into an hour's range would otherwise be a blip at the right edge. At
    least :data:`CHART_SPAN_MIN`, centred on the data, so a lone point is
    drawn mid-chart; the range itself when no tick has a lag.
    """
    lags = [t.tick_us for t in ticks if t.lag_us is not None]
    if not lags:
        return since, max(end, since + timedelta(seconds=1))
    first = EPOCH + timedelta(microseconds=min(lags))
    last = EPOCH + timedelta(microseconds=max(lags))
    short = CHART_SPAN_MIN - (last - first)
    if short > timedelta(0):
        first, last = first - short / 2, last + short / 2
    return first, last


def lag_chart(ticks: Sequence[Light], start: datetime, end: datetime) -> LagChart:
    """The worst start lag per slice of ``[start, end]``, scaled into the view box."""
    first, last = micros(start), micros(end)
    slice_us = (last - first) / CHART_POINTS
    slices: dict[int, int] = {}
    counted = 0
    for figures in ticks:
        tick, lag_us = figures.tick_us, figures.lag_us
        if lag_us is None or not first <= tick <= last:
            continue
        counted += 1
        index = min(int((tick - first) / slice_us), CHART_POINTS - 1)
        slices[index] = max(slices.get(index, 0), lag_us)  # 0 at least: none before its tick
    top = _nice_ceiling(max(slices.values(), default=0) / 1e6)
    points = [
        ((index + 0.5) / CHART_POINTS * CHART_WIDTH, worst / 1e6 / top * CHART_DRAWN)
        for index, worst in sorted(slices.items())
    ]
    if len(points) == 1:  # a lone point draws nothing as a line: a short dash instead
        (x, y), dash = points[0], CHART_WIDTH / CHART_POINTS / 2
        points = [(x - dash, y), (x + dash, y)]
    drawn = " ".join(f"{x:.1f},{CHART_HEIGHT - y:.1f}" for x, y in points)
    return LagChart(
        drawn,
        texts.duration(timedelta(seconds=top)),
        texts.clock_time(start),
        texts.clock_time(end),
        counted,
    )


def _nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 5 x 10^k at or above ``value`` (at least 1 ms), for the y axis."""
    exponent = -3
    while True:
        for step in (1, 2, 5):
            ceiling = step * 10.0**exponent
            if ceiling >= value:
                return ceiling
        exponent += 1


@dataclass(frozen=True, slots=True)
class RunRow:
    """One row of a tick, for its details: who claimed it, when, for how long, and why it failed."""

    slot: int | None
    status: str
    sequence: str
    claimed_by: str | None
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int | None
    closed_by: str | None
    error: str | None
    lease_until: datetime | None

    def took(self, now: datetime) -> timedelta | None:
        """How long the run took, or has been going while still running; None if never claimed."""
        if self.started_at is None:
            return None
        return (self.finished_at or now) - self.started_at

    def shown(self, now: datetime) -> dict[str, str]:
        """Each field as the details panel shows it."""
        took = self.took(now)
        return {
            "slot": texts.optional(self.slot),
            "status": self.status,
            "sequence": texts.shown(self.sequence),
            "claimed_by": texts.shown(texts.optional(self.claimed_by)),
            "started_at": texts.moment(self.started_at, millis=True),
            "finished_at": texts.moment(self.finished_at, millis=True),
            "took": texts.duration(took) + (" so far" if self.finished_at is None and took else ""),
            "attempts": texts.optional(self.attempts),
            "closed_by": texts.shown(texts.optional(self.closed_by)),
            "error": texts.error_full(self.error),
            "error_line": texts.error_line(self.error),
        }
