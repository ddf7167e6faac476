"""Prometheus metrics, scraped over HTTP and checked against histories the tests make.

Every expected figure comes from the history a test wrote and from the table
read back with plain SQLAlchemy, never from ``worksync_sa.metrics`` or the
ledger it reads.
"""

from __future__ import annotations

import importlib
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa

from worksync_sa import (
    Claim,
    Event,
    InvalidArgumentError,
    SchedulerConfig,
    Work,
    WorkStatus,
    default_sequence,
)
from worksync_sa.models import as_utc, table_named

from .conftest import Db
from .extras import skip_module

try:  # the prometheus extra
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.parser import text_string_to_metric_families
    from prometheus_client.registry import Collector

    from worksync_sa.metrics import LedgerCollector, PrometheusListener, ledger_exposition
except ModuleNotFoundError as missing:
    skip_module(missing)

S = timedelta(seconds=1)
Key = tuple[str, tuple[tuple[str, str], ...]]


def samples(text: str) -> dict[Key, float]:
    """Every sample of an exposition, by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(registry: Collector) -> dict[Key, float]:
    """GET /metrics from a real HTTP server on a free port, as Prometheus would."""
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200
            text = response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    return samples(text)


def series(scraped: dict[Key, float], name: str) -> dict[tuple[str, ...], float]:
    """One metric's samples, keyed by their label values (labels in name order)."""
    return {
        tuple(value for _, value in labels): value
        for (sample, labels), value in scraped.items()
        if sample == name
    }


def histogram(
    scraped: dict[Key, float], name: str, work: str, gauge: bool = False
) -> tuple[dict[str, float], float, float]:
    """(cumulative count per ``le``, count, sum) of one work's histogram."""
    buckets = {
        dict(labels)["le"]: value
        for (sample, labels), value in scraped.items()
        if sample == f"{name}_bucket" and dict(labels)["work"] == work
    }
    key = (("work", work),)
    count, total = ("_gcount", "_gsum") if gauge else ("_count", "_sum")
    return buckets, scraped[f"{name}{count}", key], scraped[f"{name}{total}", key]


def expected_buckets(lags: list[float], bounds: Iterator[str]) -> dict[str, float]:
    """How many of ``lags`` each scraped upper bound holds (``le`` is inclusive)."""
    return {le: float(sum(lag <= float(le) for lag in lags)) for le in bounds}


# -- the listener ------------------------------------------------------------------------


def lag_of(db: Db, claim_id: int) -> float:
    """The claim's lag as the table records it right after the claim."""
    t = table_named(db.table)
    with db.engine.connect() as conn:
        started, tick = conn.execute(
            sa.select(t.c.started_at, t.c.tick_at).where(t.c.id == claim_id)
        ).one()
    lag: float = (started - tick).total_seconds()
    return max(lag, 0.0)


def grouped(db: Db, *keys: str, where: Any, value: Any = None) -> dict[tuple[str, ...], float]:
    """SELECT keys, count(*) (or sum(value)) ... GROUP BY keys, as {key values: figure}.

    Statuses come back by name (SUCCESS), as the metrics label them.
    """
    t = table_named(db.table)
    figure = sa.func.count() if value is None else sa.func.sum(value(t))
    query = sa.select(*(t.c[k] for k in keys), figure).where(where(t)).group_by(*keys)
    with db.engine.connect() as conn:
        rows = conn.execute(query).all()
    found = {}
    for *labels, count in rows:
        named = (
            WorkStatus(v).name if k == "status" else v for k, v in zip(keys, labels, strict=True)
        )
        found[tuple(named)] = float(count)
    return found


