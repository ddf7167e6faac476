"""The ledger, the status page and ``worksync status`` date the Go original's ticks right.

The original labels each tick with its wall time in its process's zone and
writes its rows with no slot and no tick time; a scheduler of ours dates
the rows of the ticks it plans, and the ones it never plans (made before
its first pass, or of works only the original schedules) keep no tick time.
Here the original's rows are made by its own statements (``original``: its
create, claim and finish, on MariaDB, with its ``now()``), labelled in
Europe/Berlin, beside rows our scheduler made with ``local_sequence``.

Every expected instant is the tick the test labelled, never one read back
through the package; every lag is the ``started_at`` the original's claim
wrote, minus that tick.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from worksync_sa import Ledger, Scheduler, SchedulerConfig, Work, local_sequence
from worksync_sa.models import table_named

from . import original
from .conftest import Backend, create_table
from .extras import skip_module
from .test_cli import worksync, write_config

try:  # the web extra, and httpx to call the page in-process
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    from worksync_sa.metrics import ledger_exposition
    from worksync_sa.web import app

    from .test_web import Client, serving
except ModuleNotFoundError as missing:
    skip_module(missing)

UTC = timezone.utc
ZONE = "Europe/Berlin"
MINUTE = timedelta(minutes=1)
TABLE = "works"
REPORT_CRON = "* * * * *"
LEGACY_CRON = "*/5 * * * *"
SUCCESS = original.SUCCESS


@dataclass
class Fleet:
    """A database of its own: our table ``works``, and the view ``workers`` the original
    finishes on (whatever table it was given)."""

    url: sa.URL
    connect: dict[str, Any]
    engine: sa.Engine

    def rows(self, **where: Any) -> list[Any]:
        t = table_named(TABLE)
        query = sa.select(t).where(*(t.c[k] == v for k, v in where.items())).order_by(t.c.id)
        with self.engine.connect() as conn:
            return list(conn.execute(query).all())


@pytest.fixture
def fleet(mariadb: Backend) -> Iterator[Fleet]:
    with original.own_database(mariadb.engine, "ws_lz") as (url, connect):
        engine = sa.create_engine(url)
        create_table(engine, TABLE)
        with engine.begin() as conn:
            conn.exec_driver_sql(f"create view workers as select * from {TABLE}")
        try:
            yield Fleet(url, connect, engine)
        finally:
            engine.dispose()


@dataclass
class Ticks:
    """What was written: each work's ticks, by the original (run or not) and by ours."""

    now: datetime
    """After every claim: the page's clock."""
    ran: dict[tuple[str, datetime], datetime]
    """(work, tick) -> the started_at the original's claim wrote, for its ticks that ran."""
    queued: list[tuple[str, datetime]]
    """The original's ticks nobody claimed (upcoming)."""
    ours: list[tuple[str, datetime]]
    """The ticks our scheduler made rows for, as the table dates them."""

    def expected(self, name: str | None = None) -> list[tuple[datetime, str, str]]:
        """Every (tick, work, label) in the ledger's order."""
        ticks = [*self.ran, *self.queued, *self.ours]
        return sorted(
            (tick, work, original.label(tick, ZONE))
            for work, tick in ticks
            if name is None or work == name
        )


