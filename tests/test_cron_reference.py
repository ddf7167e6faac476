"""Cron ticks as cron computes them, checked against an independent brute-force reference.

``cron_reference`` is written from the cron rules and shares no code with
croniter or ``worksync_sa.cron``. A seeded generator makes thousands of
expressions in both field counts (equal-end ranges, steps on ranges and on
``*``, lists, names in any case, ``?``, every mix of restricted day fields,
month ends and leap days); each must give the reference's next 20 ticks from
several starting instants, or be refused as never firing when the reference
finds no tick in 40 years. The seeds are fixed: a failure names its
expression and reproduces.
"""

from __future__ import annotations

import calendar
import itertools
import os
import random
import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from worksync_sa import InvalidWorkError, Work

from . import cron_reference as reference

UTC = timezone.utc
SEED = 20261130
EXPRESSIONS = int(os.environ.get("WORKSYNC_CRON_EXPRESSIONS", "5200"))
"""The random sweep's size: scripts/test runs a quarter of it, --all and CI all of it."""
STARTS = (
    datetime(2024, 2, 28, 23, 59, 30, tzinfo=UTC),  # across a leap day
    datetime(2025, 12, 31, 22, 59, 59, tzinfo=UTC),  # across a year's end
    datetime(2026, 6, 30, 12, 0, tzinfo=UTC),  # a plain midsummer noon
)
TICKS = 20
HORIZON = timedelta(days=366 * 40)


def _cased(rng: random.Random, name: str) -> str:
    return rng.choice([name, name.lower(), name.capitalize()])


def _value(rng: random.Random, value: int, names: dict[str, int] | None) -> str:
    if names and rng.random() < 0.4:
        spelled = [name for name, number in names.items() if number == value]  # 7 stays 7
        if spelled:
            return _cased(rng, spelled[0])
    return str(value)