def test_the_listeners_counters_match_the_history_on_every_backend(db: Db) -> None:
    registry = CollectorRegistry()
    metrics = PrometheusListener(registry)
    works = [
        Work("a", "@every 10s", max_run=2, grace=600 * S),
        Work("b", "@every 10s", max_run=1, grace=600 * S, max_attempts=2),
    ]
    # Six ticks a work, all in the last minute of the database clock: due, within grace.
    now = as_utc(db.db_now())
    scheduler = db.Scheduler(
        db.engine, works, SchedulerConfig(lookahead="60s"), table=db.table, listeners=[metrics]
    )
    scheduler.run_pass(now - 60 * S)
    scheduler.close()
    sync = db.WorkSync(db.engine, table=db.table, keep_alive=False, listeners=[metrics])
    claims = {"a": 0, "b": 0}
    lags: dict[str, list[float]] = {"a": [], "b": []}

    def claim(name: str) -> Claim:
        taken = sync.acquire_due(name)
        assert taken is not None
        claims[name] += 1
        lags[name].append(lag_of(db, taken.id))
        return taken

    claim("a").success()  # a's first tick: both runs, one succeeds, one fails
    claim("a").fail("boom")
    claim("a")  # a's second tick: its worker is lost; the lease runs out
    claim("b")  # b's first tick: lost too, but b may run twice: re-queued
    # An hour on: both leases have run out, and every tick nobody claimed is past grace.
    assert sync.recover(now=now + timedelta(hours=1)) > 0
    claim("b").success()  # the re-queued row, claimed again and done
    sync.close()

    scraped = scrape(registry)

    everything = grouped(db, "name", where=lambda t: sa.true())
    assert series(scraped, "worksync_rows_created_total") == {(): sum(everything.values())}
    assert sum(everything.values()) == 18  # 6 ticks x (2 + 1) rows
    # Every claim is one attempt on its row.
    attempts = grouped(db, "name", where=lambda t: t.c.attempts > 0, value=lambda t: t.c.attempts)
    assert attempts == {("a",): 3.0, ("b",): 2.0}
    assert series(scraped, "worksync_rows_claimed_total") == {
        (name,): float(count) for name, count in claims.items()
    }
    assert series(scraped, "worksync_rows_claimed_total") == attempts
    assert series(scraped, "worksync_rows_finished_total") == grouped(
        db, "status", "name", where=lambda t: t.c.closed_by == "worker"
    )
    assert series(scraped, "worksync_rows_finished_total") == {
        ("SUCCESS", "a"): 1.0,
        ("FAILED", "a"): 1.0,
        ("SUCCESS", "b"): 1.0,
    }
    lost = grouped(db, "name", where=lambda t: t.c.closed_by == "lease")
    requeued = grouped(
        db, "name", where=lambda t: t.c.attempts > 1, value=lambda t: t.c.attempts - 1
    )
    assert (lost, requeued) == ({("a",): 1.0}, {("b",): 1.0})
    assert series(scraped, "worksync_rows_recovered_total") == {
        **{("FAILED", name): count for (name,), count in lost.items()},
        **{("QUEUED", name): count for (name,), count in requeued.items()},
    }
    missed = grouped(db, "name", where=lambda t: t.c.closed_by == "missed")
    assert missed == {("a",): 9.0, ("b",): 5.0}  # a: 1 + 4 x 2 rows, b: 5 ticks
    assert series(scraped, "worksync_rows_missed_total") == missed
    for name in ("a", "b"):
        buckets, count, total = histogram(scraped, "worksync_claim_lag_seconds", name)
        assert count == len(lags[name])
        assert total == pytest.approx(sum(lags[name]), abs=1e-6)
        assert buckets == expected_buckets(lags[name], iter(buckets))
        assert buckets["+Inf"] == count


def test_claims_without_a_lag_are_counted_but_not_observed() -> None:
    registry = CollectorRegistry()
    metrics = PrometheusListener(registry, namespace="ws")
    metrics(Event("claimed", "w", "s1"))
    metrics(Event("claimed", "w", "s2", lag=0.25))
    metrics(Event("claimed", "w", "s3", lag=-2.0))  # claimed by sequence before its tick
    metrics(Event("skipped", "w", count=25))  # not one of the counted actions
    scraped = scrape(registry)
    assert series(scraped, "ws_rows_claimed_total") == {("w",): 3.0}
    buckets, count, total = histogram(scraped, "ws_claim_lag_seconds", "w")
    assert (count, total) == (2.0, 0.25)
    assert (buckets["0.01"], buckets["0.25"]) == (1.0, 2.0)  # early counts as no lag


