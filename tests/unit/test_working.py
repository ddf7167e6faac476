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
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from worksync_sa._core.claims import ClaimCore
from worksync_sa._core.shares import SMALLEST_CHARGE as LEAST
from worksync_sa._core.shares import Shares
from worksync_sa._core.worker import (
    ROUND,
    AcquireDue,
    FreeRunner,
    Launch,
    RunHere,
    TakeRunner,
    WorkerCore,
    handlers_for,
    report,
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
    return WorkerCore(
        works, handler, max_concurrency=concurrency, poll=poll, max_backoff="30s", clock=clock
    )


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


def test_with_one_runner_each_due_claim_runs_in_the_loop_work_by_work() -> None:
    script = Script("a1", None, "a2", None, None, "b1", None, None)
    started = script.run(worker(["b", "a"]).round_steps(never))
    assert started == 3
    assert script.steps == [
        AcquireDue("a", None), RunHere("a1"), AcquireDue("a", None), RunHere("a2"),
        AcquireDue("a", None),
        AcquireDue("b", None), RunHere("b1"), AcquireDue("b", None),
    ]  # fmt: skip


def test_a_due_claim_looks_back_as_far_as_the_works_grace() -> None:
    works: list[Work | str] = [Work("a", "*/5 * * * *", grace="2m"), "b"]
    script = Script(None, None)
    script.run(worker(works).round_steps(never))
    assert script.steps == [AcquireDue("a", timedelta(minutes=2)), AcquireDue("b", None)]


def test_a_stop_ends_the_round_before_the_next_claim() -> None:
    stops = iter([False, True])
    script = Script("a1", None)
    assert script.run(worker(["a", "b"]).round_steps(lambda: next(stops, True))) == 1
    assert script.steps == [AcquireDue("a", None), RunHere("a1")]


def test_with_more_runners_the_works_take_turns_one_claim_each() -> None:
    take, free = TakeRunner(), FreeRunner()
    script = Script(
        True, "a1", None,  # turn 1: a
        True, "b1", None,  # turn 1: b
        True, "a2", None,  # turn 2: a
        True, None, None,  # b has nothing more
        True, None, None,  # turn 3: a has nothing more
    )  # fmt: skip
    assert script.run(worker(["a", "b"], concurrency=4).round_steps(never)) == 3
    assert script.steps == [
        take, AcquireDue("a", None), Launch("a1", LEAST),
        take, AcquireDue("b", None), Launch("b1", LEAST),
        take, AcquireDue("a", None), Launch("a2", LEAST),
        take, AcquireDue("b", None), free,
        take, AcquireDue("a", None), free,
    ]  # fmt: skip


def test_with_more_runners_a_free_runner_goes_to_the_work_that_ran_least_lately() -> None:
    """Two runners freed at once by a slow work: the quick one drains its due ticks first."""
    core = worker(["quick", "slow"], concurrency=2)
    core.shares.ended("slow", 0.0, 2.0)  # a claim of it held its runner 2 s
    take = TakeRunner()
    script = Script(True, "q1", None, True, "q2", None, False)
    assert script.run(core.round_steps(never)) == 2
    assert script.steps == [
        take, AcquireDue("quick", None), Launch("q1", LEAST),
        take, AcquireDue("quick", None), Launch("q2", LEAST),
        take,
    ]  # fmt: skip


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


def test_with_more_runners_a_stop_mid_turn_makes_no_further_claim() -> None:
    stops = iter([False, True])
    script = Script(True, "a1", None)
    assert script.run(worker(["a", "b"], concurrency=4).round_steps(lambda: next(stops))) == 1
    assert script.steps == [TakeRunner(), AcquireDue("a", None), Launch("a1", LEAST)]


def test_no_claim_is_made_without_a_free_runner() -> None:
    script = Script(True, "a1", None, False)
    assert script.run(worker(["a"], concurrency=2).round_steps(never)) == 1
    assert script.steps == [TakeRunner(), AcquireDue("a", None), Launch("a1", LEAST), TakeRunner()]


def test_a_failed_claim_gives_its_reserved_runner_back() -> None:
    away = mysql_error(2006, "MySQL server has gone away")
    script = Script(True, Raise(away), None)
    with pytest.raises(type(away)):
        script.run(worker(["a"], concurrency=2).round_steps(never))
    assert script.steps == [TakeRunner(), AcquireDue("a", None), FreeRunner()]


# -- the loop -------------------------------------------------------------------------------


def test_after_an_empty_round_the_loop_looks_again_when_the_next_tick_may_be_due() -> None:
    script = Script(False, 0, True)
    script.run(worker(["a"]).loop_steps("worker"))
    assert script.steps == [Idle(0), ROUND, Idle(1.0, wake=True)]


def test_after_a_round_that_started_claims_the_loop_goes_straight_on() -> None:
    script = Script(False, 2, False, 0, True)
    script.run(worker(["a"]).loop_steps("worker"))
    assert script.steps == [Idle(0), ROUND, Idle(0), ROUND, Idle(1.0, wake=True)]


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
