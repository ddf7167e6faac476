"""One call's attempts (``_run.attempts.attempts``): the state machine both runners follow.

The runner is played by a :class:`Script`; each test is the conversation a
call has with its runner on one path: the plain success, a deadlock then a
retry, a connection lost until the policy gives up, a lost reply resolved,
a busy SQLite writers' lock. Expected steps come from the module's rules
(take, run, give; release after an error, sleep, try again; resolve an
unknown outcome first; queue for the lock unless ``peek`` says not to).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from worksync_sa._run.attempts import (
    BUSY,
    TAKE,
    UNLOCK,
    WAIT_LOCK,
    Commit,
    Counters,
    Give,
    Invalidate,
    Locked,
    Release,
    Run,
    attempts,
)
from worksync_sa._run.retry import Retry
from worksync_sa._run.steps import Call, Sleep
from worksync_sa.config import RetryPolicy
from worksync_sa.errors import SchemaNotReadyError

from .scripted import (
    CANT_CONNECT,
    DEADLOCK,
    DUPLICATE_KEY,
    LOST_DURING_QUERY,
    NO_SUCH_TABLE,
    SERVER_GONE,
    Raise,
    Script,
    mysql_error,
    postgres_error,
    sqlite_error,
)

LANE, LANE2, LANE3 = "lane-1", "lane-2", "lane-3"
POLICY = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.04)


def work(conn: Any) -> str:
    raise AssertionError("the runner runs this, not the test")


def resolve(conn: Any) -> str | None:
    raise AssertionError("the runner runs this, not the test")


def peek(conn: Any) -> bool:
    raise AssertionError("the runner runs this, not the test")


CALL: Call[str] = Call("claim", work)
RESOLVABLE: Call[str] = Call("claim", work, resolve=resolve)
PEEKING: Call[str] = Call("claim", work, peek=peek, nothing="nothing left")


def steps_of(
    call: Call[str],
    *,
    policy: RetryPolicy = POLICY,
    sqlite: bool = False,
    transactional: bool = False,
    locked: bool = False,
    counters: Counters | None = None,
) -> Any:
    retry = Retry(policy, "works", sqlite, call.what)
    return attempts(
        call,
        retry,
        counters or Counters(),
        transactional=transactional,
        locked=locked,
    )


def sleeps(steps: list[Any]) -> list[float]:
    return [step.seconds for step in steps if isinstance(step, Sleep)]


def test_the_plain_path_is_take_run_give() -> None:
    script = Script(LANE, "row 7", None)
    assert script.run(steps_of(CALL)) == "row 7"
    assert script.steps == [TAKE, Run(LANE, work), Give(LANE)]


def test_off_lanes_a_successful_call_commits_before_the_connection_goes_back() -> None:
    script = Script(LANE, "row 7", None, None)
    assert script.run(steps_of(CALL, transactional=True)) == "row 7"
    assert script.steps == [TAKE, Run(LANE, work), Commit(LANE), Give(LANE)]


def test_a_deadlock_on_the_first_attempt_sleeps_then_tries_a_second_time() -> None:
    script = Script(
        LANE, Raise(mysql_error(DEADLOCK, "Deadlock found")), None, None, LANE2, "row 7", None
    )
    assert script.run(steps_of(CALL)) == "row 7"
    assert script.steps[:3] == [TAKE, Run(LANE, work), Release(LANE)]
    assert isinstance(script.steps[3], Sleep)
    assert script.steps[4:] == [TAKE, Run(LANE2, work), Give(LANE2)]
    # Full jitter: the first wait is anywhere from 0 to base_delay.
    (delay,) = sleeps(script.steps)
    assert 0 <= delay <= POLICY.base_delay


@pytest.mark.parametrize(
    "error",
    [
        mysql_error(1205, "Lock wait timeout exceeded"),
        postgres_error("40001", "could not serialize access"),
        postgres_error("40P01", "deadlock detected"),
    ],
    ids=["mysql-lock-wait", "pg-serialization", "pg-deadlock"],
)
def test_every_transient_error_is_retried(error: Exception) -> None:
    script = Script(LANE, Raise(error), None, None, LANE2, "done", None)
    assert script.run(steps_of(CALL)) == "done"
    assert len(sleeps(script.steps)) == 1


def test_a_lost_connection_is_retried_until_the_policys_limit_then_raised() -> None:
    counters = Counters()
    lost = mysql_error(SERVER_GONE, "MySQL server has gone away")
    # attempts=3: three tries in all, a sleep between each, none after the last.
    script = Script(
        LANE, Raise(lost), None, None,
        LANE2, Raise(lost), None, None,
        LANE3, Raise(lost), None,
    )  # fmt: skip
    with pytest.raises(type(lost)) as raised:
        script.run(steps_of(CALL, counters=counters))
    assert raised.value is lost
    assert [type(s).__name__ for s in script.steps] == [
        "Take", "Run", "Release", "Sleep",
        "Take", "Run", "Release", "Sleep",
        "Take", "Run", "Release",
    ]  # fmt: skip
    assert counters.lost_connections == 3
    first, second = sleeps(script.steps)
    assert 0 <= first <= 0.01
    assert 0 <= second <= 0.02  # the cap doubles per attempt


def test_backoff_is_capped_at_max_delay() -> None:
    policy = RetryPolicy(attempts=6, base_delay=0.01, max_delay=0.015)
    lost = mysql_error(SERVER_GONE)
    answers: list[object] = []
    for lane in range(5):
        answers += [f"lane-{lane}", Raise(lost), None, None]
    script = Script(*answers, "lane-last", "done", None)
    assert script.run(steps_of(CALL, policy=policy)) == "done"
    assert len(sleeps(script.steps)) == 5
    assert all(0 <= delay <= 0.015 for delay in sleeps(script.steps))


def test_one_attempt_in_all_means_no_retry() -> None:
    script = Script(LANE, Raise(mysql_error(DEADLOCK)), None)
    with pytest.raises(Exception, match="1213"):
        script.run(steps_of(CALL, policy=RetryPolicy(attempts=1)))
    assert sleeps(script.steps) == []


def test_an_error_that_is_not_transient_is_raised_at_once() -> None:
    duplicate = mysql_error(DUPLICATE_KEY, "Duplicate entry")
    script = Script(LANE, Raise(duplicate), None)
    with pytest.raises(type(duplicate)):
        script.run(steps_of(CALL))
    assert script.steps == [TAKE, Run(LANE, work), Release(LANE)]


def test_a_missing_table_becomes_schema_not_ready_naming_the_fix() -> None:
    script = Script(
        LANE, Raise(mysql_error(NO_SUCH_TABLE, "Table 'test.works' doesn't exist")), None
    )
    with pytest.raises(SchemaNotReadyError, match="worksync migrate"):
        script.run(steps_of(CALL))
    assert script.steps[-1] == Release(LANE)


def test_an_error_outside_the_database_gives_the_lane_back_and_is_raised() -> None:
    script = Script(LANE, Raise(ValueError("a bug in the caller")), None)
    with pytest.raises(ValueError, match="a bug"):
        script.run(steps_of(CALL))
    assert script.steps == [TAKE, Run(LANE, work), Release(LANE)]


@pytest.mark.parametrize("cut", [asyncio.CancelledError, KeyboardInterrupt])
def test_a_statement_cut_off_drops_its_lane_for_good(cut: type[BaseException]) -> None:
    """A statement cut off half-way leaves the connection in an unknown state."""
    script = Script(LANE, Raise(cut()), None)
    with pytest.raises(cut):
        script.run(steps_of(CALL))
    assert script.steps == [TAKE, Run(LANE, work), Invalidate(LANE)]


def test_a_refused_connection_has_no_lane_to_release_and_nothing_to_resolve() -> None:
    """Nothing was sent, so the outcome is known: no resolve before the next attempt."""
    refused = mysql_error(CANT_CONNECT, "Can't connect to MySQL server")
    script = Script(Raise(refused), None, LANE, "row 7", None)
    assert script.run(steps_of(RESOLVABLE)) == "row 7"
    assert script.steps[0] == TAKE
    assert isinstance(script.steps[1], Sleep)
    assert script.steps[2:] == [TAKE, Run(LANE, work), Give(LANE)]


def test_a_reply_lost_after_sending_is_resolved_before_trying_again() -> None:
    lost = mysql_error(LOST_DURING_QUERY, "Lost connection to MySQL server during query")
    script = Script(LANE, Raise(lost), None, None, LANE2, "row 7 (it did commit)", None)
    assert script.run(steps_of(RESOLVABLE)) == "row 7 (it did commit)"
    assert script.steps[4:] == [TAKE, Run(LANE2, resolve), Give(LANE2)]


def test_a_lost_reply_that_did_not_happen_is_run_again() -> None:
    lost = postgres_error("08006", "connection failure")
    script = Script(LANE, Raise(lost), None, None, LANE2, None, "row 7", None)
    assert script.run(steps_of(RESOLVABLE)) == "row 7"
    assert script.steps[4:] == [TAKE, Run(LANE2, resolve), Run(LANE2, work), Give(LANE2)]


# -- SQLite's writers' lock ---------------------------------------------------------------


def test_a_free_writers_lock_is_one_step() -> None:
    script = Script(LANE, "row 7", None)
    assert script.run(steps_of(CALL, locked=True)) == "row 7"
    assert script.steps == [TAKE, Locked(LANE, work), Give(LANE)]


def test_a_busy_lock_is_queued_for_and_always_released() -> None:
    script = Script(LANE, BUSY, None, "row 7", None, None)
    assert script.run(steps_of(CALL, locked=True)) == "row 7"
    assert script.steps == [
        TAKE,
        Locked(LANE, work),
        WAIT_LOCK,
        Run(LANE, work),
        UNLOCK,
        Give(LANE),
    ]


def test_a_busy_lock_with_nothing_left_to_write_gives_up_at_once() -> None:
    """``peek`` says the tick is taken: queueing would only delay the answer."""
    script = Script(LANE, BUSY, False, None)
    assert script.run(steps_of(PEEKING, locked=True)) == "nothing left"
    assert script.steps == [TAKE, Locked(LANE, work), Run(LANE, peek), Give(LANE)]


def test_a_busy_lock_with_work_left_queues() -> None:
    script = Script(LANE, BUSY, True, None, "row 7", None, None)
    assert script.run(steps_of(PEEKING, locked=True)) == "row 7"
    assert script.steps[3:] == [WAIT_LOCK, Run(LANE, work), UNLOCK, Give(LANE)]


def test_the_lock_is_released_even_when_the_queued_write_fails() -> None:
    script = Script(LANE, BUSY, None, Raise(ValueError("bug")), None, None)
    with pytest.raises(ValueError, match="bug"):
        script.run(steps_of(CALL, locked=True))
    assert script.steps[2:] == [WAIT_LOCK, Run(LANE, work), UNLOCK, Release(LANE)]


def test_sqlite_database_is_locked_is_retried_in_fine_steps_past_the_attempt_limit() -> None:
    """SQLite's busy file is retried for up to busy_timeout, not ``attempts`` times."""
    locked = sqlite_error("database is locked")
    policy = RetryPolicy(attempts=1, busy_timeout=60.0)
    answers: list[object] = []
    for lane in range(4):
        answers += [f"lane-{lane}", Raise(locked), None, None]
    script = Script(*answers, LANE, "row 7", None)
    assert script.run(steps_of(CALL, policy=policy, sqlite=True)) == "row 7"
    assert len(sleeps(script.steps)) == 4
    assert all(0 < delay <= 0.002 for delay in sleeps(script.steps))  # a fraction of a ms


def test_sqlite_database_is_locked_is_raised_once_busy_timeout_is_spent() -> None:
    locked = sqlite_error("database is locked")
    script = Script(LANE, Raise(locked), None)
    with pytest.raises(type(locked)):
        script.run(steps_of(CALL, policy=RetryPolicy(busy_timeout=0), sqlite=True))
    assert sleeps(script.steps) == []
