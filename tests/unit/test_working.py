"""What a worker decides (``_core.worker``), for ``Worker`` and ``AsyncWorker`` alike.

A round claims what is due and starts it: one runner runs each claim in the
loop, more take a runner before each claim so the worker never holds a
claim it cannot run, and the works take turns. The loop outlives a failed
round and waits, between rounds, until the next tick but never longer than
``poll``. Each is driven with scripted answers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from worksync_sa._core.claims import ClaimCore, DuePlan
from worksync_sa._core.shares import SMALLEST_CHARGE as LEAST
from worksync_sa._core.shares import Shares
from worksync_sa._core.worker import (
    ROUND,
    SPARE_SHARE,
    SPREAD_SECONDS,
    AcquireBatch,
    FreeRunner,
    Launch,
    RunHere,
    TakeRunner,
    WorkerCore,
    handlers_for,
    report,
    spread,
)
from worksync_sa._run.steps import Idle
from worksync_sa.errors import ClaimLostError, InvalidArgumentError
from worksync_sa.models import WorkStatus
from worksync_sa.repository import ClaimedRow
from worksync_sa.work import Work

from .scripted import Raise, Script, mysql_error

UTC = timezone.utc
TEN = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def handler(claim: Any) -> None:
    """A handler the worker would call; these tests never get that far."""


def worker(
    works: Sequence[Work | str],
    concurrency: int = 1,
    poll: str = "1s",
    clock: Callable[[], datetime] = lambda: TEN,
) -> WorkerCore:
    core = WorkerCore(
        works, handler, max_concurrency=concurrency, poll=poll, max_backoff="30s", clock=clock
    )
    core.spread = lambda: 0.0  # the looks' random spread: a fixed wait here
    return core


def never() -> bool:
    return False


# -- settings -------------------------------------------------------------------------------


def test_one_handler_for_all_works_or_one_per_work() -> None:
    assert handlers_for(["a", "b"], handler) == {"a": handler, "b": handler}
    assert handlers_for(["a"], {"a": handler}) == {"a": handler}


def test_a_handler_mapping_must_name_every_work_and_no_other() -> None:
    with pytest.raises(InvalidArgumentError, match=r"no handler for 'b'; not a work: 'c'"):
        handlers_for(["a", "b"], {"a": handler, "c": handler})
    with pytest.raises(InvalidArgumentError, match="handler for 'a' is not a function"):
        handlers_for(["a"], {"a": "module:function"})
    with pytest.raises(InvalidArgumentError, match="a function taking a Claim"):
        handlers_for(["a"], 42)


@pytest.mark.parametrize("concurrency", [0, 1025, True, 2.0])
def test_max_concurrency_is_an_int_from_1_to_1024(concurrency: object) -> None:
    with pytest.raises(InvalidArgumentError, match="max_concurrency"):
        worker(["a"], concurrency=concurrency)  # type: ignore[arg-type]


def test_a_worker_needs_works_and_a_clock() -> None:
    with pytest.raises(InvalidArgumentError, match="works is empty"):
        worker([])
    with pytest.raises(InvalidArgumentError, match="a list of Work"):
        worker("a")  # a single name, not a list of them
    with pytest.raises(InvalidArgumentError, match="clock"):
        worker(["a"], clock=TEN)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="poll"):
        worker(["a"], poll="often")


def test_names_are_served_in_sorted_order() -> None:
    assert worker(["b", "a", Work("c", "* * * * *")]).names == ["a", "b", "c"]


@pytest.mark.parametrize(
    "works",
    [["a", "a"], ["b", Work("b", "* * * * *")], [Work("a", "* * * * *"), Work("a", "0 * * * *")]],
    ids=["names", "name-and-work", "works"],
)
def test_a_work_given_twice_is_refused(works: list[Work | str]) -> None:
    """Which of the two would run, and with whose grace, would be a guess."""
    with pytest.raises(InvalidArgumentError, match=r"works name '[ab]' more than once"):
        worker(works)


# -- a round --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Got:
    """A claim as the scripted look returns it: the core reads only its work's name."""

    name: str
    n: int = 1


