"""Changed settings, and schedulers that disagree: every tick not yet due follows, none over-claims.

Each scheduler reconciles its whole window on every pass. Expected slots
are worked out here from tick arithmetic (a tick every 10 s from a round
minute), never from the package's own planning.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from worksync_sa import SchedulerConfig, Work, WorkStatus, default_sequence, local_sequence

from ..conftest import Db

UTC = timezone.utc
T0 = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday, a round minute, before any real lease ends
SECOND = timedelta(seconds=1)
EVERY = "@every 10s"


def at(seconds: float) -> datetime:
    return T0 + seconds * SECOND


def label(seconds: float) -> str:
    return at(seconds).strftime("%Y-%m-%d %H:%M:%S")


def scheduler(db: Db, max_run: int = 1, cron: str = EVERY, zone: str = "UTC", **config: Any) -> Any:
    settings = SchedulerConfig(**{"lookahead": "1m", "interval": "10s", **config})
    work = Work("w", cron, max_run=max_run, timezone=zone)
    return db.Scheduler(db.engine, [work], settings, table=db.table)


def open_slots(db: Db, seconds: float) -> list[int]:
    """The slots of the tick at ``seconds`` that are still queued."""
    return sorted(r.slot for r in db.rows(name="w", tick_at=at(seconds)) if r.status == 1)


def held_slots(db: Db, seconds: float) -> list[int]:
    """Slots held by the tick at ``seconds``: queued, running or finished (not surplus)."""
    return sorted(r.slot for r in db.rows(name="w", tick_at=at(seconds)) if r.slot is not None)


def surplus(db: Db, seconds: float) -> list[Any]:
    return [r for r in db.rows(name="w", tick_at=at(seconds)) if r.closed_by == "surplus"]


def actions(caplog: pytest.LogCaptureFixture, action: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "action", None) == action]


def test_raising_max_run_adds_slots_to_every_tick_not_yet_due(db: Db) -> None:
    scheduler(db, max_run=1).run_pass(at(0))  # ticks :10 to :60, one slot each
    assert [held_slots(db, s) for s in range(10, 70, 10)] == [[0]] * 6
    raised = scheduler(db, max_run=3)
    raised.run_pass(at(25))
    assert held_slots(db, 10) == held_slots(db, 20) == [0]  # due: left as they were
    for seconds in (30, 40, 50, 60, 70, 80):  # not yet due, and the new ones
        assert open_slots(db, seconds) == [0, 1, 2], seconds
    assert raised.last_pass.closed == 0
    rows = db.rows(name="w", tick_at=at(40))
    assert {r.spec for r in rows} == {
        "sequence=utc; max_run=1; cron=@every 10s; timezone=UTC",
        "sequence=utc; max_run=3; cron=@every 10s; timezone=UTC",
    }


def test_lowering_max_run_closes_queued_surplus_but_never_a_running_slot(db: Db) -> None:
    scheduler(db, max_run=3).run_pass(at(0))
    sync = db.WorkSync(db.engine, table=db.table, keep_alive=False)
    early = [sync.acquire("w", label(50)), sync.acquire("w", label(50))]  # claimed before due
    assert all(claim is not None for claim in early)
    lowered = scheduler(db, max_run=1)
    lowered.run_pass(at(25))
    for seconds in (10, 20):  # due: untouched
        assert open_slots(db, seconds) == [0, 1, 2]
    for seconds in (30, 40, 60):
        assert open_slots(db, seconds) == [0]
        closed = surplus(db, seconds)
        assert len(closed) == 2
        assert {r.status for r in closed} == {WorkStatus.FAILED}
        assert {r.slot for r in closed} == {None}  # a surplus row gives its slot up
        assert {r.error for r in closed} == {"surplus: max_run is 1 now"}
        assert {r.started_at for r in closed} == {None}  # never claimed
    # The tick with two running claims keeps both; only its queued slot was surplus.
    fifty = {r.slot: r.status for r in db.rows(name="w", tick_at=at(50)) if r.slot is not None}
    assert fifty == {0: WorkStatus.RUNNING, 1: WorkStatus.RUNNING}
    assert len(surplus(db, 50)) == 1
    assert lowered.last_pass.closed == 3 * 2 + 1
    assert sync.acquire("w", label(30)) is not None
    assert sync.acquire("w", label(30)) is None


def test_lowered_then_raised_max_run_makes_fresh_slots(db: Db) -> None:
    scheduler(db, max_run=3).run_pass(at(0))
    scheduler(db, max_run=1).run_pass(at(5))
    scheduler(db, max_run=2).run_pass(at(6))
    for seconds in range(10, 70, 10):
        assert open_slots(db, seconds) == [0, 1]
        assert len(surplus(db, seconds)) == 2
    sync = db.WorkSync(db.engine, table=db.table, keep_alive=False)
    assert [sync.acquire("w", label(40)) is not None for _ in range(3)] == [True, True, False]


def test_a_changed_cron_closes_the_ticks_it_no_longer_has(db: Db) -> None:
    scheduler(db, cron=EVERY).run_pass(at(0))  # :10 ... :60
    changed = scheduler(db, cron="@every 20s")
    changed.run_pass(at(5))  # :20, :40, :60 stay; :10, :30, :50 go
    for seconds in (20, 40, 60):
        assert open_slots(db, seconds) == [0]
    for seconds in (10, 30, 50):
        assert open_slots(db, seconds) == []
        (row,) = surplus(db, seconds)
        assert row.error == "surplus: not a tick of cron '@every 20s' in UTC now"
    assert changed.last_pass.closed == 3


def test_a_changed_time_zone_moves_every_upcoming_tick(db: Db) -> None:
    daily = "30 8 * * *"
    scheduler(db, cron=daily, lookahead="1d").run_pass(at(0))  # 08:30 UTC
    berlin = db.Scheduler(
        db.engine,
        [Work("w", daily, timezone="Europe/Berlin")],
        SchedulerConfig(lookahead="1d", interval="10s"),
        table=db.table,
    )
    berlin.run_pass(at(1))  # 07:30 UTC in winter
    utc_tick, berlin_tick = at(8.5 * 3600), at(7.5 * 3600)
    assert open_slots(db, 8.5 * 3600) == []
    assert [r.closed_by for r in db.rows(name="w", tick_at=utc_tick)] == ["surplus"]
    assert [r.status for r in db.rows(name="w", tick_at=berlin_tick)] == [WorkStatus.QUEUED]


def test_a_changed_sequence_function_relabels_every_upcoming_tick(db: Db) -> None:
    scheduler(db).run_pass(at(0))  # UTC labels
    relabelled = scheduler(db, sequence=local_sequence("Asia/Tokyo"))
    relabelled.run_pass(at(15))
    tokyo = [(at(s) + timedelta(hours=9)).strftime("%Y-%m-%d %H:%M:%S") for s in range(20, 80, 10)]
    for seconds, expected in zip(range(20, 80, 10), tokyo, strict=True):
        rows = db.rows(name="w", tick_at=at(seconds))
        assert [r.sequence for r in rows if r.status == WorkStatus.QUEUED] == [expected]
        if seconds <= 60:  # the old label's row was closed, not claimable
            (old,) = [r for r in rows if r.closed_by == "surplus"]
            assert old.sequence == label(seconds)
            assert old.error == f"surplus: this tick is labelled {expected!r} now"
    sync = db.WorkSync(db.engine, table=db.table, keep_alive=False)
    assert sync.acquire("w", label(30)) is None
    assert sync.acquire("w", tokyo[1]) is not None


def test_a_settings_change_is_logged_once_as_such(db: Db, caplog: pytest.LogCaptureFixture) -> None:
    scheduler(db, max_run=3).run_pass(at(0))
    lowered = scheduler(db, max_run=1)
    with caplog.at_level(logging.INFO, logger="worksync_sa"):
        lowered.run_pass(at(1))
        lowered.run_pass(at(2))
    (changed,) = actions(caplog, "changed")
    assert changed.levelno == logging.WARNING
    assert "max_run '3' there, '1' here" in changed.getMessage()
    assert not actions(caplog, "disagreement")
    assert actions(caplog, "surplus")


def run_claims(db: Db, sync: Any, now: datetime, claimed: Counter[datetime]) -> None:
    """Claim every due tick, as a fleet of workers would, counting claims per tick instant."""
    while (claim := sync.acquire_due("w", now=now)) is not None:
        (row,) = db.rows(id=claim.id)
        claimed[row.tick_at] += 1
        claim.success()


def alternate(
    db: Db, first: Any, second: Any, check: Callable[[], None], seconds: int = 120
) -> Counter[datetime]:
    """Both schedulers pass every 10 s, workers claim what is due, ``check`` after each pass."""
    sync = db.WorkSync(db.engine, table=db.table, keep_alive=False)
    claimed: Counter[datetime] = Counter()
    for step in range(0, seconds, 10):
        first.run_pass(at(step))
        check()
        second.run_pass(at(step + 1))
        check()
        run_claims(db, sync, at(step + 2), claimed)
    return claimed


def per_instant_slots(db: Db) -> Counter[datetime]:
    return Counter(r.tick_at for r in db.rows(name="w") if r.slot is not None)


def test_two_live_schedulers_with_different_max_run_never_exceed_the_larger(
    db: Db, caplog: pytest.LogCaptureFixture
) -> None:
    three, one = scheduler(db, max_run=3), scheduler(db, max_run=1)

    def check() -> None:
        assert max(per_instant_slots(db).values()) <= 3

    with caplog.at_level(logging.INFO, logger="worksync_sa"):
        claimed = alternate(db, three, one, check)
    assert claimed
    assert max(claimed.values()) <= 3
    disagreements = actions(caplog, "disagreement")
    assert {r.levelno for r in disagreements} == {logging.ERROR}
    messages = [r.getMessage() for r in disagreements]
    assert any("max_run '3' there, '1' here" in m for m in messages)
    assert any("max_run '1' there, '3' here" in m for m in messages)
    assert len(disagreements) == len(set(messages)) <= 2  # once per scheduler and setting
    # Once only the new settings run, every tick not yet due follows them.
    one.run_pass(at(200))
    for seconds in range(210, 270, 10):
        assert open_slots(db, seconds) == [0], seconds


def test_one_name_with_two_crons_makes_both_and_says_so(
    db: Db, caplog: pytest.LogCaptureFixture
) -> None:
    tens, fifteens = scheduler(db, cron=EVERY), scheduler(db, cron="@every 15s")

    def check() -> None:
        assert max(per_instant_slots(db).values()) <= 1

    with caplog.at_level(logging.INFO, logger="worksync_sa"):
        claimed = alternate(db, tens, fifteens, check, seconds=60)
    assert max(claimed.values()) == 1
    offsets = [(t - T0).total_seconds() for t in claimed]
    assert any(s % 15 == 0 and s % 10 for s in offsets)  # the second cron's ticks were made, run
    messages = " ".join(r.getMessage() for r in actions(caplog, "disagreement"))
    assert "cron '@every 10s' there, '@every 15s' here" in messages
    assert "cron '@every 15s' there, '@every 10s' here" in messages


def tagged(tick: datetime) -> str:
    """A custom sequence for the rolling change: another label for every tick."""
    return f"v2 {default_sequence(tick)}"


def test_a_rolling_change_of_the_sequence_function_never_doubles_a_tick(
    db: Db, caplog: pytest.LogCaptureFixture
) -> None:
    old, new = scheduler(db), scheduler(db, sequence=tagged)

    def check() -> None:
        assert (
            max(per_instant_slots(db).values()) == 1
        )  # one budget per instant, whatever its label
        by_label = Counter((r.sequence) for r in db.rows(name="w") if r.slot is not None)
        assert max(by_label.values()) == 1

    with caplog.at_level(logging.INFO, logger="worksync_sa"):
        claimed = alternate(db, old, new, check)
    assert max(claimed.values()) == 1
    disagreements = actions(caplog, "disagreement")
    assert {r.levelno for r in disagreements} == {logging.ERROR}
    messages = [r.getMessage() for r in disagreements]
    # The kind of a plain function: its full name.
    custom = "custom:tests.contract.test_settings.tagged"
    # Each scheduler names both settings once: the other's ("there") and its own ("here").
    assert sum(f"sequence 'utc' there, {custom!r} here" in m for m in messages) == 1
    assert sum(f"sequence {custom!r} there, 'utc' here" in m for m in messages) == 1
    assert len(messages) == 2
    new.run_pass(at(200))  # the old one is gone: every upcoming tick takes the new labels
    for seconds in range(210, 270, 10):
        queued = [r.sequence for r in db.rows(name="w", tick_at=at(seconds)) if r.status == 1]
        assert queued == [tagged(at(seconds))]


KATHMANDU = "Asia/Kathmandu"
"""+05:45: its minutes are UTC's plus 45, so an even UTC minute is an odd minute there."""
EVEN_MINUTES = "*/10 */2 * * * *"
"""Every 10 s of the even minutes: in UTC and in Kathmandu, never the same instants."""


