"""Uncontended claims: ``acquire``, ``acquire_due``, round trips, and table growth.

Each claim takes a fresh tick, so nothing waits on anything: what is measured
is the cost of one claim. The library claims ticks of work "lib", the raw
baseline ticks of work "raw" with the same statement, in alternating chunks.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa

from tests.proxy import Proxy
from worksync_sa import Scheduler, SchedulerConfig, Work, WorkStatus, WorkSync, default_sequence
from worksync_sa._sql.claims import claim_statement
from worksync_sa._sql.dialect import db_now, family_of
from worksync_sa.models import as_utc, table_named, validate_table_name

from .harness import (
    RawStatement,
    Report,
    Spread,
    bench_engine,
    drop_table,
    fresh_table,
    percentile,
    ratio,
    raw_connection,
)

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
CLAIM_PARAMS = ("work_name", "tick_sequence", "claim_token", "worker")
DUE_PARAMS = ("work_name", "claim_token", "worker", "floor_seconds")
LONGEST_GRACE = 365 * 24 * 3600
"""What the library's acquire_due(name) looks back without a grace, in seconds."""


def sequences(count: int) -> list[str]:
    return [default_sequence(T0 + timedelta(seconds=n)) for n in range(1, count + 1)]


def schedule(
    engine: sa.Engine,
    table: str,
    names: list[str],
    ticks: int,
    now: datetime = T0,
    max_run: int = 1,
) -> None:
    """``ticks`` one-second ticks for each name, in one scheduler pass."""
    works = [Work(name, "@every 1s", max_run=max_run, grace=timedelta(days=365)) for name in names]
    config = SchedulerConfig(lookahead=timedelta(seconds=ticks), interval="1s")
    scheduler = Scheduler(engine, works, config, table=table)
    scheduler.run_pass(now)
    scheduler.close()


class Claimer:
    """The library and the raw baseline, side by side, on one table."""

    def __init__(self, engine: sa.Engine, table: str, *, due: bool = False) -> None:
        self.engine = engine
        self.sync = WorkSync(engine, table=table, keep_alive=False)
        self.raw = raw_connection(engine)
        self.cursor = self.raw.cursor()
        statement = claim_statement(table_named(table), family_of(engine.dialect), due=due)
        self.statement = RawStatement.of(statement, engine, DUE_PARAMS if due else CLAIM_PARAMS)

    def library(self, name: str, sequence: str | None) -> bool:
        if sequence is None:
            return self.sync.acquire_due(name) is not None
        return self.sync.acquire(name, sequence) is not None

    def baseline(self, name: str, sequence: str | None) -> bool:
        params: dict[str, Any] = {"work_name": name, "claim_token": "r" * 32, "worker": "raw"}
        if sequence is not None:
            params["tick_sequence"] = sequence
        else:
            params["floor_seconds"] = LONGEST_GRACE
        return self.statement.run(self.cursor, params) == 1

    def close(self) -> None:
        self.sync.close()
        self.raw.close()


def interleaved(
    claimer: Claimer,
    lib_targets: Iterator[tuple[str, str | None]],
    raw_targets: Iterator[tuple[str, str | None]],
    chunk: int,
    repeats: int,
) -> dict[str, Any]:
    """Alternate chunks of library and raw claims; per-repeat rates, all latencies."""
    rates: dict[str, list[float]] = {"library": [], "raw": []}
    latencies: dict[str, list[float]] = {"library": [], "raw": []}
    for repeat in range(repeats):
        order = ("library", "raw") if repeat % 2 == 0 else ("raw", "library")
        for kind in order:
            claim: Callable[[str, str | None], bool] = (
                claimer.library if kind == "library" else claimer.baseline
            )
            targets = lib_targets if kind == "library" else raw_targets
            spent = 0.0
            for _ in range(chunk):
                name, sequence = next(targets)
                started = time.perf_counter()
                won = claim(name, sequence)
                took = time.perf_counter() - started
                assert won, f"{kind} found nothing to claim at {name} {sequence}"
                spent += took
                latencies[kind].append(took)
            rates[kind].append(chunk / spent)
    return {
        kind: {
            "claims_per_s": Spread.of(rates[kind]).as_dict(),
            "p50_us": percentile(latencies[kind], 0.5) * 1e6,
            "p99_us": percentile(latencies[kind], 0.99) * 1e6,
        }
        for kind in rates
    }


