"""A scheduler pass (``_core.passes``): its planning, and its database calls in order.

Planning is pure: ticks in ``(after, until]``, one budget per sequence. A pass
is driven as its runner would drive it, answering each call by name (the
clock, where each work's rows end, the window's rows, the writes), and the
test checks which calls it makes and what rows, surplus and skips it
decides, against ``SchedulerConfig``'s documented rules: rows a lookahead
ahead, missed ticks created within ``catchup`` and counted as skipped
beyond it, retention pruning every few minutes, the horizon read again after
a lost connection or a failed pass.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import pytest

from worksync_sa._core import passes
from worksync_sa._core.passes import Pass, SchedulerCore
from worksync_sa._run.steps import Call, Idle
from worksync_sa.config import RetryPolicy, SchedulerConfig
from worksync_sa.errors import InvalidConfigError, InvalidWorkError
from worksync_sa.events import Event
from worksync_sa.repository import NewRow, Recovered, Surplus, TickState
from worksync_sa.rows import PauseState
from worksync_sa.work import Work

from .scripted import Raise, Script, keywords, whats

UTC = timezone.utc
NOW = datetime(2026, 3, 1, 10, 0, 30, tzinfo=UTC)
CLOCK_AT_START = datetime(2026, 3, 1, 10, 0, 31, tzinfo=UTC)


def at(hour: int, minute: int, second: int = 0) -> datetime:
    return datetime(2026, 3, 1, hour, minute, second, tzinfo=UTC)


def label(tick: datetime) -> str:
    return tick.strftime("%Y-%m-%d %H:%M:%S")


def core(*works: Work, events: list[Event] | None = None, **settings: Any) -> SchedulerCore:
    config = SchedulerConfig(**{"lookahead": "5m", "interval": "1m", **settings})
    listeners = [events.append] if events is not None else None
    return SchedulerCore(works, config, "works", RetryPolicy(), listeners)


class Table:
    """Answers a pass's calls by name, and keeps what the pass asked to write."""

    def __init__(
        self,
        horizon: dict[str, datetime] | None = None,
        window: list[TickState] | None = None,
        *,
        clock: datetime = CLOCK_AT_START,
        pruned: list[int] | None = None,
        pauses: list[PauseState] | None = None,
    ) -> None:
        self.pauses = pauses or []
        self.closed_paused: list[tuple[str, datetime | None, str]] = []
        self.horizon = horizon or {}
        self.window = window or []
        self.clock = clock
        self.pruned = list(pruned or [])
        self.created: list[tuple[Any, ...]] = []
        self.batches: list[int] = []
        self.closed: list[Surplus] = []
        self.woken: list[list[str]] = []
        """The work names of each wake-up the pass sent (rows it created already due)."""

    def __call__(self, step: Call[Any]) -> object:
        answers: dict[str, Callable[[], object]] = {
            "clock": lambda: self.clock,
            "horizon": lambda: self.horizon,
            "window": lambda: (self.window, {}, self.pauses),
            "close-paused": lambda: self._close_paused(keywords(step)["paused"]),
            "create": lambda: self._create(keywords(step)["rows"]),
            "close": lambda: self._close(keywords(step)["surplus"]),
            "recover": lambda: [],
            "prune": lambda: self.pruned.pop(0),
            "wake": lambda: self.woken.append(list(keywords(step)["names"])),
        }
        return answers[step.what]()

    def _create(self, rows: list[tuple[Any, ...]]) -> int:
        self.created += rows
        self.batches.append(len(rows))
        return len(rows)

    def _close_paused(self, paused: list[tuple[str, datetime | None, str]]) -> int:
        self.closed_paused += paused
        return len(paused)

    def _close(self, surplus: list[Surplus]) -> int:
        self.closed += surplus
        return len(surplus)


def run_pass(
    scheduler: SchedulerCore, table: Table, now: datetime | None = NOW, sqlite: bool = False
) -> tuple[int, list[Any]]:
    script = Script(by=table)
    created = script.run(scheduler._pass(now, sqlite))
    return created, script.steps


