"""``worksync status``: the last ticks that ran, the next ones apart, and a summary by the database.

Issue 21: ``--last 5`` listed the next 5 queued ticks and its summary said
"ticks 120" when 5 had run; the summary was folded in Python over every tick
of the range. Each history here is written row by row with known outcomes,
around the database's clock, and the expected figures are folded from those
rows by the test itself (the ledger's definitions, as its documentation
states them), never by the package. Every test runs on SQLite, MariaDB and
PostgreSQL; the command is run as a process.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from worksync_sa import Ledger, WorkStatus
from worksync_sa.ledger import summarise_each
from worksync_sa.models import as_utc, table_named

from .conftest import Db
from .test_cli import worksync

S = timedelta(seconds=1)
QUEUED, RUNNING, SUCCESS, FAILED = (
    WorkStatus.QUEUED.value,
    WorkStatus.RUNNING.value,
    WorkStatus.SUCCESS.value,
    WorkStatus.FAILED.value,
)


@dataclass(frozen=True)
class Row:
    """One row as the test writes it: the expected figures are folded from these."""

    name: str
    tick: datetime
    slot: int
    status: int
    lag: timedelta | None = None
    closed_by: str | None = None
    attempts: int | None = None

    def values(self) -> dict[str, Any]:
        started = None if self.lag is None else self.tick + self.lag
        done = self.status in (SUCCESS, FAILED)
        return {
            "name": self.name,
            "sequence": self.tick.strftime("%Y-%m-%d %H:%M:%S"),
            "slot": self.slot,
            "tick_at": self.tick,
            "status": self.status,
            "started_at": started,
            "finished_at": (started or self.tick) + S if done else None,
            "attempts": self.attempts if self.attempts is not None else (1 if started else None),
            "closed_by": self.closed_by,
            "error": "boom"
            if self.closed_by in ("worker", "lease") and self.status == FAILED
            else None,
            "claimed_by": "test:1" if started else None,
        }


def write(db: Db, rows: list[Row]) -> None:
    with db.engine.begin() as conn:
        conn.execute(table_named(db.table).insert(), [row.values() for row in rows])


def database_now(db: Db) -> datetime:
    value = db.db_now()
    if isinstance(value, str):  # SQLite's clock is text
        value = datetime.fromisoformat(value)
    return as_utc(value).replace(microsecond=0)


def outcome(n: int) -> dict[str, Any]:
    """The n-th past tick's row: mostly a success, now and then each other ending."""
    lag = timedelta(milliseconds=50 + (n * 137) % 900)
    if n % 11 == 3:
        return {"status": FAILED, "lag": lag, "closed_by": "worker"}
    if n % 11 == 5:
        return {"status": FAILED, "closed_by": "missed"}
    if n % 11 == 7:
        return {"status": FAILED, "lag": lag, "closed_by": "lease"}
    if n % 11 == 9:
        return {"status": SUCCESS, "lag": lag, "closed_by": "worker", "attempts": 2}  # recovered
    return {"status": SUCCESS, "lag": lag, "closed_by": "worker"}


# -- the reference: the ledger's definitions, folded from the rows the test wrote ------------


@dataclass
class Expected:
    ticks: int
    claimed: int
    succeeded: int
    failed: int
    recovered: int
    missed: int
    lag_p50: timedelta | None
    lag_p95: timedelta | None


def fold(rows: list[Row]) -> dict[str, Expected]:
    """Per work, as the ledger documents its figures; quantiles as ``statistics`` takes them."""
    by_tick: dict[tuple[str, datetime], list[Row]] = {}
    for row in rows:
        by_tick.setdefault((row.name, row.tick), []).append(row)
    works: dict[str, list[list[Row]]] = {}
    for (name, _), group in sorted(by_tick.items()):
        works.setdefault(name, []).append(group)
    found = {}
    for name, ticks in works.items():
        flat = [row for group in ticks for row in group]
        lags = sorted(
            min(row.lag for row in group if row.lag is not None).total_seconds()
            for group in ticks
            if any(row.lag is not None for row in group)
        )
        found[name] = Expected(
            ticks=len(ticks),
            claimed=sum(
                1 for r in flat if r.status != QUEUED and r.closed_by not in ("missed", "surplus")
            ),
            succeeded=sum(1 for r in flat if r.status == SUCCESS),
            failed=sum(1 for r in flat if r.status == FAILED and r.closed_by in (None, "worker")),
            recovered=sum(1 for r in flat if r.closed_by == "lease" or (r.attempts or 0) > 1),
            missed=sum(1 for r in flat if r.closed_by == "missed"),
            lag_p50=_quantile(lags, 49),
            lag_p95=_quantile(lags, 94),
        )
    return found