A1, A2, B1 = Got("a"), Got("a", 2), Got("b")


def plan_of(*groups: tuple[int, tuple[str, ...]]) -> DuePlan:
    return DuePlan(groups)


DAY365 = 365 * 86400
AB = plan_of((DAY365, ("a", "b")))
IN_ORDER = {"a": 0, "b": 1}


def test_with_one_runner_each_look_asks_for_one_row_of_any_work_until_none_is_left() -> None:
    core = worker(["b", "a"])
    script = Script([A1], None, [B1], None, [])
    assert script.run(core.round_steps(never)) == 2
    look = AcquireBatch(AB, IN_ORDER, 1)
    assert script.steps == [look, RunHere(A1), look, RunHere(B1), look]
    assert core.exhausted


def test_a_look_that_finds_nothing_says_nothing_more_is_due() -> None:
    core = worker(["a", "b"])
    script = Script([])
    assert script.run(core.round_steps(never)) == 0
    assert core.exhausted


def test_works_are_grouped_by_how_far_back_they_look() -> None:
    """One ``name IN (...)`` and one range per grace: a work's grace stays its own."""
    works: list[Work | str] = [Work("a", "*/5 * * * *", grace="2m"), "b", Work("c", "* * * * *")]
    script = Script([])
    script.run(worker(works).round_steps(never))
    plan = plan_of((60, ("c",)), (120, ("a",)), (DAY365, ("b",)))
    assert script.steps == [AcquireBatch(plan, {"a": 0, "b": 1, "c": 2}, 1)]


def test_a_stopping_worker_makes_no_claim() -> None:
    script = Script()
    assert script.run(worker(["a", "b"]).round_steps(lambda: True)) == 0
    assert script.steps == []


def test_a_stop_ends_the_round_before_the_next_look() -> None:
    stops = iter([False, True])
    script = Script([A1], None)
    assert script.run(worker(["a", "b"]).round_steps(lambda: next(stops, True))) == 1
    assert script.steps == [AcquireBatch(AB, IN_ORDER, 1), RunHere(A1)]


def test_with_more_runners_one_look_asks_for_every_free_one() -> None:
    take, free = TakeRunner(), FreeRunner()
    core = worker(["a", "b"], concurrency=4)
    script = Script(True, True, True, False, [A1, B1], None, None, None)
    assert script.run(core.round_steps(never)) == 2
    assert script.steps == [
        take, take, take, take, AcquireBatch(AB, IN_ORDER, 3),
        free, Launch(A1, LEAST), Launch(B1, LEAST),
    ]  # fmt: skip
    assert core.exhausted  # fewer than asked: nothing more is due, no second look now


def test_a_look_that_filled_every_free_runner_may_look_again() -> None:
    core = worker(["a"], concurrency=2)
    script = Script(True, True, [A1, A2], None, None, False)
    assert script.run(core.round_steps(never)) == 2
    assert script.steps[-1] == TakeRunner()  # every runner busy: the round ends
    assert not core.exhausted


def test_looks_at_ticks_that_keep_coming_back_short_mean_others_take_the_rest() -> None:
    """A fleet with lookers to spare: a full look is not followed by another at that tick."""
    core = worker(["a", "b"])
    for _ in range(3):  # three ticks at which others had taken everything first
        core.spare.at_tick = True
        Script([]).run(core.round_steps(never))
    assert core.spare.share > SPARE_SHARE
    core.spare.at_tick = True
    script = Script([A1], None)
    assert script.run(core.round_steps(never)) == 1
    assert script.steps == [AcquireBatch(AB, IN_ORDER, 1), RunHere(A1)]  # no second look
    assert core.exhausted  # the loop waits for the next tick, not for the claim's end