def show(report: Report, benchmark: str, case: str, result: dict[str, Any], note: str = "") -> None:
    lib, raw = result["library"], result["raw"]
    report.row(
        benchmark,
        case,
        _figures(lib),
        _figures(raw),
        ratio(lib["claims_per_s"]["median"], raw["claims_per_s"]["median"]),
        note,
    )


def _figures(side: dict[str, Any]) -> str:
    rate = Spread(**side["claims_per_s"]).show()
    return f"{rate} /s, p50 {side['p50_us']:.0f} us, p99 {side['p99_us']:.0f} us"


def round_trips(engine: sa.Engine, table: str, count: int) -> dict[str, float]:
    """Client writes per claim through a counting proxy: one per round trip."""
    if engine.dialect.name == "sqlite":
        return {}
    url = engine.url
    proxy = Proxy(
        url.host or "127.0.0.1", url.port or (3306 if "mysql" in url.drivername else 5432)
    )
    try:
        proxied = bench_engine(proxy.url_for(url.render_as_string(hide_password=False)))
        claimer = Claimer(proxied, table)
        seqs = iter(sequences(4 * count))
        claimer.library("lib", next(seqs))  # open the lane and prepare
        claimer.baseline("raw", next(seqs))
        measured = {}
        for kind, claim, name in (
            ("library", claimer.library, "lib"),
            ("raw", claimer.baseline, "raw"),
        ):
            before = proxy.requests
            for _ in range(count):
                assert claim(name, next(seqs))
            measured[kind] = (proxy.requests - before) / count
        claimer.close()
        proxied.dispose()
        return measured
    finally:
        proxy.close()


def uncontended(engine: sa.Engine, report: Report, *, quick: bool) -> None:
    chunk, repeats = (300, 3) if quick else (1000, 5)
    table = "bench_uncontended"
    ticks = chunk * repeats + 1000
    fresh_table(engine, table)
    schedule(engine, table, ["lib", "raw"], ticks)
    trips = round_trips(engine, table, 100)
    claimer = Claimer(engine, table)
    lib_targets = (("lib", s) for s in sequences(ticks)[200:])
    raw_targets = (("raw", s) for s in sequences(ticks)[200:])
    for _ in range(20):  # warm both up: lanes open, statements prepared
        claimer.library(*next(lib_targets))
        claimer.baseline(*next(raw_targets))
    result = interleaved(claimer, lib_targets, raw_targets, chunk, repeats)
    result["round_trips_per_claim"] = trips
    claimer.close()
    drop_table(engine, table)
    report.results["uncontended_acquire"] = result
    note = ""
    if trips:
        note = f"round trips/claim: library {trips['library']:.2f}, raw {trips['raw']:.2f}"
    show(report, "1 uncontended", "acquire(name, sequence)", result, note)