def _quantile(seconds: list[float], cut: int) -> timedelta | None:
    if not seconds:
        return None
    if len(seconds) == 1:
        return timedelta(seconds=seconds[0])
    return timedelta(seconds=statistics.quantiles(seconds, n=100, method="inclusive")[cut])


def figures(summary: Any) -> Expected:
    return Expected(
        summary.ticks,
        summary.claimed,
        summary.succeeded,
        summary.failed,
        summary.recovered,
        summary.missed,
        summary.lag_p50,
        summary.lag_p95,
    )


# -- the summary, computed by the database ----------------------------------------------------


def mixed_history(now: datetime) -> list[Row]:
    """Works with 0, 1, 2 and many lags, several runs a tick, and ticks still to come."""
    rows = [Row("many", now - n * S, 0, **outcome(n)) for n in range(1, 80)]
    rows += [Row("many", now - n * S, 1, **outcome(n + 4)) for n in range(1, 80, 3)]  # max_run 2
    rows += [Row("many", now + n * S, 0, QUEUED) for n in range(60, 70)]
    rows += [Row("one", now - 30 * S, 0, SUCCESS, S, "worker")]
    rows += [Row("two", now - k * 10 * S, 0, SUCCESS, k * S, "worker") for k in (1, 2)]
    rows += [Row("none", now - k * S, 0, FAILED, closed_by="missed") for k in (5, 6)]
    rows += [
        Row("shrunk", now - 40 * S, 0, SUCCESS, 2 * S, "worker"),
        Row("shrunk", now - 40 * S, 1, FAILED, closed_by="surplus"),  # settings changed
        Row("shrunk", now - 20 * S, 0, RUNNING, 3 * S),
        Row("shrunk", now - 10 * S, 0, QUEUED),  # due, not claimed yet
    ]
    return rows


def test_the_summary_is_computed_by_the_database_and_agrees_with_a_fold_of_the_rows(
    db: Db,
) -> None:
    now = database_now(db)
    rows = mixed_history(now)
    write(db, rows)
    ledger = Ledger(db.engine, table=db.table)
    try:
        for since, until, name in [
            (now - 100 * S, None, None),
            (now - 100 * S, now + S, None),
            (now - 50 * S, now - 9 * S, None),
            (now - 100 * S, None, "many"),
            (now - 25 * S, now, "many"),
            (now - 100 * S, None, "nothing here"),
        ]:
            chosen = [
                row
                for row in rows
                if since <= row.tick < (until or now + 1000 * S) and name in (None, row.name)
            ]
            expected = fold(chosen)
            summaries = ledger.summary(name=name, since=since, until=until)
            assert {s.name: figures(s) for s in summaries} == expected, (since, until, name)
            folded = summarise_each(ledger.entries(name=name, since=since, until=until))
            assert summaries == folded  # the database's and the ledger's own fold, exactly
    finally:
        ledger.close()


def test_a_summary_reads_the_same_few_statements_however_long_the_range(db: Db) -> None:
    now = database_now(db)
    write(db, [Row("w", now - n * S, 0, **outcome(n)) for n in range(1, 400)])
    ledger = Ledger(db.engine, table=db.table)
    sent: list[str] = []

    def count(*args: Any) -> None:
        sent.append(args[2])

    ledger.summary(name="w")  # the first read opens the ledger's connection: not counted
    sa.event.listen(db.engine, "before_cursor_execute", count)
    try:
        counts = []
        for seconds in (10, 100, 399):
            sent.clear()
            (summary,) = ledger.summary(name="w", since=now - seconds * S)
            assert summary.ticks == seconds
            counts.append(len([sql for sql in sent if sql.lstrip().upper().startswith("SELECT")]))
        # The ledger's counts summed, the undated rows, the work's lags ranked: 3, at any length.
        assert counts == [3, 3, 3], counts
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", count)
        ledger.close()