def test_a_second_listener_on_one_registry_says_what_to_do() -> None:
    registry = CollectorRegistry()
    first = PrometheusListener(registry)
    with pytest.raises(InvalidArgumentError, match="already registered"):
        PrometheusListener(registry)
    PrometheusListener(registry, namespace="other")  # another namespace is another set
    first(Event("created", count=4))
    assert series(scrape(registry), "worksync_rows_created_total") == {(): 4.0}
    with pytest.raises(InvalidArgumentError, match="namespace"):
        PrometheusListener(CollectorRegistry(), namespace="no-dashes")


def test_without_prometheus_client_the_import_says_which_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delitem(sys.modules, "worksync_sa.metrics")
    for name in [m for m in sys.modules if m.split(".")[0] == "prometheus_client"]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r"pip install 'worksync_sa\[prometheus\]'"):
        importlib.import_module("worksync_sa.metrics")


# -- the ledger collector ----------------------------------------------------------------

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
NOW = T0 + timedelta(hours=1)
WINDOW = timedelta(hours=1)
"""The window's ticks are those in [T0, NOW)."""


@dataclass(frozen=True)
class Slot:
    """One row of a tick, in words: what happened to it, and when its claim started."""

    state: str  # queued, running, success, failed, lost, requeued, missed, surplus
    started: float | None = None  # seconds after the tick


STATUS = {
    "queued": WorkStatus.QUEUED,
    "running": WorkStatus.RUNNING,
    "success": WorkStatus.SUCCESS,
    "requeued": WorkStatus.SUCCESS,  # lost once, re-queued, then done on its second attempt
    "failed": WorkStatus.FAILED,
    "lost": WorkStatus.FAILED,
    "missed": WorkStatus.FAILED,
    "surplus": WorkStatus.FAILED,
}
CLOSED_BY = {
    "success": "worker",
    "requeued": "worker",
    "failed": "worker",
    "lost": "lease",
    "missed": "missed",
    "surplus": "surplus",
}

# (work, seconds after T0) -> its rows. The first and the last two ticks lie outside the window.
HISTORY: dict[tuple[str, float], list[Slot]] = {
    ("a", -10): [Slot("success", 1), Slot("success", 2)],
    ("a", 100): [Slot("success", 0.3), Slot("success", 2)],
    ("a", 200): [Slot("success", 40), Slot("failed", 45)],
    ("a", 300): [Slot("lost", 7), Slot("missed")],
    ("a", 400): [Slot("running", 200), Slot("queued")],
    ("a", 500): [Slot("success", -2), Slot("surplus")],  # claimed by sequence, 2 s early
    ("a", 3590): [Slot("queued"), Slot("queued")],  # due, within its grace
    ("a", 3600): [Slot("queued"), Slot("queued")],
    ("a", 3610): [Slot("queued"), Slot("queued")],
    ("b", 100): [Slot("requeued", 900)],
    ("b", 200): [Slot("missed")],
    ("b", 1000): [Slot("running", 0.05)],  # on a bucket's bound: le is inclusive
}


def write_history(db: Db) -> None:
    rows = []
    for (name, offset), slots in HISTORY.items():
        tick = T0 + offset * S
        for slot, row in enumerate(slots):
            started = None if row.started is None else tick + row.started * S
            rows.append(
                {
                    "name": name,
                    "sequence": default_sequence(tick),
                    "slot": None if row.state == "surplus" else slot,
                    "tick_at": tick,
                    "status": STATUS[row.state].value,
                    "started_at": started,
                    "closed_by": CLOSED_BY.get(row.state),
                    "attempts": 2 if row.state == "requeued" else int(started is not None),
                }
            )
    with db.engine.begin() as conn:
        conn.execute(table_named(db.table).insert(), rows)


