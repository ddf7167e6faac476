"""Issue 22: what a worker's look costs when nothing is due, and whether a lock-free peek pays.

A worker looks with one claim statement across all its works, an UPDATE
(``claim_batch_statement``; on MariaDB an INSERT that collides with the rows
it picks, ``claim_batch_returning``). When nothing is due it takes nothing,
and the question is whether a read that takes no locks ("anything due for
my works?") would be so much cheaper that a worker should ask it first. A
peek cannot replace the claim when something is due: there it is one more
statement. So it pays only if enough looks find nothing.

The table: 100 per-second works, 200 finished rows each just behind the
clock and 30 queued rows each ahead of it, one worker serving all 100 (one
group, an hour's grace). The queued rows start ``LEAD`` after the load, not
a second after it, so that nothing falls due while the benchmark runs
(every empty look asserts it took nothing): the gap holds no rows of any
status, and no form reads the finished rows' part of an index.

Four forms, in alternating chunks on one connection each:

* ``library``: the look as a ``Worker`` makes it (``WorkSync``'s batch claim,
  its lanes, its direct cursor path);
* ``claim statement``: the same compiled statement on a raw autocommit cursor;
* ``peek``: the library's lock-free read, ``batch_left``, compiled, raw cursor;
* ``raw``: what a database expert would write for "is anything due for these
  works?", every value bound: PostgreSQL ``SELECT EXISTS (... name = ANY(%s)
  ...)`` on the partial index of the queued rows, MariaDB and SQLite
  ``SELECT 1 ... name IN (...) AND tick_at BETWEEN ... LIMIT 1``.

Beside the rates, what each statement costs the server, from the statement
itself, run and rolled back: PostgreSQL's buffers, the indexes its plan reads
and its planning and execution time (``EXPLAIN (ANALYZE, BUFFERS)``, planned
afresh, where the timed loop's psycopg prepares after five runs); MariaDB's
``Handler_read%`` per statement (index entries and rows examined), and from
``ANALYZE FORMAT=JSON`` the InnoDB pages and the optimizer's time beside the
execution's, since a list of 100 names costs the optimizer an index dive per
name before any row is read. SQLite has no such counters.

Then a busy tick: one due row for every work. The two reads are timed again
(a peek that finds a row stops at it), and the statements of a library look
are counted, idle and busy, by a cursor listener on an engine of its own.
The verdict: peek-then-claim sends ``1`` statement on an idle look and
``1 + claim`` on a busy one, against ``claim`` for both; in time it saves
``t_claim - t_peek`` on an idle look and costs ``t_peek_busy`` on a busy one,
so it pays once the share of idle looks exceeds
``t_peek_busy / (t_claim - t_peek + t_peek_busy)`` (never, if the claim is no
dearer than the peek). The busy claim itself is the same in both designs and
drops out.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from worksync_sa import WorkStatus, WorkSync
from worksync_sa._core.claims import DuePlan
from worksync_sa._sql.claims import batch_left, claim_batch_returning, claim_batch_statement
from worksync_sa._sql.dialect import db_now, family_of, returns_inserted
from worksync_sa.models import as_utc, table_named, validate_table_name

from .harness import (
    Report,
    Spread,
    analyze,
    bulk_insert,
    drop_table,
    fresh_table,
    raw_connection,
)

TABLE = "bench_empty_look"
WORKS = 100
HISTORY = 200
AHEAD = 30
GRACE = timedelta(hours=1)
LEAD = timedelta(minutes=20)
"""How far after the load the first queued row lies: longer than any run, so none falls due."""
LIMIT = 8
"""A look asks for as many rows as the worker has free runners."""
NAMES = tuple(f"w{w:03d}" for w in range(WORKS))
FORMS = ("library", "claim", "peek", "raw")
LABELS = {
    "library": "library look (WorkSync batch claim)",
    "claim": "claim statement, raw cursor",
    "peek": "peek (batch_left), raw cursor",
    "raw": "raw EXISTS / SELECT 1 LIMIT 1",
}


def db_clock(engine: sa.Engine) -> datetime:
    with engine.connect() as conn:
        return as_utc(conn.execute(sa.select(db_now(family_of(engine.dialect)))).scalar_one())


def insert_rows(engine: sa.Engine, table: str, rows: list[tuple[str, int, str, datetime]]) -> None:
    """(name, status, sequence, tick_at) rows through the raw driver, in a few transactions."""
    bulk_insert(
        engine,
        table,
        [
            {
                "name": name,
                "status": status,
                "sequence": sequence,
                "slot": 0,
                "tick_at": moment,
                "grace_seconds": int(GRACE.total_seconds()),
                "lease_seconds": 60,
            }
            for name, status, sequence, moment in rows
        ],
    )


def load(engine: sa.Engine, table: str) -> None:
    """Each work's finished history behind the clock and its queued rows ahead, ``LEAD`` on."""
    now = db_clock(engine).replace(microsecond=0)
    rows = []
    for name in NAMES:
        for n in range(1, HISTORY + 1):
            rows.append((name, WorkStatus.SUCCESS.value, f"p{n:06d}", now - timedelta(seconds=n)))
        for n in range(AHEAD):
            moment = now + LEAD + timedelta(seconds=n)
            rows.append((name, WorkStatus.QUEUED.value, f"q{n:06d}", moment))
    insert_rows(engine, table, rows)
    analyze(engine, table)


