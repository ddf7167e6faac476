"""``worksync status --name fast-0 --since ... --until ... --last 5`` on a day of per-second ticks.

Issue 21: with 86,400 per-second ticks in the range the command took 6.8 s
on MariaDB and 5.3 s on PostgreSQL, because its summary folded every tick of
the range in Python. The table holds work "fast-0" and "fast-1", each ticking
every second for a day (86,400 ticks each, now and then failed, missed or
recovered, the latest still running) with ten minutes of queued ticks ahead,
and five works ticking every minute; ``--quick`` loads a quarter of a day.

Figures, each the median of several repeats, interleaved so a noisy
neighbour hurts each alike:

* ``View.render``: what the command computes and prints, in process (the
  database's clock, the summary of the due ticks and of the planned ones, the
  last 5 ticks, the next 5);
* its raw baseline: the same statements, compiled from the library's own
  Core statements, run one after the other on a raw DB-API cursor with every
  row fetched (what the command cannot do faster than);
* the command as a process (``python -m worksync_sa status ...``), start-up
  included, and that start-up alone (``status --help``: the interpreter and
  the imports, most of the process's time on a small machine);
* beside them, the status page's first load of the same work and range
  (``GET /?name=fast-0&since=...&until=...`` through the ASGI app, when the
  ``web`` extra is installed);
* once, the fold the summary used to be: ``summarise_each`` over every
  entry of the range, for the before and after.

Target: the command in under 1 s on every database.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from worksync_sa import Ledger, WorkStatus
from worksync_sa._sql.dialect import db_now, family_of
from worksync_sa._sql.ledger import ledger_page, unadopted_ledger
from worksync_sa._sql.summary import lag_ranks, work_counts
from worksync_sa.cli.status import JUST_AFTER, View
from worksync_sa.ledger import summarise_each
from worksync_sa.models import as_utc, table_named

from .harness import (
    RawStatement,
    Report,
    Spread,
    analyze,
    drop_table,
    fresh_table,
    raw_connection,
    raw_stamp,
)

TABLE = "bench_status"
WORK = "fast-0"
DAY = 86_400
AHEAD = 600
"""Queued ticks ahead of now per per-second work: a ten-minute lookahead."""
BATCH = 20_000
TARGET_S = 1.0
LAST = 5
WORKS = (("fast-0", 1), ("fast-1", 1), *((f"minutely-{k}", 60) for k in range(5)))


COLUMNS = (
    "name", "status", "sequence", "slot", "tick_at", "started_at", "finished_at", "closed_by",
    "attempts", "claimed_by", "error", "spec",
)  # fmt: skip


def _row(engine: sa.Engine, name: str, period: int, tick: datetime, n: int) -> dict[str, Any]:
    """One row, ``n`` ticks before now (``n <= 0``: ahead, queued): now and then failed, missed
    or recovered, the latest still running, the rest succeeded 40 to 440 ms late."""
    cron = "* * * * * *" if period == 1 else "* * * * *"
    values: dict[str, Any] = dict.fromkeys(COLUMNS)
    values.update(name=name, sequence=tick.strftime("%Y-%m-%d %H:%M:%S"), slot=0, tick_at=tick)
    values["spec"] = f"sequence=utc; max_run=1; cron={cron}; timezone=UTC"
    started = tick + timedelta(milliseconds=40 + (n * 37) % 400)
    claimed = {"started_at": started, "attempts": 1, "claimed_by": f"app-{n % 7}:4000"}
    if n <= 0:
        values["status"] = WorkStatus.QUEUED.value
    elif n == 1:
        values.update(status=WorkStatus.RUNNING.value, **claimed)
    elif n % 1009 == 0:
        values.update(status=WorkStatus.FAILED.value, closed_by="missed", error="missed")
        values["finished_at"] = tick + timedelta(minutes=1)
    elif n % 4999 == 0:
        values.update(status=WorkStatus.FAILED.value, closed_by="lease", **claimed)
        values.update(finished_at=started + timedelta(minutes=5), error="lease expired")
    else:
        failed = n % 997 == 0
        status = WorkStatus.FAILED if failed else WorkStatus.SUCCESS
        values.update(status=status.value, closed_by="worker", **claimed)
        values.update(finished_at=started + timedelta(milliseconds=200))
        values["error"] = "TimeoutError: upstream did not answer" if failed else None
    for column in ("tick_at", "started_at", "finished_at"):
        if values[column] is not None:
            values[column] = raw_stamp(engine, values[column])
    return values


def _rows(engine: sa.Engine, now: datetime, seconds: int) -> Iterator[dict[str, Any]]:
    """Each work's ticks up to now, oldest first, then its queued ones ahead."""
    for name, period in WORKS:
        for n in range(seconds // period, -(AHEAD // period) - 1, -1):
            if n:
                yield _row(engine, name, period, now - timedelta(seconds=n * period), n)


def _insert(cursor: Any, sql: str, batch: list[Any]) -> int:
    if batch:
        cursor.execute("BEGIN")
        cursor.executemany(sql, batch)
        cursor.execute("COMMIT")
    return len(batch)


def load(engine: sa.Engine, seconds: int, table: str = TABLE) -> tuple[datetime, int]:
    """The works' history up to the database's now; returns now and the row count."""
    fresh_table(engine, table)
    with engine.connect() as conn:
        now = as_utc(conn.execute(sa.select(db_now(family_of(engine.dialect)))).scalar_one())
    now = now.replace(microsecond=0)
    raw = raw_connection(engine)
    cursor = raw.cursor()
    count = 0
    if engine.dialect.name == "postgresql":
        with cursor.copy(f"COPY {table} ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            for values in _rows(engine, now, seconds):
                copy.write_row([values[c] for c in COLUMNS])
                count += 1
    else:
        insert = sa.insert(table_named(table)).values({c: sa.bindparam(c) for c in COLUMNS})
        compiled = insert.compile(dialect=engine.dialect)
        order = compiled.positiontup
        batch: list[Any] = []
        for values in _rows(engine, now, seconds):
            batch.append(values if order is None else tuple(values[k] for k in order))
            if len(batch) == BATCH:
                count += _insert(cursor, compiled.string, batch)
                batch = []
        count += _insert(cursor, compiled.string, batch)
    raw.close()
    analyze(engine, table)
    return now, count


def _args(since: datetime, until: datetime) -> list[str]:
    return ["--name", WORK, "--since", since.isoformat(), "--until", until.isoformat()]


def render(ledger: Ledger, since: datetime, until: datetime) -> tuple[float, list[str]]:
    """Seconds for what the command computes and prints, and its lines."""
    args = argparse.Namespace(name=WORK, since=since, until=until, last=LAST)
    view = View(args, TABLE, "bench")
    started = time.perf_counter()
    lines = view.render(ledger, since)  # absolute bounds: the moment given resolves nothing
    return time.perf_counter() - started, lines


class RawBaseline:
    """The command's statements on a raw cursor, in its order; each call times one run.

    Compiled from the library's own Core statements (``RawStatement``), every
    row fetched: what the command cannot do faster than.
    """

    def __init__(self, engine: sa.Engine, since: datetime, until: datetime) -> None:
        table = table_named(TABLE)
        ranged = ("since", "until", "work_name")
        self._engine, self._since, self._until = engine, since, until
        self._clock = RawStatement.of(sa.select(db_now(family_of(engine.dialect))), engine, ())
        self._unadopted = RawStatement.of(
            unadopted_ledger(table, one_work=True), engine, ("work_name",)
        )
        self._summary = [
            RawStatement.of(work_counts(table, one_work=True), engine, ranged),
            self._unadopted,
            RawStatement.of(lag_ranks(table), engine, ranged),
        ]
        self._latest = RawStatement.of(
            ledger_page(table, one_work=True, resume=False, latest_first=True),
            engine,
            (*ranged, "limit"),
        )
        self._soonest = RawStatement.of(
            ledger_page(table, one_work=True, resume=False), engine, (*ranged, "limit")
        )
        self._raw = raw_connection(engine)

    def _run(self, statement: RawStatement, cursor: Any, **params: Any) -> list[Any]:
        stamped = {
            key: raw_stamp(self._engine, value) if isinstance(value, datetime) else value
            for key, value in params.items()
        }
        statement.run(cursor, stamped)
        return list(cursor.fetchall())

    def __call__(self) -> float:
        since, until = self._since, self._until
        started = time.perf_counter()
        cursor = self._raw.cursor()
        (clock,) = self._run(self._clock, cursor)[0]
        if not isinstance(clock, datetime):  # SQLite: text
            clock = datetime.fromisoformat(clock)
        come = min(max(as_utc(clock) + JUST_AFTER, since), until)
        for first, last in ((since, come), (come, until)):
            for statement in self._summary:
                self._run(statement, cursor, since=first, until=last, work_name=WORK)
        self._run(self._latest, cursor, since=since, until=come, work_name=WORK, limit=LAST)
        self._run(self._unadopted, cursor, work_name=WORK)
        self._run(self._soonest, cursor, since=come, until=until, work_name=WORK, limit=LAST)
        self._run(self._unadopted, cursor, work_name=WORK)
        cursor.close()
        return time.perf_counter() - started

    def close(self) -> None:
        self._raw.close()


def process(url: str, since: datetime, until: datetime) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "worksync_sa", "status", *_args(since, until), "--last", str(LAST),
         "--db", url, "--table", TABLE],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    took = time.perf_counter() - started
    assert done.returncode == 0, done.stderr
    assert re.search(rf"the last {LAST} of [\d,]+ ticks", done.stdout), done.stdout[:500]
    return took


def start_up() -> float:
    """Seconds for ``worksync status --help``: the interpreter and the imports, no database."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "worksync_sa", "status", "--help"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return time.perf_counter() - started


def page_loads(
    engine: sa.Engine, since: datetime, until: datetime, repeats: int
) -> list[float] | None:
    """Seconds per first load of the page for the same work and range; None without the extra."""
    try:
        import anyio
        import httpx

        from worksync_sa.web import app
    except ImportError:
        return None
    page = app(engine, TABLE)
    query = {"name": WORK, "since": since.isoformat(), "until": until.isoformat()}
    found: list[float] = []

    async def measure() -> None:
        transport = httpx.ASGITransport(app=page)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            for n in range(repeats + 1):
                started = time.perf_counter()
                answer = await client.get("/", params=query)
                took = time.perf_counter() - started
                assert answer.status_code == 200, (answer.status_code, answer.text[:200])
                if n:  # the first is cold: statements compiled, connections opened
                    found.append(took)

    try:
        anyio.run(measure)
    finally:
        page.close()
    return found


def status_last(engine: sa.Engine, url: str, report: Report, *, quick: bool) -> None:
    seconds = DAY // 4 if quick else DAY
    repeats = 3 if quick else 5
    started = time.perf_counter()
    now, rows = load(engine, seconds)
    loaded = time.perf_counter() - started
    since, until = now - timedelta(seconds=seconds), now + timedelta(seconds=AHEAD + 1)
    ledger = Ledger(engine, table=TABLE)
    baseline = RawBaseline(engine, since, until)
    figures: dict[str, list[float]] = {
        "library_s": [],
        "raw_s": [],
        "process_s": [],
        "start_up_s": [],
    }
    try:
        render(ledger, since, until)  # cold: statements compiled, lanes opened
        baseline()
        for _ in range(repeats):
            took, lines = render(ledger, since, until)
            figures["library_s"].append(took)
            figures["raw_s"].append(baseline())
            figures["process_s"].append(process(url, since, until))
            figures["start_up_s"].append(start_up())
        text = "\n".join(lines)
        assert re.search(rf"the last {LAST} of [\d,]+ ticks", text), text[:500]
        page = page_loads(engine, since, until, repeats)
        fold_started = time.perf_counter()
        entries = ledger.entries(name=WORK, since=since, until=until)
        (folded,) = summarise_each(entries)
        fold = time.perf_counter() - fold_started
        assert folded.ticks == seconds + AHEAD, folded.ticks
    finally:
        ledger.close()
        baseline.close()
        drop_table(engine, TABLE)
    spread = {key: Spread.of(values) for key, values in figures.items()}
    library, raw = spread["library_s"].median, spread["raw_s"].median
    command = spread["process_s"].median
    page_ms = None if page is None else Spread.of([s * 1e3 for s in page])
    report.results["status_last"] = {
        "ticks": seconds,
        "rows": rows,
        "load_s": round(loaded, 1),
        **{key: value.as_dict() for key, value in spread.items()},
        "page_first_ms": None if page_ms is None else page_ms.as_dict(),
        "python_fold_s": fold,
        "target_s": TARGET_S,
        "met": command < TARGET_S,
    }
    page_note = "no web extra" if page_ms is None else f"page's first load {page_ms.median:.0f} ms"
    report.row(
        "9 status --last 5",
        f"{report.db}: {seconds:,} ticks of one work in the range",
        f"{library * 1e3:.0f} ms ({spread['library_s'].low * 1e3:.0f}-"
        f"{spread['library_s'].high * 1e3:.0f})",
        f"{raw * 1e3:.0f} ms",
        f"{library / raw:.2f}x" if raw else "-",
        f"as a process {command:.2f}s (target < {TARGET_S:.0f} s: "
        f"{'met' if command < TARGET_S else 'NOT met'}; start-up alone, --help, "
        f"{spread['start_up_s'].median:.2f}s); {page_note}; "
        f"the old fold in Python {fold:.2f} s",
    )
    print(f"  status: {rows:,} rows loaded in {loaded:.0f} s", flush=True)
