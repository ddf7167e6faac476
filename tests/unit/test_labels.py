"""Reading a tick back from the original's label: its wall time in a zone, as an instant.

The expected instants are written out by hand from the zone's published
rules (Europe/Berlin: CET, UTC+1; CEST, UTC+2 from the last Sunday of March
01:00 UTC to the last Sunday of October 01:00 UTC), not computed by the
package.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from worksync_sa import local_sequence
from worksync_sa.errors import InvalidConfigError
from worksync_sa.sequences import kind_zone, label_instant, spec_zone, zone_named

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, sec: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, sec, tzinfo=UTC)


@pytest.mark.parametrize(
    ("label", "instant"),
    [
        ("2026-01-05 10:00:00", utc(2026, 1, 5, 9)),  # winter: UTC+1
        ("2026-07-01 10:00:00", utc(2026, 7, 1, 8)),  # summer: UTC+2
        ("2026-03-29 01:59:59", utc(2026, 3, 29, 0, 59, 59)),  # the last second before the gap
        ("2026-03-29 02:30:00", utc(2026, 3, 29, 1, 30)),  # skipped: shifted forward to 03:30
        ("2026-03-29 03:00:00", utc(2026, 3, 29, 1)),  # the first wall time after the gap
        ("2026-10-25 02:30:00", utc(2026, 10, 25, 0, 30)),  # repeated: the first of the two
        ("2026-10-25 03:00:00", utc(2026, 10, 25, 2)),  # after the repeated hour
    ],
)
def test_a_label_is_its_wall_time_in_the_zone(label: str, instant: datetime) -> None:
    assert label_instant(label, BERLIN) == instant


def test_a_label_read_back_names_the_tick_that_local_sequence_labelled() -> None:
    """Every tick of a year, an hour apart, but the second of each repeated hour."""
    sequence = local_sequence("Europe/Berlin")
    tick = utc(2026, 1, 1)
    repeated = utc(2026, 10, 25, 1)  # 02:00..02:59 CET, whose labels 01:00..01:59 UTC had
    while tick < utc(2027, 1, 1):
        if tick != repeated:
            assert label_instant(sequence(tick), BERLIN) == tick
        tick += timedelta(hours=1)
    assert label_instant(sequence(repeated), BERLIN) == repeated - timedelta(hours=1)


def test_without_a_zone_a_label_is_utc_and_a_label_that_is_no_time_is_none() -> None:
    assert label_instant("2026-01-05 10:00:00") == utc(2026, 1, 5, 10)
    for label in ("2026-W02", "", "2026-01-05T10:00:00", "2026-02-30 00:00:00"):
        assert label_instant(label, BERLIN) is None
    assert label_instant("0001-01-01 00:30:00", BERLIN) is None  # before the year 1 in UTC


def test_the_zone_a_spec_records() -> None:
    ours = "sequence=local:Europe/Berlin; max_run=2; cron=* * * * *; timezone=UTC"
    assert spec_zone(ours) == "Europe/Berlin"
    for other in ("sequence=utc; max_run=1; cron=* * * * *; timezone=Europe/Berlin", "", None):
        assert spec_zone(other) is None
    assert spec_zone("sequence=custom:m.f; max_run=1") is None
    assert kind_zone("local:Asia/Tokyo") == "Asia/Tokyo"
    assert kind_zone("utc") is None


def test_a_zone_that_is_none_is_refused_by_name() -> None:
    assert zone_named("Europe/Berlin", "sequence_zone") == BERLIN
    for bad in ("Mars/Olympus", "", None, 3):
        with pytest.raises(InvalidConfigError, match="sequence_zone"):
            zone_named(bad, "sequence_zone")
