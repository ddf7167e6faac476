"""The per-tick ledger, checked figure by figure against histories built on purpose."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from worksync_sa import InvalidArgumentError, Ledger, SchedulerConfig, Work
from worksync_sa import default_sequence as seq
from worksync_sa.models import table_named

from ..conftest import Db

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
S = timedelta(seconds=1)


def at(seconds: float) -> datetime:
    return T0 + seconds * S


def set_row(db: Db, row_id: int, **values: object) -> None:
    table = table_named(db.table)
    with db.engine.begin() as conn:
        conn.execute(sa.update(table).where(table.c.id == row_id).values(**values))


def history(db: Db) -> None:
    """Work a (max_run 2, grace 15 s) and work b (re-queues once), every 10 s from T0."""
    works = [
        Work("a", "@every 10s", max_run=2, grace=15 * S, lease=5 * S),
        Work("b", "@every 10s", max_run=1, grace=15 * S, lease=5 * S, max_attempts=2),
    ]
    config = SchedulerConfig(lookahead="60s", interval="10s")
    db.Scheduler(db.engine, works, config, table=db.table).run_pass(T0)
    sync = db.WorkSync(db.engine, table=db.table, keep_alive=False)
    # a @ 10: both claimed, 1 s and 3 s late; one succeeds, one fails.
    ok, bad = sync.acquire("a", seq(at(10))), sync.acquire("a", seq(at(10)))
    assert ok is not None
    assert bad is not None
    set_row(db, ok.id, started_at=at(11))
    set_row(db, bad.id, started_at=at(13))
    ok.success()
    bad.fail("boom")
    # a @ 20: one claimed 2 s late and lost (lease ran out at 25 s); the other never claimed.
    lost = sync.acquire("a", seq(at(20)))
    assert lost is not None
    set_row(db, lost.id, started_at=at(22), lease_until=at(25))
    # a @ 30: one claimed 5 s late and succeeds; the other still queued (partial).
    late = sync.acquire("a", seq(at(30)))
    assert late is not None
    set_row(db, late.id, started_at=at(35))
    late.success()
    # b @ 10: claimed, lease lost, re-queued, claimed again and succeeds.
    first = sync.acquire("b", seq(at(10)))
    assert first is not None
    set_row(db, first.id, started_at=at(10.5), lease_until=at(15))
    assert sync.recover(now=at(16)) == 1  # b @ 10 re-queued
    again = sync.acquire("b", seq(at(10)))
    assert again is not None
    set_row(db, again.id, started_at=at(17))
    again.success()
    # At 40 s: a @ 20's lease is long gone, a @ 20's free row and b @ 20's are past grace.
    sync.recover(now=at(40))
    sync.close()


def test_every_figure_of_every_tick(db: Db) -> None:
    history(db)
    ledger = Ledger(db.engine, table=db.table)
    entries = {(e.name, e.sequence): e for e in ledger.entries()}
    a10, a20, a30, a40 = (entries["a", seq(at(n))] for n in (10, 20, 30, 40))
    b10, b20 = entries["b", seq(at(10))], entries["b", seq(at(20))]

    def figures(e: object) -> tuple[int, ...]:
        names = (
            "max_run",
            "created",
            "queued",
            "running",
            "succeeded",
            "failed",
            "recovered",
            "missed",
        )
        return tuple(getattr(e, n) for n in names)

    assert figures(a10) == (2, 2, 0, 0, 1, 1, 0, 0)
    assert figures(a20) == (2, 2, 0, 0, 0, 0, 1, 1)  # one lost worker, one missed slot
    assert figures(a30) == (2, 2, 1, 0, 1, 0, 0, 0)  # partial: one still queued
    assert figures(a40) == (2, 2, 2, 0, 0, 0, 0, 0)  # ahead of the clock
    assert figures(b10) == (1, 1, 0, 0, 1, 0, 1, 0)  # recovered, then done on its second try
    assert figures(b20) == (1, 1, 0, 0, 0, 0, 0, 1)
    assert (a10.lag, a20.lag, a30.lag, a40.lag) == (1 * S, 2 * S, 5 * S, None)
    assert b10.lag == 7 * S  # the first start that is still on record: the second claim's
    assert (a10.claimed, a20.claimed, a30.claimed) == (2, 1, 1)
    assert a10.tick_at == at(10)


def test_entries_come_in_tick_order_and_page_by_keyset(db: Db) -> None:
    history(db)
    ledger = Ledger(db.engine, table=db.table)
    everything = list(ledger.entries())
    keys = [(e.tick_at, e.name, e.sequence) for e in everything]
    assert keys == sorted(keys)
    assert len(everything) == 12  # 6 ticks x 2 works
    first = ledger.page(limit=5)
    assert len(first.entries) == 5
    assert first.after is not None
    second = ledger.page(limit=5, after=first.after)
    assert [e.sequence for e in first.entries + second.entries] == [
        e.sequence for e in everything[:10]
    ]
    assert ledger.page(limit=50).after is None


def test_latest_first_pages_back_from_the_latest_tick(db: Db) -> None:
    history(db)
    ledger = Ledger(db.engine, table=db.table)
    everything = list(ledger.entries())
    for name in (None, "a"):
        expected = [(e.tick_at, e.name, e.sequence) for e in everything if name in (None, e.name)][
            ::-1
        ]
        seen: list[tuple[object, ...]] = []
        after = None
        while True:
            page = ledger.page(name=name, limit=5, after=after, latest_first=True)
            seen += [(e.tick_at, e.name, e.sequence) for e in page.entries]
            if page.after is None:
                break
            assert page.after == seen[-1]
            after = page.after
        assert seen == expected  # every tick once, the latest first
    window = ledger.page(since=at(20), until=at(40), latest_first=True)
    assert [(e.tick_at, e.name) for e in window.entries] == [
        (at(30), "b"), (at(30), "a"), (at(20), "b"), (at(20), "a"),
    ]  # fmt: skip


def test_one_work_and_a_time_range(db: Db) -> None:
    history(db)
    ledger = Ledger(db.engine, table=db.table)
    only_a = list(ledger.entries(name="a", since=at(20), until=at(40)))
    assert [(e.name, e.tick_at) for e in only_a] == [("a", at(20)), ("a", at(30))]


def test_summary_per_work(db: Db) -> None:
    history(db)
    summaries = {s.name: s for s in Ledger(db.engine, table=db.table).summary(until=at(35))}
    a, b = summaries["a"], summaries["b"]
    assert (a.ticks, a.claimed, a.succeeded, a.failed, a.recovered, a.missed) == (3, 4, 2, 1, 1, 1)
    assert a.success_rate == 2 / (2 + 1 + 1)
    assert a.lag_p50 == 2 * S
    assert a.lag_p95 is not None
    assert a.lag_p95.total_seconds() == pytest.approx(4.7)
    assert (b.ticks, b.succeeded, b.recovered, b.missed) == (3, 1, 1, 1)
    assert b.success_rate == 1 / 2


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"limit": 0}, "limit"),
        ({"since": "yesterday"}, "since"),
        ({"name": ""}, "name"),
        ({"after": ("x",)}, "after"),
    ],
)
def test_bad_ledger_arguments(db: Db, kwargs: dict[str, object], words: str) -> None:
    with pytest.raises(InvalidArgumentError, match=words):
        Ledger(db.engine, table=db.table).page(**kwargs)  # type: ignore[arg-type]


def test_a_tick_labelled_two_ways_is_one_entry(db: Db) -> None:
    """While a fleet changes its sequence function, a tick has rows under two labels."""
    table = table_named(db.table)
    tick = at(10)
    rows = [
        {"name": "w", "sequence": "old", "slot": slot, "tick_at": tick, "status": 4,
         "closed_by": "surplus", "error": "surplus: this tick is labelled 'new' now",
         "started_at": None}
        for slot in (0, 1)
    ] + [
        {"name": "w", "sequence": "new", "slot": slot, "tick_at": tick, "status": 3,
         "closed_by": "worker", "error": None, "started_at": at(11)}
        for slot in (2, 3)
    ]  # fmt: skip
    with db.engine.begin() as conn:
        conn.execute(table.insert(), rows)
    ledger = Ledger(db.engine, table=db.table)
    for page in (ledger.page(name="w"), ledger.page()):
        (entry,) = page.entries
        assert (entry.tick_at, entry.name, entry.sequence) == (tick, "w", "new")
        assert (entry.created, entry.surplus, entry.max_run) == (4, 2, 2)
        assert (entry.succeeded, entry.failed, entry.error) == (2, 0, None)
        assert entry.claimed == 2  # the surplus rows were closed unclaimed
    (summary,) = ledger.summary(since=tick)
    assert (summary.ticks, summary.claimed, summary.succeeded) == (1, 2, 2)
    ledger.close()


@pytest.mark.slow
def test_a_page_is_read_in_index_order_without_a_sort(server_db: Db) -> None:
    """MariaDB sorted a work's whole history for every page; now no plan sorts or spills,
    read forward or, the latest first, backward."""
    from benchmarks.ledger_history import load
    from worksync_sa._sql import ledger as ledger_sql

    db = server_db
    now = load(db.engine, 20_000, table=db.table)
    params = {
        "since": now - timedelta(days=1),
        "until": now + timedelta(days=1),
        "work_name": "big",
        "after_tick": now - timedelta(hours=1),
        "after_name": "big",
        "limit": 1000,
    }
    for one_work, resume, latest_first in itertools.product((True, False), repeat=3):
        statement = ledger_sql.ledger_page(
            table_named(db.table), one_work=one_work, resume=resume, latest_first=latest_first
        )
        compiled = statement.compile(dialect=db.engine.dialect)
        bound = compiled.construct_params(params)
        with db.engine.connect() as conn:
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            if db.name == "mysql":
                order = compiled.positiontup or ()
                cursor.execute("EXPLAIN " + compiled.string, tuple(bound[k] for k in order))
                plan = " ".join(str(row) for row in cursor.fetchall())
                assert "filesort" not in plan
                assert "temporary" not in plan
            else:
                cursor.execute("EXPLAIN " + compiled.string, bound)
                plan = "\n".join(row[0] for row in cursor.fetchall())
                assert "Sort" not in plan, plan
                assert "Index" in plan, plan


@pytest.mark.slow
def test_every_work_is_listed_by_index_probes(server_db: Db) -> None:
    """The status page's list of works: no plan reads the table, whatever its history."""
    from benchmarks.ledger_history import load
    from worksync_sa._sql.dialect import family_of
    from worksync_sa._sql.page import work_facts

    db = server_db
    now = load(db.engine, 20_000, table=db.table)
    statement = work_facts(table_named(db.table), family_of(db.engine.dialect))
    compiled = statement.compile(dialect=db.engine.dialect)
    bound = compiled.construct_params({"now": now, "limit": 1000})
    with db.engine.connect() as conn:
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        if db.name == "mysql":
            order = compiled.positiontup or ()
            cursor.execute("EXPLAIN " + compiled.string, tuple(bound[k] for k in order))
            rows = cursor.fetchall()
            plan = " ".join(str(row) for row in rows)
            assert "Using index for group-by" in plan, plan  # the names: a loose index scan
            scans = [r for r in rows if not str(r[2]).startswith("<") and r[3] in ("ALL", "index")]
            assert scans == [], plan  # every probe a lookup or a range of an index
        else:
            cursor.execute("EXPLAIN " + compiled.string, bound)
            plan = "\n".join(row[0] for row in cursor.fetchall())
            assert "Seq Scan" not in plan, plan
            assert "Recursive Union" in plan, plan
        rows = conn.execute(statement, {"now": now, "limit": 1000}).all()
    assert [row.name for row in rows] == sorted({"big", *(row.name for row in rows)})
    assert all(row.latest_tick is not None for row in rows)