def figures_of(slots: list[Slot]) -> dict[str, int]:
    """What one tick's rows add to each gauge, by the meaning the ledger's table gives it."""
    states = [row.state for row in slots]
    taken = ("running", "success", "requeued", "failed", "lost")
    return {
        "ticks": 1,
        "claimed_rows": sum(state in taken for state in states),
        "succeeded_rows": sum(state in ("success", "requeued") for state in states),
        "failed_rows": states.count("failed"),
        "recovered_rows": sum(state in ("lost", "requeued") for state in states),
        "missed_rows": states.count("missed"),
        "surplus_rows": states.count("surplus"),
        "queued_rows": states.count("queued"),
        "running_rows": states.count("running"),
    }


def expected_ledger() -> tuple[dict[str, dict[str, float]], dict[str, list[float]]]:
    """Per work, the gauges and the first-claim lags of the ticks in the window."""
    gauges: dict[str, dict[str, float]] = {}
    lags: dict[str, list[float]] = {}
    for (name, offset), slots in HISTORY.items():
        if not T0 <= T0 + offset * S < NOW:
            continue
        work = gauges.setdefault(name, {})
        for figure, value in figures_of(slots).items():
            work[figure] = work.get(figure, 0) + value
        starts = [row.started for row in slots if row.started is not None]
        if starts:
            lags.setdefault(name, []).append(max(min(starts), 0.0))
    return gauges, lags


def check_ledger(scraped: dict[Key, float]) -> None:
    gauges, lags = expected_ledger()
    assert series(scraped, "worksync_ledger_window_seconds") == {(): 3600.0}
    for figure in figures_of([]):
        assert series(scraped, f"worksync_ledger_{figure}") == {
            (name,): work[figure] for name, work in gauges.items()
        }, figure
    for name in gauges:
        buckets, count, total = histogram(
            scraped, "worksync_ledger_claim_lag_seconds", name, gauge=True
        )
        assert count == len(lags[name]) == buckets["+Inf"]
        assert total == pytest.approx(sum(lags[name]))
        assert buckets == expected_buckets(lags[name], iter(buckets))


def test_the_ledger_collector_matches_a_known_history(db: Db) -> None:
    write_history(db)
    gauges, lags = expected_ledger()
    assert gauges["a"]["ticks"] == 6  # the window holds what it should, the check reads it all
    assert lags == {"a": [0.3, 40.0, 7.0, 200.0, 0.0], "b": [900.0, 0.05]}
    registry = CollectorRegistry()
    collector = LedgerCollector(db.engine, table=db.table, window=WINDOW, clock=lambda: NOW)
    registry.register(collector)
    try:
        check_ledger(scrape(registry))
        statements: list[str] = []

        def seen(*args: Any) -> None:
            statements.append(args[2])

        sa.event.listen(db.engine, "before_cursor_execute", seen)
        try:
            check_ledger(scrape(registry))  # a second scrape reads the table again
        finally:
            sa.event.remove(db.engine, "before_cursor_execute", seen)
        assert 1 <= len(statements) <= 2, statements  # one page, one for undated rows
    finally:
        collector.close()


def test_ledger_exposition_serves_the_same_figures_in_one_call(db: Db) -> None:
    write_history(db)
    body = ledger_exposition(db.engine, table=db.table, window="1h", now=NOW)
    check_ledger(samples(body.decode()))
    again = ledger_exposition(db.engine, table=db.table, window="1h", now=NOW)
    assert samples(again.decode()) == samples(body.decode())  # a private registry each call
    empty = ledger_exposition(db.engine, table=db.table, now=T0 - timedelta(days=1))
    assert series(samples(empty.decode()), "worksync_ledger_ticks") == {}


def test_registering_the_collector_never_reads_the_table(db: Db) -> None:
    """The default registry describes what it registers; describing must not query."""
    collector = LedgerCollector(db.engine, table="no_such_table")
    registry = CollectorRegistry(auto_describe=True)
    registry.register(collector)
    with pytest.raises(InvalidArgumentError, match="window"):
        LedgerCollector(db.engine, table=db.table, window="soon")
    collector.close()
