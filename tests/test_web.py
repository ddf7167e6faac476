"""The status page over HTTP, in-process, on SQLite, MariaDB and PostgreSQL.

Every figure is checked against a known history written here with plain
inserts (see :func:`build`): counts, success rates and lag quantiles are
worked out by the test from the rows it wrote, never by the package. Also:
only GET and HEAD, the security headers on every answer, the token rules,
hostile text escaped, keyset paging through the history, the filters, the
JSON endpoints, mounting under a prefix, no URL or password anywhere, the
command line's refusals, and a table left exactly as it was.

The history (``NOW`` is the page's clock; every tick is placed around it):

* ``report``: every minute, ``max_run`` 1. The 30 due ticks succeed, except
  two that fail, one that is missed, one whose worker was lost (recovered)
  and the last, still running; the claimed ones start 0.1 s, 0.2 s, ... 2.9 s
  late. Three upcoming ticks are queued, and one tick two hours ago lies
  outside the default range.
* ``shard``: every 5 minutes, ``max_run`` 3. Each of its 6 due ticks has two
  runs that succeed (1 s and 2 s late, by two hosts) and one slot missed; one
  upcoming tick is queued.
* two works whose names and texts are hostile markup.
* ``legacy``: one row another program wrote, with no tick time and no spec.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import pytest
import sqlalchemy as sa

from worksync_sa import Ledger, Scheduler, SchedulerConfig, Work, WorkSync, default_sequence
from worksync_sa.models import table_named

from .conftest import Backend, Db, Installed, user_with_password
from .extras import skip_module

try:  # the web extra, and httpx (the dev extra's) to call the page in-process
    import anyio
    import httpx
    from prometheus_client.parser import text_string_to_metric_families
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from worksync_sa.web import StatusPage, app
except ModuleNotFoundError as missing:
    skip_module(missing)

TOKEN = "s3cret-Token-0123456789"
PASSWORD = "pw-Hunter2-Secret"
NOW = datetime(2030, 6, 1, 12, 0, 0, tzinfo=timezone.utc)
MINUTE = timedelta(minutes=1)
SCRIPT_NAME = "<script>alert(1)</script>"
IMG_TEXT = '"><img src=x onerror=alert(1)>'
HOSTILE_CLAIMER = "<b>bold</b>&amp;"
LEASE_LOST = "lease expired (worker lost)"
MISSED_TEXT = "missed: nobody claimed it within its grace period"
QUEUED, RUNNING, SUCCESS, FAILED = 1, 2, 3, 4


def label(tick: datetime) -> str:
    """The default sequence: the tick in UTC, ``YYYY-MM-DD HH:MM:SS``."""
    return tick.strftime("%Y-%m-%d %H:%M:%S")


def spec(max_run: int, cron: str) -> str:
    return f"sequence=utc; max_run={max_run}; cron={cron}; timezone=UTC"


@dataclass
class Expected:
    """One work's figures, as the page must show them."""

    name: str
    cron: str
    max_run: int
    ticks: int
    claimed: int
    succeeded: int
    failed: int
    recovered: int
    missed: int
    lags: list[float] = field(default_factory=list)
    outcomes: list[str] = field(default_factory=list)
    """Each tick's colour, earliest first, upcoming ones included."""

    @property
    def rate(self) -> str:
        settled = self.succeeded + self.failed + self.missed
        return "-" if settled == 0 else f"{self.succeeded / settled:.1%}"

    def lag(self, q: float) -> float | None:
        """The q-quantile of the lags, interpolated between the two nearest ranks."""
        ordered = sorted(self.lags)
        if not ordered:
            return None
        position = (len(ordered) - 1) * q
        low = int(position)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (position - low)

    def row(self) -> list[str]:
        """The summary line as the page writes it."""
        return [
            self.name,
            self.cron,
            str(self.max_run),
            str(self.ticks),
            str(self.claimed),
            str(self.succeeded),
            str(self.failed),
            str(self.recovered),
            str(self.missed),
            self.rate,
            seconds_text(self.lag(0.5)),
            seconds_text(self.lag(0.95)),
        ]


def seconds_text(value: float | None) -> str:
    """A lag below a minute as the page writes it: ``300ms``, ``1.5s``, ``2s``."""
    if value is None:
        return "-"
    if value < 1:
        return f"{round(value * 1000)}ms"
    return f"{f'{value:.3f}'.rstrip('0').rstrip('.')}s"


@dataclass
class History:
    """The rows written, and what the page must make of them."""

    rows: list[dict[str, Any]]
    works: dict[str, Expected]
    due_ticks: list[tuple[datetime, str]]
    """Every (tick, work) in the default range, in the ledger's order (upcoming included)."""


def _row(
    name: str, tick: datetime | None, slot: int | None, status: int, **extra: Any
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "name": name,
        "sequence": label(tick) if tick is not None else extra.pop("sequence"),
        "slot": slot,
        "tick_at": tick,
        "status": status,
        "created_at": (tick or NOW) - 10 * MINUTE,
        "started_at": None,
        "finished_at": None,
        "claimed_by": None,
        "error": None,
        "closed_by": None,
        "attempts": 0,
        "token": None,
        "lease_until": None,
        "spec": None,
    }
    row.update(extra)
    return row


