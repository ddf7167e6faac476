"""Listeners and log lines: every service action is reported, once, with stable names.

Part of the contract suite: the blocking and the asyncio twins emit the same
events and the same ``extra={"action": ...}`` log records.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime, timedelta, timezone

import pytest

from worksync_sa import Event, InvalidArgumentError, SchedulerConfig, Work, default_sequence

from ..conftest import Db

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
CONFIG = SchedulerConfig(lookahead="30s", interval="10s")
WORKS = [
    Work("a", "@every 10s", max_run=2, grace=timedelta(seconds=15)),
    Work("b", "@every 10s", max_attempts=2, grace=timedelta(seconds=15)),
]


def seq(seconds: int) -> str:
    return default_sequence(T0 + timedelta(seconds=seconds))


def test_every_action_reaches_the_listeners_and_the_log(
    db: Db, caplog: pytest.LogCaptureFixture
) -> None:
    events: list[Event] = []
    with caplog.at_level(logging.DEBUG, logger="worksync_sa"):
        db.Scheduler(db.engine, WORKS, CONFIG, table=db.table, listeners=[events.append]).run_pass(
            T0
        )
        sync = db.WorkSync(db.engine, table=db.table, keep_alive=False, listeners=[events.append])
        ok, bad, held = (
            sync.acquire("a", seq(10)),
            sync.acquire("a", seq(10)),
            sync.acquire("b", seq(10)),
        )
        assert ok is not None
        assert bad is not None
        assert held is not None
        ok.success()
        bad.fail("boom")
        # An hour on, b's claim has lost its lease (b may run twice: re-queued), and
        # every tick nobody claimed is past its grace.
        assert sync.recover(now=db.db_now() + timedelta(hours=1)) == 7
    # A claim's lag is the database clock's now minus a tick in 2026-01-01: checked
    # against the rows in test_claim_details; here, that it is there. (MySQL's claim
    # by sequence returns only the row's id, so it cannot tell the lag.)
    lags = [e.lag for e in events if e.action == "claimed"]
    if db.name in ("mysql", "mariadb"):
        assert lags == [None] * 3
    else:
        assert all(lag is not None and lag > 0 for lag in lags)
    assert [dataclasses.replace(e, lag=None) for e in events] == [
        Event("created", count=9),
        Event("claimed", "a", seq(10)),
        Event("claimed", "a", seq(10)),
        Event("claimed", "b", seq(10)),
        Event("finished", "a", seq(10), status="SUCCESS"),
        Event("finished", "a", seq(10), status="FAILED"),
        Event("missed", "a", seq(20), count=2),
        Event("missed", "a", seq(30), count=2),
        Event("recovered", "b", seq(10), count=1, status="QUEUED"),
        Event("missed", "b", seq(20), count=1),
        Event("missed", "b", seq(30), count=1),
    ]
    actions = [getattr(r, "action", None) for r in caplog.records]
    assert actions.count("claimed") == 3
    assert actions.count("finished") == 2
    assert actions.count("recovered") == 1
    assert actions.count("missed") == 4
    assert "created" in actions
    missed = next(r for r in caplog.records if getattr(r, "action", None) == "missed")
    assert (missed.__dict__["work"], missed.__dict__["rows"]) == ("a", 2)  # fields to filter on


def test_skipped_ticks_are_reported_once(db: Db) -> None:
    events: list[Event] = []
    config = SchedulerConfig(lookahead="30s", interval="10s", catchup="20s")
    db.Scheduler(db.engine, WORKS[:1], config, table=db.table).run_pass(T0)
    restarted = db.Scheduler(
        db.engine, WORKS[:1], config, table=db.table, listeners=[events.append]
    )
    restarted.run_pass(T0 + timedelta(minutes=5))  # (T0+30 s, T0+280 s] is beyond catch-up
    restarted.run_pass(T0 + timedelta(minutes=5, seconds=10))
    assert [e for e in events if e.action == "skipped"] == [Event("skipped", "a", count=25)]


def test_a_failing_listener_is_logged_and_never_breaks_a_claim(
    db: Db, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []

    def broken(event: Event) -> None:
        raise RuntimeError("metrics backend down")

    db.Scheduler(db.engine, WORKS, CONFIG, table=db.table).run_pass(T0)
    sync = db.WorkSync(
        db.engine,
        table=db.table,
        keep_alive=False,
        listeners=[broken, lambda e: seen.append(e.action)],
    )
    with caplog.at_level(logging.ERROR, logger="worksync_sa"):
        claim = sync.acquire("a", seq(10))
        assert claim is not None
        claim.success()
    assert seen == ["claimed", "finished"]  # the next listener still hears everything
    assert db.rows(id=claim.id)[0].status == 3
    failures = [r for r in caplog.records if getattr(r, "action", None) == "listener"]
    assert len(failures) == 2
    assert "metrics backend down" in caplog.text


@pytest.mark.parametrize("listeners", [print, ["not callable"], "x"])
def test_listeners_must_be_a_list_of_functions(db: Db, listeners: object) -> None:
    with pytest.raises(InvalidArgumentError, match="listeners"):
        db.WorkSync(db.engine, table=db.table, listeners=listeners)
    with pytest.raises(InvalidArgumentError, match="listeners"):
        db.Scheduler(db.engine, WORKS, CONFIG, table=db.table, listeners=listeners)


def test_a_listener_that_exits_never_ends_the_scheduler_loop(
    db: Db, caplog: pytest.LogCaptureFixture
) -> None:
    """``sys.exit()`` in a listener is one more failure: logged, and the loop carries on."""
    import time

    passes: list[int] = []

    def exits(event: Event) -> None:
        if event.action == "created":
            passes.append(event.count)
            raise SystemExit(3)

    config = SchedulerConfig(lookahead="3s", interval="200ms", max_backoff="300ms")
    scheduler = db.Scheduler(
        db.engine, [Work("w", "* * * * * *")], config, table=db.table, listeners=[exits]
    )
    with caplog.at_level(logging.WARNING, logger="worksync_sa"):
        scheduler.start()
        deadline = time.monotonic() + 15
        while len(passes) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert scheduler.running
        scheduler.stop()
    assert len(passes) >= 3  # new ticks kept being created, pass after pass
    assert not [r for r in caplog.records if getattr(r, "action", None) == "ended"]