def ticks_created(table: Table) -> list[datetime]:
    return sorted({row[3] for row in table.created})


# -- planning -------------------------------------------------------------------------------


def test_plan_gives_each_tick_in_after_until_its_max_run_slots() -> None:
    scheduler = core(Work("report", "* * * * *", 2, lease="2m", grace="30s", max_attempts=3))
    rows = scheduler.plan(at(10, 0), at(10, 2))
    spec = "sequence=utc; max_run=2; cron=* * * * *; timezone=UTC"
    assert rows == [
        NewRow("report", "2026-03-01 10:01:00", 0, at(10, 1), 120, 30, 3, spec, 2),
        NewRow("report", "2026-03-01 10:01:00", 1, at(10, 1), 120, 30, 3, spec, 2),
        NewRow("report", "2026-03-01 10:02:00", 0, at(10, 2), 120, 30, 3, spec, 2),
        NewRow("report", "2026-03-01 10:02:00", 1, at(10, 2), 120, 30, 3, spec, 2),
    ]


def test_plan_sorts_by_work_name_whatever_order_the_works_came_in() -> None:
    scheduler = core(Work("zeta", "0 * * * *"), Work("alpha", "0 * * * *"))
    rows = scheduler.plan(at(9, 30), at(10, 30))
    assert [row.name for row in rows] == ["alpha", "zeta"]
    assert {row.tick_at for row in rows} == {at(10, 0)}


def test_ticks_sharing_a_sequence_share_one_budget_the_earliest_tick_s() -> None:
    def hourly(tick: datetime) -> str:
        return tick.strftime("%Y-%m-%d %H")

    scheduler = core(Work("report", "*/15 * * * *"), sequence=hourly)
    rows = scheduler.plan(at(9, 50), at(11, 0))
    assert [(row.sequence, row.tick_at) for row in rows] == [
        ("2026-03-01 10", at(10, 0)),
        ("2026-03-01 11", at(11, 0)),
    ]


def test_a_failing_sequence_function_names_the_work_and_the_tick() -> None:
    def broken(tick: datetime) -> str:
        raise ZeroDivisionError("no")

    scheduler = core(Work("report", "* * * * *"), sequence=broken)
    with pytest.raises(InvalidConfigError, match=r"'report' at 2026-03-01T10:01:00\+00:00"):
        scheduler.plan(at(10, 0), at(10, 2))


def test_a_sequence_value_that_cannot_be_stored_is_refused_before_anything_is_written() -> None:
    scheduler = core(Work("report", "* * * * *"), sequence=lambda tick: "x" * 256)
    table = Table()
    with pytest.raises(InvalidConfigError, match="bad value for work 'report'"):
        run_pass(scheduler, table)
    assert table.created == []


def test_two_works_with_one_name_are_refused() -> None:
    with pytest.raises(InvalidWorkError, match="name is used by two works"):
        core(Work("report", "* * * * *"), Work("report", "0 * * * *"))


def test_a_single_work_instead_of_a_list_is_refused() -> None:
    with pytest.raises(InvalidWorkError, match="a list of Work"):
        SchedulerCore(Work("report", "* * * * *"), None, "works", None, None)  # type: ignore[arg-type]


# -- a pass ---------------------------------------------------------------------------------


def test_a_first_pass_plans_the_ticks_in_now_to_now_plus_lookahead() -> None:
    table = Table()
    created, steps = run_pass(core(Work("report", "* * * * *", 2)), table)
    assert whats(steps) == ["clock", "horizon", "window", "create", "recover"]
    # now is 10:00:30: 10:00 is past and the work is new, so 10:01 to 10:05 inclusive.
    assert ticks_created(table) == [at(10, m) for m in range(1, 6)]
    assert created == 10


def test_a_pass_on_the_database_clock_reads_it_once() -> None:
    table = Table(clock=NOW)
    _, steps = run_pass(core(Work("report", "* * * * *")), table, now=None)
    assert whats(steps) == ["clock", "horizon", "window", "create", "recover"]
    assert ticks_created(table) == [at(10, m) for m in range(1, 6)]