def test_looks_that_fill_up_at_ticks_bring_the_second_look_back() -> None:
    """A backlog, or fewer workers than rows: every look at a tick fills up, the share falls."""
    core = worker(["a", "b"])
    core.spare.share = 0.5
    for _ in range(7):  # 0.5 x 0.8^7 = 0.105: still one look a tick
        core.spare.at_tick = True
        Script([A1], None).run(core.round_steps(never))
    core.spare.at_tick = True  # the eighth full look takes the share under SPARE_SHARE
    script = Script([A1], None, [B1], None, [])
    assert script.run(core.round_steps(never)) == 2  # it drains again
    assert script.steps[-1] == AcquireBatch(AB, IN_ORDER, 1)


def test_looks_between_ticks_do_not_count_as_short() -> None:
    """A poll that found nothing says nothing about the fleet: no tick was due."""
    core = worker(["a", "b"])
    for _ in range(10):
        Script([]).run(core.round_steps(never))  # not at a tick
    assert core.spare.share == 0.0


def test_only_a_wait_that_ends_at_a_tick_makes_the_next_look_a_tick_look() -> None:
    ticking = worker([Work("a", "* * * * * *")], poll="60s")  # every second: the tick decides
    ticking.exhausted = True
    Script(False, 0, True).run(ticking.loop_steps("worker"))
    assert ticking.spare.at_tick
    polling = worker([Work("a", "0 0 1 1 *")], poll="1s")  # months away: the poll decides
    polling.exhausted = True
    Script(False, 0, True).run(polling.loop_steps("worker"))
    assert not polling.spare.at_tick


def test_a_look_puts_the_work_that_ran_least_lately_first() -> None:
    """The statement orders a tick's first slots by these places: slow works cannot starve quick."""
    core = worker(["quick", "slow"], concurrency=2)
    core.shares.ended("quick", 0.0, 2.0)  # a claim of it held its runner 2 s
    script = Script(True, False, [], None)
    script.run(core.round_steps(never))
    plan = plan_of((DAY365, ("quick", "slow")))
    assert script.steps[2] == AcquireBatch(plan, {"slow": 0, "quick": 1}, 1)


def test_runner_time_used_is_charged_at_the_start_set_right_at_the_end_and_decays() -> None:
    now = [0.0]
    shares = Shares(["a", "b"], clock=lambda: now[0])
    assert shares.next(["a", "b"]) == "a"  # ties: in the order given
    assert shares.started("a") == LEAST
    assert shares.next(["a", "b"]) == "b"
    shares.ended("a", LEAST, 4.0)
    assert shares.used("a") == pytest.approx(4.0)
    assert shares.started("a") == pytest.approx(0.8)  # a fifth of the way to 4 s from 0
    now[0] = 60.0  # a half-life later
    assert shares.used("a") == pytest.approx(2.4)
    shares.ended("b", LEAST, 0.0)
    assert shares.used("b") == 0.0  # never below nothing
    assert shares.next(["a", "b"]) == "b"


def test_no_claim_is_made_without_a_free_runner() -> None:
    script = Script(False)
    assert script.run(worker(["a"], concurrency=2).round_steps(never)) == 0
    assert script.steps == [TakeRunner()]


def test_a_failed_claim_gives_its_reserved_runners_back() -> None:
    away = mysql_error(2006, "MySQL server has gone away")
    script = Script(True, True, Raise(away), None, None)
    with pytest.raises(type(away)):
        script.run(worker(["a"], concurrency=2).round_steps(never))
    plan = plan_of((DAY365, ("a",)))
    take, free = TakeRunner(), FreeRunner()
    assert script.steps == [take, take, AcquireBatch(plan, {"a": 0}, 2), free, free]


# -- the loop -------------------------------------------------------------------------------


def test_after_an_empty_round_the_loop_looks_again_when_the_next_tick_may_be_due() -> None:
    script = Script(False, 0, True)
    script.run(worker(["a"]).loop_steps("worker"))
    assert script.steps == [Idle(0), ROUND, Idle(1.0, wake=True)]


def test_after_a_round_that_filled_every_runner_the_loop_looks_again_when_one_frees() -> None:
    script = Script(False, 2, False, False, 0, True)
    script.run(worker(["a"]).loop_steps("worker"))
    assert script.steps == [
        Idle(0),
        ROUND,
        Idle(1.0, wake=True),
        Idle(0),
        ROUND,
        Idle(1.0, wake=True),
    ]