def make_busy(engine: sa.Engine, table: str) -> None:
    """A tick due now for every work: the look a worker makes when it wakes at a tick."""
    now = db_clock(engine)
    moment = now - timedelta(seconds=1)
    insert_rows(engine, table, [(n, WorkStatus.QUEUED.value, "due", moment) for n in NAMES])


def bound(engine: sa.Engine, statement: Any, given: dict[str, Any]) -> tuple[str, Any]:
    """A library statement's SQL for this dialect and its parameters, as the cursor takes them."""
    compiled = statement.compile(dialect=engine.dialect)
    params = dict(compiled.construct_params(given))
    if compiled.positiontup is not None:
        return compiled.string, tuple(params[k] for k in compiled.positiontup)
    return compiled.string, params


def look_params(plan: DuePlan) -> dict[str, Any]:
    """The batch claim's parameters, as ``WorkSyncCore.acquire_batch`` makes them."""
    given: dict[str, Any] = {"claim_token": "x" * 32, "worker": "bench", "batch_limit": LIMIT}
    for g, (floor, names) in enumerate(plan.groups):
        given[f"floor_{g}"] = floor
        for i, name in enumerate(names):
            given[f"work_{g}_{i}"] = name
            given[f"rank_{g}_{i}"] = i
    return given


def raw_form(engine: sa.Engine, table: str) -> tuple[str, Any]:
    """The hand-written read: the table validated and quoted, every value bound."""
    q = engine.dialect.identifier_preparer.quote(validate_table_name(table))
    grace = int(GRACE.total_seconds())
    if engine.dialect.name == "postgresql":
        sql = (
            "SELECT EXISTS (SELECT 1 FROM "
            + q
            + " WHERE status = 1 AND name = ANY(%s)"
            + " AND tick_at <= now() AND tick_at >= now() - %s * interval '1 second')"
        )
        return sql, (list(NAMES), grace)
    if engine.dialect.name == "sqlite":
        marks = ", ".join("?" for _ in NAMES)
        sql = (
            "SELECT 1 FROM "
            + q
            + " WHERE status = 1 AND name IN ("
            + marks
            + ") AND tick_at BETWEEN strftime('%Y-%m-%d %H:%M:%f000', 'now', ?)"
            + " AND strftime('%Y-%m-%d %H:%M:%f000', 'now') LIMIT 1"
        )
        return sql, (*NAMES, f"-{grace} seconds")
    marks = ", ".join("%s" for _ in NAMES)
    sql = (
        "SELECT 1 FROM "
        + q
        + " WHERE status = 1 AND name IN ("
        + marks
        + ") AND tick_at BETWEEN UTC_TIMESTAMP(6) - INTERVAL %s SECOND AND UTC_TIMESTAMP(6)"
        + " LIMIT 1"
    )
    return sql, (*NAMES, grace)


class Forms:
    """The four forms, each a call that makes one look and returns what it found."""

    def __init__(self, engine: sa.Engine, table: str) -> None:
        family = family_of(engine.dialect)
        self.engine = engine
        self.plan = DuePlan.of(dict.fromkeys(NAMES, GRACE))
        shape, t = self.plan.shape, table_named(table)
        given = look_params(self.plan)
        self.sync = WorkSync(engine, table=table, keep_alive=False)
        self.places = {name: i for i, name in enumerate(NAMES)}
        engine.connect().close()  # the dialect learns the server's version on connecting
        look: Any = (  # the worker's own: on MariaDB the INSERT that returns its rows
            claim_batch_returning(t, shape)
            if family == "mysql" and returns_inserted(engine.dialect)
            else claim_batch_statement(t, family, shape)
        )
        self.sql = {
            "claim": bound(engine, look, given),
            "peek": bound(engine, batch_left(t, family, shape, explicit_now=False), given),
            "raw": raw_form(engine, table),
        }
        # One raw connection for the three raw forms (a cursor each): on a server whose
        # connections another run has nearly used up, this run needs only two more.
        self.conn = raw_connection(engine)
        self.cursors = {form: self.conn.cursor() for form in self.sql}
        self.returns_rows = {"claim": family != "mysql", "peek": True, "raw": True}

    def found(self, form: str) -> int:
        """Rows taken (the claims) or rows saying something is due (the reads)."""
        if form == "library":
            return len(self.sync._acquire_batch(self.plan, self.places, LIMIT))
        sql, params = self.sql[form]
        cursor = self.cursors[form]
        cursor.execute(sql, params)
        if not self.returns_rows[form]:
            return int(cursor.rowcount)
        rows = cursor.fetchall()
        if form == "raw" and rows and rows[0][0] is False:  # PostgreSQL's EXISTS: one row
            return 0
        return len(rows)

    def close(self) -> None:
        self.sync.close()
        self.conn.close()