def test_the_next_pass_trusts_what_it_covered_and_makes_only_the_new_tick() -> None:
    scheduler = core(Work("report", "* * * * *"))
    first = Table()
    run_pass(scheduler, first)
    held = [
        TickState("report", tick, label(tick), None, 1, 0, 0, None) for tick in ticks_created(first)
    ]
    second = Table(window=held)
    created, steps = run_pass(scheduler, second, now=NOW + timedelta(minutes=1))
    assert "horizon" not in whats(steps)
    assert ticks_created(second) == [at(10, 6)]
    assert created == 1


def test_a_lost_connection_since_the_last_pass_reads_the_horizon_again() -> None:
    """The server may be a promoted replica lacking this process's latest rows."""
    scheduler = core(Work("report", "* * * * *"))
    run_pass(scheduler, Table())
    script = Script(by=Table())
    script.run(scheduler.pass_after(1, scheduler._pass(NOW + timedelta(minutes=1), False)))
    assert "horizon" in whats(script.steps)


def test_a_failed_pass_forgets_its_horizon() -> None:
    scheduler = core(Work("report", "* * * * *"))
    run_pass(scheduler, Table())
    failing = Script(Raise(OSError("gone")), by=Table())
    with pytest.raises(OSError, match="gone"):
        failing.run(scheduler.pass_after(0, scheduler._pass(NOW, False)))
    script = Script(by=Table())
    script.run(scheduler.pass_after(0, scheduler._pass(NOW, False)))
    assert "horizon" in whats(script.steps)


def test_ticks_missed_within_catchup_are_created_and_older_ones_counted_as_skipped() -> None:
    events: list[Event] = []
    scheduler = core(Work("report", "* * * * *"), events=events)  # catchup: 1.5 intervals
    table = Table(horizon={"report": at(9, 0)})  # down for an hour
    run_pass(scheduler, table)
    # floor = 10:00:30 - 90s = 09:59:00: 09:01 to 09:59 are skipped, 10:00 is caught up.
    assert ticks_created(table) == [at(10, m) for m in range(0, 6)]
    assert scheduler.last_pass is not None
    assert scheduler.last_pass.skipped == {"report": 59}
    assert [(e.action, e.name, e.count) for e in events if e.action == "skipped"] == [
        ("skipped", "report", 59)
    ]
    assert table.woken == [["report"]]  # 10:00 is due already: listening workers look now


def test_a_short_gap_is_caught_up_without_skips() -> None:
    scheduler = core(Work("report", "* * * * *"), catchup="10m")
    table = Table(horizon={"report": at(9, 55)})
    run_pass(scheduler, table)
    assert ticks_created(table) == [at(9, m) for m in range(56, 60)] + [
        at(10, m) for m in range(0, 6)
    ]
    assert scheduler.last_pass is not None
    assert scheduler.last_pass.skipped == {}
    assert table.woken == [["report"]]  # one wake-up for the pass, after its batches


def test_a_pass_that_catches_up_only_ticks_past_their_grace_wakes_no_one() -> None:
    scheduler = core(Work("report", "* * * * *", grace="20s"), catchup="10m")
    table = Table(horizon={"report": at(9, 55)})  # 09:56 to 10:00 due, all past 20 s
    _, steps = run_pass(scheduler, table)
    assert table.woken == []
    assert "wake" not in whats(steps)


def test_a_steady_pass_wakes_no_one() -> None:
    scheduler = core(Work("report", "* * * * *"))
    table = Table(horizon={"report": at(10, 1)})  # everything new is ahead
    _, steps = run_pass(scheduler, table)
    assert min(ticks_created(table)) > table.clock  # none due yet
    assert whats(steps) == ["clock", "horizon", "window", "create", "recover"]