def build() -> History:
    rows: list[dict[str, Any]] = []
    works: dict[str, Expected] = {}
    ticks: list[tuple[datetime, str]] = []

    # report: every minute, max_run 1.
    report = Expected("report", "* * * * *", 1, 33, 29, 25, 2, 1, 1)
    report_spec = spec(1, "* * * * *")
    lag = 0
    for minutes in range(30, 0, -1):
        tick = NOW - minutes * MINUTE
        ticks.append((tick, "report"))
        if minutes == 20:
            rows.append(
                _row(
                    "report",
                    tick,
                    0,
                    FAILED,
                    error=MISSED_TEXT,
                    closed_by="missed",
                    finished_at=tick + MINUTE,
                    spec=report_spec,
                )
            )
            report.outcomes.append("missed")
            continue
        lag += 1
        started = tick + timedelta(milliseconds=100 * lag)
        report.lags.append(lag / 10)
        common = {
            "started_at": started,
            "claimed_by": f"worker-{lag % 3}:{1000 + lag}",
            "attempts": 1,
            "token": f"t{lag}",
            "spec": report_spec,
        }
        if minutes in (25, 10):
            rows.append(
                _row(
                    "report",
                    tick,
                    0,
                    FAILED,
                    finished_at=started + timedelta(seconds=2),
                    error=f"db timeout at minute {minutes}",
                    closed_by="worker",
                    **common,
                )
            )
            report.outcomes.append("failed")
        elif minutes == 15:
            rows.append(
                _row(
                    "report",
                    tick,
                    0,
                    FAILED,
                    finished_at=started + 6 * MINUTE,
                    error=LEASE_LOST,
                    closed_by="lease",
                    **common,
                )
            )
            report.outcomes.append("recovered")
        elif minutes == 1:
            rows.append(
                _row("report", tick, 0, RUNNING, lease_until=started + 5 * MINUTE, **common)
            )
            report.outcomes.append("running")
        else:
            rows.append(
                _row(
                    "report",
                    tick,
                    0,
                    SUCCESS,
                    finished_at=started + timedelta(seconds=1.5),
                    closed_by="worker",
                    **common,
                )
            )
            report.outcomes.append("succeeded")
    for minutes in (1, 2, 3):
        tick = NOW + minutes * MINUTE
        ticks.append((tick, "report"))
        rows.append(_row("report", tick, 0, QUEUED, spec=report_spec))
        report.outcomes.append("queued")
    old = NOW - timedelta(hours=2)
    rows.append(
        _row(
            "report",
            old,
            0,
            SUCCESS,
            started_at=old + timedelta(seconds=30),
            finished_at=old + MINUTE,
            closed_by="worker",
            attempts=1,
            claimed_by="old-host:1",
            spec=report_spec,
        )
    )
    works["report"] = report

    # shard: every 5 minutes, max_run 3: two runs succeed, one slot is missed.
    shard = Expected("shard", "*/5 * * * *", 3, 7, 12, 12, 0, 0, 6)
    shard_spec = spec(3, "*/5 * * * *")
    for fives in range(6, 0, -1):
        tick = NOW - fives * 5 * MINUTE
        ticks.append((tick, "shard"))
        for slot, host in ((0, "host-a:101"), (1, "host-b:202")):
            started = tick + timedelta(seconds=slot + 1)
            rows.append(
                _row(
                    "shard",
                    tick,
                    slot,
                    SUCCESS,
                    started_at=started,
                    claimed_by=host,
                    finished_at=started + timedelta(seconds=4),
                    closed_by="worker",
                    attempts=1,
                    spec=shard_spec,
                )
            )
        rows.append(
            _row(
                "shard",
                tick,
                2,
                FAILED,
                error=MISSED_TEXT,
                closed_by="missed",
                finished_at=tick + MINUTE,
                spec=shard_spec,
            )
        )
        shard.lags.append(1.0)
        shard.outcomes.append("missed")
    upcoming = NOW + 5 * MINUTE
    ticks.append((upcoming, "shard"))
    for slot in range(3):
        rows.append(_row("shard", upcoming, slot, QUEUED, spec=shard_spec))
    shard.outcomes.append("queued")
    works["shard"] = shard

    # Hostile markup in names, claimers and errors: shown literally, never run.
    for name, error in ((SCRIPT_NAME, IMG_TEXT), (IMG_TEXT, "<script>alert(2)</script>")):
        tick = NOW - 30 * MINUTE
        ticks.append((tick, name))
        started = tick + timedelta(seconds=3)
        rows.append(
            _row(
                name,
                tick,
                0,
                FAILED,
                started_at=started,
                claimed_by=HOSTILE_CLAIMER,
                finished_at=started + timedelta(seconds=1),
                error=error,
                closed_by="worker",
                attempts=1,
                spec=spec(1, "30 * * * *"),
            )
        )
        works[name] = Expected(name, "30 * * * *", 1, 1, 1, 0, 1, 0, 0, [3.0], ["failed"])

    # Another program's row: no tick time, no slot, no spec; shown at its label's time.
    legacy_tick = NOW - 10 * MINUTE
    ticks.append((legacy_tick, "legacy"))
    rows.append(
        _row(
            "legacy",
            None,
            None,
            SUCCESS,
            sequence=label(legacy_tick),
            started_at=legacy_tick + timedelta(seconds=2),
            finished_at=legacy_tick + timedelta(seconds=3),
            claimed_by=None,
        )
    )
    works["legacy"] = Expected("legacy", "-", 1, 1, 1, 1, 0, 0, 0, [2.0], ["succeeded"])

    ticks.sort()
    return History(rows, works, ticks)


def write(engine: sa.Engine, table: str, history: History) -> None:
    with engine.begin() as conn:
        conn.execute(sa.insert(table_named(table)), history.rows)


def dump(engine: sa.Engine, table: str) -> list[tuple[Any, ...]]:
    """Every row and column, in id order: compared before and after to prove nothing wrote."""
    t = table_named(table)
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(sa.select(t).order_by(t.c.id))]


# -- reading the page -----------------------------------------------------------------


