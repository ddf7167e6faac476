"""A :class:`~.snapshot.Snapshot` as HTML (the first page) and as JSON (the live refresh).

The HTML comes from one Jinja2 template with autoescaping always on, so
every text from the table (names, labels, errors, hosts) reaches the page
as text, never as markup. The JSON carries the same texts, made by the same
functions, for the script to put in place with ``textContent``; it also
carries the raw figures and names, for programs reading it. Table text is
shown escaped as ``worksync status`` shows it (:func:`texts.shown`); where
the raw value is needed (a link's query, a data attribute the script sends
back) it is carried apart, never shown.

Neither ever holds the database URL, its host or a password: the page knows
only the table's name.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import resources
from typing import Any

import jinja2

from ..ledger import TickEntry
from . import texts
from .fleet import STALE_RULE
from .params import Filter, cursor_text
from .snapshot import (
    FLEET_COLUMNS,
    HISTORY_COLUMNS,
    OUTCOMES,
    SUMMARY_COLUMNS,
    Cell,
    FleetLine,
    HistoryPage,
    RunRow,
    Snapshot,
    WorkView,
    history_row,
)

STATIC_TYPES = {"app.js": "text/javascript", "style.css": "text/css"}


@dataclass(frozen=True, slots=True)
class Asset:
    """A file the page loads: its bytes, type, and a version for its URL (long caching)."""

    body: bytes
    media_type: str
    version: str


@functools.cache
def assets() -> dict[str, Asset]:
    """The script and style sheet, read once from the package."""
    folder = resources.files("worksync_sa.web").joinpath("static")
    found = {}
    for name, media_type in STATIC_TYPES.items():
        body = folder.joinpath(name).read_bytes()
        found[name] = Asset(body, media_type, hashlib.sha256(body).hexdigest()[:12])
    return found


@functools.cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("worksync_sa.web", "templates"),
        autoescape=True,  # every value, whatever the template's name
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def range_text(snapshot: Snapshot) -> str:
    """The range in words, as the page's heading states it."""
    end = "no end" if snapshot.until is None else texts.moment(snapshot.until)
    return f"ticks from {texts.moment(snapshot.since)} to {end} (UTC)"


def notices(snapshot: Snapshot) -> list[str]:
    """What the reader must know to trust the figures."""
    found = []
    if snapshot.fleet_capped:
        found.append(
            f"The table holds more works than the page lists: the first {len(snapshot.fleet)} "
            "by name. Choose one with the filter."
        )
    if snapshot.capped_from is not None:
        found.append(
            "This range holds more ticks than one page reads one by one: the counts cover "
            "every tick, the lag figures and charts the ticks from "
            f"{texts.moment(snapshot.capped_from)} UTC on. Narrow the range for all of them."
        )
    return found


SIGN_IN_PATH = "/act"
"""Where a viewer of a writable page gives the write token (the browser's login box)."""


class Access(enum.Enum):
    """What the page lets this viewer do, for what it draws (the guard enforces it)."""

    READ_ONLY = "read-only"
    """The page has no write token: nothing to act on, nothing to sign in to."""
    READ = "read"
    """The page could act, but this viewer's credentials only read: a way to sign in."""
    WRITE = "write"
    """This viewer holds the write token: the action buttons."""


def page(
    snapshot: Snapshot,
    view: Filter,
    *,
    table: str,
    base: str,
    refresh: timedelta,
    access: Access = Access.READ_ONLY,
) -> str:
    """The whole page; with ``access`` WRITE, its action buttons too."""
    files = assets()
    history_page = snapshot.history
    template = _environment().get_template("page.html")
    return template.render(
        snapshot=snapshot,
        view=view,
        table=table,
        range_text=range_text(snapshot),
        updated=texts.moment(snapshot.now),
        notices=notices(snapshot),
        summary_columns=SUMMARY_COLUMNS,
        history_columns=HISTORY_COLUMNS,
        history_rows=[
            (entry, history_row(entry), _full_error(entry.error)) for entry in history_page.entries
        ],
        fleet_columns=FLEET_COLUMNS,
        fleet_rows=[(line, line.row(snapshot.now)) for line in snapshot.fleet],
        stale_rule=STALE_RULE,
        shown=texts.shown,
        # As in `worksync status`: a label column only when some label is not its tick's time.
        labelled=any(e.sequence != texts.moment(e.tick_at) for e in snapshot.history.entries),
        outcomes=OUTCOMES,
        next_query=_next_query(history_page, view),
        latest_first=history_page.latest_first,
        first_query=view.first_page().query(),
        work_query=lambda name: view.for_work(name).query(),
        iso=_iso,
        script_url=f"{base}/static/app.js?v={files['app.js'].version}",
        style_url=f"{base}/static/style.css?v={files['style.css'].version}",
        state_url=f"{base}/api/state",
        tick_url=f"{base}/api/tick",
        refresh_ms=int(refresh.total_seconds() * 1000),
        can_act=access is Access.WRITE,
        sign_in_url=f"{base}{SIGN_IN_PATH}" if access is Access.READ else None,
        actions_url=f"{base}/api/actions" if access is Access.WRITE else "",
    )