def zone_of(seconds: int) -> str:
    """Which zone's ``EVEN_MINUTES`` has a tick at ``seconds`` after T0 (00:00 UTC, 05:45 there)."""
    return "UTC" if (seconds // 60) % 2 == 0 else KATHMANDU


def test_two_live_schedulers_in_different_time_zones_never_exceed_max_run(
    db: Db, caplog: pytest.LogCaptureFixture
) -> None:
    """One work, one cron, two zones whose ticks differ: within every minute of lookahead each
    scheduler plans ticks the other does not have, so both see the disagreement."""
    utc = scheduler(db, max_run=2, cron=EVEN_MINUTES)
    kathmandu = scheduler(db, max_run=2, cron=EVEN_MINUTES, zone=KATHMANDU)

    def check() -> None:
        slots = per_instant_slots(db)  # may be empty: each undoes the other's upcoming ticks
        assert max(slots.values(), default=0) <= 2
        assert {(t - T0).total_seconds() % 10 for t in slots} <= {0}  # only the cron's instants

    with caplog.at_level(logging.INFO, logger="worksync_sa"):
        claimed = alternate(db, utc, kathmandu, check, seconds=150)
    assert claimed
    assert max(claimed.values()) <= 2
    made = {zone_of(int((r.tick_at - T0).total_seconds())) for r in db.rows(name="w")}
    assert made == {"UTC", KATHMANDU}  # each zone's ticks were made
    (undone,) = {r.error for r in surplus(db, 30)}  # a UTC tick, closed by the other
    assert undone == f"surplus: not a tick of cron {EVEN_MINUTES!r} in {KATHMANDU} now"
    disagreements = actions(caplog, "disagreement")
    assert {r.levelno for r in disagreements} == {logging.ERROR}
    messages = [r.getMessage() for r in disagreements]
    assert sum(f"timezone 'UTC' there, {KATHMANDU!r} here" in m for m in messages) == 1
    assert sum(f"timezone {KATHMANDU!r} there, 'UTC' here" in m for m in messages) == 1
    assert len(messages) == 2  # once per scheduler
    # The last passes (140, 141) left Kathmandu's ticks 180-200 queued and UTC's 150-170
    # closed. Now the Kathmandu one restarts in UTC: both run the same settings.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="worksync_sa"):
        moved = scheduler(db, max_run=2, cron=EVEN_MINUTES)
        moved.run_pass(at(143))
        utc.run_pass(at(144))
    for seconds in range(150, 210, 10):
        want = [0, 1] if zone_of(seconds) == "UTC" else []
        assert open_slots(db, seconds) == want, seconds
    assert utc.last_pass.closed == utc.last_pass.created == 0  # nothing left to change
    assert not actions(caplog, "disagreement")
    (changed,) = actions(caplog, "changed")  # rows from before the restart: a change
    assert changed.levelno == logging.WARNING
    assert f"timezone {KATHMANDU!r} there, 'UTC' here" in changed.getMessage()
