"""Recovery and pruning steps (``_core.maintenance``), and outage bookkeeping (``_core.outage``).

Pruning deletes in batches until one comes back short, or a pass's quota
is used; recovery reports one line and one event per tick and kind. An
outage logs once when it starts and once when it ends, and hands out
jittered waits that double up to a cap.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta, timezone

import pytest

from worksync_sa._core.maintenance import check_prune, prune_steps, recover_steps
from worksync_sa._core.outage import Outage, is_stop
from worksync_sa._run.steps import Call
from worksync_sa.errors import InvalidArgumentError
from worksync_sa.events import Event, Events
from worksync_sa.models import table_named
from worksync_sa.repository import MaintenanceRepository, Recovered

from .scripted import Script, keywords, whats

UTC = timezone.utc
NOW = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
REPO = MaintenanceRepository(table_named("works"))


def test_pruning_goes_on_until_a_batch_comes_back_short() -> None:
    script = Script(1000, 1000, 999)
    assert script.run(prune_steps(REPO, timedelta(days=7), 1000, None, now=NOW)) == 2999
    assert whats(script.steps) == ["prune", "prune", "prune"]
    assert all(keywords(step)["batch_size"] == 1000 for step in script.steps)


def test_pruning_stops_after_its_quota_of_batches() -> None:
    script = Script(10, 10)
    assert script.run(prune_steps(REPO, timedelta(days=7), 10, batches=2, now=NOW)) == 20
    assert len(script.steps) == 2


def test_pruning_without_a_time_reads_the_database_clock_for_its_cutoff() -> None:
    script = Script(NOW, 0)
    assert script.run(prune_steps(REPO, timedelta(days=2), 100, None)) == 0
    clock, prune = script.steps
    assert isinstance(clock, Call)
    assert clock.what == "clock"
    assert keywords(prune)["cutoff"] == NOW - timedelta(days=2)


@pytest.mark.parametrize(
    ("older_than", "batch_size", "wrong"),
    [
        (timedelta(days=1, hours=23), 10, "older_than"),
        ("7d", 10, "older_than"),
        (timedelta(days=2), 0, "batch_size"),
        (timedelta(days=2), 100_001, "batch_size"),
        (timedelta(days=2), True, "batch_size"),
    ],
)
def test_prune_refuses_under_two_days_and_odd_batch_sizes(
    older_than: object, batch_size: object, wrong: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=wrong):
        check_prune(older_than, batch_size)


def test_recovery_reports_one_event_per_tick_and_kind(caplog: pytest.LogCaptureFixture) -> None:
    events: list[Event] = []
    recovered = [
        Recovered("report", "s1", "lease"),
        Recovered("report", "s1", "lease"),
        Recovered("report", "s1", "requeued"),
        Recovered("report", "s2", "missed"),
    ]
    script = Script(recovered)
    with caplog.at_level(logging.WARNING):
        assert script.run(recover_steps(REPO, Events([events.append]), None)) == 4
    assert whats(script.steps) == ["recover"]
    assert [(e.action, e.sequence, e.count, e.status) for e in events] == [
        ("recovered", "s1", 2, "FAILED"),
        ("recovered", "s1", 1, "QUEUED"),
        ("missed", "s2", 1, None),
    ]
    assert len(caplog.records) == 3


def test_an_outage_logs_once_at_its_start_and_once_at_its_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.getLogger("tests.unit.outage")
    outage = Outage(log, "the pass", base=1.0, cap=4.0)
    with caplog.at_level(logging.WARNING, logger=log.name):
        waits = [outage.failed(OSError("down")) for _ in range(5)]
        outage.succeeded()
        outage.succeeded()  # nothing to say: no outage
    for wait, ceiling in zip(waits, (1.0, 2.0, 4.0, 4.0, 4.0), strict=True):
        assert ceiling / 2 <= wait <= ceiling
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2
    assert messages[0].startswith("the pass failed, retrying with backoff")
    assert "after 5 failures" in messages[1]


def test_after_an_outage_the_backoff_starts_small_again() -> None:
    outage = Outage(logging.getLogger("tests.unit.outage"), "x", base=1.0, cap=8.0)
    for _ in range(4):
        outage.failed(OSError())
    outage.succeeded()
    assert outage.failed(OSError()) <= 1.0


def test_only_ctrl_c_and_cancellation_stop_a_loop() -> None:
    assert is_stop(KeyboardInterrupt())
    assert is_stop(asyncio.CancelledError())
    assert not is_stop(SystemExit(0))
    assert not is_stop(GeneratorExit())
    assert not is_stop(OSError())