def whole_minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def write_fleet(fleet: Fleet) -> Ticks:
    """The original's ticks of ``report`` and ``legacy``, then a pass of our scheduler.

    ``report``: the original made and ran three ticks 40, 30 and 20 minutes ago
    and made one for 30 minutes ahead; then our scheduler (Europe/Berlin
    labels) planned the ticks 15 to 11 minutes ago, which dated none of the
    original's. ``legacy``: only the original schedules it, every 5 minutes;
    one tick ran 25 minutes ago, one is 20 minutes ahead.
    """
    base = whole_minute(datetime.now(UTC))
    db = original.OriginalDB(fleet.connect, TABLE)
    try:
        made = {
            ("report", base - 40 * MINUTE): True,
            ("report", base - 30 * MINUTE): True,
            ("report", base - 20 * MINUTE): True,
            ("report", base + 30 * MINUTE): False,
            ("legacy", base - 25 * MINUTE): True,
            ("legacy", base + 20 * MINUTE): False,
        }
        for name, tick in made:
            assert db.create(name, original.label(tick, ZONE), 1) == 1
        ids = {}
        for (name, tick), runs in made.items():
            if runs:
                row_id = db.acquire(name, original.label(tick, ZONE))
                assert row_id is not None
                db.finish(row_id, SUCCESS)
                ids[name, tick] = row_id
    finally:
        db.close()
    config = SchedulerConfig(lookahead="5m", interval="1m", sequence=local_sequence(ZONE))
    scheduler = Scheduler(fleet.engine, [Work("report", REPORT_CRON)], config, table=TABLE)
    try:
        assert scheduler.run_pass(base - 16 * MINUTE) == 5
    finally:
        scheduler.close()
    by_id = {row.id: row for row in fleet.rows()}
    ran = {}
    for key, row_id in ids.items():
        row = by_id[row_id]
        assert (row.status, row.tick_at, row.slot) == (SUCCESS, None, None)  # never dated
        ran[key] = row.started_at
    ours = sorted({(row.name, row.tick_at) for row in by_id.values() if row.slot is not None})
    assert ours == [("report", base - minutes * MINUTE) for minutes in range(15, 10, -1)]
    queued = [key for key, runs in made.items() if not runs]
    return Ticks(datetime.now(UTC), ran, queued, ours)


def test_the_ledger_reads_a_works_labels_in_the_zone_its_rows_of_ours_record(
    fleet: Fleet,
) -> None:
    ticks = write_fleet(fleet)
    since, until = ticks.now - 2 * timedelta(hours=1), ticks.now + 2 * timedelta(hours=1)
    # No zone given (and one given that is wrong): the spec of our rows names Europe/Berlin.
    for zone in (None, "Asia/Tokyo"):
        ledger = Ledger(fleet.engine, table=TABLE, sequence_zone=zone)
        try:
            entries = list(ledger.entries(name="report", since=since, until=until))
        finally:
            ledger.close()
        assert [(e.tick_at, e.name, e.sequence) for e in entries] == ticks.expected("report")
        for entry in entries:
            started = ticks.ran.get(("report", entry.tick_at))
            if started is not None:
                assert entry.lag == started - entry.tick_at
                assert entry.lag >= timedelta(0)
                assert (entry.succeeded, entry.created) == (1, 1)


def test_the_ledger_reads_the_labels_of_works_only_the_original_schedules_in_its_zone(
    fleet: Fleet,
) -> None:
    ticks = write_fleet(fleet)
    since, until = ticks.now - timedelta(hours=2), ticks.now + timedelta(hours=2)
    ledger = Ledger(fleet.engine, table=TABLE, sequence_zone=ZONE)
    try:
        assert ledger.sequence_zone == ZONE
        seen: list[tuple[datetime, str, str]] = []
        lags = []
        page = ledger.page(since=since, until=until, limit=3)
        while True:
            seen += [(e.tick_at, e.name, e.sequence) for e in page.entries]
            lags += [e.lag for e in page.entries if e.lag is not None]
            if page.after is None:
                break
            page = ledger.page(since=since, until=until, after=page.after, limit=3)
        summaries = {s.name: s for s in ledger.summary(since=since, until=until)}
    finally:
        ledger.close()
    assert seen == ticks.expected()  # chronological: the original's ticks among ours
    expected_lags = sorted(started - tick for (_, tick), started in ticks.ran.items())
    assert sorted(lags) == expected_lags
    assert all(lag >= timedelta(0) for lag in lags)
    ((legacy_tick, started),) = [(t, s) for (w, t), s in ticks.ran.items() if w == "legacy"]
    legacy = summaries["legacy"]
    assert (legacy.ticks, legacy.succeeded, legacy.missed) == (2, 1, 0)
    assert legacy.lag_p50 == legacy.lag_p95 == started - legacy_tick
    # Without a zone, and no rows of ours to name one, a label is read as UTC (documented).
    bare = Ledger(fleet.engine, table=TABLE)
    try:
        read = [e.tick_at for e in bare.entries(name="legacy", since=since, until=until)]
    finally:
        bare.close()
    as_utc = sorted(
        datetime.strptime(label, original.LAYOUT).replace(tzinfo=UTC)
        for tick, work, label in ticks.expected("legacy")
    )
    assert read == as_utc
    assert as_utc != [tick for tick, _, _ in ticks.expected("legacy")]  # Berlin is not UTC


