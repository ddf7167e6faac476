"""What an operator's action decides, with plain values: refusals, labels, settings, ticks."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from worksync_sa._core.actions import (
    checked_reason,
    plan_retry,
    policy_of_row,
    run_now_label,
    run_now_slots,
    sequence_for,
    upcoming,
    work_of_spec,
)
from worksync_sa.errors import InvalidArgumentError
from worksync_sa.rows import TickRow

from .. import cron_reference as reference

UTC = timezone.utc
T = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
QUEUED, RUNNING, SUCCESS, FAILED = 1, 2, 3, 4


def row(slot: int | None, status: int, closed_by: str | None = None, ident: int = 1) -> TickRow:
    return TickRow(ident, "2026-03-01 10:00:00", slot, T, status, closed_by, 1, 1, 60)


def test_a_retry_within_grace_requeues_every_failed_row_that_holds_its_slot() -> None:
    rows = [
        row(0, FAILED, "worker", 1),
        row(1, SUCCESS, "worker", 2),
        row(2, FAILED, "lease", 3),
        row(None, FAILED, "surplus", 4),
    ]
    plan = plan_retry("w", "x", rows, T + timedelta(seconds=30), past_grace=False)
    assert (plan.row_ids, plan.moves, plan.past_grace) == ((1, 3), None, False)


def test_a_retry_past_grace_moves_the_rows_to_now_in_negative_slots() -> None:
    now = T + timedelta(minutes=5)
    rows = [row(0, FAILED, "missed", 1), row(-2, FAILED, "worker", 2)]
    with pytest.raises(InvalidArgumentError, match="past its grace"):
        plan_retry("w", "x", rows, now, past_grace=False)
    plan = plan_retry("w", "x", rows, now, past_grace=True)
    assert plan.moves == ((now, -1), (now, -2))


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([], "has no tick"),
        ([row(0, RUNNING), row(1, FAILED, "worker", 2)], "is running"),
        ([row(0, QUEUED)], "still queued"),
        ([row(0, SUCCESS, "worker")], "succeeded"),
        ([row(None, FAILED, "paused")], "closed before any claim"),
    ],
)
def test_a_retry_is_refused_with_its_reason(rows: list[TickRow], message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        plan_retry("w", "x", rows, T, past_grace=True)


def test_a_run_now_tick_has_a_label_and_slots_no_scheduler_makes() -> None:
    label = run_now_label(T.replace(microsecond=123456), "abc123")
    assert label == "run-now 2026-03-01T10:00:00.123456Z abc123"
    assert run_now_label(T) != run_now_label(T)  # a nonce of its own each time
    assert run_now_slots(3) == [-1, -2, -3]


def test_a_run_now_tick_takes_max_run_from_the_spec_else_from_its_ticks_slots() -> None:
    spec = "sequence=utc; max_run=4; cron=* * * * *; timezone=UTC"
    assert policy_of_row(30, None, 2, spec, 1).max_run == 4
    fallback = policy_of_row(None, None, None, None, 3)
    assert (fallback.max_run, fallback.lease_seconds, fallback.grace_seconds) == (3, 300, 60)


def test_reasons_are_checked_and_trimmed() -> None:
    assert checked_reason(None) == ""
    assert checked_reason("  deploy ") == "deploy"
    with pytest.raises(InvalidArgumentError, match="256 characters"):
        checked_reason("x" * 256)
    with pytest.raises(InvalidArgumentError, match="NUL"):
        checked_reason("a\x00b")


def test_next_ticks_from_a_spec_match_a_brute_force_matcher() -> None:
    spec = "sequence=local:Europe/Berlin; max_run=1; cron=15 2 * * *; timezone=Europe/Berlin"
    work = work_of_spec("w", spec)
    assert work is not None
    sequence = sequence_for(spec)
    assert sequence is not None
    start = datetime(2026, 3, 27, tzinfo=UTC)  # across the spring change (02:15 is skipped)
    found = upcoming(work, sequence, start, 5)
    expected = reference.ticks_in_zone(
        reference.parse("15 2 * * *"), "Europe/Berlin", start, start + timedelta(days=10)
    )[:5]
    assert [tick for tick, _ in found] == expected
    assert [label for _, label in found] == [
        tick.astimezone(ZoneInfo("Europe/Berlin")).strftime("%Y-%m-%d %H:%M:%S")
        for tick in expected
    ]
    assert (
        sequence_for("sequence=custom:app.label; max_run=1; cron=* * * * *; timezone=UTC") is None
    )
    original = work_of_spec(
        "w", "sequence=utc; max_run=2; cron=*/10 * * * * * (original syntax); timezone=UTC"
    )
    assert original is not None
    assert (original.cron, original.cron_syntax) == ("*/10 * * * * *", "original")
    assert original.max_run == 2