def test_a_paused_work_gets_no_ticks_until_its_pause_ends_and_its_queued_ones_close() -> None:
    """A pause until 10:03 (lookahead to 10:05): ticks up to 10:03 are neither made nor kept."""
    scheduler = core(Work("report", "* * * * *", 2), Work("other", "* * * * *"))
    held = [TickState("report", at(10, 2), label(at(10, 2)), None, 2, 1, 0, None)]
    pause = PauseState("report", at(10, 3), "deploy", "ann@box", at(9, 0))
    table = Table(window=held, pauses=[pause])
    _, steps = run_pass(scheduler, table)
    assert whats(steps) == ["clock", "horizon", "window", "close-paused", "create", "recover"]
    assert table.closed_paused == [("report", at(10, 3), "paused by ann@box: deploy")]
    assert table.closed == []  # closed as paused, not as surplus
    made = sorted({(row[0], row[3]) for row in table.created})
    assert [tick for name, tick in made if name == "report"] == [at(10, 4), at(10, 5)]
    assert [tick for name, tick in made if name == "other"] == [at(10, m) for m in range(1, 6)]


def test_a_scheduler_logs_each_pause_and_resume_once(caplog: pytest.LogCaptureFixture) -> None:
    scheduler = core(Work("report", "* * * * *"))
    pause = PauseState("report", None, "deploy", "ann@box", at(9, 0))
    with caplog.at_level(logging.INFO, logger="worksync_sa._core.passes"):
        run_pass(scheduler, Table(pauses=[pause]))
        run_pass(scheduler, Table(pauses=[pause]), now=NOW + timedelta(seconds=1))
        run_pass(scheduler, Table(), now=NOW + timedelta(seconds=2))
    lines = [r.getMessage() for r in caplog.records if "paused" in r.getMessage()]
    assert lines == [
        "work 'report' is paused until resumed by ann@box (deploy): making none of its ticks "
        "until then",
        "work 'report' is no longer paused: making its ticks again",
    ]


def test_an_ended_pause_and_a_pause_of_another_schedulers_work_change_nothing() -> None:
    scheduler = core(Work("report", "* * * * *"))
    pauses = [
        PauseState("report", at(10, 0), "ended", "ann@box", at(9, 0)),
        PauseState("unknown", None, "not ours", "ann@box", at(9, 0)),
    ]
    table = Table(pauses=pauses)
    _, steps = run_pass(scheduler, table)
    assert whats(steps) == ["clock", "horizon", "window", "create", "recover"]
    assert ticks_created(table) == [at(10, m) for m in range(1, 6)]


def test_surplus_found_in_the_window_is_closed_before_anything_is_created() -> None:
    scheduler = core(Work("report", "* * * * *", 1))
    window = [TickState("report", at(10, 1), label(at(10, 1)), None, 3, 2, 0, None)]
    table = Table(window=window)
    _, steps = run_pass(scheduler, table)
    assert whats(steps) == ["clock", "horizon", "window", "close", "create", "recover"]
    (surplus,) = table.closed
    assert (surplus.tick_at, surplus.keep) == (at(10, 1), 1)
    assert scheduler.last_pass is not None
    assert scheduler.last_pass.closed == 1
    assert at(10, 1) not in ticks_created(table)


@pytest.mark.parametrize(("sqlite", "batches"), [(False, [5000, 1000]), (True, [6000])])
def test_rows_go_in_batches_larger_on_sqlite(sqlite: bool, batches: list[int]) -> None:
    """5000 rows per statement, 20,000 on SQLite, where each commit costs an fsync."""
    scheduler = core(Work("fanout", "* * * * *", 3000), lookahead="2m")
    table = Table()
    created, _ = run_pass(scheduler, table, sqlite=sqlite)  # 10:01 and 10:02: 6000 rows
    assert table.batches == batches
    assert created == 6000
    assert scheduler.last_pass is not None
    assert scheduler.last_pass.batches == len(batches)