def state(snapshot: Snapshot, view: Filter) -> dict[str, Any]:
    """The live refresh's document: what the summary, timelines and charts show."""
    return {
        "now": _iso(snapshot.now),
        "since": _iso(snapshot.since),
        "until": _iso(snapshot.until),
        "range": range_text(snapshot),
        "updated": texts.moment(snapshot.now),
        "notices": notices(snapshot),
        "capped_from": _iso(snapshot.capped_from),
        "columns": list(SUMMARY_COLUMNS),
        "works": [_work(work, view) for work in snapshot.works],
        "fleet_columns": list(FLEET_COLUMNS),
        "fleet": [_fleet_line(line, snapshot.now, view) for line in snapshot.fleet],
        "stale_rule": STALE_RULE,
    }


def _fleet_line(line: FleetLine, now: datetime, view: Filter) -> dict[str, Any]:
    return {
        "name": line.name,
        "shown": texts.shown(line.name),
        "cron": line.cron_text if line.cron_text != texts.NONE else None,
        "last_tick": _iso(line.last_tick),
        "outcome": line.outcome,
        "next_tick": _iso(line.next_tick),
        "stale": line.stale is not None,
        "stale_reason": line.stale,
        "paused": line.paused,
        "row": line.row(now),
        "link": "?" + view.for_work(line.name).query(),
    }


def _full_error(error: str | None) -> str | None:
    """The whole error as shown, when its first line alone does not say all of it."""
    full = texts.error_full(error)
    return full if full != texts.error_line(error) else None


def _next_query(page_: HistoryPage, view: Filter) -> str | None:
    if page_.next is None:
        return None
    if page_.latest_first:
        return view.query(before=page_.next)
    return view.query(after=page_.next)


def _work(work: WorkView, view: Filter) -> dict[str, Any]:
    s = work.summary
    chart = work.chart
    return {
        "name": s.name,
        "shown": work.shown_name,
        "cron": work.settings.cron,
        "timezone": work.settings.timezone,
        "max_run": work.max_run,
        "ticks": s.ticks,
        "claimed": s.claimed,
        "succeeded": s.succeeded,
        "failed": s.failed,
        "recovered": s.recovered,
        "missed": s.missed,
        "success_rate": s.success_rate,
        "lag_p50": _seconds(s.lag_p50),
        "lag_p95": _seconds(s.lag_p95),
        "row": work.row,
        "link": "?" + view.for_work(s.name).query(),
        "timeline": [_cell(cell) for cell in work.cells],
        "lag_chart": {
            "points": chart.points,
            "top": chart.top,
            "start": chart.start,
            "end": chart.end,
            "ticks": chart.ticks,
        },
    }


def _cell(cell: Cell) -> dict[str, Any]:
    return {
        "tick": _iso(cell.tick_at),
        "name": cell.name,
        "sequence": cell.sequence,
        "outcome": cell.outcome,
        "upcoming": cell.upcoming,
        "title": cell.title,
    }


def entry_document(entry: TickEntry) -> dict[str, Any]:
    """One tick's ledger figures, raw."""
    return {
        "tick": _iso(entry.tick_at),
        "name": entry.name,
        "sequence": entry.sequence,
        "max_run": entry.max_run,
        "created": entry.created,
        "queued": entry.queued,
        "running": entry.running,
        "succeeded": entry.succeeded,
        "failed": entry.failed,
        "recovered": entry.recovered,
        "missed": entry.missed,
        "surplus": entry.surplus,
        "lag": _seconds(entry.lag),
        "error": entry.error,
    }


def history(page_: HistoryPage, view: Filter) -> dict[str, Any]:
    """One history page: its ticks, the latest first, and the cursor of the next (older) page.

    ``before`` is that cursor; a request that paged with ``after`` (earliest
    first, as the page did before) gets ``after`` instead, so a program that
    walked the history that way keeps working. ``next`` is the next page's
    query either way.
    """
    cursor = None if page_.next is None else cursor_text(page_.next)
    query = _next_query(page_, view)
    return {
        "columns": list(HISTORY_COLUMNS),
        "order": "latest first" if page_.latest_first else "earliest first",
        "entries": [
            {**entry_document(e), "row": history_row(e), "error_full": texts.error_full(e.error)}
            for e in page_.entries
        ],
        "before": cursor if page_.latest_first else None,
        "after": None if page_.latest_first else cursor,
        "next": None if query is None else "?" + query,
    }


def tick(name: str, at: datetime, label: str, rows: list[RunRow], now: datetime) -> dict[str, Any]:
    """One tick's rows, for its details."""
    return {
        "name": name,
        "tick": _iso(at),
        "sequence": label,
        "heading": f"{texts.shown(name)} · {texts.moment(at)} UTC",
        "rows": [
            {
                "slot": row.slot,
                "status": row.status,
                "sequence": row.sequence,
                "claimed_by": row.claimed_by,
                "started_at": _iso(row.started_at),
                "finished_at": _iso(row.finished_at),
                "seconds": _seconds(row.took(now)),
                "attempts": row.attempts,
                "closed_by": row.closed_by,
                "error": row.error,
                "lease_until": _iso(row.lease_until),
                "text": row.shown(now),
            }
            for row in rows
        ],
    }


def to_json(document: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON; ``<`` escaped too, so no text can close a tag it is put in."""
    text = json.dumps(document, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").encode()


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def _seconds(delta: timedelta | None) -> float | None:
    return None if delta is None else delta.total_seconds()