def test_the_ledger_reads_a_repeated_wall_time_as_its_first_instant_and_a_skipped_one_later(
    fleet: Fleet,
) -> None:
    db = original.OriginalDB(fleet.connect, TABLE)
    try:
        for label in ("2026-10-25 02:30:00", "2026-03-29 02:30:00", "2026-03-29 01:30:00"):
            assert db.create("dst", label, 1) == 1
    finally:
        db.close()
    ledger = Ledger(fleet.engine, table=TABLE, sequence_zone=ZONE)
    try:
        entries = list(ledger.entries(name="dst"))
    finally:
        ledger.close()
    # 01:30 CET; 02:30 does not exist that night (03:30 CEST); 02:30 CEST, the first 02:30.
    assert [(e.tick_at, e.sequence) for e in entries] == [
        (datetime(2026, 3, 29, 0, 30, tzinfo=UTC), "2026-03-29 01:30:00"),
        (datetime(2026, 3, 29, 1, 30, tzinfo=UTC), "2026-03-29 02:30:00"),
        (datetime(2026, 10, 25, 0, 30, tzinfo=UTC), "2026-10-25 02:30:00"),
    ]


def test_the_page_shows_the_originals_ticks_in_order_never_upcoming_once_run(
    fleet: Fleet,
) -> None:
    ticks = write_fleet(fleet)
    works = [Work("report", REPORT_CRON), Work("legacy", LEGACY_CRON, timezone=ZONE)]
    page = app(fleet.engine, TABLE, clock=lambda: ticks.now, sequence_zone=ZONE, works=works)
    try:
        state = Client(page).json("/api/state")
        history = Client(page).json("/api/history")
        scraped = Client(page).get("/metrics").text
    finally:
        page.close()
    shown = {work["name"]: work for work in state["works"]}
    # The default range: the last hour, and the upcoming ticks.
    in_range = [t for t in ticks.expected() if t[0] >= ticks.now - timedelta(hours=1)]
    for name in ("report", "legacy"):
        cells = shown[name]["timeline"]
        expected = [(tick, label) for tick, work, label in in_range if work == name]
        assert [(datetime.fromisoformat(c["tick"]), c["sequence"] or None) for c in cells] == [
            (tick, label if (name, tick) not in ticks.ours else None) for tick, label in expected
        ]
        for cell in cells:
            tick = datetime.fromisoformat(cell["tick"])
            ran = (name, tick) in ticks.ran
            assert cell["upcoming"] == (tick > ticks.now), cell
            assert cell["outcome"] == ("succeeded" if ran else "queued"), cell
            assert not (ran and cell["upcoming"])
        assert shown[name]["lag_p50"] >= 0
    assert shown["report"]["cron"] == REPORT_CRON  # from the spec of our rows
    assert (shown["legacy"]["cron"], shown["legacy"]["timezone"]) == (LEGACY_CRON, ZONE)
    assert shown["legacy"]["row"][1] == f"{LEGACY_CRON} ({ZONE})"  # from the config's works
    ((legacy_tick, started),) = [(t, s) for (w, t), s in ticks.ran.items() if w == "legacy"]
    assert shown["legacy"]["lag_p50"] == pytest.approx((started - legacy_tick).total_seconds())
    assert [  # the latest first
        (datetime.fromisoformat(entry["tick"]), entry["name"]) for entry in history["entries"]
    ] == [(tick, work) for tick, work, _ in in_range][::-1]
    # /metrics: the window's ticks (the last hour, not the upcoming), no lag below zero.
    figures = {
        (sample.name, sample.labels.get("work")): sample.value
        for family in text_string_to_metric_families(scraped)
        for sample in family.samples
    }
    for name in ("report", "legacy"):
        due = [t for t, w, _ in in_range if w == name and t < ticks.now]
        assert figures["worksync_ledger_ticks", name] == len(due)
        assert figures["worksync_ledger_claim_lag_seconds_gsum", name] >= 0
    exposed = ledger_exposition(
        fleet.engine, table=TABLE, window="1h", now=ticks.now, sequence_zone=ZONE
    ).decode()
    assert 'worksync_ledger_succeeded_rows{work="legacy"} 1.0' in exposed


