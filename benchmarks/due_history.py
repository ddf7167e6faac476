"""``acquire_due`` against a long history, with statistics gathered before it finished.

The state a busy work's table is in before autovacuum and auto-analyze catch
up: its rows were loaded QUEUED, statistics were gathered while they were
all queued (so every plan believes the work's rows are all claimable), then
all but the last hour's finished. On PostgreSQL autovacuum is off for the
table, so the finished rows' old index entries stay behind too.

Each size claims the same work's due ticks two ways, in alternating chunks:
with the work's grace (what ``Worker`` passes) and without it (the claim
then looks back 365 days, the longest grace a row can have). Flat means the
claims per second with 100,000 finished rows are at least 0.85x those with
1,000. Beside the rates: what one claim reads (PostgreSQL: buffers;
MariaDB: handler reads, i.e. index entries and rows), from the statement
itself, run and rolled back.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from worksync_sa import WorkStatus, WorkSync
from worksync_sa._sql.claims import claim_statement
from worksync_sa._sql.dialect import db_now, family_of
from worksync_sa.models import as_utc, table_named, validate_table_name

from .harness import Report, Spread, bulk_insert, drop_table, fresh_table, raw_connection

GRACE = timedelta(hours=1)
TABLE = "bench_due_history"


def load(engine: sa.Engine, table: str, history: int, due: int) -> None:
    """``history`` old ticks and ``due`` ticks inside the last hour, all QUEUED, one per second."""
    with engine.connect() as conn:
        now = as_utc(conn.execute(sa.select(db_now(family_of(engine.dialect)))).scalar_one())
    start = now - GRACE - timedelta(seconds=history + 60)
    first_due = now - GRACE + timedelta(seconds=120)
    assert due < GRACE.total_seconds() - 300, "the due ticks must fit inside the grace"
    moments = [start + timedelta(seconds=n) for n in range(history)]
    moments += [first_due + timedelta(seconds=n) for n in range(due)]
    rows = [
        {
            "name": "lib",
            "status": WorkStatus.QUEUED.value,
            "sequence": f"s{n:09d}",
            "slot": 0,
            "tick_at": moment,
            "grace_seconds": int(2 * GRACE.total_seconds()),
            "lease_seconds": 60,
        }
        for n, moment in enumerate(moments)
    ]
    bulk_insert(engine, table, rows)
    # Statistics now, while every row is queued; then the history finishes.
    preparer = engine.dialect.identifier_preparer
    name = validate_table_name(table)  # an identifier cannot be bound: validated, then quoted
    t = table_named(table)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql(
                "ALTER TABLE " + preparer.quote(name) + " SET (autovacuum_enabled = off)"
            )
            conn.exec_driver_sql("ANALYZE " + preparer.quote(name))
        elif engine.dialect.name == "sqlite":
            conn.exec_driver_sql("ANALYZE")
        else:
            conn.exec_driver_sql("ANALYZE TABLE " + preparer.quote(name))
        conn.execute(
            sa.update(t)
            .where(t.c.tick_at < now - GRACE)
            .values(status=WorkStatus.SUCCESS.value, closed_by="worker", attempts=1)
        )


def shown_reads(engine: sa.Engine, grace: timedelta | None) -> str:
    count, unit = reads_per_claim(engine, TABLE, grace)
    return f"{count} {unit}" if unit else "reads not counted on SQLite"


def reads_per_claim(engine: sa.Engine, table: str, grace: timedelta | None) -> tuple[int, str]:
    """What one due claim reads (a count, and what it counts), from the statement, rolled back."""
    family = family_of(engine.dialect)
    if family == "sqlite":
        return 0, ""
    compiled = claim_statement(table_named(table), family, due=True).compile(dialect=engine.dialect)
    floor = int((grace or timedelta(days=365)).total_seconds())
    given = {"work_name": "lib", "claim_token": "x" * 32, "worker": "probe", "floor_seconds": floor}
    params = dict(compiled.construct_params(given))
    raw = raw_connection(engine)
    cursor = raw.cursor()
    try:
        if family == "mysql":
            cursor.execute("FLUSH STATUS")  # before BEGIN: a FLUSH commits implicitly
        cursor.execute("BEGIN")
        if family == "postgresql":
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + compiled.string, params)
            plan = cursor.fetchone()[0]
            top = (plan if isinstance(plan, list) else json.loads(plan))[0]["Plan"]
            return top["Shared Hit Blocks"] + top["Shared Read Blocks"], "buffers"
        cursor.execute(compiled.string, tuple(params[k] for k in compiled.positiontup or ()))
        cursor.execute("SHOW SESSION STATUS LIKE 'Handler_read%'")
        return sum(int(value) for _, value in cursor.fetchall()), "handler reads"
    finally:
        cursor.execute("ROLLBACK")
        raw.close()


def due_history(engine: sa.Engine, report: Report, *, quick: bool) -> None:
    sizes = (1_000, 100_000)
    chunk, repeats = (100, 3) if quick else (300, 3)
    results: dict[str, Any] = {}
    for size in sizes:
        fresh_table(engine, TABLE)
        load(engine, TABLE, size, 2 * chunk * repeats + 40)
        sync = WorkSync(engine, table=TABLE, keep_alive=False)
        ways: dict[str, timedelta | None] = {"grace": GRACE, "default": None}
        for grace in ways.values():  # warm up: lanes open, statements prepared
            for _ in range(20):
                assert sync.acquire_due("lib", grace=grace) is not None
        reads = {way: shown_reads(engine, grace) for way, grace in ways.items()}
        rates: dict[str, list[float]] = {way: [] for way in ways}
        for repeat in range(repeats):
            order = list(ways) if repeat % 2 == 0 else list(reversed(ways))
            for way in order:
                started = time.perf_counter()
                for _ in range(chunk):
                    assert sync.acquire_due("lib", grace=ways[way]) is not None
                rates[way].append(chunk / (time.perf_counter() - started))
        sync.close()
        results[str(size)] = {
            way: {"claims_per_s": Spread.of(rates[way]).as_dict(), "reads": reads[way]}
            for way in ways
        }
        for way in ways:
            label = "with the work's grace" if way == "grace" else "without grace (365 days back)"
            report.row(
                "3b acquire_due, long history",
                f"{size:,} finished rows, {label}",
                f"{Spread.of(rates[way]).show()} /s",
                "",
                "",
                reads[way] + "; statistics from before the rows finished",
            )
    drop_table(engine, TABLE)
    small, large = results[str(sizes[0])], results[str(sizes[-1])]
    for way in ("grace", "default"):
        results[f"{way}_largest_vs_smallest"] = (
            large[way]["claims_per_s"]["median"] / small[way]["claims_per_s"]["median"]
        )
    report.results["due_history"] = results
    report.row(
        "3b acquire_due, long history",
        f"{sizes[-1]:,} vs {sizes[0]:,} rows",
        f"{results['grace_largest_vs_smallest']:.2f}x with grace",
        "",
        "",
        f"without grace {results['default_largest_vs_smallest']:.2f}x",
    )
