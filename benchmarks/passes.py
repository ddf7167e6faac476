"""Scheduler passes: N works x max_run 3, against the best raw bulk insert; memory.

Each work gets exactly one tick in the window (crons ``M * * * *`` for M in
0..59, a one-hour lookahead), so a pass inserts 3N rows. The raw baseline
inserts the same rows, computed beforehand, every value bound, in one
transaction, in the fastest form each database has for it (measured: see
docs/BENCHMARKS.md), skipping duplicates as the library does:

* MariaDB/MySQL: multi-row ``INSERT IGNORE ... VALUES (...), (...)`` of
  5,000 rows per statement (faster than mysqlclient's executemany folding);
* PostgreSQL: ``COPY ... FROM STDIN (FORMAT BINARY)`` into a temporary
  table, then one ``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` (about
  1.4x psycopg's pipelined executemany, 2x an unnest of arrays, 4x multi-row
  VALUES);
* SQLite: multi-row ``INSERT OR IGNORE ... VALUES`` of 3,000 rows per
  statement (about 1.4x sqlite3's executemany).

The baseline computes nothing and checks nothing: the library's pass also
computes every work's ticks, reads its window to reconcile changed
settings, counts other programs' rows per tick, recovers and prunes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone
from functools import partial
from typing import Any

import sqlalchemy as sa

from worksync_sa import Scheduler, SchedulerConfig, Work
from worksync_sa._sql.dialect import family_of
from worksync_sa._sql.schedule import QUEUED_COLUMNS
from worksync_sa.models import table_named

from .harness import Report, Spread, drop_table, fresh_table, ratio, raw_connection, timed

NOW = datetime(2026, 1, 1, 0, 0, 30, tzinfo=timezone.utc)
CONFIG = SchedulerConfig(lookahead="1h", interval="1m")
COLUMNS = ("created_at", "status", *QUEUED_COLUMNS)


def works_of(count: int) -> list[Work]:
    return [Work(f"w{n:06d}", f"{n % 60} * * * *", max_run=3) for n in range(count)]


def raw_rows(engine: sa.Engine, works: list[Work]) -> list[tuple[Any, ...]]:
    """The pass's rows, in ``COLUMNS`` order, as the driver takes them."""
    family = family_of(engine.dialect)
    rows = []
    for row in Scheduler(engine, works, CONFIG, table="bench_pass").plan(
        NOW, NOW + CONFIG.lookahead
    ):
        values: dict[str, Any] = {c: getattr(row, c, None) for c in COLUMNS}
        values.update(created_at=NOW, status=1)
        for moment in ("created_at", "tick_at"):
            when: datetime = values[moment]
            if family != "postgresql":
                when = when.replace(tzinfo=None)
            values[moment] = (
                when.isoformat(sep=" ", timespec="microseconds") if family == "sqlite" else when
            )
        rows.append(tuple(values[c] for c in COLUMNS))
    return rows


MULTI_ROW = {"mysql": 5_000, "sqlite": 3_000}
"""Rows per multi-row statement (SQLite allows 32,766 bound values per statement)."""
PG_TYPES = {
    "created_at": "timestamptz",
    "status": "int2",
    "name": "varchar",
    "sequence": "varchar",
    "slot": "int4",
    "tick_at": "timestamptz",
    "lease_seconds": "int4",
    "grace_seconds": "int4",
    "max_attempts": "int4",
    "spec": "varchar",
}