def rates(
    forms: Forms, chosen: tuple[str, ...], chunk: int, repeats: int, expect: Callable[[int], bool]
) -> dict[str, Spread]:
    """Looks per second of each form, chunk by chunk, the order turned every repeat."""
    for form in chosen:  # warm up: lanes open, psycopg prepares on the fifth run
        for _ in range(10):
            assert expect(forms.found(form)), form
    measured: dict[str, list[float]] = {form: [] for form in chosen}
    for repeat in range(repeats):
        order = chosen if repeat % 2 == 0 else tuple(reversed(chosen))
        for form in order:
            started = time.perf_counter()
            for _ in range(chunk):
                assert expect(forms.found(form)), form
            measured[form].append(chunk / (time.perf_counter() - started))
    return {form: Spread.of(values) for form, values in measured.items()}


def reads(forms: Forms, form: str) -> dict[str, Any]:
    """What one run of a form's statement reads on the server, in a transaction rolled back."""
    family = family_of(forms.engine.dialect)
    if family == "sqlite":
        return {}
    sql, params = forms.sql[form]
    cursor = forms.conn.cursor()
    try:
        if family == "postgresql":
            cursor.execute("BEGIN")
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, params)
            plan = cursor.fetchone()[0]
            document = (plan if isinstance(plan, list) else json.loads(plan))[0]
            top = document["Plan"]
            indexes = sorted({n["Index Name"] for n in _nodes(top) if "Index Name" in n})
            return {
                "buffers": top["Shared Hit Blocks"] + top["Shared Read Blocks"],
                "indexes": indexes,
                "plan_ms": document["Planning Time"],
                "execute_ms": document["Execution Time"],
            }
        # MariaDB: the handler counters over ``runs`` runs, less what the SHOW itself reads.
        runs = 10
        cursor.execute("FLUSH STATUS")  # before BEGIN: a FLUSH commits implicitly
        cursor.execute("SHOW SESSION STATUS LIKE 'Handler_read%'")
        before = {k: int(v) for k, v in cursor.fetchall()}
        cursor.execute("FLUSH STATUS")
        cursor.execute("BEGIN")
        for _ in range(runs):
            cursor.execute(sql, params)
            cursor.fetchall()
        cursor.execute("SHOW SESSION STATUS LIKE 'Handler_read%'")
        after = {k: int(v) for k, v in cursor.fetchall()}
        per = {k: (after[k] - before.get(k, 0)) / runs for k in after}
        # Where the time goes: the optimizer's index dives (one per name) or the execution.
        analyzed = []
        for _ in range(runs):
            cursor.execute("ANALYZE FORMAT=JSON " + sql, params)
            analyzed.append(json.loads(cursor.fetchall()[0][0]))
        return {
            "handler_reads": sum(per.values()),
            "detail": {k.removeprefix("Handler_read_"): v for k, v in per.items() if v},
            "plan_ms": statistics.median(
                a["query_optimization"]["r_total_time_ms"] for a in analyzed
            ),
            "execute_ms": statistics.median(a["query_block"]["r_total_time_ms"] for a in analyzed),
            "pages": statistics.median(_pages(a) for a in analyzed),
        }
    finally:
        cursor.execute("ROLLBACK")
        cursor.close()


def _pages(node: Any) -> int:
    """The InnoDB pages a MariaDB ANALYZE says the statement touched, over all its tables."""
    if isinstance(node, dict):
        own = node.get("r_engine_stats", {}).get("pages_accessed", 0)
        return int(own) + sum(_pages(v) for k, v in node.items() if k != "r_engine_stats")
    if isinstance(node, list):
        return sum(_pages(v) for v in node)
    return 0


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan]
    for child in plan.get("Plans", []):
        found.extend(_nodes(child))
    return found