def test_retention_prunes_in_batches_until_a_short_one_and_then_waits_five_minutes() -> None:
    scheduler = core(Work("report", "* * * * *"), retention="2d")
    table = Table(pruned=[1000, 1000, 7])
    run_pass(scheduler, table)
    assert scheduler.last_pass is not None
    assert scheduler.last_pass.pruned == 2007
    later = Table()
    _, steps = run_pass(scheduler, later, now=NOW + timedelta(minutes=4))
    assert "prune" not in whats(steps)
    again = Table(pruned=[0])
    _, steps = run_pass(scheduler, again, now=NOW + timedelta(minutes=5))
    assert whats(steps).count("prune") == 1


def test_pruning_cuts_off_at_the_pass_time_minus_retention() -> None:
    scheduler = core(Work("report", "* * * * *"), retention="3d")
    script = Script(by=Table(pruned=[0]))
    script.run(scheduler._pass(NOW, False))
    (prune,) = [step for step in script.steps if isinstance(step, Call) and step.what == "prune"]
    assert keywords(prune)["cutoff"] == NOW - timedelta(days=3)


def test_recovered_rows_are_counted_in_the_report() -> None:
    scheduler = core(Work("report", "* * * * *"))
    table = Table()

    def answer(step: Call[Any]) -> object:
        if step.what == "recover":
            return [Recovered("report", "s", "lease"), Recovered("report", "s", "missed")]
        return table(step)

    Script(by=answer).run(scheduler._pass(NOW, False))
    assert scheduler.last_pass is not None
    assert scheduler.last_pass.recovered == 2


# -- the background loop --------------------------------------------------------------------


def test_the_loop_runs_a_pass_then_waits_about_an_interval() -> None:
    scheduler = core(Work("report", "* * * * *"))
    script = Script(False, None, True)
    script.run(scheduler._loop_steps())
    assert script.steps[:2] == [Idle(0), Pass(recover=True)]
    wait = script.steps[2]
    assert isinstance(wait, Idle)
    assert 59 < wait.seconds <= 60


