"""Contended claims: P processes released together onto one tick with max_run = P/2.

Every process holds both a library WorkSync and a raw connection. For each
tick, all P processes wait on a barrier, then claim at once; the tick's time
is from the first claim's start to the last claim's end. Library ticks and
raw ticks alternate by phase. After the run the table is checked: no tick
ever has more than max_run claimed rows.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time
from collections import Counter, defaultdict
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from worksync_sa import Scheduler, SchedulerConfig, Work, WorkStatus
from worksync_sa._sql.driver_errors import is_transient
from worksync_sa.models import table_named

from .claims import T0, Claimer, schedule, sequences
from .harness import (
    Report,
    Spread,
    bench_engine,
    drop_table,
    fresh_table,
    percentile,
    ratio,
)

SPAWN = multiprocessing.get_context("spawn")


class _Retries(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "action", None) == "retry":
            self.count += 1


def contender(
    url: str, table: str, plan: list[tuple[str, str, list[str]]], barrier: Any, out: Any
) -> None:
    """One racing process: for each phase and tick, wait for all, then claim once."""
    retries = _Retries()  # only the retry records: debug logging elsewhere would cost time
    logging.getLogger("worksync_sa._run.blocking").addHandler(retries)
    logging.getLogger("worksync_sa._run.blocking").setLevel(logging.DEBUG)
    claimer = Claimer(bench_engine(url), table)
    dbapi_error = claimer.engine.dialect.loaded_dbapi.Error
    raw_retries = 0

    def raw_claim(name: str, sequence: str) -> bool:
        nonlocal raw_retries
        while True:
            try:
                return claimer.baseline(name, sequence)
            except dbapi_error as exc:
                if not is_transient(exc):
                    raise
                raw_retries += 1

    records = []
    try:
        # Warm up: open the lane, prepare statements (claims of a tick nobody uses).
        claimer.library("warm", "warm")
        raw_claim("warm", "warm")
        for phase, (kind, name, ticks) in enumerate(plan):
            for tick, sequence in enumerate(ticks):
                barrier.wait(timeout=120)
                error = None
                started = time.perf_counter()
                try:
                    won = (
                        claimer.library(name, sequence)
                        if kind == "library"
                        else raw_claim(name, sequence)
                    )
                except Exception as exc:  # counted, never hidden
                    won, error = False, repr(exc)
                ended = time.perf_counter()
                records.append((phase, tick, won, started, ended, error))
        out.put(("ok", records, retries.count, raw_retries))
    except BaseException as exc:
        out.put(("error", repr(exc), 0, 0))
        raise
    finally:
        claimer.close()
        claimer.engine.dispose()


def _scheduler_latency(engine: sa.Engine, table: str, stop: threading.Event) -> list[float]:
    """Scheduler passes, each with rows to insert, while the racers claim: its latency."""
    works = [Work(f"bg{n:02d}", "@every 1s") for n in range(20)]
    config = SchedulerConfig(lookahead="1s", interval="1s")
    scheduler = Scheduler(engine, works, config, table=table)
    durations: list[float] = []
    now = T0 + timedelta(days=1)
    while not stop.is_set():
        now += timedelta(seconds=1)
        started = time.perf_counter()
        scheduler.run_pass(now)
        durations.append(time.perf_counter() - started)
        stop.wait(0.05)
    scheduler.close()
    return durations


def run_level(
    engine: sa.Engine, url: str, processes: int, ticks: int, repeats: int
) -> dict[str, Any]:
    max_run = max(1, processes // 2)
    table = f"bench_contended_{processes}"
    fresh_table(engine, table)
    schedule(engine, table, ["lib", "raw"], ticks * repeats, max_run=max_run)
    seqs = sequences(ticks * repeats)
    plan = []
    for repeat in range(repeats):
        chunk = seqs[repeat * ticks : (repeat + 1) * ticks]
        kinds = ("library", "raw") if repeat % 2 == 0 else ("raw", "library")
        plan += [(kind, "lib" if kind == "library" else "raw", chunk) for kind in kinds]
    out = SPAWN.Queue()
    barrier = SPAWN.Barrier(processes)
    procs = [
        SPAWN.Process(target=contender, args=(url, table, plan, barrier, out))
        for _ in range(processes)
    ]
    for proc in procs:
        proc.start()
    stop = threading.Event()
    latency: list[float] = []
    watcher = None
    if engine.dialect.name == "sqlite":
        watcher = threading.Thread(
            target=lambda: latency.extend(_scheduler_latency(engine, table, stop))
        )
        watcher.start()
    reports = [out.get(timeout=900) for _ in procs]
    stop.set()
    if watcher is not None:
        watcher.join()
    for proc in procs:
        proc.join(60)
    failures = [r[1] for r in reports if r[0] != "ok"]
    assert not failures, failures

    by_phase: dict[int, list[tuple[int, bool, float, float, str | None]]] = defaultdict(list)
    for _, records, _, _ in reports:
        for phase, tick, won, started, ended, error in records:
            by_phase[phase].append((tick, won, started, ended, error))
    figures: dict[str, dict[str, list[float]]] = {
        kind: defaultdict(list) for kind in ("library", "raw")
    }
    over_claims = errors = 0
    for phase, rows in by_phase.items():
        kind = plan[phase][0]
        per_tick: dict[int, list[tuple[bool, float, float]]] = defaultdict(list)
        for tick, won, started, ended, error in rows:
            per_tick[tick].append((won, started, ended))
            errors += error is not None and kind == "library"
            figures[kind]["latency"].append(ended - started)
        spent = sum(max(e for _, _, e in v) - min(s for _, s, _ in v) for v in per_tick.values())
        wins = sum(w for v in per_tick.values() for w, _, _ in v)
        over_claims += sum(1 for v in per_tick.values() if sum(w for w, _, _ in v) > max_run)
        figures[kind]["successes"].append(wins / spent)
        figures[kind]["attempts"].append(len(rows) / spent)
    # The table's own verdict: claimed rows per tick never above max_run.
    t = table_named(table)
    with engine.connect() as conn:
        claimed = Counter(
            (name, sequence)
            for name, sequence in conn.execute(
                sa.select(t.c.name, t.c.sequence).where(t.c.status != WorkStatus.QUEUED.value)
            )
        )
    over_claims += sum(1 for count in claimed.values() if count > max_run)
    drop_table(engine, table)
    result: dict[str, Any] = {
        "processes": processes,
        "max_run": max_run,
        "over_claims": over_claims,
    }
    for kind in ("library", "raw"):
        result[kind] = {
            "successful_claims_per_s": Spread.of(figures[kind]["successes"]).as_dict(),
            "attempts_per_s": Spread.of(figures[kind]["attempts"]).as_dict(),
            "p99_us": percentile(figures[kind]["latency"], 0.99) * 1e6,
        }
    result["library"]["retries"] = sum(r[2] for r in reports)
    result["library"]["errors"] = errors
    result["raw"]["retries"] = sum(r[3] for r in reports)
    if latency:
        result["scheduler_pass_ms"] = {
            "passes": len(latency),
            "p50": percentile(latency, 0.5) * 1e3,
            "max": max(latency) * 1e3,
        }
    return result


def contended(engine: sa.Engine, url: str, report: Report, *, quick: bool) -> None:
    levels = (2, 8, 16) if quick else (1, 2, 4, 8, 16, 32)
    ticks, repeats = (15, 3) if quick else (40, 3)
    results = {}
    for processes in levels:
        result = results[str(processes)] = run_level(engine, url, processes, ticks, repeats)
        lib, raw = result["library"], result["raw"]
        note = (
            f"max_run {result['max_run']}; over-claims {result['over_claims']}; "
            f"library retries {lib['retries']}, errors {lib['errors']}; "
            f"raw retries {raw['retries']}"
        )
        if "scheduler_pass_ms" in result:
            s = result["scheduler_pass_ms"]
            note += f"; scheduler pass p50 {s['p50']:.0f} ms, max {s['max']:.0f} ms"
        report.row(
            "2 contended",
            f"{processes} processes",
            f"{Spread(**lib['successful_claims_per_s']).show()} ok/s, "
            f"{lib['attempts_per_s']['median']:,.0f} tries/s, p99 {lib['p99_us']:,.0f} us",
            f"{Spread(**raw['successful_claims_per_s']).show()} ok/s, "
            f"{raw['attempts_per_s']['median']:,.0f} tries/s, p99 {raw['p99_us']:,.0f} us",
            ratio(
                lib["successful_claims_per_s"]["median"], raw["successful_claims_per_s"]["median"]
            ),
            note,
        )
    report.results["contended"] = results


def streamer(url: str, table: str, kind: str, sequences: list[str], barrier: Any, out: Any) -> None:
    """Claim every tick in order, as fast as possible, racing the other processes."""
    claimer = Claimer(bench_engine(url), table)
    claim = claimer.library if kind == "library" else claimer.baseline
    won = errors = 0
    try:
        barrier.wait(timeout=120)
        started = time.perf_counter()
        for sequence in sequences:
            try:
                won += claim("s", sequence)
            except Exception:
                errors += 1
        out.put(("ok", won, errors, started, time.perf_counter()))
    except BaseException as exc:
        out.put(("error", repr(exc), 0, 0.0, 0.0))
        raise
    finally:
        claimer.close()
        claimer.engine.dispose()


def sustained(engine: sa.Engine, url: str, report: Report, *, quick: bool) -> None:
    """P processes claim the same stream of ticks (max_run 1) flat out: claims per second."""
    processes = 8
    ticks = 600 if quick else 2000
    results: dict[str, Any] = {"processes": processes, "ticks": ticks}
    for kind in ("library", "raw"):
        rates = []
        for _ in range(2 if quick else 3):
            table = "bench_sustained"
            fresh_table(engine, table)
            schedule(engine, table, ["s"], ticks)
            out = SPAWN.Queue()
            barrier = SPAWN.Barrier(processes)
            seqs = sequences(ticks)
            procs = [
                SPAWN.Process(target=streamer, args=(url, table, kind, seqs, barrier, out))
                for _ in range(processes)
            ]
            for proc in procs:
                proc.start()
            reports = [out.get(timeout=900) for _ in procs]
            for proc in procs:
                proc.join(60)
            assert all(r[0] == "ok" for r in reports), reports
            won = sum(r[1] for r in reports)
            assert won == ticks, (won, ticks)  # every tick claimed once, none twice
            elapsed = max(r[4] for r in reports) - min(r[3] for r in reports)
            rates.append(won / elapsed)
            results.setdefault(f"{kind}_errors", 0)
            results[f"{kind}_errors"] += sum(r[2] for r in reports)
            drop_table(engine, table)
        results[kind] = Spread.of(rates).as_dict()
    report.results["sustained"] = results
    report.row(
        "2 sustained",
        f"{processes} processes, every tick raced",
        f"{Spread(**results['library']).show()} claims/s",
        f"{Spread(**results['raw']).show()} claims/s",
        ratio(results["library"]["median"], results["raw"]["median"]),
        f"{ticks} ticks, max_run 1; "
        f"errors: library {results['library_errors']}, raw {results['raw_errors']}",
    )