def acquire_due(engine: sa.Engine, report: Report, *, quick: bool) -> None:
    chunk, repeats = (300, 3) if quick else (1000, 5)
    works = 200
    per_work = -(-(chunk * repeats + 100) // works)
    table = "bench_due"
    fresh_table(engine, table)
    with engine.connect() as conn:
        now = as_utc(conn.execute(sa.select(db_now(family_of(engine.dialect)))).scalar_one())
    start = now - timedelta(seconds=per_work + 5)
    names = [f"{kind}{n:03d}" for kind in ("lib", "raw") for n in range(works)]
    schedule(engine, table, names, per_work, now=start)
    claimer = Claimer(engine, table, due=True)
    lib_targets = ((f"lib{n % works:03d}", None) for n in itertools.count())
    raw_targets = ((f"raw{n % works:03d}", None) for n in itertools.count())
    for _ in range(10):
        claimer.library(*next(lib_targets))
        claimer.baseline(*next(raw_targets))
    result = interleaved(claimer, lib_targets, raw_targets, chunk, repeats)
    claimer.close()
    drop_table(engine, table)
    report.results["acquire_due"] = result
    note = f"{2 * works} works, {per_work} due ticks each"
    if engine.dialect.name in ("mysql", "mariadb"):
        note += "; MySQL reads the claimed sequence back: 2 round trips"
    show(report, "3 acquire_due", "earliest due tick", result, note)


def fill_finished(engine: sa.Engine, table: str, start: int, stop: int) -> None:
    """Rows ``start..stop`` of history: finished ticks of work "lib", like a busy year."""
    columns = (
        "name",
        "status",
        "sequence",
        "slot",
        "tick_at",
        "started_at",
        "finished_at",
        "closed_by",
    )
    t = table_named(table)
    raw = raw_connection(engine)
    cursor = raw.cursor()
    insert = (
        sa.insert(t).values({c: sa.bindparam(c) for c in columns}).compile(dialect=engine.dialect)
    )
    old = datetime(2020, 1, 1, tzinfo=timezone.utc)
    naive = engine.dialect.name != "postgresql"
    for first in range(start, stop, 50_000):
        rows = []
        for n in range(first, min(stop, first + 50_000)):
            moment = old + timedelta(seconds=n)
            stamp: Any = moment.replace(tzinfo=None) if naive else moment
            if engine.dialect.name == "sqlite":
                stamp = stamp.isoformat(sep=" ", timespec="microseconds")
            values = {
                "name": "lib" if n % 2 else "other",
                "status": WorkStatus.SUCCESS.value,
                "sequence": f"h{n:09d}",
                "slot": 0,
                "tick_at": stamp,
                "started_at": stamp,
                "finished_at": stamp,
                "closed_by": "worker",
            }
            order = insert.positiontup
            rows.append(values if order is None else tuple(values[k] for k in order))
        cursor.execute("BEGIN")
        cursor.executemany(insert.string, rows)
        cursor.execute("COMMIT")
    raw.close()


def settle(engine: sa.Engine, table: str, *, wait: float = 120.0) -> None:
    """Let the server digest a big load (statistics, dirty pages) before timing claims.

    Otherwise the background flushing of the rows just loaded slows every
    commit, and the figure measures the load, not the claim. On MariaDB the
    dirty pages are waited for at most ``wait`` seconds: a shared server that
    flushes slowly can use all of it, at each size.
    """
    name = engine.dialect.name
    # An identifier cannot be a bound parameter: validate it, then quote it.
    preparer, table = engine.dialect.identifier_preparer, validate_table_name(table)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if name == "postgresql":
            conn.exec_driver_sql("VACUUM ANALYZE " + preparer.quote(table))
            conn.exec_driver_sql("CHECKPOINT")
        elif name == "sqlite":
            conn.exec_driver_sql("ANALYZE")
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        else:
            conn.exec_driver_sql("ANALYZE TABLE " + preparer.quote(table))
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                dirty = conn.exec_driver_sql(
                    "SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_pages_dirty'"
                ).one()[1]
                if int(dirty) < 100:
                    break
                time.sleep(1)


def table_growth(engine: sa.Engine, report: Report, *, quick: bool) -> None:
    sizes = (1_000, 100_000) if quick else (1_000, 100_000, 1_000_000)
    chunk, repeats = (300, 3) if quick else (500, 3)
    table = "bench_growth"
    fresh_table(engine, table)
    ticks = (chunk * repeats + 50) * len(sizes)
    schedule(engine, table, ["lib", "raw"], ticks)
    lib_targets = (("lib", s) for s in sequences(ticks))
    raw_targets = (("raw", s) for s in sequences(ticks))
    results = {}
    filled = 0
    for size in sizes:
        fill_finished(engine, table, filled, size)
        filled = size
        # --quick is a smoke test of this code, not a figure: it waits for the flush briefly.
        settle(engine, table, wait=5.0 if quick else 120.0)
        claimer = Claimer(engine, table)
        for _ in range(10):
            claimer.library(*next(lib_targets))
            claimer.baseline(*next(raw_targets))
        results[str(size)] = interleaved(claimer, lib_targets, raw_targets, chunk, repeats)
        claimer.close()
        show(report, "5 table growth", f"{size:,} finished rows", results[str(size)])
    drop_table(engine, table)
    smallest, largest = results[str(sizes[0])], results[str(sizes[-1])]
    flat = (
        largest["library"]["claims_per_s"]["median"] / smallest["library"]["claims_per_s"]["median"]
    )
    results["library_largest_vs_smallest"] = flat
    report.results["table_growth"] = results
    report.row(
        "5 table growth",
        f"{sizes[-1]:,} vs {sizes[0]:,} rows",
        f"{flat:.2f}x",
        "",
        "",
        "library claims/s",
    )