class Page(HTMLParser):
    """The parts of the page the tests read: tables by id, timeline cells, every tag."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: dict[str, list[list[str]]] = {}
        self.cells: dict[str, list[dict[str, str]]] = {}
        self.tags: list[tuple[str, dict[str, str]]] = []
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {key: value or "" for key, value in attrs}
        self.tags.append((tag, found))
        if tag == "table" and "id" in found:
            self._table = found["id"]
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag == "td" and self._row is not None:
            self._cell = []
        elif tag == "button" and "cell" in found.get("class", "").split():
            self.cells.setdefault(found["data-name"], []).append(found)

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table is not None:
            if self._row:  # header rows hold th, not td
                self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def attribute(self, tag: str, key: str) -> list[str]:
        return [found[key] for name, found in self.tags if name == tag and key in found]


@dataclass
class Client:
    """Requests through the ASGI app itself, in-process (no socket)."""

    asgi: Any
    headers: dict[str, str] = field(default_factory=dict)

    def request(self, method: str, path: str, **headers: str) -> httpx.Response:
        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.asgi)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
                return await c.request(method, path, headers={**self.headers, **headers})

        return anyio.run(send)

    def get(self, path: str, **headers: str) -> httpx.Response:
        return self.request("GET", path, **headers)

    def json(self, path: str) -> Any:
        response = self.get(path)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        return response.json()


@pytest.fixture
def history(db: Db) -> History:
    written = build()
    write(db.engine, db.table, written)
    return written


@pytest.fixture
def page(db: Db, history: History) -> Iterator[StatusPage]:
    status_page = app(db.engine, db.table, clock=lambda: NOW)
    yield status_page
    status_page.close()


@pytest.fixture
def client(page: StatusPage) -> Client:
    return Client(page)


def summary(html: str) -> dict[str, list[str]]:
    return {row[0]: row for row in Page(html).tables["summary"]}


def iso(tick: datetime) -> str:
    return tick.isoformat()


def tick_path(name: str, tick: datetime, sequence: str = "") -> str:
    return "/api/tick?" + urlencode({"name": name, "tick": iso(tick), "sequence": sequence})


def row_of(history: History, name: str, tick: datetime, slot: int = 0) -> dict[str, Any]:
    return next(
        r for r in history.rows if r["name"] == name and r["tick_at"] == tick and r["slot"] == slot
    )


# -- the figures --------------------------------------------------------------------


def test_the_summary_shows_each_work_as_its_history_says(client: Client, history: History) -> None:
    shown = summary(client.get("/").text)
    assert set(shown) == set(history.works)
    for name, expected in history.works.items():
        assert shown[name] == expected.row(), name
    # Worked out by hand too, for the two works whose quantiles interpolate.
    assert shown["report"][9:] == ["89.3%", "1.5s", "2.76s"]
    assert shown["shard"][9:] == ["66.7%", "1s", "1s"]


def test_the_timelines_colour_each_tick_by_its_worst_outcome(
    client: Client, history: History
) -> None:
    cells = Page(client.get("/").text).cells
    for name, expected in history.works.items():
        outcomes = [c["class"].split()[1] for c in cells[name]]
        assert outcomes == expected.outcomes, name
        upcoming = ["upcoming" in c["class"].split() for c in cells[name]]
        ticks = [datetime.fromisoformat(c["data-tick"]) for c in cells[name]]
        assert upcoming == [tick > NOW for tick in ticks]
        assert ticks == sorted(ticks)
    failed = next(c for c in cells["report"] if c["data-tick"] == iso(NOW - 25 * MINUTE))
    assert failed["title"] == (
        f"{label(NOW - 25 * MINUTE)} UTC · failed · 1 failed of max_run 1 · lag 600ms"
    )  # the sixth claimed tick: 0.6 s late
    shard = next(c for c in cells["shard"] if c["data-tick"] == iso(NOW - 5 * MINUTE))
    assert shard["title"].startswith(
        f"{label(NOW - 5 * MINUTE)} UTC · missed · 2 succeeded, 1 missed of max_run 3 · lag 1s"
    )


def test_a_timeline_keeps_only_the_latest_ticks(db: Db, history: History) -> None:
    status_page = app(db.engine, db.table, clock=lambda: NOW, timeline_ticks=10)
    try:
        cells = Page(Client(status_page).get("/").text).cells["report"]
    finally:
        status_page.close()
    assert [c["class"].split()[1] for c in cells] == history.works["report"].outcomes[20:]
    assert cells[0]["data-tick"] == iso(NOW - 10 * MINUTE)


def test_the_state_json_carries_the_same_figures(client: Client, history: History) -> None:
    state = client.json("/api/state")
    assert state["now"] == iso(NOW)
    assert state["since"] == iso(NOW - timedelta(hours=1))
    assert state["until"] is None
    works = {work["name"]: work for work in state["works"]}
    assert set(works) == set(history.works)
    for name, expected in history.works.items():
        work = works[name]
        assert work["row"] == expected.row()
        assert (work["ticks"], work["claimed"], work["succeeded"], work["failed"]) == (
            expected.ticks,
            expected.claimed,
            expected.succeeded,
            expected.failed,
        )
        assert (work["recovered"], work["missed"], work["max_run"]) == (
            expected.recovered,
            expected.missed,
            expected.max_run,
        )
        assert work["lag_p50"] == pytest.approx(expected.lag(0.5))
        assert work["lag_p95"] == pytest.approx(expected.lag(0.95))
        assert [tick["outcome"] for tick in work["timeline"]] == expected.outcomes
    assert works["report"]["cron"] == "* * * * *"
    assert works["report"]["success_rate"] == pytest.approx(25 / 28)
    assert works["legacy"]["cron"] is None
    chart = works["report"]["lag_chart"]
    assert chart["ticks"] == 29  # the claimed due ticks: the missed one has no lag
    assert chart["top"] == "5s"  # the worst lag, 2.9 s, rounded up to 1, 2 or 5 x 10^k
    assert re.fullmatch(r"[0-9., ]+", chart["points"])


def test_a_ticks_details_say_who_claimed_it_when_for_how_long_and_why(
    client: Client, history: History
) -> None:
    tick = NOW - 25 * MINUTE
    written = row_of(history, "report", tick)
    details = client.json(tick_path("report", tick, label(tick)))
    assert details["heading"] == f"report · {label(tick)} UTC"
    (row,) = details["rows"]
    assert row["status"] == "failed"
    assert row["claimed_by"] == written["claimed_by"]
    assert datetime.fromisoformat(row["started_at"]) == written["started_at"]
    assert row["seconds"] == pytest.approx(2.0)
    assert row["error"] == "db timeout at minute 25"
    assert row["text"]["took"] == "2s"
    assert row["text"]["claimed_by"] == written["claimed_by"]

    shard_tick = NOW - 10 * MINUTE
    details = client.json(tick_path("shard", shard_tick))
    assert [r["slot"] for r in details["rows"]] == [0, 1, 2]
    assert [r["claimed_by"] for r in details["rows"]] == ["host-a:101", "host-b:202", None]
    assert [r["status"] for r in details["rows"]] == ["success", "success", "failed"]
    assert details["rows"][2]["closed_by"] == "missed"

    running = NOW - MINUTE
    started = row_of(history, "report", running)["started_at"]
    (row,) = client.json(tick_path("report", running))["rows"]
    assert row["status"] == "running"
    assert row["seconds"] == pytest.approx((NOW - started).total_seconds())
    assert row["text"]["took"].endswith(" so far")

    legacy = NOW - 10 * MINUTE  # no tick time in the table: found by its label
    (row,) = client.json(tick_path("legacy", legacy, label(legacy)))["rows"]
    assert row["status"] == "success"
    assert row["seconds"] == pytest.approx(1.0)


def test_the_page_folds_as_ledger_summary_does_on_rows_the_services_wrote(db: Db) -> None:
    """The page sums counts in SQL and reads lags light: it must agree with Ledger.summary."""
    now = db.db_now().replace(microsecond=0)
    start = now - timedelta(seconds=40)
    works = [
        Work("every-second", "* * * * * *", max_run=2, grace="5s"),
        Work("every-ten", "*/10 * * * * *", grace="5s"),
    ]
    engine = db.engine
    scheduler = Scheduler(engine, works, SchedulerConfig(lookahead="60s"), table=db.table)
    scheduler.run_pass(now=start)  # the ticks of (start, start + 60 s]: some past, some upcoming
    scheduler.close()
    sync = WorkSync(engine, table=db.table, worker_id="host-a:1")
    for n in range(1, 31):
        tick = start + timedelta(seconds=n)
        for name in ("every-second", "every-ten"):
            claim = sync.acquire(name, default_sequence(tick)) if n % 4 else None
            if claim is not None and n % 7 == 0:
                claim.fail(f"boom {n}")
            elif claim is not None:
                claim.success()
    sync.recover(now=now)  # what nobody claimed within its grace is closed as missed
    sync.close()
    status_page = app(engine, db.table, clock=lambda: now)
    ledger = Ledger(engine, table=db.table)
    try:
        state = Client(status_page).json("/api/state")
        expected = ledger.summary(since=now - timedelta(hours=1))
    finally:
        status_page.close()
        ledger.close()
    works_shown = {work["name"]: work for work in state["works"]}
    assert sorted(works_shown) == [s.name for s in expected]
    for summary_ in expected:
        shown = works_shown[summary_.name]
        for figure in ("ticks", "claimed", "succeeded", "failed", "recovered", "missed"):
            assert shown[figure] == getattr(summary_, figure), (summary_.name, figure)
        for figure in ("lag_p50", "lag_p95"):
            lag = getattr(summary_, figure)
            assert shown[figure] == pytest.approx(None if lag is None else lag.total_seconds())
    assert works_shown["every-second"]["missed"] > 0
    assert works_shown["every-second"]["failed"] > 0
    assert works_shown["every-ten"]["max_run"] == 1


def test_the_pages_claimed_leaves_out_surplus_rows_as_the_ledger_does(db: Db) -> None:
    """Rows closed as surplus (a tick relabelled mid-change) were never claimed."""
    now = db.db_now().replace(microsecond=0)
    tick = now - timedelta(seconds=30)
    rows = [
        {"name": "w", "sequence": "old", "slot": slot, "tick_at": tick, "status": 4,
         "closed_by": "surplus", "error": "surplus: this tick is labelled 'new' now",
         "started_at": None}
        for slot in (0, 1)
    ] + [
        {"name": "w", "sequence": "new", "slot": slot, "tick_at": tick, "status": 3,
         "closed_by": "worker", "error": None, "started_at": tick + timedelta(seconds=1)}
        for slot in (2, 3)
    ]  # fmt: skip
    with db.engine.begin() as conn:
        conn.execute(table_named(db.table).insert(), rows)
    status_page = app(db.engine, db.table, clock=lambda: now)
    ledger = Ledger(db.engine, table=db.table)
    try:
        (shown,) = Client(status_page).json("/api/state")["works"]
        (expected,) = ledger.summary(since=now - timedelta(hours=1))
    finally:
        status_page.close()
        ledger.close()
    assert expected.claimed == 2
    assert (shown["claimed"], shown["succeeded"], shown["ticks"]) == (2, 2, 1)


# -- history and filters ------------------------------------------------------------


def test_the_originals_labels_are_read_in_their_zone_and_the_config_gives_the_cron(
    db: Db,
) -> None:
    """Another program's rows labelled in Europe/Berlin (UTC+2 in June): ``sequence_zone``
    dates them, ``works`` names their cron; a tick claimed ahead of it is not upcoming."""
    berlin = timedelta(hours=2)
    ran, ahead, waiting = NOW - 20 * MINUTE, NOW + timedelta(seconds=2), NOW + 10 * MINUTE
    rows = [
        _row("theirs", None, None, SUCCESS, sequence=label(ran + berlin),
             started_at=ran + timedelta(seconds=4), finished_at=ran + timedelta(seconds=5)),
        # A worker whose clock runs 3 s ahead of the database's claimed this one early.
        _row("theirs", None, None, RUNNING, sequence=label(ahead + berlin),
             started_at=NOW - timedelta(seconds=1)),
        _row("theirs", None, None, QUEUED, sequence=label(waiting + berlin)),
    ]  # fmt: skip
    with db.engine.begin() as conn:
        conn.execute(sa.insert(table_named(db.table)), rows)
    works = [Work("theirs", "*/5 * * * *", timezone="Europe/Berlin")]
    status_page = app(
        db.engine, db.table, clock=lambda: NOW, sequence_zone="Europe/Berlin", works=works
    )
    try:
        state = Client(status_page).json("/api/state")
        history = Client(status_page).json("/api/history")
        html = Client(status_page).get("/").text
    finally:
        status_page.close()
    (work,) = state["works"]
    cells = [(c["tick"], c["outcome"], c["upcoming"]) for c in work["timeline"]]
    assert cells == [
        (iso(ran), "succeeded", False),
        (iso(ahead), "running", False),  # ran, so not upcoming, though not yet due
        (iso(waiting), "queued", True),
    ]
    assert work["lag_p50"] == pytest.approx((4 - 3) / 2)  # the early claim's lag is -3 s
    assert (work["cron"], work["timezone"]) == ("*/5 * * * *", "Europe/Berlin")
    assert summary(html)["theirs"][1] == "*/5 * * * * (Europe/Berlin)"
    assert [entry["tick"] for entry in history["entries"]] == [iso(waiting), iso(ahead), iso(ran)]
    with pytest.raises(ValueError, match="sequence_zone"):
        app(db.engine, db.table, sequence_zone="Mars/Olympus")


def brute_force_ticks(history: History, since: datetime) -> list[tuple[datetime, str]]:
    """Every (tick, work) the written rows hold from ``since`` on, the latest first.

    Worked out from the rows themselves: an undated row's tick is its label read as UTC.
    """
    found = {
        (row["tick_at"] or datetime.fromisoformat(row["sequence"] + "+00:00"), row["name"])
        for row in history.rows
    }
    return sorted((pair for pair in found if pair[0] >= since), reverse=True)


def test_the_history_is_latest_first_and_pages_back_with_before(db: Db, history: History) -> None:
    status_page = app(db.engine, db.table, clock=lambda: NOW, page_size=7)
    client = Client(status_page)
    expected = brute_force_ticks(history, NOW - timedelta(hours=1))
    assert sorted(expected) == history.due_ticks
    try:
        seen: list[tuple[datetime, str]] = []
        path, pages = "/api/history", 0
        while True:
            page = client.json(path)
            pages += 1
            assert page["order"] == "latest first"
            assert len(page["entries"]) <= 7
            seen += [(datetime.fromisoformat(e["tick"]), e["name"]) for e in page["entries"]]
            if page["before"] is None:
                assert page["next"] is None
                break
            assert parse_qs(page["next"][1:])["before"] == [page["before"]]
            path = f"/api/history?before={page['before']}"
        assert pages == -(-len(expected) // 7)
        assert seen == expected  # the latest first, every tick once: no gap, no duplicate

        # The page's own links walk the same way, the latest first.
        shown: list[tuple[str, str]] = []
        path = "/"
        while True:
            parsed = Page(client.get(path).text)
            shown += [(row[0], row[1]) for row in parsed.tables["history"]]
            links = {f["id"]: f["href"] for tag, f in parsed.tags if tag == "a" and "id" in f}
            if "next-page" not in links:
                break
            assert links["next-page"].startswith("?")
            assert "first-page" in links or path == "/"
            path = "/" + links["next-page"]
        assert shown == [(label(t), n) for t, n in expected]

        # One work alone, paged back along its own index.
        report = [pair for pair in expected if pair[1] == "report"]
        seen, path = [], "/api/history?name=report"
        while path:
            page = client.json(path)
            seen += [(datetime.fromisoformat(e["tick"]), e["name"]) for e in page["entries"]]
            path = page["next"] and "/api/history" + page["next"]
        assert seen == report
    finally:
        status_page.close()


def test_after_still_pages_forward_earliest_first(db: Db, history: History) -> None:
    """A program that walked the history with ``after`` (the page's order before) still can."""
    status_page = app(db.engine, db.table, clock=lambda: NOW, page_size=7)
    client = Client(status_page)
    expected = brute_force_ticks(history, NOW - timedelta(hours=1))[::-1]
    try:
        first = client.json("/api/history")
        oldest = first["entries"][-1]
        start = (datetime.fromisoformat(oldest["tick"]), oldest["name"], oldest["sequence"])
        from worksync_sa.web.params import cursor_text

        seen: list[tuple[datetime, str]] = []
        path = f"/api/history?after={cursor_text(start)}"
        while path:
            page = client.json(path)
            assert page["order"] == "earliest first"
            assert page["before"] is None
            seen += [(datetime.fromisoformat(e["tick"]), e["name"]) for e in page["entries"]]
            path = page["after"] and f"/api/history?after={page['after']}"
        later = [pair for pair in expected if pair > start[:2]]
        assert seen == later
        assert client.get(f"/api/history?after={cursor_text(start)}&before=x").status_code == 400
    finally:
        status_page.close()


# -- every work, and whether its schedule is kept ------------------------------------

HOUR = timedelta(hours=1)


def fleet_history() -> History:
    """Works whose ticks lie mostly or wholly outside the default hour, and their states.

    ``daily`` ran at 03:00 today (9 h ago) and its next tick is tomorrow, not yet
    created: healthy. ``stopped`` ticks every 10 minutes, and its latest row is 3 h
    old: its scheduler stopped. ``stuck`` has queued ticks from 5 minutes ago that
    nobody claimed (grace 60 s). ``healthy`` ticks every minute, ran up to a minute
    ago and has its next ticks queued. ``weekly-00`` .. ``weekly-49`` ran last Monday.
    """
    rows: list[dict[str, Any]] = []

    def done(name: str, tick: datetime, cron: str, **extra: Any) -> None:
        rows.append(
            _row(name, tick, 0, SUCCESS, started_at=tick + timedelta(seconds=1),
                 finished_at=tick + timedelta(seconds=2), closed_by="worker", attempts=1,
                 spec=spec(1, cron), grace_seconds=60, **extra)
        )  # fmt: skip

    def queued(name: str, tick: datetime, cron: str) -> None:
        rows.append(_row(name, tick, 0, QUEUED, spec=spec(1, cron), grace_seconds=60))

    for days in (2, 1, 0):
        done("daily", NOW.replace(hour=3) - timedelta(days=days), "0 3 * * *")
    for step in range(6):
        done("stopped", NOW - 3 * HOUR - step * 10 * MINUTE, "*/10 * * * *")
    for minutes in range(-8, -5):
        done("stuck", NOW + minutes * MINUTE, "* * * * *")
    for minutes in range(-5, 4):
        queued("stuck", NOW + minutes * MINUTE, "* * * * *")
    for minutes in range(-3, 0):
        done("healthy", NOW + minutes * MINUTE, "* * * * *")
    for minutes in range(1, 4):
        queued("healthy", NOW + minutes * MINUTE, "* * * * *")
    monday = NOW.replace(hour=0) - timedelta(days=NOW.weekday())  # 2030-05-27, 00:00
    for n in range(50):
        done(f"weekly-{n:02d}", monday, "0 0 * * 1")
    return History(rows, {}, [])


def test_every_work_is_listed_with_its_last_and_next_tick_and_stale_flag(db: Db) -> None:
    written = fleet_history()
    write(db.engine, db.table, written)
    status_page = app(db.engine, db.table, clock=lambda: NOW)
    client = Client(status_page)
    try:
        html = client.get("/").text
        state = client.json("/api/state")
    finally:
        status_page.close()
    fleet = {row[0]: row for row in Page(html).tables["fleet"]}
    names = {row["name"] for row in written.rows}
    assert set(fleet) == names  # every work, though most have no tick in the last hour
    assert len(names) == 54
    in_range = {row[0] for row in Page(html).tables["summary"]}
    assert in_range == {"stuck", "healthy"}

    # The last and next tick, worked out from the rows written.
    for name in names:
        mine = [row for row in written.rows if row["name"] == name]
        last = max((r for r in mine if r["tick_at"] <= NOW), key=lambda r: r["tick_at"])
        upcoming = [r["tick_at"] for r in mine if r["tick_at"] > NOW]
        line = fleet[name]
        assert line[2] == label(last["tick_at"]), name
        assert line[5] == (label(min(upcoming)) if upcoming else "-"), name
    assert fleet["daily"][1:] == [
        "0 3 * * *", label(NOW.replace(hour=3)), "succeeded", "9h ago", "-", "-", "ok",
    ]  # fmt: skip
    assert fleet["weekly-07"][3:5] == ["succeeded", "5d12h ago"]
    assert fleet["healthy"][3:] == ["succeeded", "1m ago", label(NOW + MINUTE), "1m", "ok"]
    assert fleet["stopped"][-1] == "stale"
    assert fleet["stuck"][-1] == "stale"
    assert fleet["stuck"][3] == "queued"
    stale = {name for name, row in fleet.items() if row[-1] == "stale"}
    assert stale == {"stopped", "stuck"}

    # The rule on the page, and each stale work's reason, on hover.
    rows = {f["data-work"]: f for tag, f in Page(html).tags if tag == "tr" and "data-work" in f}
    assert rows["stopped"].get("class") == "stale"
    titles = [f["title"] for tag, f in Page(html).tags if tag == "td" and "title" in f]
    stopped = label(NOW - 3 * HOUR + 10 * MINUTE)
    assert any(
        t.startswith(f"Stale: its cron had a tick at {stopped} UTC and no scheduler created it")
        for t in titles
    )
    assert any(f"its tick of {label(NOW - 5 * MINUTE)} UTC is still queued" in t for t in titles)
    assert all("Stale: a tick is still queued past its due time" in t for t in titles)

    lines = {line["name"]: line for line in state["fleet"]}
    assert set(lines) == names
    assert lines["stopped"]["stale"] is True
    assert lines["daily"]["stale"] is False
    assert lines["daily"]["last_tick"] == iso(NOW.replace(hour=3))
    assert lines["healthy"]["next_tick"] == iso(NOW + MINUTE)
    assert lines["daily"]["cron"] == "0 3 * * *"
    assert "no upcoming tick" in lines["stopped"]["stale_reason"]
    # The filter offers every work, and a work chosen shows its own line alone.
    options = Page(html).attribute("option", "value")
    assert set(options) == {"", *names}
    status_page = app(db.engine, db.table, clock=lambda: NOW)
    try:
        one = Page(Client(status_page).get("/?name=daily").text).tables["fleet"]
    finally:
        status_page.close()
    assert [row[0] for row in one] == ["daily"]


def test_the_stale_rule_takes_the_facts_and_a_pause_exempts_a_work() -> None:
    from worksync_sa.web.fleet import WorkFacts, stale_reason

    stopped = WorkFacts(
        name="w", cron="*/10 * * * *", timezone="UTC", grace=MINUTE,
        latest_tick=NOW - 3 * HOUR, oldest_queued=None,
    )  # fmt: skip
    assert stale_reason(stopped, NOW) is not None
    # Not before the missing tick's grace is over: a scheduler may be a moment late.
    assert stale_reason(stopped, NOW - 3 * HOUR + 10 * MINUTE + MINUTE) is None
    assert stale_reason(replace(stopped, paused=True), NOW) is None
    # No cron known (the original's rows): judged by its queued ticks alone.
    assert stale_reason(replace(stopped, cron=None), NOW) is None
    stuck = replace(stopped, cron=None, oldest_queued=NOW - 2 * MINUTE)
    assert stale_reason(stuck, NOW) is not None
    assert stale_reason(replace(stuck, oldest_queued=NOW - 30 * timedelta(seconds=1)), NOW) is None
    # A cron in another syntax and zone, as a spec records it.
    quartz = replace(stopped, cron="0 0 3 ? * * (quartz syntax)", timezone="Europe/Berlin")
    assert stale_reason(replace(quartz, latest_tick=NOW - timedelta(hours=8)), NOW) is None
    assert stale_reason(replace(quartz, latest_tick=NOW - timedelta(days=2)), NOW) is not None


# -- text shown as the command line shows it --------------------------------------------

RTL_NAME = "rtl-\u202etxt.exe"
NEWLINE_NAME = "two\nwords"
ZERO_WIDTH_NAME = "ad\u200bmin"
LONG_NAME = "long-" + "n" * 250
LONG_ERROR = ("Traceback (most recent call last):\n" + "  frame \u202e line\n" * 1100)[:16_000]
"""As long as the table keeps an error: 16,000 characters."""
ESCAPED = {
    RTL_NAME: "rtl-\\u202etxt.exe",
    NEWLINE_NAME: "two\\nwords",
    ZERO_WIDTH_NAME: "ad\\u200bmin",
    LONG_NAME: LONG_NAME,
}


def hostile_text_history() -> History:
    rows = []
    for n, name in enumerate(ESCAPED):
        tick = NOW - (n + 1) * MINUTE
        rows.append(
            _row(name, tick, 0, FAILED, started_at=tick + timedelta(seconds=1),
                 finished_at=tick + timedelta(seconds=2), closed_by="worker", attempts=1,
                 error=LONG_ERROR[:16_000], spec=spec(1, "0 0 1 1 *"))
        )  # fmt: skip
    return History(rows, {}, [])


def test_text_is_shown_as_the_command_line_shows_it(db: Db) -> None:
    write(db.engine, db.table, hostile_text_history())
    status_page = app(db.engine, db.table, clock=lambda: NOW)
    client = Client(status_page)
    try:
        html = client.get("/").text
        state = client.json("/api/state")
        history_page = client.json("/api/history")
        tick = NOW - MINUTE
        details = client.json(tick_path(RTL_NAME, tick))
    finally:
        status_page.close()
    parsed = Page(html)
    for table in ("fleet", "summary", "history"):
        shown = {row[0 if table != "history" else 1] for row in parsed.tables[table]}
        assert shown == set(ESCAPED.values()), table
    visible = "".join(cell for rows in parsed.tables.values() for row in rows for cell in row)
    for raw in ("\u202e", "\u200b", "two\nwords"):
        assert raw not in visible
    # The shown name is the escaped one; the link carries the raw name, URL-encoded.
    links = [f for tag, f in parsed.tags if tag == "a" and f.get("class") == "name"]
    by_title = {link["title"]: link for link in links}
    assert parse_qs(by_title["rtl-\\u202etxt.exe"]["href"][1:])["name"] == [RTL_NAME]
    assert by_title[LONG_NAME]["title"] == LONG_NAME  # the whole name, on hover
    headings = [f["title"] for tag, f in parsed.tags if tag == "h3"]
    assert set(headings) == set(ESCAPED.values())
    # The long error: its first line in the row, the whole text (escaped) on demand.
    errors = [row[-1] for row in parsed.tables["history"]]
    assert len(errors) == 4
    line = "Traceback (most recent call last):"
    for cell in errors:  # the summary's text, then the full text's
        assert cell.startswith(f"{line}\u2026{line}\n  frame \\u202e line\n")
        assert cell.count("frame \\u202e line") == LONG_ERROR[:16_000].count("frame")
    assert html.count("<details>") == 4
    # The JSON: raw names for programs, shown ones for the script.
    works = {work["name"]: work for work in state["works"]}
    assert set(works) == set(ESCAPED)
    for raw, escaped in ESCAPED.items():
        assert works[raw]["shown"] == escaped
        assert works[raw]["row"][0] == escaped
    fleet_lines = {line["name"]: line["shown"] for line in state["fleet"]}
    assert fleet_lines == ESCAPED
    entry = history_page["entries"][0]
    assert entry["error"] == LONG_ERROR[:16_000]
    assert entry["row"][-1] == "Traceback (most recent call last):\u2026"
    assert details["heading"].startswith("rtl-\\u202etxt.exe · ")
    (row,) = details["rows"]
    assert row["text"]["error_line"] == "Traceback (most recent call last):\u2026"
    assert "\u202e" not in row["text"]["error"]
    assert row["text"]["error"].count("\n") == LONG_ERROR[:16_000].count("\n")


def test_the_filters_choose_a_work_and_a_range(client: Client, history: History) -> None:
    only_shard = client.get("/?name=shard")
    assert list(summary(only_shard.text)) == ["shard"]
    rows = Page(only_shard.text).tables["history"]
    assert {row[1] for row in rows} == {"shard"}
    state = client.json("/api/state?name=shard")
    assert [work["name"] for work in state["works"]] == ["shard"]

    # Three hours back, the old tick of report counts too.
    three_hours = summary(client.get("/?since=3h&name=report").text)["report"]
    assert three_hours[3] == "34"
    # A fixed window: minutes 20 to 11 before NOW (until excluded).
    window_query = urlencode(
        {"name": "report", "since": iso(NOW - 20 * MINUTE), "until": iso(NOW - 10 * MINUTE)}
    )
    window = client.json(f"/api/state?{window_query}")["works"][0]
    assert (window["ticks"], window["missed"], window["recovered"], window["failed"]) == (
        10,
        1,
        1,
        0,
    )
    assert window["succeeded"] == 8
    # The history keeps the filter in its links.
    history_page = client.json(f"/api/history?{window_query}")
    assert len(history_page["entries"]) == 10
    # No time ago is now: only what is upcoming.
    upcoming = client.json("/api/state?name=report&since=0s")["works"]
    assert [work["claimed"] for work in upcoming] == [0]  # nothing before now
    assert all(tick["upcoming"] for work in upcoming for tick in work["timeline"])
    assert client.get("/?since=0s").status_code == 200


@pytest.mark.parametrize(
    "query",
    [
        "since=yesterday",
        "until=soon",
        urlencode({"since": iso(NOW), "until": iso(NOW - MINUTE)}),
        "after=not-a-cursor",
        "after=WyJ4IiwgInkiXQ",  # base64 JSON, but not a cursor
        "name=report%20",  # trailing whitespace: never a work name
        "name=" + "x" * 300,
        "since=" + "1" * 2000,
        "since=0001-01-01T00:00:00",
    ],
)
def test_bad_parameters_are_a_400_naming_them(client: Client, query: str) -> None:
    page = client.get(f"/?{query}")
    assert page.status_code == 400
    assert page.headers["content-type"].startswith("text/plain")
    answer = client.get(f"/api/state?{query}")
    assert answer.status_code == 400
    assert set(answer.json()) == {"error"}


def test_tick_details_need_a_work_and_a_time(client: Client) -> None:
    assert client.get("/api/tick?tick=2030-06-01T11:00:00Z").status_code == 400
    assert client.get("/api/tick?name=report").status_code == 400
    assert client.get("/api/tick?name=report&tick=1h").status_code == 400
    bad_label = tick_path("report", NOW - 25 * MINUTE, "nul\x00in it")
    assert client.get(bad_label).status_code == 400
    assert client.get(tick_path("report", NOW - 25 * MINUTE, "x" * 300)).status_code == 400
    empty = client.json("/api/tick?name=nobody&tick=2030-06-01T11:00:00Z")
    assert empty["rows"] == []


# -- /metrics -----------------------------------------------------------------------


def test_metrics_scrape_shows_the_ledger_of_the_last_hour(client: Client, history: History) -> None:
    """The Prometheus page of the same window, checked against the history the test wrote."""
    answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=")
    families = {f.name: f for f in text_string_to_metric_families(answer.text)}

    def gauge(metric: str) -> dict[str, float]:
        return {s.labels["work"]: s.value for s in families[metric].samples}

    lags = gauge("worksync_ledger_claim_lag_seconds_gcount")  # (the text format's gauge
    lag_sums = gauge("worksync_ledger_claim_lag_seconds_gsum")  # histogram: apart)
    within_1s = {
        s.labels["work"]: s.value
        for s in families["worksync_ledger_claim_lag_seconds"].samples
        if s.labels["le"] == "1.0"
    }
    for name, expected in history.works.items():
        upcoming = expected.outcomes.count("queued")  # after NOW: outside the window
        assert gauge("worksync_ledger_ticks")[name] == expected.ticks - upcoming, name
        assert gauge("worksync_ledger_claimed_rows")[name] == expected.claimed, name
        assert gauge("worksync_ledger_succeeded_rows")[name] == expected.succeeded, name
        assert gauge("worksync_ledger_failed_rows")[name] == expected.failed, name
        assert gauge("worksync_ledger_recovered_rows")[name] == expected.recovered, name
        assert gauge("worksync_ledger_missed_rows")[name] == expected.missed, name
        assert lags[name] == len(expected.lags), name
        assert lag_sums[name] == pytest.approx(sum(expected.lags)), name
        assert within_1s[name] == sum(1 for lag in expected.lags if lag <= 1.0), name
    assert gauge("worksync_ledger_running_rows")["report"] == 1
    assert gauge("worksync_ledger_queued_rows").get("report", 0) == 0


# -- safety -------------------------------------------------------------------------

ROUTES = (
    "/",
    "/api/state",
    "/api/history",
    "/api/tick?name=report&tick=2030-06-01T11:35:00Z",
    "/static/app.js",
    "/static/style.css",
    "/metrics",
)


def test_only_get_and_head_are_served(client: Client) -> None:
    for path in (*ROUTES, "/nowhere"):
        for method in ("POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "PROPFIND"):
            answer = client.request(method, path)
            assert answer.status_code == 405, (method, path)
            assert answer.headers["allow"] == "GET, HEAD"
    for path in ROUTES:
        head = client.request("HEAD", path)
        assert head.status_code == 200, path
        assert head.content == b""
    assert client.get("/static/../app.py").status_code == 404
    assert client.get("/static/page.html").status_code == 404


def test_every_answer_carries_the_security_headers(db: Db, history: History) -> None:
    open_page = app(db.engine, db.table, clock=lambda: NOW)
    locked = app(db.engine, db.table, clock=lambda: NOW, auth_token=TOKEN)
    answers = [Client(open_page).get(path) for path in (*ROUTES, "/nowhere", "/?since=x")]
    answers += [Client(open_page).request("POST", "/"), Client(locked).get("/")]
    open_page.close()
    locked.close()
    assert {a.status_code for a in answers} == {200, 400, 401, 404, 405}
    for answer in answers:
        policy = answer.headers["content-security-policy"]
        assert "default-src 'none'" in policy
        assert "script-src 'self';" in policy
        assert "style-src 'self';" in policy
        assert "unsafe" not in policy
        assert "frame-ancestors 'none'" in policy
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["referrer-policy"] == "no-referrer"
        assert answer.headers["x-frame-options"] == "DENY"
        assert "cache-control" in answer.headers


def test_the_page_has_no_inline_script_or_style(client: Client) -> None:
    parsed = Page(client.get("/").text)
    scripts = [found for tag, found in parsed.tags if tag == "script"]
    assert len(scripts) == 1
    assert scripts[0]["src"].startswith("/static/app.js?v=")
    for tag, found in parsed.tags:
        assert "style" not in found, tag
        assert not [key for key in found if key.startswith("on")], (tag, found)
    script = client.get(scripts[0]["src"]).text
    assert "innerHTML" not in script
    assert "insertAdjacentHTML" not in script
    assert "eval(" not in script


def test_hostile_text_is_shown_as_text(client: Client, history: History) -> None:
    html = client.get("/").text
    for raw in (SCRIPT_NAME, IMG_TEXT, "<b>bold</b>", "<script>alert(2)</script>"):
        assert raw not in html
    assert html.count("<script") == 1  # the page's own script
    assert "<img" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    shown = summary(html)
    assert shown[SCRIPT_NAME] == history.works[SCRIPT_NAME].row()
    assert shown[IMG_TEXT] == history.works[IMG_TEXT].row()
    errors = [row[-1] for row in Page(html).tables["history"]]
    assert IMG_TEXT in errors
    assert "<script>alert(2)</script>" in errors

    for path in ("/api/state", "/api/history"):
        raw_json = client.get(path).text
        assert "<" not in raw_json  # written \u003c: no text can close a tag it lands in
    names = {work["name"] for work in client.json("/api/state")["works"]}
    assert {SCRIPT_NAME, IMG_TEXT} <= names
    tick = NOW - 30 * MINUTE
    (row,) = client.json(tick_path(SCRIPT_NAME, tick))["rows"]
    assert row["claimed_by"] == HOSTILE_CLAIMER
    assert row["error"] == IMG_TEXT


def test_a_token_guards_every_route_when_set(db: Db, history: History) -> None:
    locked = app(db.engine, db.table, clock=lambda: NOW, auth_token=TOKEN)
    client = Client(locked)
    try:
        for path in ROUTES:
            refused = client.get(path)
            assert refused.status_code == 401, path
            assert refused.headers["www-authenticate"].startswith('Basic realm="worksync status"')
            assert TOKEN not in refused.text
        assert client.get("/", Authorization=f"Bearer {TOKEN}").status_code == 200
        assert client.get("/", Authorization=f"bearer  {TOKEN} ").status_code == 200
        assert client.get("/", Authorization=f"Basic {basic('anyone', TOKEN)}").status_code == 200
        assert client.get("/", Authorization=f"Basic {basic('', TOKEN)}").status_code == 200
        for wrong in (
            f"Bearer {TOKEN[:-1]}",
            f"Bearer {TOKEN}x",
            "Bearer ",
            f"Basic {basic(TOKEN, 'password')}",  # the token as the user name is not the password
            f"Basic {basic('anyone', TOKEN.upper())}",
            "Basic !!!not-base64!!!",
            f"Token {TOKEN}",
            TOKEN,
        ):
            assert client.get("/", Authorization=wrong).status_code == 401, wrong
        assert client.request("POST", "/", Authorization=f"Bearer {TOKEN}").status_code == 405
    finally:
        locked.close()


def basic(user: str, password: str) -> str:
    import base64

    return base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    "token", ["short", "x" * 15, "has space in the token", "tökenwithumlaut-0123", 42]
)
def test_a_weak_or_unusable_token_is_refused(db: Db, token: Any) -> None:
    with pytest.raises(ValueError, match="at least 16 printable ASCII"):
        app(db.engine, db.table, auth_token=token)


def test_pinned_host_names_refuse_any_other(db: Db, history: History) -> None:
    pinned = app(db.engine, db.table, clock=lambda: NOW, allowed_hosts=["127.0.0.1", "localhost"])
    client = Client(pinned)
    try:
        assert client.get("/").status_code == 200  # Host: 127.0.0.1
        assert client.get("/", Host="localhost:8080").status_code == 200
        assert client.get("/", Host="evil.example").status_code == 400
        assert client.get("/", Host="127.0.0.1.evil.example:80").status_code == 400
    finally:
        pinned.close()


def test_no_url_host_or_password_reaches_any_answer(backend: Backend, tmp_path: Path) -> None:
    with password_url(backend, tmp_path) as url:
        engine = sa.create_engine(url)
        table = "t_web_secret"
        from worksync_sa.models import work_table

        work_table(table).drop(engine, checkfirst=True)
        work_table(table).create(engine)
        try:
            write(engine, table, build())
            status_page = app(engine, table, clock=lambda: NOW)
            client = Client(status_page)
            answers = [client.get(path).text for path in (*ROUTES, "/nowhere", "/?since=x")]
            status_page.close()
            secrets = secret_parts(url)
            for text in [*answers, repr(status_page)]:
                for secret in secrets:
                    assert secret not in text
        finally:
            work_table(table).drop(engine, checkfirst=True)
            engine.dispose()
    # A database that cannot be reached: a bare 503, naming nothing.
    unreachable = (
        sa.make_url(url).set(host="127.0.0.1", port=1) if backend.name != "sqlite" else None
    )
    if unreachable is not None:
        engine = sa.create_engine(unreachable, connect_args={"connect_timeout": 2})
        down = app(engine, "works", clock=lambda: NOW)
        for path in ("/", "/api/state", "/api/history", ROUTES[3]):
            answer = Client(down).get(path)
            assert answer.status_code == 503
            for secret in [*secret_parts(unreachable), ":1"]:
                assert secret not in answer.text
        down.close()
        engine.dispose()


@contextlib.contextmanager
def password_url(backend: Backend, folder: Path) -> Iterator[sa.URL]:
    """A URL with a password the server checks (SQLite: a file path, which is as private)."""
    if backend.name == "sqlite":
        (folder / "private-folder").mkdir()
        yield sa.make_url(f"sqlite:///{folder / 'private-folder' / 'secret.db'}")
        return
    with user_with_password(backend, PASSWORD) as url:
        yield url


def secret_parts(url: sa.URL) -> list[str]:
    parts = [url.render_as_string(hide_password=False), url.render_as_string()]
    if url.get_backend_name() == "sqlite":
        return [*parts, str(url.database), "private-folder"]
    return [*parts, PASSWORD, str(url.username), f"{url.host}:", f":{url.port}", "127.0.0.1"]


def test_the_page_mounts_under_a_prefix(db: Db, history: History) -> None:
    status_page = app(db.engine, db.table, clock=lambda: NOW)
    host = Starlette(routes=[Mount("/ops/worksync", app=status_page)])
    client = Client(host)
    try:
        html = client.get("/ops/worksync/")
        assert html.status_code == 200
        parsed = Page(html.text)
        (script,) = parsed.attribute("script", "src")
        (style,) = [
            f["href"] for t, f in parsed.tags if t == "link" and f.get("rel") == "stylesheet"
        ]
        (body,) = [f for t, f in parsed.tags if t == "body"]
        assert script.startswith("/ops/worksync/static/app.js?v=")
        assert style.startswith("/ops/worksync/static/style.css?v=")
        assert body["data-state-url"] == "/ops/worksync/api/state"
        assert body["data-tick-url"] == "/ops/worksync/api/tick"
        for path in (script, style, "/ops/worksync/api/state", "/ops/worksync/api/history"):
            answer = client.get(path)
            assert answer.status_code == 200, path
            assert answer.headers["x-content-type-options"] == "nosniff"
        assert client.request("POST", "/ops/worksync/").status_code == 405
    finally:
        status_page.close()


def test_a_range_too_wide_is_read_in_part_and_says_so(db: Db) -> None:
    """Counts are summed by the database over any range; lags are read for max_ticks ticks."""
    start = NOW - timedelta(minutes=50)
    rows = [
        _row(
            "busy",
            start + timedelta(seconds=n),
            0,
            SUCCESS,
            started_at=start + timedelta(seconds=n, milliseconds=n),
            finished_at=start + timedelta(seconds=n + 1),
            closed_by="worker",
            attempts=1,
        )
        for n in range(150)
    ]
    write(db.engine, db.table, History(rows, {}, []))
    status_page = app(db.engine, db.table, clock=lambda: NOW, max_ticks=100)
    client = Client(status_page)
    try:
        html = client.get("/").text
        assert "This range holds more ticks than one page reads one by one" in html
        row = summary(html)["busy"]
        assert row[3:6] == ["150", "150", "150"]  # ticks, claimed, succeeded: every tick
        # The lags of the latest 100 ticks, 50 ms to 149 ms late: p50 at 99.5 ms.
        assert row[10] == "100ms"
        state = client.json("/api/state")
        assert state["capped_from"] == iso(start + timedelta(seconds=50))
        assert state["works"][0]["lag_chart"]["ticks"] == 100
        assert state["notices"]
    finally:
        status_page.close()


def test_an_async_engine_is_refused_with_the_fix(db: Db) -> None:
    with pytest.raises(ValueError, match="blocking sqlalchemy Engine"):
        app(object(), db.table)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="table name"):
        app(db.engine, "works; drop table works")