def recoveries_of_the_loop(
    scheduler: SchedulerCore, passes_run: int, monkeypatch: pytest.MonkeyPatch
) -> list[bool]:
    """Which of the loop's first passes recover, each taking no time, on a clock of our own."""
    clock = [1000.0]
    monkeypatch.setattr(passes, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    loop = scheduler._loop_steps()
    step = next(loop)
    recovered = []
    for n in range(passes_run):
        assert step == Idle(0)
        step = loop.send(False)
        assert isinstance(step, Pass)
        script = Script(by=Table())
        script.run(
            scheduler._pass(NOW + scheduler.config.interval * n, False, recover=step.recover)
        )
        assert ("recover" in whats(script.steps)) is step.recover
        recovered.append(step.recover)
        step = loop.send(0)
        assert isinstance(step, Idle)
        clock[0] += step.seconds
        step = loop.send(False)
    return recovered


def test_with_a_pass_a_second_the_loop_recovers_every_fifth_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Recovery finds nothing most passes: the loop looks every ``RECOVER_EVERY``, 5 s."""
    scheduler = core(Work("beat", "* * * * * *"), lookahead="5s", interval="1s")
    assert recoveries_of_the_loop(scheduler, 12, monkeypatch) == [
        True, False, False, False, False,
        True, False, False, False, False,
        True, False,
    ]  # fmt: skip


def test_with_passes_five_seconds_apart_or_more_every_pass_recovers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for interval in ("5s", "1m"):
        scheduler = core(Work("beat", "* * * * * *"), lookahead="10m", interval=interval)
        assert recoveries_of_the_loop(scheduler, 4, monkeypatch) == [True] * 4


def test_a_short_lease_or_grace_brings_recovery_back_to_every_half_of_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A lost worker's row is recovered within its lease and half of it, as before."""
    short = core(Work("beat", "* * * * * *", lease="2s"), lookahead="5s", interval="1s")
    assert recoveries_of_the_loop(short, 4, monkeypatch) == [True] * 4
    four = core(Work("beat", "* * * * * *", grace="4s"), lookahead="5s", interval="1s")
    assert recoveries_of_the_loop(four, 6, monkeypatch) == [True, False, True, False, True, False]


def test_run_pass_recovers_every_time_however_close_together() -> None:
    scheduler = core(Work("beat", "* * * * * *"), lookahead="5s", interval="1s")
    for _ in range(3):
        _, steps = run_pass(scheduler, Table())
        assert "recover" in whats(steps)


def test_the_loop_outlives_a_failed_pass_with_a_short_backoff() -> None:
    scheduler = core(Work("report", "* * * * *"))
    script = Script(False, Raise(OSError("database away")), True)
    script.run(scheduler._loop_steps())
    backoff = script.steps[2]
    assert isinstance(backoff, Idle)
    assert 0.5 <= backoff.seconds <= 1.0  # the first wait: half to all of min(1 s, interval)


def test_the_loop_outlives_even_a_listeners_system_exit_but_not_ctrl_c() -> None:
    scheduler = core(Work("report", "* * * * *"))
    Script(False, Raise(SystemExit(3)), True).run(scheduler._loop_steps())
    with pytest.raises(KeyboardInterrupt):
        Script(False, Raise(KeyboardInterrupt())).run(scheduler._loop_steps())


def test_a_stop_before_the_first_pass_runs_none() -> None:
    script = Script(True)
    script.run(core(Work("report", "* * * * *"))._loop_steps())
    assert script.steps == [Idle(0)]


# -- settings of others, reported -----------------------------------------------------------


def test_rows_of_other_settings_from_before_this_scheduler_are_a_change_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    scheduler = core(Work("report", "* * * * *", 1))
    before = CLOCK_AT_START - timedelta(hours=1)
    old = "sequence=utc; max_run=3; cron=* * * * *; timezone=UTC"
    window = [TickState("report", at(10, 1), label(at(10, 1)), old, 3, 2, 0, before)]
    with caplog.at_level(logging.WARNING, logger="worksync_sa._core.passes"):
        run_pass(scheduler, Table(window=window))
        run_pass(scheduler, Table(window=window), now=NOW + timedelta(seconds=1))
    (record,) = caplog.records
    assert record.levelname == "WARNING"
    assert "max_run '3' there, '1' here" in record.getMessage()


def test_rows_of_other_settings_made_since_it_started_are_a_live_disagreement(
    caplog: pytest.LogCaptureFixture,
) -> None:
    scheduler = core(Work("report", "* * * * *", 1))
    since = CLOCK_AT_START + timedelta(seconds=5)
    other = "sequence=utc; max_run=3; cron=* * * * *; timezone=UTC"
    window = [TickState("report", at(10, 1), label(at(10, 1)), other, 3, 2, 0, since)]
    with caplog.at_level(logging.WARNING, logger="worksync_sa._core.passes"):
        run_pass(scheduler, Table(window=window))
    (record,) = caplog.records
    assert record.levelname == "ERROR"
    assert "another scheduler is making its ticks with other settings" in record.getMessage()


# -- the settings' own rules ----------------------------------------------------------------


def test_catchup_defaults_to_one_and_a_half_intervals() -> None:
    assert SchedulerConfig(interval="2m", lookahead="10m").catchup == timedelta(minutes=3)
    assert SchedulerConfig(interval="@every 2s", lookahead="1m").interval == timedelta(seconds=2)


@pytest.mark.parametrize(
    ("settings", "why"),
    [
        ({"lookahead": "25h"}, "over one day"),
        ({"lookahead": "30s", "interval": "1m"}, "shorter than interval"),
        ({"catchup": "2d"}, "over one day"),
        ({"retention": "47h"}, "under 2d"),
        ({"interval": "soon"}, "interval"),
        ({"sequence": "utc"}, "sequence must be a function"),
    ],
    ids=str,
)
def test_scheduler_settings_that_would_lose_or_recreate_ticks_are_refused(
    settings: dict[str, Any], why: str
) -> None:
    with pytest.raises(InvalidConfigError, match=why):
        SchedulerConfig(**settings)