def test_mariadb_reads_one_works_range_along_its_instant_key(maria_db: Db) -> None:
    """The summary's two statements and the latest page read the work's range by the key
    ``(name, tick_at, slot)``: never the table, whatever the other works hold."""
    from worksync_sa._sql.ledger import ledger_page
    from worksync_sa._sql.summary import lag_ranks, work_counts

    db = maria_db
    now = database_now(db)
    write(db, [Row(w, now - n * S, 0, **outcome(n)) for w in ("w", "x") for n in range(1, 300)])
    with db.engine.connect() as conn:
        conn.exec_driver_sql(f"ANALYZE TABLE {db.table}")
    table = table_named(db.table)
    params = {"since": now - 100 * S, "until": now, "work_name": "w", "limit": 5}
    for statement in (
        work_counts(table, one_work=True),
        lag_ranks(table),
        ledger_page(table, one_work=True, resume=False, latest_first=True),
    ):
        compiled = statement.compile(dialect=db.engine.dialect)
        bound = compiled.construct_params(params)
        values = tuple(bound[key] for key in compiled.positiontup or ())
        with db.engine.connect() as conn:
            plan = conn.exec_driver_sql("EXPLAIN " + compiled.string, values).all()
        reads = [row for row in plan if row[2] == db.table]
        assert reads, plan
        for row in reads:
            assert row[3] != "ALL", plan  # no scan of the whole table
            assert row[5] == f"uq_{db.table}_instant", plan
        if statement is not lag_ranks(table):
            assert not any("filesort" in str(row) for row in plan), plan


def test_pages_latest_first_resume_backward(db: Db) -> None:
    now = database_now(db)
    rows = [Row(w, now - n * S, 0, **outcome(n)) for w in ("a", "b") for n in range(1, 13)]
    write(db, rows)
    ledger = Ledger(db.engine, table=db.table)
    try:
        for name in (None, "a"):
            forward = list(ledger.entries(name=name, since=now - 60 * S))
            backward = list(
                ledger.entries(name=name, since=now - 60 * S, page_size=5, latest_first=True)
            )
            assert backward == forward[::-1]
            first = ledger.page(name=name, since=now - 60 * S, limit=5, latest_first=True)
            assert first.entries == forward[::-1][:5]
    finally:
        ledger.close()


# -- the command ------------------------------------------------------------------------------

TICK = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\s+(\S+)\s+" + r"(\d+)\s+" * 8 + r"(\S+)", re.M
)


@dataclass
class Shown:
    """What ``worksync status`` printed, cut into its parts."""

    stdout: str
    last: list[tuple[datetime, tuple[int, ...], str]]
    upcoming: list[tuple[datetime, tuple[int, ...], str]]
    summary: dict[str, list[str]]

    @classmethod
    def of(cls, stdout: str) -> Shown:
        ticks, _, rest = stdout.partition("\nnext ")
        if not rest:
            ticks, rest = stdout.split("\n\nwork ", 1)[0], ""
        summary_text = stdout.split("\n\nwork ", 1)[1]
        headers = ["work", *summary_text.splitlines()[0].split()]
        summary = {
            line.split()[0]: line.split()[1:]
            for line in summary_text.splitlines()[1:]
            if line.strip()
        }
        assert headers[1:3] == ["due", "ahead"], headers
        return cls(stdout, _ticks(ticks), _ticks(rest.split("\n\nwork ", 1)[0]), summary)


def _ticks(text: str) -> list[tuple[datetime, tuple[int, ...], str]]:
    return [
        (
            datetime.fromisoformat(m[0]).replace(tzinfo=timezone.utc),
            tuple(map(int, m[2:10])),
            m[10],
        )
        for m in TICK.findall(text)
    ]