def test_nothing_the_page_does_writes_to_the_table(db: Db, client: Client) -> None:
    before = dump(db.engine, db.table)
    for path in ROUTES:
        for method in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"):
            client.request(method, path)
    client.get("/?name=report&since=3h")
    client.get("/api/history?after=not-a-cursor")
    assert dump(db.engine, db.table) == before


# -- the wheel, the optional extra and the command line -------------------------------


@pytest.mark.slow
def test_the_wheel_carries_and_serves_the_page_files(installed: Installed, tmp_path: Path) -> None:
    names = zipfile.ZipFile(installed.wheel).namelist()
    for name in ("static/app.js", "static/style.css", "templates/page.html"):
        assert f"worksync_sa/web/{name}" in names
    code = f"""
import anyio, httpx, sqlalchemy as sa, worksync_sa, worksync_sa.web
from worksync_sa.models import work_table
engine = sa.create_engine("sqlite:///{tmp_path / "wheel.db"}")
work_table("works").create(engine)
page = worksync_sa.web.app(engine)
async def main():
    transport = httpx.ASGITransport(app=page)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        for path in ("/", "/static/app.js", "/static/style.css", "/api/state"):
            print(path, (await client.get(path)).status_code)
anyio.run(main)
print(worksync_sa.__file__)
"""
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=installed.site.parent,  # not the checkout: the wheel's files, not the tree's
        env={**os.environ, "PYTHONPATH": str(installed.site)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    *answers, where = done.stdout.strip().splitlines()
    assert answers == ["/ 200", "/static/app.js 200", "/static/style.css 200", "/api/state 200"]
    assert Path(where).is_relative_to(installed.site)


def run_python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


def test_without_the_extra_the_error_says_what_to_install() -> None:
    done = run_python("import sys; sys.modules['starlette'] = None; import worksync_sa.web")
    assert "ModuleNotFoundError" in done.stderr
    assert "pip install 'worksync_sa[web]'" in done.stderr
    done = run_python(
        "import sys; sys.modules['uvicorn'] = None\n"
        "from worksync_sa.cli.main import main\n"
        "sys.exit(main(['web', '--db', 'sqlite:///nowhere.db']))"
    )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "worksync: `worksync web` needs uvicorn, which is not installed: "
        "pip install 'worksync_sa[web]'"
    )
    done = run_python(
        "import sys; sys.modules['starlette'] = None; import worksync_sa, worksync_sa.cli.main"
    )
    assert done.returncode == 0, done.stderr  # everything else works without the extra


