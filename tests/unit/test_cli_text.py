"""What the commands print, from values alone: instants, counts, tables, a pass's report.

Output is for people at a terminal or reading a CI log: UTC instants without
needless sub-seconds, durations as they are typed, columns aligned, plurals
right. No database: the values are given.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from worksync_sa._core.passes import PassReport
from worksync_sa.cli.schedule import describe_pass
from worksync_sa.cli.text import format_moment, format_table, plural
from worksync_sa.durations import format_duration, parse_duration

UTC = timezone.utc


def test_instants_print_in_utc_with_sub_seconds_only_when_there_are_some() -> None:
    berlin = timezone(timedelta(hours=1))
    assert format_moment(datetime(2026, 3, 1, 11, 0, 5, tzinfo=berlin)) == "2026-03-01 10:00:05"
    assert format_moment(datetime(2026, 3, 1, 10, 0, 5, 250000, tzinfo=UTC)) == (
        "2026-03-01 10:00:05.25"
    )
    assert format_moment(None) == "-"


def test_counts_say_their_noun_in_the_right_number() -> None:
    assert plural(1, "row") == "1 row"
    assert plural(0, "row") == "0 rows"
    assert plural(2, "tick") == "2 ticks"


def test_tables_align_their_columns_text_left_figures_right() -> None:
    lines = format_table(["work", "ticks"], [["report", "3"], ["a", "120"]], right=[1])
    assert lines == [
        "work    ticks",
        "report      3",
        "a         120",
    ]


def test_durations_print_as_they_are_typed() -> None:
    assert format_duration(timedelta(milliseconds=250)) == "250ms"
    assert format_duration(timedelta(seconds=4.7)) == "4.7s"
    assert format_duration(timedelta(seconds=90)) == "1m30s"
    assert format_duration(timedelta(days=2, hours=3)) == "2d3h"
    assert format_duration(timedelta(seconds=-2)) == "-2s"
    assert format_duration(timedelta(0)) == "0s"
    assert format_duration(None) == "-"


def test_durations_read_back_as_written() -> None:
    for text in ("250ms", "4.7s", "1m30s", "2d3h", "7d"):
        assert format_duration(parse_duration(text)) == text
    assert parse_duration("0.1s") == timedelta(milliseconds=100)  # exact, not 99.999 ms


def test_a_pass_is_described_in_one_line_plus_one_per_skipping_work() -> None:
    report = PassReport(
        now=datetime(2026, 3, 1, 10, 0, 30, tzinfo=UTC),
        created=4,
        planned=10,
        batches=1,
        recovered=2,
        pruned=0,
        skipped={"report": 59},
        closed=3,
    )
    assert describe_pass(report, "works") == [
        "pass at 2026-03-01 10:00:30 UTC on table 'works': 10 rows planned, 4 created in "
        "1 batch, 3 closed as surplus, 2 recovered, 0 pruned",
        "skipped 59 ticks of work 'report', missed by more than catchup",
    ]


def test_a_pass_of_several_batches_says_batches() -> None:
    report = PassReport(now=datetime(2026, 3, 1, tzinfo=UTC), created=6000, planned=6000, batches=2)
    assert "6000 created in 2 batches," in describe_pass(report, "works")[0]
    idle = PassReport(now=datetime(2026, 3, 1, tzinfo=UTC), created=0, planned=0, batches=0)
    assert "0 created in 0 batches," in describe_pass(idle, "works")[0]  # never "0 batchs"