def test_after_a_round_that_found_less_than_it_asked_for_the_loop_waits_for_the_next_tick() -> None:
    """Nothing more is due: neither a claim ending nor the lost race is a reason to look again."""
    core = worker(["a"])
    core.exhausted = True  # as the round the script stands for left it
    script = Script(False, 1, True)
    script.run(core.loop_steps("worker"))
    assert script.steps == [Idle(0), ROUND, Idle(1.0, wake=False)]


def test_the_wait_for_a_tick_is_spread_a_little() -> None:
    core = worker(["a"])
    core.spread = lambda: 0.07
    script = Script(False, 0, True)
    script.run(core.loop_steps("worker"))
    assert script.steps[-1] == Idle(1.07, wake=True)
    assert {0.0 <= spread() <= SPREAD_SECONDS <= 0.1 for _ in range(100)} == {True}


def test_the_loop_outlives_a_failed_round_with_a_growing_backoff() -> None:
    away = mysql_error(2003, "Can't connect")
    script = Script(False, Raise(away), False, False, Raise(away), True)
    script.run(worker(["a"]).loop_steps("worker"))
    first, second = script.steps[2], script.steps[5]
    assert isinstance(first, Idle)
    assert isinstance(second, Idle)
    assert not first.wake  # a backoff: a claim ending is no reason to retry
    assert not second.wake
    assert 0.25 <= first.seconds <= 0.5
    assert 0.5 <= second.seconds <= 1.0


def test_only_ctrl_c_or_cancellation_ends_the_loop_from_a_round() -> None:
    Script(False, Raise(SystemExit(1)), True).run(worker(["a"]).loop_steps("worker"))
    with pytest.raises(KeyboardInterrupt):
        Script(False, Raise(KeyboardInterrupt())).run(worker(["a"]).loop_steps("worker"))


def test_the_wait_is_until_the_next_tick_but_never_longer_than_poll() -> None:
    every_five = [Work("a", "*/5 * * * *")]
    at_three = worker(every_five, poll="10m", clock=lambda: TEN + timedelta(minutes=3))
    assert at_three.next_wait() == 120.0
    nearly = TEN + timedelta(minutes=4, seconds=59.5)
    assert worker(every_five, poll="10m", clock=lambda: nearly).next_wait() == 0.5
    assert worker(every_five, poll="1s", clock=lambda: TEN).next_wait() == 1.0


def test_with_names_only_the_worker_polls() -> None:
    assert worker(["a"], poll="7s").next_wait() == 7.0


# -- what a failed handler logs -------------------------------------------------------------


def test_a_lost_claim_is_a_warning_and_a_recorded_failure_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    claim = ClaimCore(ClaimedRow(7, "report", "s", "t" * 32, 30, slot=1, attempt=2))
    try:
        raise ValueError("bad row")
    except ValueError as exc:
        raised = exc
    with caplog.at_level(logging.WARNING, logger="worksync_sa.worker"):
        report(claim, ClaimLostError("recovered"))
        claim._finish_done(WorkStatus.FAILED, written=True)
        report(claim, raised)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", f"{claim!r} was lost before it finished"),
        ("ERROR", "work 'report' failed at tick s (slot 1, attempt 2): ValueError: bad row"),
    ]
    failed = caplog.records[1]
    assert failed.exc_info is not None
    assert failed.exc_info[1] is raised  # the traceback is in the ERROR record itself
    assert 'raise ValueError("bad row")' in caplog.text
    fields = ("work", "sequence", "slot", "attempt")
    assert [getattr(failed, field) for field in fields] == ["report", "s", 1, 2]


def test_an_outcome_that_could_not_be_recorded_says_recovery_will_close_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    claim = ClaimCore(ClaimedRow(7, "report", "s", "t" * 32, 30))
    with caplog.at_level(logging.ERROR, logger="worksync_sa.worker"):
        report(claim, OSError("database away"))
    (record,) = caplog.records
    assert "could not be recorded" in record.getMessage()
    assert "recovery closes its row" in record.getMessage()