def _element(rng: random.Random, low: int, high: int, names: dict[str, int] | None) -> str:
    roll = rng.random()
    if roll < 0.15:
        return f"{rng.choice('*?')}/{rng.randint(1, (high - low) // 2 + 1)}"
    if roll < 0.45:
        value = _value(rng, rng.randint(low, high), names)
        step = rng.randint(1, (high - low) // 3 + 1)
        return value if rng.random() < 0.8 else f"{value}/{step}"
    first = rng.randint(low, high)
    last = first if rng.random() < 0.3 else rng.randint(first, high)  # equal ends, often
    text = f"{_value(rng, first, names)}-{_value(rng, last, names)}"
    return f"{text}/{rng.randint(1, last - first + 1)}" if rng.random() < 0.3 else text


def _field(
    rng: random.Random, low: int, high: int, names: dict[str, int] | None = None, *, day: bool
) -> str:
    roll = rng.random()
    if roll < 0.3:
        return "*"
    if day and roll < 0.4:
        return "?"
    elements = [_element(rng, low, high, names) for _ in range(rng.choice((1, 1, 1, 2, 3)))]
    if day and len(elements) > 1:  # '*' inside a list of days is refused (see the refusals)
        elements = [e for e in elements if e[0] not in "*?"] or ["1"]
    return ",".join(elements)


def expression(rng: random.Random, seconds: bool) -> str:
    """One random expression; day fields lean to month ends, February and leap days."""
    fields = []
    if seconds:
        fields.append(_field(rng, 0, 59, day=False) if rng.random() < 0.6 else rng.choice("03"))
    fields.append(_field(rng, 0, 59, day=False) if rng.random() < 0.7 else str(rng.randint(0, 59)))
    fields.append(_field(rng, 0, 23, day=False))
    fields.append(
        _field(rng, 1, 31, day=True)
        if rng.random() < 0.8
        else rng.choice(["29", "30", "31", "28-31", "29,31"])
    )
    fields.append(
        _field(rng, 1, 12, reference.MONTHS, day=False)
        if rng.random() < 0.8
        else rng.choice(["2", "FEB", "feb", "2,8"])
    )
    fields.append(_field(rng, 0, 7, reference.WEEKDAYS, day=True))
    return " ".join(fields)


def work_of(text: str, **options: str) -> Callable[[], Work]:
    """Build the package's Work later, inside ``compare`` (some must be refused)."""
    return lambda: Work("w", text, **options)  # type: ignore[arg-type]


def compare(
    text: str, make: Callable[[], Work], expected: reference.Cron, starts: tuple[datetime, ...]
) -> int:
    """Assert the package's ticks are the reference's; returns the instants compared."""
    if not reference.next_ticks(expected, starts[0], 1):  # no tick in 40 years
        with pytest.raises(InvalidWorkError, match="never fires"):
            make()
        return 0
    work = make()
    compared = 0
    for start in starts:
        want = reference.next_ticks(expected, start, TICKS)
        got = list(itertools.islice(work.iter_ticks(start, start + HORIZON), len(want)))
        assert got == want, (text, start)
        compared += len(want)
    return compared


@pytest.mark.slow
def test_thousands_of_random_expressions_tick_as_the_reference_does() -> None:
    rng = random.Random(SEED)
    compared = accepted = 0
    for number in range(EXPRESSIONS):
        text = expression(rng, seconds=number % 2 == 1)
        try:
            expected = reference.parse(text)
        except ValueError:  # 7/step in the day of week: robfig refuses it, so must we
            with pytest.raises(InvalidWorkError, match="day-of-week"):
                Work("w", text)
            continue
        instants = compare(text, work_of(text), expected, STARTS)
        compared += instants
        accepted += instants > 0
    firing = EXPRESSIONS * 0.96  # the rest never fire, and were refused as such (42 of 5,200)
    assert accepted >= firing
    assert compared >= firing * len(STARTS) * TICKS * 0.99


def original_expression(rng: random.Random) -> str:
    """A 5-field expression as the Go original writes them: second minute hour dom month."""
    return " ".join(
        [
            _field(rng, 0, 59, day=False),
            _field(rng, 0, 59, day=False),
            _field(rng, 0, 23, day=False),
            _field(rng, 1, 31, day=True),
            _field(rng, 1, 12, reference.MONTHS, day=False),
        ]
    )


def test_the_originals_five_fields_are_read_as_it_reads_them() -> None:
    rng = random.Random(SEED + 1)
    for _ in range(600):
        text = original_expression(rng)
        compare(
            text,
            work_of(text, cron_syntax="original"),
            reference.parse(text, original=True),
            STARTS[:2],
        )


def extension_expression(rng: random.Random) -> str:
    """L in the day of month, nL and n#k in the day of week, 7 and names for Sunday."""
    days = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
    minute, hour = rng.choice(["0", "*/20", "5,35"]), rng.choice(["0", "12", "*/6"])
    roll = rng.random()
    if roll < 0.4:
        dom = rng.choice(["L", "l", "1,L", "L,15", "28-30,L"])
        dow = rng.choice(["*", "?", "MON", "1-5", "SAT,SUN", "*/2"])
    elif roll < 0.7:
        day = rng.choice([str(rng.randint(0, 7)), rng.choice(days), rng.choice(days).lower()])
        dow = f"{day}#{rng.randint(1, 5)}" if rng.random() < 0.5 else f"{day}L"
        if rng.random() < 0.3:
            dow += "," + rng.choice(["2#1", "6L", "sunL"])
        dom = rng.choice(["*", "?"])
    else:
        dom = rng.choice(["*", "?", "13"])
        dow = rng.choice(["7", "0,7", "5-7", "6-7/1", "SUN-SAT", "sun"])
    month = rng.choice(["*", "2", "FEB-MAR", "*/3"])
    return f"{minute} {hour} {dom} {month} {dow}"


def test_the_extensions_fire_as_documented() -> None:
    rng = random.Random(SEED + 2)
    for _ in range(600):
        text = extension_expression(rng)
        compare(text, work_of(text), reference.parse(text), STARTS[:2])


@pytest.mark.parametrize(
    ("cron", "first_ticks"),
    [
        # Ranges with equal ends are that one value, not "every".
        ("0 5-5 * * *", ["2026-01-01 05:00", "2026-01-02 05:00"]),
        ("0 0 * FEB-FEB *", ["2026-02-01 00:00", "2026-02-02 00:00"]),
        # Both day fields restricted: either matches (22nd, or a Saturday, in odd months).
        ("46 11 22 */2 SAT-SAT", None),
        # One day field starting with '*' leaves it unrestricted: both must match.
        ("0 0 */10 * WED", ["2026-01-21 00:00", "2026-02-11 00:00", "2026-03-11 00:00"]),
        ("0 0 ? * WED", ["2026-01-07 00:00", "2026-01-14 00:00"]),
        # A weekday's a/step runs to Saturday, as robfig/cron's parser.go bounds it (0 to 6):
        # Monday and Thursday, never Sunday (2026-01-01 is a Thursday).
        ("0 0 * * 1/3", ["2026-01-05 00:00", "2026-01-08 00:00", "2026-01-12 00:00"]),
        ("0 0 * * 5/2", ["2026-01-02 00:00", "2026-01-09 00:00"]),
        ("0 0 * * */3", ["2026-01-03 00:00", "2026-01-04 00:00", "2026-01-07 00:00"]),
        # Written out, 7 is Sunday (Vixie): the range's step reaches it.
        ("0 0 * * 1-7/3", ["2026-01-04 00:00", "2026-01-05 00:00", "2026-01-08 00:00"]),
    ],
)
def test_the_issues_examples(cron: str, first_ticks: list[str] | None) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    work = Work("w", cron)
    got = work.ticks(start, start + timedelta(days=120))
    assert got == reference.ticks_in_zone(
        reference.parse(cron), "UTC", start, start + timedelta(days=120)
    )
    if first_ticks is not None:
        assert [t.strftime("%Y-%m-%d %H:%M") for t in got[: len(first_ticks)]] == first_ticks


REFUSED = [
    # (cron, field named, why)
    ("0 0 * * FRI-MON", "day-of-week", "runs backwards"),
    ("0 22-2 * * *", "hour", "runs backwards"),
    ("0 0 1,*/2 * *", "day-of-month", "with other days"),
    ("0 0 * * MON,*", "day-of-week", "with other days"),
    ("0 0 15W * *", "day-of-month", "W"),
    ("0 0 5 * FRI#2", "day-of-week", "'*' or '?'"),
    ("0 0 * * FRI#2,MON", "day-of-week", "mixes plain weekdays"),
    ("0 0 * * 1#6", "day-of-week", "1 to 5"),
    ("*/0 * * * *", "minute", "step of 0"),
    ("61 * * * *", "minute", "0 to 59"),
    ("0 24 * * *", "hour", "0 to 23"),
    ("0 0 32 * *", "day-of-month", "1 to 31"),
    ("0 0 * 13 *", "month", "1 to 12"),
    ("0 0 * * 8", "day-of-week", "0 to 7"),
    ("0 0 * * 7/2", "day-of-week", "write 0 instead of 7"),
    ("0 1,,2 * * *", "hour", "empty list element"),
    ("0 0 * * FUN", "day-of-week", "not a number"),
    ("0 0 * JUNE *", "month", "not a number"),
    ("0 0 L * *", "day-of-month", "not a number"),  # read as the original reads it
]


@pytest.mark.parametrize(("cron", "field", "why"), REFUSED)
def test_refused_expressions_name_the_field(cron: str, field: str, why: str) -> None:
    syntax = "original" if cron == "0 0 L * *" else "standard"
    text = f"0 {cron}" if syntax == "original" else cron
    with pytest.raises(InvalidWorkError) as caught:
        Work("w", text, cron_syntax=syntax)
    message = str(caught.value)
    assert f"its {field} field" in message
    assert why in message


def test_the_originals_reading_refuses_what_it_refuses() -> None:
    for cron in ("0 0 0 * * 7", "0 0 0 L * *", "0 0 0 * * 5L", "0 0 0 ? * FRI#2"):
        with pytest.raises(InvalidWorkError, match="day-of-"):
            Work("w", cron, cron_syntax="original")
    with pytest.raises(InvalidWorkError, match="cron_syntax"):
        Work("w", "* * * * *", cron_syntax="quartz")


# -- daylight saving: Vixie's rule, in three zones ----------------------------------------

DST_DAYS = {
    "Europe/Berlin": ("2026-03-29", "2026-10-25"),  # 02:00 -> 03:00; 03:00 -> 02:00
    "America/New_York": ("2026-03-08", "2026-11-01"),  # 02:00 -> 03:00; 02:00 -> 01:00
    "Australia/Lord_Howe": ("2026-10-04", "2026-04-05"),  # half-hour shifts
}
DST_CRONS = [
    # fixed-time jobs (minute and hour fixed)
    "30 2 * * *",
    "0 2 * * *",
    "15 1 * * *",
    "45 1 * * *",
    "0,30 1-3 * * *",
    "0 30 2 * * *",
    "*/20 30 2 * * *",
    "15 15 1 * * *",
    "0 45 1,2 * * *",
    # wildcard jobs (minute or hour starts with *)
    "*/15 * * * *",
    "*/15 2 * * *",
    "30 * * * *",
    "* 2 * * *",
    "0 */30 * * * *",
    "10 */2 * * * *",
]


@pytest.mark.parametrize("zone", sorted(DST_DAYS))
@pytest.mark.parametrize("cron", DST_CRONS)
def test_daylight_saving_follows_vixie_cron(zone: str, cron: str) -> None:
    expected = reference.parse(cron)
    work = Work("w", cron, timezone=zone)
    for day in DST_DAYS[zone]:
        midnight = datetime.fromisoformat(day).replace(tzinfo=ZoneInfo(zone))
        end = midnight + timedelta(hours=28)
        whole = reference.ticks_in_zone(expected, zone, midnight - timedelta(hours=2), end)
        # From several starting instants around the change (some inside its hour), not
        # only from before it: a start inside a repeated hour still meets its second half.
        for minutes in (-120, 0, 60, 90, 119, 120, 150, 179, 180, 210, 240):
            start = (midnight + timedelta(minutes=minutes)).astimezone(UTC)
            assert work.ticks(start, end) == [t for t in whole if t > start], (day, minutes)


# -- the cron page's table (docs/reference/cron.md), row by row: descriptors, @every, '?' ----

DESCRIPTORS = {  # crontab(5)'s expansions, as Vixie cron and robfig/cron define them
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
ZONES = (
    "UTC",
    "Europe/Berlin",
    "America/Santiago",  # midnight skipped in September; 23:00 repeated in April
    "America/Havana",  # midnight skipped in March, and repeated in November
    "Asia/Beirut",  # midnight skipped in March; 23:00 repeated in October
    "Australia/Lord_Howe",  # half-hour shifts
    "Asia/Kathmandu",  # +05:45, no daylight saving
)
SECOND = timedelta(seconds=1)
CRON_PAGE = Path(__file__).resolve().parent.parent / "docs" / "reference" / "cron.md"


def cron_page_table() -> dict[str, list[str]]:
    """The cron page's table of forms: each row's form, and the code spans of its example."""
    rows = {}
    for line in CRON_PAGE.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 3 and cells[0] not in ("form", "---"):
            rows[cells[0]] = re.findall(r"`([^`]+)`", cells[1])
    return rows


def test_the_cron_pages_table_shows_what_is_tested() -> None:
    """Its descriptors are the ones checked below, and each whole example is accepted."""
    rows = cron_page_table()
    assert set(rows.pop("descriptor")[0].split()) == set(DESCRIPTORS)
    examples = [span for spans in rows.values() for span in spans if " " in span]
    assert len(examples) >= 8, rows
    for cron in examples:
        assert Work("w", cron).cron == cron


def offset_changes(zone: str, year: int) -> list[datetime]:
    """The instants of ``year`` at which ``zone``'s UTC offset changes, found by scanning.

    Every change since the 1990s falls on a quarter hour, so 15-minute steps
    find each one exactly; the package is not asked.
    """
    tz = ZoneInfo(zone)
    moment = datetime(year, 1, 1, tzinfo=UTC)
    changes, offset = [], moment.astimezone(tz).utcoffset()
    while moment.year == year:
        moment += timedelta(minutes=15)
        now = moment.astimezone(tz).utcoffset()
        if now != offset:
            changes.append(moment)
            offset = now
    return changes


def windows(
    zone: str, around: timedelta, dates: bool
) -> list[tuple[datetime, datetime, list[datetime]]]:
    """Windows worth checking in ``zone``: each offset change of 2026, ``around`` either side;
    with ``dates``, also a year's end (a new year, a new month and a Sunday) and
    1 March 2026 (a Sunday).

    Each comes with extra starting instants 30 and 60 minutes either side of the
    change, inside a repeated or skipped hour.
    """
    found = []
    for change in offset_changes(zone, 2026):
        inside = [change + timedelta(minutes=m) for m in (-60, -30, 0, 30, 60)]
        found.append((change - around, change + around, inside))
    if dates:
        found.append((datetime(2025, 12, 29, tzinfo=UTC), datetime(2026, 1, 5, tzinfo=UTC), []))
        found.append((datetime(2026, 2, 26, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC), []))
    return found


def compare_in_zone(
    work: Work, expected: reference.Cron, zone: str, around: timedelta, dates: bool = False
) -> int:
    """Assert ``work`` ticks in ``zone`` as the reference walks real time; returns ticks seen.

    Each window's ticks come from one reference walk from its start. The
    package gives the whole window from its start and from instants inside
    the clock change; and its next three ticks from (at most 12, evenly
    spread) ticks and a second either side of them, since a tick is strictly
    after its start.
    """
    seen = 0
    for low, high, inside in windows(zone, around, dates):
        whole = reference.ticks_in_zone(expected, zone, low, high)
        for start in (low, *inside):
            assert work.ticks(start, high) == [t for t in whole if t > start], (zone, start)
        for tick in whole[:: len(whole) // 12 + 1]:
            for start in (tick - SECOND, tick, tick + SECOND):
                want = [t for t in whole if t > start][:3]
                got = list(itertools.islice(work.iter_ticks(start, high), 3))
                assert got == want, (zone, start)
        seen += len(whole)
    return seen


@pytest.mark.parametrize("descriptor", sorted(DESCRIPTORS))
def test_descriptors_tick_as_their_standard_expansion(descriptor: str) -> None:
    """The next 20 ticks in UTC from the usual starts, then each zone's clock changes and dates."""
    expected = reference.parse(DESCRIPTORS[descriptor])
    assert compare(descriptor, work_of(descriptor), expected, STARTS) == len(STARTS) * TICKS
    for zone in ZONES:
        work = Work("w", descriptor, timezone=zone)
        seen = compare_in_zone(work, expected, zone, timedelta(days=1), dates=True)
        assert seen >= 1, zone  # the year's-end window holds a tick of every descriptor


def test_descriptors_meet_the_clock_changes_at_midnight() -> None:
    """Spot checks, written out by hand, of the Vixie rule on days whose midnight moves.

    Santiago skips 00:00-01:00 on Sunday 6 September 2026: ``@daily`` (a
    fixed-time job) runs at 01:00 (-03), right after the gap; ``@hourly`` (a
    wildcard job) runs every real hour, with no 00:00 that day. Havana repeats 00:00-01:00 on
    1 November 2026: ``@daily`` runs at the first midnight only, ``@hourly``
    at both.
    """
    santiago = datetime(2026, 9, 5, 12, tzinfo=UTC)
    spring = Work("w", "@daily", timezone="America/Santiago").ticks(
        santiago, santiago + timedelta(days=2)
    )
    assert spring == [datetime(2026, 9, 6, 4, tzinfo=UTC), datetime(2026, 9, 7, 3, tzinfo=UTC)]
    hourly = Work("w", "@hourly", timezone="America/Santiago").ticks(
        datetime(2026, 9, 6, 2, tzinfo=UTC), datetime(2026, 9, 6, 6, tzinfo=UTC)
    )
    # 23:00 -04, then 01:00, 02:00 and 03:00 -03
    assert hourly == [datetime(2026, 9, 6, h, tzinfo=UTC) for h in (3, 4, 5, 6)]
    havana = datetime(2026, 10, 31, 12, tzinfo=UTC)
    autumn = Work("w", "@daily", timezone="America/Havana").ticks(
        havana, havana + timedelta(days=1)
    )
    assert autumn == [datetime(2026, 11, 1, 4, tzinfo=UTC)]  # 00:00 -04, not 00:00 -05 too
    repeated = Work("w", "@hourly", timezone="America/Havana").ticks(
        datetime(2026, 11, 1, 3, 30, tzinfo=UTC), datetime(2026, 11, 1, 6, 30, tzinfo=UTC)
    )
    # 00:00 -04, 00:00 -05, 01:00 -05
    assert repeated == [datetime(2026, 11, 1, h, tzinfo=UTC) for h in (4, 5, 6)]


EVERY = [  # (spec, its period in seconds, worked out by hand)
    ("@every 1s", 1),
    ("@every 7s", 7),
    ("@every 90s", 90),
    ("@every 1m30s", 90),
    ("@every 1.5m", 90),
    ("@every 2000ms", 2),
    ("@every 13m", 780),
    ("@every 1h30m", 5400),
    ("@every 25h", 90_000),
]
EVERY_STARTS = (
    *STARTS,
    datetime(1970, 1, 1, tzinfo=UTC),  # the epoch itself: the first tick is one period later
    datetime(2026, 3, 29, 0, 59, 59, 999_999, tzinfo=UTC),  # Berlin's spring change
    datetime(2026, 9, 6, 3, 59, 30, 250_000, tzinfo=UTC),  # Santiago's
)


def epoch_multiples(start: datetime, period: int, count: int) -> list[datetime]:
    """The ``count`` multiples of ``period`` seconds since the Unix epoch after ``start``.

    Integer arithmetic on the POSIX timestamp (``timegm`` floors to the second).
    """
    first = (calendar.timegm(start.utctimetuple()) // period + 1) * period
    return [datetime.fromtimestamp(first + n * period, UTC) for n in range(count)]


@pytest.mark.parametrize(("spec", "period"), EVERY)
def test_every_ticks_are_multiples_of_the_period_since_the_epoch(spec: str, period: int) -> None:
    """The same ticks in every zone, whatever the clock change: the period counts real time."""
    for zone in ("UTC", "Europe/Berlin", "America/Santiago", "Asia/Kathmandu"):
        work = Work("w", spec, timezone=zone)
        for start in EVERY_STARTS:
            want = epoch_multiples(start, period, TICKS)
            got = list(itertools.islice(work.iter_ticks(start, start + HORIZON), TICKS))
            assert got == want, (spec, zone, start)
            on_a_tick = want[3]
            assert work.next_tick(on_a_tick) == want[4]  # strictly after


BARE_QUESTION_MARKS = [
    "? ? * * *",  # every minute
    "? 0 * * *",  # every minute of hour 0
    "0 ? * * *",  # every hour, on the hour
    "0 ? * * * *",  # 6 fields: every minute, on second 0
    "? * * * * *",  # every second
    "? ? ? ? ?",  # every minute, both day fields unrestricted
    "0 0 1 ? *",  # the month field: every month's 1st
    "30 ? 1 * MON",  # both day fields restricted: the 1st, or a Monday
    "15 ? ? FEB ?",  # minute 15 of every hour of every day of February
    "0 30 ? * * *",  # 6 fields, hour '?': at minute 30 of every hour
]


@pytest.mark.parametrize("cron", BARE_QUESTION_MARKS)
def test_a_bare_question_mark_is_every_value_in_any_field(cron: str) -> None:
    """robfig's '?' outside the day fields: every value, and a wildcard job for daylight saving.

    The random expressions only put a bare '?' in the day fields, so each
    other field gets its cases here, in UTC and (unless they tick every
    second) through the clock changes of three zones.
    """
    expected = reference.parse(cron)
    assert compare(cron, work_of(cron), expected, STARTS) == len(STARTS) * TICKS
    if not expected.seconds or len(expected.second.values) == 1:  # not per second
        for zone in ("Europe/Berlin", "America/Havana", "Australia/Lord_Howe"):
            compare_in_zone(Work("w", cron, timezone=zone), expected, zone, timedelta(hours=3))
