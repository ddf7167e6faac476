"""Work blueprints: validation, cron flavours, ticks, DST, sequences. Pure, no database."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from worksync_sa import InvalidWorkError, Work, default_sequence

UTC = timezone.utc


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


def hhmm(ticks: list[datetime]) -> list[str]:
    return [t.strftime("%H:%M:%S") for t in ticks]


class TestCronFlavours:
    def test_five_fields_are_standard_cron(self) -> None:
        work = Work("w", "*/15 * * * *")
        assert hhmm(work.ticks(utc(2026, 1, 1), utc(2026, 1, 1, 1))) == [
            "00:15:00",
            "00:30:00",
            "00:45:00",
            "01:00:00",
        ]

    def test_six_fields_put_seconds_first_like_the_original(self) -> None:
        work = Work("w", "0,10,20,30,40,50 * * * * *")
        assert hhmm(work.ticks(utc(2026, 1, 1), utc(2026, 1, 1, 0, 1))) == [
            "00:00:10",
            "00:00:20",
            "00:00:30",
            "00:00:40",
            "00:00:50",
            "00:01:00",
        ]

    @pytest.mark.parametrize(
        ("descriptor", "after", "expected"),
        [
            ("@hourly", utc(2026, 1, 1, 0, 30), utc(2026, 1, 1, 1)),
            ("@daily", utc(2026, 1, 1, 0, 30), utc(2026, 1, 2)),
            ("@midnight", utc(2026, 1, 1, 0, 30), utc(2026, 1, 2)),
            ("@weekly", utc(2026, 1, 1), utc(2026, 1, 4)),  # the next Sunday
            ("@monthly", utc(2026, 1, 1), utc(2026, 2, 1)),
            ("@yearly", utc(2026, 1, 1), utc(2027, 1, 1)),
            ("@annually", utc(2026, 1, 1), utc(2027, 1, 1)),
        ],
    )
    def test_descriptors(self, descriptor: str, after: datetime, expected: datetime) -> None:
        assert Work("w", descriptor).next_tick(after) == expected

    def test_every_is_aligned_to_the_epoch_whatever_the_window(self) -> None:
        work = Work("w", "@every 90s")
        first = work.ticks(utc(2026, 1, 1, 0, 0, 7), utc(2026, 1, 1, 0, 5))
        later = work.ticks(utc(2026, 1, 1, 0, 2), utc(2026, 1, 1, 0, 5))
        assert hhmm(first) == ["00:01:30", "00:03:00", "00:04:30"]
        assert later == first[1:]
        assert all(t.timestamp() % 90 == 0 for t in first)

    def test_every_accepts_go_durations(self) -> None:
        assert Work("w", "@every 1h30m").next_tick(utc(2026, 1, 1)) == utc(2026, 1, 1, 1, 30)
        assert Work("w", "@every 2s").next_tick(utc(2026, 1, 1)) == utc(2026, 1, 1, 0, 0, 2)

    def test_window_excludes_its_start_and_includes_its_end(self) -> None:
        work = Work("w", "* * * * *")
        assert work.ticks(utc(2026, 1, 1, 0, 1), utc(2026, 1, 1, 0, 3)) == [
            utc(2026, 1, 1, 0, 2),
            utc(2026, 1, 1, 0, 3),
        ]
        # A start with microseconds still finds the next whole tick.
        assert work.ticks(utc(2026, 1, 1, 0, 0, 59, 999_999), utc(2026, 1, 1, 0, 1)) == [
            utc(2026, 1, 1, 0, 1)
        ]

    def test_naive_window_is_utc(self) -> None:
        work = Work("w", "0 * * * *")
        assert work.ticks(datetime(2026, 1, 1), datetime(2026, 1, 1, 1)) == [utc(2026, 1, 1, 1)]

    def test_ticks_follow_the_works_zone(self) -> None:
        work = Work("w", "0 9 * * *", timezone="Asia/Tokyo")
        assert work.next_tick(utc(2025, 12, 31, 12)) == utc(2026, 1, 1, 0)  # 09:00 JST

    def test_works_are_equal_by_value(self) -> None:
        assert Work("w", "* * * * *", 2) == Work("w", "* * * * *", 2)


NEW_YORK_SPRING = (utc(2026, 3, 8, 5), utc(2026, 3, 8, 9))  # 00:00 EST .. 05:00 EDT
NEW_YORK_FALL = (utc(2026, 11, 1, 4), utc(2026, 11, 1, 8))  # 00:00 EDT .. 03:00 EST


@pytest.mark.parametrize(
    ("zone", "cron", "window", "expected_utc"),
    [
        # Spring forward, 02:00 EST -> 03:00 EDT: a wall time inside the gap fires once, at 03:00.
        ("America/New_York", "30 2 * * *", NEW_YORK_SPRING, ["07:00:00"]),
        ("America/New_York", "0 30 2 * * *", NEW_YORK_SPRING, ["07:00:00"]),
        # An hourly job fires once per real hour; there is no 02:00 that day.
        (
            "America/New_York",
            "0 * * * *",
            NEW_YORK_SPRING,
            ["06:00:00", "07:00:00", "08:00:00", "09:00:00"],
        ),
        (
            "America/New_York",
            "0 0,30 * * * *",
            (utc(2026, 3, 8, 6), utc(2026, 3, 8, 7, 30)),
            ["06:30:00", "07:00:00", "07:30:00"],
        ),
        # Fall back, 02:00 EDT -> 01:00 EST: a fixed-time job fires once, at the first 01:30 ...
        ("America/New_York", "30 1 * * *", NEW_YORK_FALL, ["05:30:00"]),
        ("America/New_York", "0 30 1 * * *", NEW_YORK_FALL, ["05:30:00"]),
        # ... while jobs with * in minute or hour fire at every real matching instant.
        (
            "America/New_York",
            "0 * * * *",
            NEW_YORK_FALL,
            ["05:00:00", "06:00:00", "07:00:00", "08:00:00"],
        ),
        (
            "America/New_York",
            "0 0,30 * * * *",
            (utc(2026, 11, 1, 5), utc(2026, 11, 1, 7)),
            ["05:30:00", "06:00:00", "06:30:00", "07:00:00"],
        ),
        (
            "America/New_York",
            "*/30 1 * * *",
            NEW_YORK_FALL,
            ["05:00:00", "05:30:00", "06:00:00", "06:30:00"],
        ),
        # Europe: spring forward on 29 March (02:00 CET -> 03:00 CEST),
        # fall back on 25 October (03:00 CEST -> 02:00 CET).
        ("Europe/Berlin", "30 2 * * *", (utc(2026, 3, 28, 23), utc(2026, 3, 29, 3)), ["01:00:00"]),
        (
            "Europe/Berlin",
            "30 2 * * *",
            (utc(2026, 10, 24, 23), utc(2026, 10, 25, 3)),
            ["00:30:00"],
        ),
        (
            "Europe/Berlin",
            "0 30 2 * * *",
            (utc(2026, 10, 24, 23), utc(2026, 10, 25, 3)),
            ["00:30:00"],
        ),
    ],
)
def test_dst_transitions(
    zone: str, cron: str, window: tuple[datetime, datetime], expected_utc: list[str]
) -> None:
    ticks = Work("w", cron, timezone=zone).ticks(*window)
    assert hhmm(ticks) == expected_utc
    # UTC sequences never collide, even when two ticks share a local wall time.
    assert len({default_sequence(t) for t in ticks}) == len(ticks)


def test_the_repeated_hour_gets_two_sequences() -> None:
    work = Work("w", "0 * * * *", timezone="America/New_York")
    first, second = work.ticks(utc(2026, 11, 1, 4, 30), utc(2026, 11, 1, 6))
    zone = ZoneInfo("America/New_York")
    assert first.astimezone(zone).strftime("%H:%M") == second.astimezone(zone).strftime("%H:%M")
    assert default_sequence(first) == "2026-11-01 05:00:00"
    assert default_sequence(second) == "2026-11-01 06:00:00"


class TestDefaultSequence:
    def test_layout_is_the_originals(self) -> None:
        assert default_sequence(utc(2026, 1, 2, 3, 4, 5, 678)) == "2026-01-02 03:04:05"

    def test_aware_ticks_are_labelled_in_utc(self) -> None:
        tick = datetime(2026, 7, 1, 9, 0, tzinfo=ZoneInfo("Europe/Berlin"))
        assert default_sequence(tick) == "2026-07-01 07:00:00"

    def test_naive_ticks_are_utc(self) -> None:
        assert default_sequence(datetime(2026, 7, 1, 9)) == "2026-07-01 09:00:00"


BAD_WORKS = [
    # (kwargs, field named in the message)
    ({"name": "w", "cron": "not a cron"}, "cron"),
    ({"name": "w", "cron": "61 * * * *"}, "cron"),
    ({"name": "w", "cron": "* * *"}, "cron"),
    ({"name": "w", "cron": "* * * * * * *"}, "cron"),
    ({"name": "w", "cron": ""}, "cron"),
    ({"name": "w", "cron": "0 0 30 2 *"}, "cron"),
    ({"name": "w", "cron": "H * * * *"}, "cron"),
    ({"name": "w", "cron": "R * * * *"}, "cron"),
    ({"name": "w", "cron": "@sometimes"}, "cron"),
    ({"name": "w", "cron": "@every"}, "cron"),
    ({"name": "w", "cron": "@every 0s"}, "cron"),
    ({"name": "w", "cron": "@every 1500ms"}, "cron"),
    ({"name": "w", "cron": "@every 5 minutes"}, "cron"),
    ({"name": "w", "cron": 5}, "cron"),
    ({"name": "w", "cron": "* * * * *", "max_run": 0}, "max_run"),
    ({"name": "w", "cron": "* * * * *", "max_run": -1}, "max_run"),
    ({"name": "w", "cron": "* * * * *", "max_run": 1.5}, "max_run"),
    ({"name": "w", "cron": "* * * * *", "max_run": "2"}, "max_run"),
    ({"name": "w", "cron": "* * * * *", "max_run": True}, "max_run"),
    ({"name": "w", "cron": "* * * * *", "max_run": 10_001}, "max_run"),
    ({"name": "x" * 256, "cron": "* * * * *"}, "name"),
    ({"name": "", "cron": "* * * * *"}, "name"),
    ({"name": "trailing ", "cron": "* * * * *"}, "name"),
    ({"name": "nul\x00", "cron": "* * * * *"}, "name"),
    ({"name": 42, "cron": "* * * * *"}, "name"),
    ({"name": "w", "cron": "* * * * *", "timezone": "Mars/Olympus"}, "timezone"),
    ({"name": "w", "cron": "* * * * *", "timezone": ""}, "timezone"),
    ({"name": "w", "cron": "* * * * *", "timezone": "../../etc/passwd"}, "timezone"),
    ({"name": "w", "cron": "* * * * *", "timezone": None}, "timezone"),
]


@pytest.mark.parametrize(("kwargs", "field"), BAD_WORKS)
def test_bad_works_name_the_work_and_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidWorkError) as caught:
        Work(**kwargs)  # type: ignore[arg-type]
    assert isinstance(caught.value, ValueError)
    message = str(caught.value)
    assert field in message
    assert repr(kwargs["name"])[:20] in message


def test_name_limit_is_255_characters_inclusive() -> None:
    assert Work("x" * 255, "* * * * *").name == "x" * 255


def test_quotes_and_sql_are_fine_in_names() -> None:
    name = 'it\'s "quoted"; DROP TABLE works; --'
    assert Work(name, "* * * * *").name == name


def test_max_run_at_its_limit_is_accepted() -> None:
    assert Work("w", "* * * * *", max_run=10_000).max_run == 10_000


def test_every_tick_after_a_long_gap_is_exact() -> None:
    work = Work("w", "@every 7s")
    tick = work.next_tick(utc(2026, 5, 5, 5, 5, 5))
    assert tick.timestamp() % 7 == 0
    assert timedelta(0) < tick - utc(2026, 5, 5, 5, 5, 5) <= timedelta(seconds=7)