def raw_insert(engine: sa.Engine, rows: list[tuple[Any, ...]]) -> None:
    family = family_of(engine.dialect)
    raw = raw_connection(engine)
    cursor = raw.cursor()
    columns = ", ".join(COLUMNS)
    cursor.execute("BEGIN")
    if family == "postgresql":
        stage = f"CREATE TEMP TABLE stage ON COMMIT DROP AS SELECT {columns} FROM bench_pass"
        cursor.execute(stage + " WITH NO DATA")
        with cursor.copy(f"COPY stage ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types([PG_TYPES[c] for c in COLUMNS])
            for row in rows:
                copy.write_row(row)
        cursor.execute(
            f"INSERT INTO bench_pass ({columns}) SELECT {columns} FROM stage ON CONFLICT DO NOTHING"
        )
    else:
        mark = "?" if family == "sqlite" else "%s"
        one = f"({', '.join([mark] * len(COLUMNS))})"
        verb = "INSERT OR IGNORE" if family == "sqlite" else "INSERT IGNORE"
        size = MULTI_ROW[family]
        for start in range(0, len(rows), size):
            chunk = rows[start : start + size]
            cursor.execute(
                f"{verb} INTO bench_pass ({columns}) VALUES {', '.join([one] * len(chunk))}",
                [value for row in chunk for value in row],
            )
    cursor.execute("COMMIT")
    raw.close()


def assert_inserted(engine: sa.Engine, expected: int) -> None:
    """The baseline must insert the real rows (MySQL's INSERT IGNORE would take NULLs quietly)."""
    t = table_named("bench_pass")
    with engine.connect() as conn:
        query = sa.select(sa.func.count()).select_from(t).where(t.c.name.like("w%"), t.c.slot >= 0)
        assert conn.execute(query).scalar_one() == expected


def one_level(engine: sa.Engine, count: int, repeats: int) -> dict[str, Any]:
    works = works_of(count)
    rows = raw_rows(engine, works)
    batches: list[int] = []
    figures: dict[str, list[float]] = {
        "library": [],
        "raw": [],
        "steady_restart": [],
        "steady_same": [],
    }
    for repeat in range(repeats):
        for kind in ("library", "raw") if repeat % 2 == 0 else ("raw", "library"):
            fresh_table(engine, "bench_pass")
            if kind == "raw":
                seconds, _ = timed(lambda: raw_insert(engine, rows))
                figures["raw"].append(len(rows) / seconds)
                assert_inserted(engine, len(rows))
                continue
            scheduler = Scheduler(engine, works, CONFIG, table="bench_pass")
            seconds, created = timed(partial(scheduler.tick, NOW))
            assert created == len(rows), (created, len(rows))
            assert scheduler.last_pass is not None
            batches.append(scheduler.last_pass.batches)
            figures["library"].append(len(rows) / seconds)
            # Everything exists now: the same process again, and a restarted one.
            figures["steady_same"].append(timed(partial(scheduler.tick, NOW))[0])
            restarted = Scheduler(engine, works, CONFIG, table="bench_pass")
            figures["steady_restart"].append(timed(partial(restarted.tick, NOW))[0])
            scheduler.close()
            restarted.close()
    drop_table(engine, "bench_pass")
    return {
        "works": count,
        "rows": len(rows),
        "library_rows_per_s": Spread.of(figures["library"]).as_dict(),
        "raw_rows_per_s": Spread.of(figures["raw"]).as_dict(),
        "library_pass_s": Spread.of([len(rows) / r for r in figures["library"]]).as_dict(),
        "insert_statements": max(batches),
        "steady_pass_s_same_process": Spread.of(figures["steady_same"]).as_dict(),
        "steady_pass_s_restarted": Spread.of(figures["steady_restart"]).as_dict(),
    }


def scheduler_passes(engine: sa.Engine, report: Report, *, quick: bool) -> None:
    levels = (1_000, 10_000) if quick else (1_000, 10_000, 100_000)
    repeats = 3
    results = {}
    for count in levels:
        result = results[str(count)] = one_level(engine, count, repeats)
        lib = Spread(**result["library_rows_per_s"])
        raw = Spread(**result["raw_rows_per_s"])
        report.row(
            "4 scheduler pass",
            f"{count:,} works x 3",
            f"{lib.show()} rows/s, {result['library_pass_s']['median']:.2f} s/pass",
            f"{raw.show()} rows/s",
            ratio(lib.median, raw.median),
            f"{result['insert_statements']} INSERT statements; steady pass "
            f"{result['steady_pass_s_same_process']['median'] * 1e3:.1f} ms "
            f"(restarted {result['steady_pass_s_restarted']['median'] * 1e3:.0f} ms)",
        )
    report.results["scheduler_pass"] = results


MEMORY_PROBE = """
import json, resource, sys
from benchmarks.passes import CONFIG, NOW, works_of
from benchmarks.harness import bench_engine, fresh_table
from worksync_sa import Scheduler
engine = bench_engine(sys.argv[1])
fresh_table(engine, "bench_memory")
works = works_of(int(sys.argv[2]))
scheduler = Scheduler(engine, works, CONFIG, table="bench_memory")
created = scheduler.run_pass(NOW)
scheduler.close()
engine.dispose()
# VmHWM is this program's own peak; ru_maxrss also counts the parent's size at
# fork (Linux keeps it across exec), which made the figure grow with the run.
try:
    status = open("/proc/self/status").read()
    peak = int(status.split("VmHWM:")[1].split()[0]) / 1024
except (OSError, IndexError):
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"created": created, "peak_rss_mb": peak}))
"""


def memory(engine: sa.Engine, url: str, report: Report, *, quick: bool) -> None:
    count = 100_000
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, url, str(count)],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    drop_table(engine, "bench_memory")
    report.results["memory"] = {"works": count, **result}
    report.row(
        "6 memory",
        f"scheduler, {count:,} works, one pass",
        f"{result['peak_rss_mb']:.0f} MB peak RSS",
        "",
        "",
        f"{result['created']:,} rows created",
    )
