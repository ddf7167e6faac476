"""Settings and small parsers: durations, SchedulerConfig, RetryPolicy, table names."""

from __future__ import annotations

from datetime import timedelta

import pytest

from worksync_sa import InvalidConfigError, RetryPolicy, SchedulerConfig, default_sequence
from worksync_sa.durations import parse_duration, parse_every
from worksync_sa.models import validate_table_name, version_table_for


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2s", timedelta(seconds=2)),
        ("5m", timedelta(minutes=5)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1.5h", timedelta(minutes=90)),
        ("250ms", timedelta(milliseconds=250)),
        ("10us", timedelta(microseconds=10)),
        ("10µs", timedelta(microseconds=10)),
        ("1000ns", timedelta(microseconds=1)),
        (" 90s ", timedelta(seconds=90)),
        ("7d", timedelta(days=7)),
    ],
)
def test_go_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "5", "5 m", "m5", "-5s", "0s", "1ns", "5y", "1h-30m"])
def test_bad_go_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_every_spec() -> None:
    assert parse_every("@every 2s") == timedelta(seconds=2)
    assert parse_every("*/5 * * * *") is None


class TestSchedulerConfig:
    def test_defaults_are_the_originals(self) -> None:
        config = SchedulerConfig()
        assert config.lookahead == timedelta(minutes=10)
        assert config.interval == timedelta(minutes=1)
        assert config.sequence is default_sequence

    def test_interval_accepts_the_originals_every_spec(self) -> None:
        config = SchedulerConfig(lookahead=timedelta(seconds=5), interval="@every 2s")
        assert config.interval == timedelta(seconds=2)
        assert config.interval == timedelta(seconds=2)

    def test_durations_accept_go_strings(self) -> None:
        config = SchedulerConfig(lookahead="10m", interval="30s")
        assert config.lookahead == timedelta(minutes=10)

    @pytest.mark.parametrize(
        ("kwargs", "named"),
        [
            ({"lookahead": timedelta(0)}, "lookahead"),
            ({"lookahead": timedelta(seconds=-1)}, "lookahead"),
            ({"interval": "@every soon"}, "interval"),
            ({"interval": 60}, "interval"),
            ({"lookahead": timedelta(seconds=30), "interval": timedelta(minutes=1)}, "lookahead"),
            ({"sequence": "not callable"}, "sequence"),
            ({"leave_to_original": "1m"}, "leave_to_original .* longer than interval"),
            ({"leave_to_original": "10m"}, "leave_to_original .* shorter than lookahead"),
            ({"leave_to_original": "soon"}, "leave_to_original"),
        ],
    )
    def test_bad_settings_name_the_setting(self, kwargs: dict[str, object], named: str) -> None:
        with pytest.raises(InvalidConfigError, match=named):
            SchedulerConfig(**kwargs)  # type: ignore[arg-type]

    def test_leave_to_original_is_off_unless_set(self) -> None:
        assert SchedulerConfig().leave_to_original is None
        config = SchedulerConfig(lookahead="10m", interval="1m", leave_to_original="5m")
        assert config.leave_to_original == timedelta(minutes=5)

    def test_is_frozen(self) -> None:
        config = SchedulerConfig()
        with pytest.raises(AttributeError):
            config.lookahead = timedelta(1)  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs", [{"attempts": 0}, {"attempts": 1.5}, {"base_delay": -1}, {"max_delay": "1"}]
)
def test_bad_retry_policy(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidConfigError, match="RetryPolicy"):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["works", "jobs_2", "_private", "W" * 40])
def test_good_table_names(name: str) -> None:
    assert validate_table_name(name) == name
    assert version_table_for(name) == f"{name}_alembic_version"


@pytest.mark.parametrize(
    "name", ["", "1works", "works; DROP TABLE x", "wörks", "w-orks", "w" * 41, None, "works "]
)
def test_bad_table_names(name: object) -> None:
    with pytest.raises(InvalidConfigError, match="table name"):
        validate_table_name(name)