STATUS_TICK = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) +(\S+) +(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) +"
    + r"(\d+) +" * 8
    + r"(\S+)$",
    re.M,
)


def test_worksync_status_with_the_config_shows_the_originals_times_and_the_crons(
    fleet: Fleet, tmp_path: Path
) -> None:
    ticks = write_fleet(fleet)
    config = write_config(
        tmp_path,
        f"""
        [database]
        url = "{fleet.url.render_as_string(hide_password=False)}"
        table = "{TABLE}"

        [scheduler]
        sequence_zone = "{ZONE}"

        [[works]]
        name = "report"
        cron = "{REPORT_CRON}"

        [[works]]
        name = "legacy"
        cron = "{LEGACY_CRON}"
        """,
    )
    result = worksync("status", "-c", config, "--since", "2h", cwd=tmp_path)
    with serving("-c", config) as served:
        state = httpx.get(served.url + "api/state", timeout=10).json()
    web = {work["name"]: work for work in state["works"]}
    assert (web["legacy"]["cron"], web["report"]["cron"]) == (LEGACY_CRON, REPORT_CRON)
    assert [len(web[name]["timeline"]) for name in ("legacy", "report")] == [2, 9]
    for name, work in web.items():
        for cell in work["timeline"]:
            tick = datetime.fromisoformat(cell["tick"])
            assert (tick, name, cell["sequence"] or original.label(tick, ZONE)) in ticks.expected()
            assert not ((name, tick) in ticks.ran and cell["upcoming"])

    assert result.returncode == 0, result.stderr
    lines = STATUS_TICK.findall(result.stdout)
    last, _, planned = result.stdout.partition("planned ahead, soonest first:")
    blocks = [
        [(datetime.fromisoformat(m[0]).replace(tzinfo=UTC), m[1], m[2]) for m in found]
        for found in (STATUS_TICK.findall(last), STATUS_TICK.findall(planned))
    ]
    # The right instants, in order: those come, latest first, then the next few, soonest first.
    expected = ticks.expected()
    assert blocks[0] == sorted((e for e in expected if e[0] <= blocks[0][0][0]), reverse=True)
    assert blocks[1] == [e for e in expected if e[0] > blocks[0][0][0]][:5]
    lags = {(m[1], datetime.fromisoformat(m[0]).replace(tzinfo=UTC)): m[11] for m in lines}
    for (name, tick), _ in ticks.ran.items():
        assert not lags[name, tick].startswith("-"), lags[name, tick]
        assert lags[name, tick] != "-"
    summary = result.stdout.split("\n\nwork ", 1)[1].splitlines()
    assert summary[0].split()[:3] == ["cron", "due", "ahead"]
    by_work = {line.split()[0]: line for line in summary[1:]}
    assert by_work["legacy"].split()[1:6] == LEGACY_CRON.split()  # from the config
    assert by_work["report"].split()[1:6] == REPORT_CRON.split()  # from our rows' spec
    # Without the config's zone the legacy ticks are read as UTC: an hour off in winter.
    bare = worksync(
        "status", "--db", fleet.url.render_as_string(hide_password=False), "--table", TABLE,
        "--since", "2h", "--name", "legacy", cwd=tmp_path,
    )  # fmt: skip
    assert bare.returncode == 0, bare.stderr
    at_labels = re.findall(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) +legacy ", bare.stdout, re.M)
    assert at_labels == [label for _, _, label in ticks.expected("legacy")]
    assert "cron" not in bare.stdout.split("\n\nwork ", 1)[1].splitlines()[0]