def status(db: Db, tmp_path: Path, *args: str) -> Shown:
    result = worksync("status", "--db", db.url, "--table", db.table, *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return Shown.of(result.stdout)


@pytest.fixture
def running_fleet(db: Db) -> tuple[Db, datetime, list[Row]]:
    """40 ticks of a per-second work that came (the latest still running, one not claimed
    yet), then 100 queued ones planned from five minutes ahead: far enough from the clock
    that a slow machine cannot move a tick from one side to the other during the test."""
    now = database_now(db)
    past = [Row("w", now - (30 + n) * S, 0, **outcome(n)) for n in range(2, 40)]
    past += [
        Row("w", now - 31 * S, 0, QUEUED),  # due, within grace: no worker got to it yet
        Row("w", now - 30 * S, 0, RUNNING, timedelta(milliseconds=20)),
    ]
    ahead = [Row("w", now + (300 + n) * S, 0, QUEUED) for n in range(100)]
    write(db, past + ahead)
    return db, now, past


def test_last_n_is_the_latest_ticks_that_came_then_the_next_apart(
    running_fleet: tuple[Db, datetime, list[Row]], tmp_path: Path
) -> None:
    db, now, past = running_fleet
    shown = status(db, tmp_path, "--name", "w", "--since", "1h", "--last", "5")
    came = sorted({row.tick for row in past}, reverse=True)
    assert [tick for tick, _, _ in shown.last] == came[:5]  # latest first
    assert shown.last[0][1][3] == 1  # the latest: running
    assert shown.last[1][1][2] == 1  # then one due and not claimed yet (queued)
    assert f"the last 5 of {len(came)} ticks whose time has come" in shown.stdout
    # The queued ticks ahead only in the next block: the soonest first, at most five.
    assert [tick for tick, _, _ in shown.upcoming] == [now + (300 + n) * S for n in range(5)]
    assert all(figures == (1, 1, 1, 0, 0, 0, 0, 0) for _, figures, _ in shown.upcoming)
    assert "next 5 of 100 ticks planned ahead, soonest first" in shown.stdout
    # The summary counts what came, and how many are planned: not 140 "ticks".
    expected = fold(past)["w"]
    due, ahead, claimed, succeeded, failed, recovered, missed = map(int, shown.summary["w"][:7])
    assert (due, ahead) == (len(came), 100)
    assert (claimed, succeeded, failed, recovered, missed) == (
        expected.claimed,
        expected.succeeded,
        expected.failed,
        expected.recovered,
        expected.missed,
    )
    unclaimed = 1 + sum(1 for row in past if row.closed_by == "missed")  # and the queued one
    assert claimed == len(past) - unclaimed


def test_without_last_every_tick_that_came_is_shown_latest_first_and_adds_up(
    running_fleet: tuple[Db, datetime, list[Row]], tmp_path: Path
) -> None:
    db, _, past = running_fleet
    shown = status(db, tmp_path, "--since", "1h")
    assert [tick for tick, _, _ in shown.last] == sorted({r.tick for r in past}, reverse=True)
    assert len(shown.upcoming) == 5
    totals = [sum(figures[k] for _, figures, _ in shown.last) for k in range(1, 8)]
    created, queued, running, succeeded, failed, recovered, missed = totals
    # due, ahead, claimed, succeeded, failed, recovered, missed: the summary adds the lines up
    assert list(map(int, shown.summary["w"][:7])) == [
        len(shown.last),
        100,
        created - queued - missed,
        succeeded,
        failed,
        recovered,
        missed,
    ]
    assert running == 1


def test_a_range_with_nothing_due_yet_shows_the_next_ticks_and_no_lag(
    running_fleet: tuple[Db, datetime, list[Row]], tmp_path: Path
) -> None:
    db, now, _ = running_fleet
    since = (now + 200 * S).isoformat()
    shown = status(db, tmp_path, "--since", since, "--last", "3")
    assert shown.last == []
    assert "no tick whose time has come by the database clock" in shown.stdout
    assert [tick for tick, _, _ in shown.upcoming] == [now + (300 + n) * S for n in range(3)]
    assert shown.summary["w"][:3] == ["0", "100", "0"]
    assert shown.summary["w"][-3:] == ["-", "-", "-"]  # no rate, no lag: nothing ran