def statements_per_look(forms: Forms, looks: int) -> tuple[float, int]:
    """(statements, rows taken) per library look, counted by a cursor listener for the while.

    A listener turns the library's direct cursor path off, but not one
    statement more or less is sent: the count is the same either way.
    """
    engine = forms.engine
    sent: list[str] = []

    def count(*args: Any) -> None:
        sent.append(args[2])

    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        taken = sum(
            len(forms.sync._acquire_batch(forms.plan, forms.places, LIMIT)) for _ in range(looks)
        )
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    return len(sent) / looks, taken


def seconds(rate: Spread) -> float:
    return 1 / rate.median


def break_even(claim: float, peek: float, peek_busy: float) -> float | None:
    """The share of idle looks above which peeking first saves time (None: never)."""
    saved = claim - peek
    return None if saved <= 0 else peek_busy / (saved + peek_busy)


def empty_look(engine: sa.Engine, report: Report, *, quick: bool) -> None:
    chunk, repeats = (100, 3) if quick else (400, 5)
    fresh_table(engine, TABLE)
    load(engine, TABLE)
    forms = Forms(engine, TABLE)
    try:
        idle = rates(forms, FORMS, chunk, repeats, lambda n: n == 0)
        server = {form: reads(forms, form) for form in forms.sql}
        idle_statements, none_taken = statements_per_look(forms, 5)
        assert none_taken == 0, "a row fell due during the empty looks"
        make_busy(engine, TABLE)
        busy = rates(forms, ("peek", "raw"), chunk, repeats, lambda n: n == 1)
        busy_server = {form: reads(forms, form) for form in ("peek", "raw")}
        busy_statements, taken = statements_per_look(forms, 3)
        assert taken == 3 * LIMIT, taken
    finally:
        forms.close()
    drop_table(engine, TABLE)

    results: dict[str, Any] = {
        "works": WORKS,
        "finished_per_work": HISTORY,
        "queued_ahead_per_work": AHEAD,
        "batch_limit": LIMIT,
        "idle": {
            form: {"looks_per_s": idle[form].as_dict(), **server.get(form, {})} for form in FORMS
        },
        "busy": {
            form: {"looks_per_s": busy[form].as_dict(), **busy_server.get(form, {})}
            for form in busy
        },
    }
    library_claim, claim = seconds(idle["library"]), seconds(idle["claim"])
    peek, raw = seconds(idle["peek"]), seconds(idle["raw"])
    peek_busy, raw_busy = seconds(busy["peek"]), seconds(busy["raw"])
    results["statements_per_look"] = {
        "claim_only": {"idle": idle_statements, "busy": busy_statements},
        "peek_first": {"idle": 1.0, "busy": 1.0 + busy_statements},
    }
    results["break_even_idle_share"] = {
        "peek": break_even(claim, peek, peek_busy),
        "raw": break_even(claim, raw, raw_busy),
        "library_look_vs_peek": break_even(library_claim, peek, peek_busy),
    }
    report.results["empty_look"] = results

    for form in FORMS:
        note = _shown_reads(server.get("claim" if form == "library" else form, {}))
        if form == "library":
            note = note and "the claim statement's: " + note
        report.row(
            "22 empty look",
            f"{WORKS} works, nothing due: {LABELS[form]}",
            f"{idle[form].show()} /s",
            f"{idle['raw'].show()} /s",
            f"{idle[form].median / idle['raw'].median:.2f}x",
            note,
        )
    for form in ("peek", "raw"):
        report.row(
            "22 empty look",
            f"busy tick (every work due): {LABELS[form]}",
            f"{busy[form].show()} /s",
            f"{busy['raw'].show()} /s",
            f"{busy[form].median / busy['raw'].median:.2f}x",
            _shown_reads(busy_server.get(form, {})),
        )
    share = results["break_even_idle_share"]["peek"]
    report.row(
        "22 empty look",
        "statements per look, claim only vs peek first",
        f"idle {idle_statements:g} vs 1, busy {busy_statements:g} vs {1 + busy_statements:g}",
        "",
        "",
        "peeking first never saves time"
        if share is None
        else f"peeking first saves time only above {share:.0%} idle looks",
    )


def _shown_reads(found: dict[str, Any]) -> str:
    if "buffers" in found:
        return (
            f"{found['buffers']} buffers via {', '.join(found['indexes']) or 'no index'}; "
            f"plan {found['plan_ms']:.2f} ms, run {found['execute_ms']:.2f} ms"
        )
    if "handler_reads" in found:
        return (
            f"{found['handler_reads']:g} handler reads, {found['pages']:g} pages; "
            f"optimize {found['plan_ms']:.2f} ms, run {found['execute_ms']:.2f} ms"
        )
    return ""
