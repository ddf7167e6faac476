"""The status page's first page on a table of a million rows: the whole HTTP answer, in-process.

The table holds what a fleet leaves after eleven days: work "big" ticking
every second (950,400 finished ticks), three works ticking every minute,
"shard" every five minutes with three runs a tick over the last two days,
and each work's upcoming ticks (a ten-minute lookahead). Now and then a run
failed, a tick was missed, a worker was lost (recovered), and each work's
latest tick is still running. About 1,000,000 rows; ``--quick`` loads one
day (about 92,000).

Figures, each the median of several requests through the ASGI app with
httpx's ASGITransport (no socket, no browser: the server's own time),
after one cold request (first statements compiled, first connections
opened), which is reported apart:

* ``GET /``: the first page of a person opening the page (the last hour,
  every work: summary, timelines, lag charts, the history's first page);
* ``GET /api/state``: what an open page fetches at every live refresh;
* ``GET /?name=big``: the per-second work alone.

Target: the first page in under 200 ms on every database.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from worksync_sa import WorkStatus
from worksync_sa._sql.dialect import db_now, family_of
from worksync_sa.models import as_utc, table_named

from .harness import (
    Report,
    Spread,
    analyze,
    drop_table,
    fresh_table,
    raw_connection,
    raw_stamp,
)

TABLE = "bench_web"
DAYS = 11
QUICK_DAYS = 1
LOOKAHEAD = timedelta(minutes=10)
BATCH = 20_000
TARGET_MS = 200
COLUMNS = (
    "name", "status", "sequence", "slot", "tick_at", "started_at", "finished_at", "closed_by",
    "attempts", "claimed_by", "error", "spec",
)  # fmt: skip
WORKS = (
    # name, seconds between ticks, runs per tick, days of history (None: all of them)
    ("big", 1, 1, None),
    ("report", 60, 1, None),
    ("sync", 60, 1, None),
    ("cleanup", 60, 1, None),
    ("shard", 300, 3, 2),
)


def _spec(period: int, max_run: int) -> str:
    cron = "* * * * * *" if period == 1 else ("* * * * *" if period == 60 else "*/5 * * * *")
    return f"sequence=utc; max_run={max_run}; cron={cron}; timezone=UTC"


def _rows(engine: sa.Engine, now: datetime, days: int) -> Iterator[dict[str, Any]]:
    """Every row of the fleet's history, oldest first per work, then its upcoming ticks."""
    for name, period, max_run, own_days in WORKS:
        spec = _spec(period, max_run)
        due = (own_days or days) * 86_400 // period
        for n in range(due, 0, -1):
            tick = now - timedelta(seconds=n * period)
            for slot in range(max_run):
                yield _row(engine, name, tick, slot, n, spec)
        for n in range(1, LOOKAHEAD // timedelta(seconds=period) + 1):
            tick = now + timedelta(seconds=n * period)
            for slot in range(max_run):
                yield _values(engine, name, tick, slot, spec, status=WorkStatus.QUEUED)


def _row(
    engine: sa.Engine, name: str, tick: datetime, slot: int, n: int, spec: str
) -> dict[str, Any]:
    """One finished (or, for the latest tick, running) row; ``n`` ticks before now."""
    lag = timedelta(milliseconds=40 + (n * 37 + slot * 101) % 400)
    started = tick + lag
    claimed = {"started_at": started, "attempts": 1, "claimed_by": f"app-{n % 7}:{4000 + slot}"}
    if n == 1:
        return _values(engine, name, tick, slot, spec, status=WorkStatus.RUNNING, **claimed)
    if (n + slot) % 1009 == 0:
        return _values(
            engine, name, tick, slot, spec, status=WorkStatus.FAILED, closed_by="missed",
            finished_at=tick + timedelta(minutes=1), error="missed: nobody claimed it",
        )  # fmt: skip
    if (n + slot) % 4999 == 0:
        return _values(
            engine, name, tick, slot, spec, status=WorkStatus.FAILED, closed_by="lease",
            finished_at=started + timedelta(minutes=5), error="lease expired (worker lost)",
            **claimed,
        )  # fmt: skip
    failed = (n + slot) % 997 == 0
    return _values(
        engine, name, tick, slot, spec,
        status=WorkStatus.FAILED if failed else WorkStatus.SUCCESS,
        closed_by="worker", finished_at=started + timedelta(milliseconds=200),
        error="TimeoutError: upstream did not answer" if failed else None, **claimed,
    )  # fmt: skip


def _values(
    engine: sa.Engine,
    name: str,
    tick: datetime,
    slot: int,
    spec: str,
    *,
    status: WorkStatus,
    **extra: Any,
) -> dict[str, Any]:
    values: dict[str, Any] = dict.fromkeys(COLUMNS)
    values.update(name=name, status=status.value, sequence=tick.strftime("%Y-%m-%d %H:%M:%S"))
    values.update(slot=slot, spec=spec, tick_at=tick, **extra)
    for column in ("tick_at", "started_at", "finished_at"):
        moment = values[column]
        if moment is not None:
            values[column] = raw_stamp(engine, moment)
    return values


def load(engine: sa.Engine, days: int, table: str = TABLE) -> tuple[datetime, int]:
    """The fleet's history up to the database's now, in batches; returns now and the row count."""
    fresh_table(engine, table)
    with engine.connect() as conn:
        now = as_utc(conn.execute(sa.select(db_now(family_of(engine.dialect)))).scalar_one())
    now = now.replace(microsecond=0)
    raw = raw_connection(engine)
    cursor = raw.cursor()
    count = 0
    if engine.dialect.name == "postgresql":  # COPY: the fastest way in
        with cursor.copy(f"COPY {table} ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            for values in _rows(engine, now, days):
                copy.write_row([values[c] for c in COLUMNS])
                count += 1
    else:
        insert = sa.insert(table_named(table)).values({c: sa.bindparam(c) for c in COLUMNS})
        compiled = insert.compile(dialect=engine.dialect)
        order = compiled.positiontup
        batch: list[Any] = []
        for values in _rows(engine, now, days):
            batch.append(values if order is None else tuple(values[k] for k in order))
            if len(batch) == BATCH:
                count += _insert(cursor, compiled.string, batch)
                batch = []
        count += _insert(cursor, compiled.string, batch)
    raw.close()
    analyze(engine, table)
    return now, count


def _insert(cursor: Any, sql: str, batch: list[Any]) -> int:
    if batch:
        cursor.execute("BEGIN")
        cursor.executemany(sql, batch)
        cursor.execute("COMMIT")
    return len(batch)


def timings(engine: sa.Engine, repeats: int) -> dict[str, Any]:
    """Seconds per request for each path, after one cold request of the first page."""
    import anyio
    import httpx

    from worksync_sa.web import app

    page = app(engine, TABLE)
    paths = ("/", "/api/state", "/?name=big")
    found: dict[str, Any] = {path: [] for path in paths}

    async def measure() -> None:
        transport = httpx.ASGITransport(app=page)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:

            async def get(path: str) -> tuple[float, int]:
                started = time.perf_counter()
                answer = await client.get(path)
                took = time.perf_counter() - started
                assert answer.status_code == 200, (path, answer.status_code, answer.text[:200])
                return took, len(answer.content)

            found["cold"], found["bytes"] = await get("/")
            for _ in range(repeats):
                for path in paths:  # interleaved: a noisy neighbour hurts each alike
                    found[path].append((await get(path))[0])

    try:
        anyio.run(measure)
    finally:
        page.close()
    return found


def web_page(engine: sa.Engine, report: Report, *, quick: bool) -> None:
    days = QUICK_DAYS if quick else DAYS
    started = time.perf_counter()
    _, rows = load(engine, days)
    loaded = time.perf_counter() - started
    found = timings(engine, repeats=5 if quick else 9)
    drop_table(engine, TABLE)
    paths = ("/", "/api/state", "/?name=big")
    spreads = {path: Spread.of([seconds * 1e3 for seconds in found[path]]) for path in paths}
    first = spreads["/"]
    report.results["web_page"] = {
        "rows": rows,
        "days": days,
        "load_s": round(loaded, 1),
        "cold_ms": round(found["cold"] * 1e3, 1),
        "page_bytes": found["bytes"],
        **{path: spread.as_dict() for path, spread in spreads.items()},
        "target_ms": TARGET_MS,
        "met": first.median < TARGET_MS,
    }
    report.row(
        "8 web page",
        f"{report.db}: GET / on {rows:,} rows",
        f"{first.median:.0f} ms ({first.low:.0f}-{first.high:.0f})",
        "",
        "",
        f"target < {TARGET_MS} ms: {'met' if first.median < TARGET_MS else 'NOT met'}; cold "
        f"{found['cold'] * 1e3:.0f} ms; /api/state {spreads['/api/state'].median:.0f} ms; "
        f"one work {spreads['/?name=big'].median:.0f} ms; {found['bytes'] / 1024:.0f} KiB",
    )
    print(f"  web: {rows:,} rows loaded in {loaded:.0f} s", flush=True)
