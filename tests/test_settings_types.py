"""Durations are accepted as strings wherever a duration is accepted, and held as timedeltas."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from worksync_sa import InvalidArgumentError, InvalidWorkError, SchedulerConfig, Work
from worksync_sa._sql.text import check_text


def test_a_work_takes_its_lease_and_grace_as_durations() -> None:
    work = Work("report", "0 2 * * *", lease="5m", grace="1h30m")
    assert (work.lease, work.grace) == (timedelta(minutes=5), timedelta(minutes=90))
    assert (work.lease_seconds, work.grace_seconds) == (300, 5400)
    assert work == Work("report", "0 2 * * *", lease=timedelta(minutes=5), grace="90m")
    assert dataclasses.replace(work, max_run=2).lease == timedelta(minutes=5)


@pytest.mark.parametrize(
    ("given", "message"),
    [("0s", "positive"), ("1.5s", "whole number"), ("soon", "not valid"), (5, "not int")],
)
def test_a_bad_lease_names_the_work_and_the_field(given: object, message: str) -> None:
    with pytest.raises(InvalidWorkError, match=rf"work 'w': lease.*{message}"):
        Work("w", "* * * * *", lease=given)  # type: ignore[arg-type]


def test_scheduler_settings_are_held_as_timedeltas() -> None:
    config = SchedulerConfig(lookahead="5m", interval="@every 30s", retention="3d")
    assert config.lookahead == timedelta(minutes=5)
    assert config.interval == timedelta(seconds=30)
    assert config.catchup == timedelta(seconds=45)  # one and a half intervals
    assert config.retention == timedelta(days=3)
    assert config.max_backoff == timedelta(seconds=30)
    assert all(
        isinstance(getattr(config, f.name), timedelta)
        for f in dataclasses.fields(config)
        if f.name not in ("sequence", "retention", "leave_to_original")  # None unless set
    )


def test_text_checks_raise_the_packages_own_error() -> None:
    with pytest.raises(InvalidArgumentError, match="ends with whitespace"):
        check_text("2026-01-01 ", "sequence")
    with pytest.raises(InvalidArgumentError, match="name is empty"):
        check_text("", "name")