def worksync(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worksync_sa", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=command_env(**(env or {})),
    )


def command_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKSYNC_")}
    return {**env, **extra}


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--host", "0.0.0.0"], {}, "--host 0.0.0.0 is not a loopback address: pass --auth-token"),
        (["--host", "192.0.2.7"], {}, "--host 192.0.2.7 is not a loopback address"),
        (["--host", "status.example"], {}, "--host status.example is not a loopback address"),
        (["--host", "0.0.0.0", "--no-auth"], {"WORKSYNC_WEB_TOKEN": TOKEN}, "contradict"),
        (["--auth-token", "short"], {}, "at least 16 printable ASCII characters"),
        (["--auth-token", TOKEN, "--no-auth"], {}, "not allowed with argument"),
        (["--port", "70000"], {}, "not a port number"),
        (["--refresh", "100ms"], {}, "refresh must be a timedelta from 1s to 1h, got 100ms"),
    ],
)
def test_the_command_refuses_an_unsafe_or_bad_setup(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    done = worksync("web", "--db", f"sqlite:///{tmp_path / 'none.db'}", *args, env=env)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("worksync: ")
    assert message in lines[0]
    assert TOKEN not in done.stderr


@dataclass
class Served:
    process: subprocess.Popen[str]
    url: str
    log: list[str]


@contextlib.contextmanager
def serving(*args: str, env: dict[str, str] | None = None) -> Iterator[Served]:
    process = subprocess.Popen(
        [sys.executable, "-m", "worksync_sa", "web", "--port", "0", *args],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=command_env(**(env or {})),
    )
    assert process.stderr is not None
    log: list[str] = []
    try:
        for line in process.stderr:
            log.append(line)
            found = re.search(r"at (http://127\.0\.0\.1:\d+/)", line)
            if found:
                break
        else:
            raise AssertionError("".join(log))
        yield Served(process, found.group(1), log)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        finally:
            if process.poll() is None:
                process.kill()
        log += process.stderr.readlines()


def test_the_command_serves_the_page_on_loopback_only_by_name(db: Db, history: History) -> None:
    """Served from a URL with a password (on the servers): it shows in no answer and no log."""
    with contextlib.ExitStack() as stack:
        url = db.url
        if db.name != "sqlite":
            with_password = stack.enter_context(user_with_password(db.backend, PASSWORD))
            url = with_password.render_as_string(hide_password=False)
        with serving("--db", url, "--table", db.table) as served:
            page = httpx.get(served.url, timeout=10)
            assert page.status_code == 200
            assert "report" in summary(page.text)
            evil = httpx.get(served.url, headers={"Host": "evil.example"}, timeout=10)
            assert evil.status_code == 400
            assert httpx.post(served.url, timeout=10).status_code == 405
            state = httpx.get(served.url + "api/state", timeout=10)
            assert state.status_code == 200
            for text in (page.text, state.text):
                assert PASSWORD not in text
                assert url not in text
    log = "".join(served.log)
    assert served.process.returncode == 0, log
    assert "no token" in log
    assert PASSWORD not in log


def test_the_command_takes_its_token_from_the_environment(db: Db, history: History) -> None:
    with serving("--db", db.url, "--table", db.table, env={"WORKSYNC_WEB_TOKEN": TOKEN}) as served:
        assert httpx.get(served.url, timeout=10).status_code == 401
        with_token = httpx.get(served.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        assert with_token.status_code == 200
        as_login = httpx.get(served.url, auth=("me", TOKEN), timeout=10)
        assert as_login.status_code == 200
        # With a token, the host name is not pinned: the token is the guard.
        assert (
            httpx.get(
                served.url, auth=("me", TOKEN), headers={"Host": "status.example"}, timeout=10
            ).status_code
            == 200
        )
    assert served.process.returncode == 0
    assert TOKEN not in "".join(served.log)
    assert "token required" in "".join(served.log)


def test_a_port_in_use_is_one_line_and_exit_1(db: Db, tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = worksync("web", "--db", db.url, "--table", db.table, "--port", str(port))
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()[-1:]
    assert line.startswith(f"worksync: cannot listen on 127.0.0.1:{port}: ")
