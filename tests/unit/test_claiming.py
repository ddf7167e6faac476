"""The claim's core (``_core.claims``): checked inputs, claim calls, and ``with claim:`` steps.

A claim call is one ``Call`` with a fresh token, and a ``resolve`` (the
attempts use it after a lost reply) and ``peek`` (for a busy SQLite file).
What ``with claim:`` does around the body is two generators: the heartbeat,
every third of the lease, outliving an outage until the claim is lost; and
the recording of the outcome, retried while the database is away and the
lease lasts. They are driven here with scripted answers.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from worksync_sa._core.claims import (
    BEAT,
    READ_LEASE,
    ClaimCore,
    Record,
    WorkSyncCore,
    checked_floor,
    checked_row,
    error_text,
    heartbeat_period,
    held_from_row,
)
from worksync_sa._core.repositories import ClaimState
from worksync_sa._run.attempts import BUSY, TAKE, Counters, Give, Locked, Run, attempts
from worksync_sa._run.retry import Retry
from worksync_sa._run.steps import Call, Idle, Sleep
from worksync_sa.config import RetryPolicy
from worksync_sa.errors import (
    ClaimLostError,
    ClaimNotCommittedError,
    InvalidArgumentError,
    InvalidWorkError,
    describe,
)
from worksync_sa.models import WorkStatus
from worksync_sa.repository import ClaimedRow

from .scripted import Raise, Script, keywords, mysql_error

UTC = timezone.utc
TICK = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def row(lease: int | None = 30, **details: object) -> ClaimedRow:
    return ClaimedRow(7, "report", "2026-03-01 10:00:00", "f" * 32, lease, **details)  # type: ignore[arg-type]


def sync(**settings: object) -> WorkSyncCore:
    options: dict[str, object] = {
        "table": "works",
        "worker_id": "host-a:1",
        "retry": None,
        "keep_alive": True,
        "listeners": None,
    }
    options.update(settings)
    return WorkSyncCore(**options)  # type: ignore[arg-type]


# -- claim calls ----------------------------------------------------------------------------


def test_a_claim_by_sequence_is_one_call_that_can_resolve_and_peek() -> None:
    call = sync().acquire("report", "2026-03-01 10:00:00")
    assert call.what == "claim"
    assert call.resolve is not None
    assert call.peek is not None
    params = keywords(call)["params"]
    assert params["work_name"] == "report"
    assert params["tick_sequence"] == "2026-03-01 10:00:00"
    assert params["worker"] == "host-a:1"
    assert len(params["claim_token"]) == 32


def test_every_claim_has_a_token_of_its_own() -> None:
    core = sync()
    tokens = {keywords(core.acquire("report", "s"))["params"]["claim_token"] for _ in range(50)}
    assert len(tokens) == 50


def test_a_due_claim_on_the_database_clock_and_at_an_explicit_now() -> None:
    core = sync()
    due = core.acquire_due("report", None)
    assert due.what == "claim_due"
    assert "now" not in keywords(due)["params"]
    explicit = core.acquire_due("report", TICK, grace="90s")
    assert explicit.what == "claim_at"
    assert keywords(explicit)["params"]["now"] == TICK
    assert keywords(explicit)["params"]["floor_seconds"] == 90


def test_a_due_claims_floor_is_the_longest_grace_unless_told() -> None:
    assert checked_floor(None) == 365 * 24 * 3600
    assert checked_floor(timedelta(seconds=1.5)) == 2  # rounded up: never tighter
    assert checked_floor("2m") == 120
    with pytest.raises(InvalidArgumentError, match="at most 365 days"):
        checked_floor(timedelta(days=366))
    with pytest.raises(InvalidArgumentError):
        checked_floor("soon")


@pytest.mark.parametrize("name", ["", "x" * 256, "a\x00b", 7])
def test_a_claim_refuses_a_name_it_cannot_store(name: object) -> None:
    with pytest.raises(InvalidWorkError):
        sync().acquire(name, "s")  # type: ignore[arg-type]


def test_the_services_settings_are_checked_at_construction() -> None:
    with pytest.raises(InvalidArgumentError, match="keep_alive"):
        sync(keep_alive="yes")
    with pytest.raises(InvalidArgumentError, match="RetryPolicy"):
        sync(retry={"attempts": 3})
    with pytest.raises(InvalidArgumentError, match="table"):
        sync(table="works; DROP TABLE x")
    assert sync(retry=None).policy == RetryPolicy()


def test_a_finish_call_resolves_a_lost_reply_by_reading_the_row() -> None:
    call = sync().finish(row(), WorkStatus.SUCCESS, None)
    assert call.what == "finish"
    assert call.resolve is not None
    bound = keywords(call)
    assert (bound["claim"], bound["token"], bound["status"]) == (7, "f" * 32, WorkStatus.SUCCESS)


def test_a_due_claim_on_a_free_lane_is_take_claim_give() -> None:
    call = sync().acquire_due("report", None, grace="1m")
    claimed = row(slot=0, tick_at=TICK, attempt=1)
    script = Script("lane", claimed, None)
    assert script.run(due_attempts(call)) == claimed
    assert script.steps == [TAKE, Run("lane", call.work), Give("lane")]


def test_a_due_claim_whose_reply_was_lost_finds_its_row_by_its_token() -> None:
    """The UPDATE may have committed: claiming again could take a second row of the tick."""
    call = sync().acquire_due("report", None)
    assert call.resolve is not None
    assert call.resolve.keywords == {  # type: ignore[attr-defined]
        "name": "report",
        "token": keywords(call)["params"]["claim_token"],
    }
    lost = mysql_error(2013, "Lost connection to MySQL server during query")
    claimed = row()
    script = Script("lane-1", Raise(lost), None, None, "lane-2", claimed, None)
    assert script.run(due_attempts(call)) == claimed
    assert script.steps[4:] == [TAKE, Run("lane-2", call.resolve), Give("lane-2")]


def test_a_due_claim_on_a_busy_sqlite_file_with_nothing_queued_gives_up_at_once() -> None:
    call = sync().acquire_due("report", None)
    assert call.peek is not None
    script = Script("lane", BUSY, False, None)
    assert script.run(due_attempts(call, locked=True)) is None
    assert script.steps == [TAKE, Locked("lane", call.work), Run("lane", call.peek), Give("lane")]


def due_attempts(call: Call[ClaimedRow | None], locked: bool = False) -> Any:
    retry = Retry(RetryPolicy(), "works", locked, call.what)
    return attempts(call, retry, Counters(), transactional=False, locked=locked)


# -- the claim's state ----------------------------------------------------------------------


def test_a_claims_details_and_its_lag() -> None:
    claimed = row(slot=1, tick_at=TICK, attempt=2, started_at=TICK + timedelta(seconds=3))
    claim = ClaimCore(claimed)
    assert (claim.id, claim.name, claim.slot, claim.tick_at, claim.attempt) == (
        7,
        "report",
        1,
        TICK,
        2,
    )
    assert claimed.lag == 3.0
    assert row().lag is None
    assert not claim.finished
    assert not claim.lost


# -- a claim from a host's row ----------------------------------------------------------------


def state(status: WorkStatus, token: str | None, attempts: int | None = 1) -> ClaimState:
    return ClaimState(status, token, attempts)


def test_a_claim_from_a_row_holds_when_the_row_is_running_with_its_token() -> None:
    claimed = row(attempt=2)
    assert held_from_row(claimed, state(WorkStatus.RUNNING, "f" * 32, 2), "works") is claimed


@pytest.mark.parametrize(
    ("found", "attempt", "error", "said"),
    [
        (None, 1, ClaimNotCommittedError, "row 7 of table 'works' is not there as committed"),
        (state(WorkStatus.QUEUED, None, 0), 1, ClaimNotCommittedError, "is still QUEUED"),
        (state(WorkStatus.QUEUED, "e" * 32, 1), 2, ClaimNotCommittedError, "is still QUEUED"),
        (state(WorkStatus.QUEUED, None, 1), None, ClaimNotCommittedError, "is still QUEUED"),
        (state(WorkStatus.QUEUED, None, 1), 1, ClaimLostError, "recovered and queued again"),
        (state(WorkStatus.SUCCESS, "f" * 32), 1, ClaimLostError, "already finished as SUCCESS"),
        (state(WorkStatus.FAILED, "f" * 32), 1, ClaimLostError, "already finished as FAILED"),
        (state(WorkStatus.RUNNING, "e" * 32, 2), 1, ClaimLostError, "under another claim's"),
    ],
)
def test_a_claim_from_a_row_not_committed_or_no_longer_held_is_refused(
    found: ClaimState | None, attempt: int | None, error: type[Exception], said: str
) -> None:
    with pytest.raises(error, match=said):
        held_from_row(row(attempt=attempt), found, "works")


def test_not_committed_is_a_usage_error_that_says_to_commit_first() -> None:
    assert issubclass(ClaimNotCommittedError, InvalidArgumentError)
    with pytest.raises(ValueError, match="after the transaction that claimed the row has commit"):
        held_from_row(row(), None, "works")


def test_a_claim_from_a_row_is_one_read_named_for_the_call() -> None:
    call = sync().from_row(row())
    assert (call.what, call.resolve, call.peek) == ("claim_from_row", None, None)


@pytest.mark.parametrize(
    ("field", "value", "said"),
    [
        ("id", "7", "row.id must be an int, got str '7'"),
        ("id", 7.0, "row.id must be an int, got float 7.0"),
        ("id", -1, "row.id must be a row's id (1 or more), got -1"),
        ("name", b"report", "row.name must be a string, got bytes b'report'"),
        ("sequence", 1, "row.sequence must be a string, got int 1"),
        ("token", None, "row.token must be a string, got NoneType None"),
        ("token", "x" * 33, "row.token must be the claim's token (1 to 32 characters), got 33"),
        ("lease_seconds", False, "row.lease_seconds must be an int or None, got bool False"),
        ("slot", "0", "row.slot must be an int or None, got str '0'"),
        ("tick_at", 0, "row.tick_at must be a datetime or None, got int 0"),
        ("attempt", 1.5, "row.attempt must be an int or None, got float 1.5"),
        ("started_at", "now", "row.started_at must be a datetime or None, got str 'now'"),
    ],
)
def test_a_row_with_a_field_of_the_wrong_type_is_refused_naming_it(
    field: str, value: object, said: str
) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        checked_row(row()._replace(**{field: value}))  # type: ignore[arg-type]
    assert str(raised.value) == said


def test_a_row_as_a_claim_returns_it_passes_the_checks() -> None:
    full = row(slot=0, tick_at=TICK, attempt=1, started_at=TICK)
    assert checked_row(full) is full
    assert checked_row(row(None)) == row(None)  # a MySQL claim by sequence: details unknown


def test_finishing_twice_is_refused() -> None:
    claim = ClaimCore(row())
    claim._may_finish()
    claim._finish_done(WorkStatus.SUCCESS, written=True)
    assert claim.finished
    with pytest.raises(ClaimLostError, match="already finished as SUCCESS"):
        claim._may_finish()
    with pytest.raises(ClaimLostError, match="nothing to keep alive"):
        claim._may_heartbeat()


def test_a_finish_that_wrote_nothing_marks_the_claim_lost() -> None:
    claim = ClaimCore(row())
    with pytest.raises(ClaimLostError, match="no longer holds row 7"):
        claim._finish_done(WorkStatus.FAILED, written=False)
    assert claim.lost
    assert not claim.finished


def test_a_heartbeat_that_found_the_row_gone_marks_the_claim_lost() -> None:
    claim = ClaimCore(row())
    with pytest.raises(ClaimLostError):
        claim._heartbeat_done(kept=False)
    assert claim.lost


def test_the_heartbeat_period_is_a_third_of_the_lease_and_never_under_half_a_second() -> None:
    assert heartbeat_period(30) == 10
    assert heartbeat_period(1) == 0.5
    assert heartbeat_period(None) == 100  # the default lease, 300 s


# -- keep-alive steps -----------------------------------------------------------------------


def test_keepalive_beats_every_third_of_the_lease_until_stopped() -> None:
    script = Script(False, None, False, None, True)
    script.run(ClaimCore(row(lease=30))._keepalive_steps())
    assert script.steps == [Idle(10), BEAT, Idle(10), BEAT, Idle(10)]


def test_keepalive_reads_a_lease_the_claim_did_not_return() -> None:
    claim = ClaimCore(row(lease=None))
    script = Script(60, True)
    script.run(claim._keepalive_steps())
    assert script.steps == [READ_LEASE, Idle(20)]


def test_keepalive_falls_back_to_the_default_lease_if_it_cannot_read_one() -> None:
    script = Script(Raise(mysql_error(2006)), True)
    script.run(ClaimCore(row(lease=None))._keepalive_steps())
    assert script.steps == [READ_LEASE, Idle(100)]


def test_keepalive_stops_for_good_once_the_claim_is_lost() -> None:
    script = Script(False, Raise(ClaimLostError("gone")))
    script.run(ClaimCore(row(lease=30))._keepalive_steps())
    assert script.steps == [Idle(10), BEAT]


def test_keepalive_outlives_an_outage_with_shorter_waits_then_resumes_its_period() -> None:
    away = mysql_error(2006, "MySQL server has gone away")
    script = Script(False, Raise(away), False, None, True)
    script.run(ClaimCore(row(lease=30))._keepalive_steps())
    retry = script.steps[2]
    assert isinstance(retry, Idle)
    assert 1.25 <= retry.seconds <= 2.5  # a quarter of the period, jittered down to half that
    assert script.steps[3:] == [BEAT, Idle(10)]


# -- recording the outcome ------------------------------------------------------------------


def test_recording_success_is_one_step() -> None:
    script = Script(None)
    script.run(ClaimCore(row())._record_steps(None))
    assert script.steps == [Record(None)]


def test_recording_is_tried_again_while_the_database_is_away_and_the_lease_lasts() -> None:
    failure = RuntimeError("the body failed")
    away = mysql_error(2013, "Lost connection")
    script = Script(Raise(away), None, None)
    script.run(ClaimCore(row(lease=30))._record_steps(failure))
    assert script.steps[0] == Record(failure)
    pause = script.steps[1]
    assert isinstance(pause, Sleep)
    assert 0.125 <= pause.seconds <= 0.25
    assert script.steps[2] == Record(failure)


def test_recording_gives_up_once_the_lease_has_run_out() -> None:
    """After the lease, recovery may have closed the row: the fenced write would change nothing."""
    claim = ClaimCore(row(lease=30))
    claim._held_until = time.monotonic() - 1  # the lease ran out during the body
    away = mysql_error(2013)
    with pytest.raises(type(away)):
        Script(Raise(away)).run(claim._record_steps(None))


def test_recording_does_not_retry_an_error_that_is_not_the_database_being_away() -> None:
    script = Script(Raise(mysql_error(1062, "Duplicate entry")))
    with pytest.raises(Exception, match="1062"):
        script.run(ClaimCore(row())._record_steps(None))
    with pytest.raises(ClaimLostError):
        Script(Raise(ClaimLostError("recovered"))).run(ClaimCore(row())._record_steps(None))


# -- what a failure is recorded as ----------------------------------------------------------


def test_describe_gives_the_type_and_the_text() -> None:
    assert describe(ValueError("bad input")) == "ValueError: bad input"
    assert describe(KeyError()) == "KeyError"
    assert describe(asyncio.CancelledError()) == (
        "CancelledError: the task running the claim was cancelled"
    )


def test_describe_never_raises_on_an_exception_whose_text_fails() -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert describe(Unprintable()) == "Unprintable: (its message could not be read)"


def test_error_text_takes_a_string_an_exception_or_none() -> None:
    assert error_text("disk full") == "disk full"
    assert error_text(None) is None
    assert error_text(OSError("disk full")) == "OSError: disk full"
    with pytest.raises(InvalidArgumentError, match="not int"):
        error_text(3)
