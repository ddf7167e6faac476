"""A brute-force cron matcher written from the cron rules, to check the package against.

It shares no code with croniter or with ``worksync_sa.work``: each field is
parsed into the set of values it allows, a wall time matches when every
field allows it, and ticks are found by walking time. The rules, as Vixie
cron and robfig/cron v1 (the Go original's cron library) apply them:

* a field is a comma list of elements; an element is ``*``, ``?``, a value or
  a range ``a-b``, each with an optional ``/step``; ``a/step`` means
  ``a-max/step``; a range whose ends are equal is that one value;
* month and weekday names are case-insensitive; weekday 0 is Sunday, and so
  is 7 where it is written (Vixie); but ``*`` and ``a/step`` in the day of
  week run to 6, as robfig/cron's day-of-week bounds (0 to 6, its
  ``parser.go``) have it: ``1/3`` is Monday and Thursday, never Sunday;
* the day rule: a day field whose text starts with ``*`` or ``?`` is
  unrestricted. If either day field is unrestricted a day must match both;
  only when both are restricted does a day match if either does;
* 5 fields are minute, hour, day of month, month, day of week (Unix cron),
  or, read as the Go original's ``cron.Parse`` does, second, minute, hour,
  day of month, month; 6 fields are second first.

Beyond those rules, the extensions worksync_sa documents: ``L`` in the day of
month (the month's last day), ``nL`` in the day of week (the month's last
weekday n) and ``n#k`` (its k-th weekday n).

Daylight saving follows Vixie cron: time is walked in real instants; a job
whose minute and hour fields are both fixed ("fixed-time") runs once when its
wall time repeats in autumn (the first time), and once right after the spring
gap for the wall times the gap skipped; a job whose minute or hour field
starts with ``*`` (a "wildcard" job) runs at every real instant whose wall
time matches, so twice through a repeated hour and never in a skipped one.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

MONTHS = {name: number for number, name in enumerate(
    ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), start=1
)}  # fmt: skip
WEEKDAYS = {name: number for number, name in enumerate(
    ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
)}  # fmt: skip


@dataclass(frozen=True)
class Field:
    values: frozenset[int]
    unrestricted: bool
    last_day: bool = False  # L in the day of month
    last_weekdays: frozenset[int] = frozenset()  # nL in the day of week
    nth_weekdays: frozenset[tuple[int, int]] = frozenset()  # n#k in the day of week


def _value(text: str, names: dict[str, int]) -> int:
    upper = text.upper()
    if upper in names:
        return names[upper]
    if not text.isdigit():
        raise ValueError(f"not a value: {text!r}")
    return int(text)


def parse_field(text: str, low: int, high: int, names: dict[str, int] | None = None) -> Field:
    names = names or {}
    values: set[int] = set()
    last_day = False
    last_weekdays: set[int] = set()
    nth: set[tuple[int, int]] = set()
    for element in text.split(","):
        if element.upper() == "L" and (low, high) == (1, 31):
            last_day = True
            continue
        if names is WEEKDAYS and element.upper().endswith("L") and len(element) > 1:
            last_weekdays.add(_value(element[:-1], names) % 7)
            continue
        if names is WEEKDAYS and "#" in element:
            day, _, nth_text = element.partition("#")
            nth.add((_value(day, names) % 7, int(nth_text)))
            continue
        span, slash, step_text = element.partition("/")
        step = int(step_text) if slash else 1
        if step < 1:
            raise ValueError("step below 1")
        # robfig/cron: a weekday's * and a/step run to Saturday (6), not to Sunday again (7)
        top = 6 if names is WEEKDAYS else high
        if span in ("*", "?"):
            first, last = low, top
        elif "-" in span:
            start, _, end = span.partition("-")
            first, last = _value(start, names), _value(end, names)
        else:
            first = _value(span, names)
            last = top if slash else first
        if first > last or first < low or last > high:
            raise ValueError(f"out of range: {element!r}")
        values.update(range(first, last + 1, step))
    if names is WEEKDAYS:
        values = {value % 7 for value in values}  # 7 is Sunday too
    return Field(
        frozenset(values),
        text[:1] in ("*", "?"),
        last_day,
        frozenset(last_weekdays),
        frozenset(nth),
    )


@dataclass(frozen=True)
class Cron:
    second: Field
    minute: Field
    hour: Field
    dom: Field
    month: Field
    dow: Field
    wildcard: bool
    """The minute or hour field starts with ``*`` (or is ``?``): Vixie's wildcard job."""
    seconds: bool

    def day_matches(self, day: datetime) -> bool:
        if day.month not in self.month.values:
            return False
        weekday = day.isoweekday() % 7
        month_days = calendar.monthrange(day.year, day.month)[1]
        dom_ok = day.day in self.dom.values or (self.dom.last_day and day.day == month_days)
        dow_ok = (
            weekday in self.dow.values
            or (weekday in self.dow.last_weekdays and day.day > month_days - 7)
            or (weekday, (day.day - 1) // 7 + 1) in self.dow.nth_weekdays
        )
        if self.dom.unrestricted or self.dow.unrestricted:
            return dom_ok and dow_ok
        return dom_ok or dow_ok

    def matches(self, wall: datetime) -> bool:
        return (
            wall.second in self.second.values
            and wall.minute in self.minute.values
            and wall.hour in self.hour.values
            and self.day_matches(wall)
        )


def parse(expression: str, *, original: bool = False) -> Cron:
    """An expression of 5 or 6 fields; ``original``: 5 fields read as the Go original does."""
    fields = expression.split()
    if len(fields) == 5 and original:
        fields = [*fields, "*"]  # second minute hour dom month, any weekday
    seconds = len(fields) == 6
    if not seconds:
        fields = ["0", *fields]
    if len(fields) != 6:
        raise ValueError("5 or 6 fields")
    second, minute, hour, dom, month, dow = fields
    return Cron(
        parse_field(second, 0, 59),
        parse_field(minute, 0, 59),
        parse_field(hour, 0, 23),
        parse_field(dom, 1, 31),
        parse_field(month, 1, 12, MONTHS),
        parse_field(dow, 0, 7, WEEKDAYS),
        minute[:1] in ("*", "?") or hour[:1] in ("*", "?"),
        seconds,
    )


def next_ticks(cron: Cron, after: datetime, count: int, years: int = 40) -> list[datetime]:
    """The next ``count`` UTC ticks strictly after ``after`` (aware UTC), in UTC.

    Walks day by day; within a matching day, every hour, minute and second
    the fields allow, in order.
    """
    after = after.astimezone(timezone.utc).replace(tzinfo=None)
    found: list[datetime] = []
    day = after.replace(hour=0, minute=0, second=0, microsecond=0)
    end = day + timedelta(days=366 * years)
    while day < end and len(found) < count:
        if cron.day_matches(day):
            for hour in sorted(cron.hour.values):
                for minute in sorted(cron.minute.values):
                    for second in sorted(cron.second.values):
                        moment = day.replace(hour=hour, minute=minute, second=second)
                        if moment > after:
                            found.append(moment.replace(tzinfo=timezone.utc))
                            if len(found) == count:
                                return found
        day += timedelta(days=1)
    return found


def ticks_in_zone(cron: Cron, zone: str, start: datetime, end: datetime) -> list[datetime]:
    """Every tick in ``(start, end]`` (aware) for a cron in ``zone``, by Vixie's rules.

    Walks real time in steps of the cron's unit (a second, or a minute) and
    judges each instant by its wall time there.
    """
    tz = ZoneInfo(zone)
    unit = timedelta(seconds=1) if cron.seconds else timedelta(minutes=1)
    moment = start.astimezone(timezone.utc)
    if not cron.seconds:
        moment = moment.replace(second=0, microsecond=0)
    seen: set[datetime] = set()  # wall times already run, for fixed-time jobs
    previous_wall = (moment).astimezone(tz).replace(tzinfo=None)
    found = []
    while moment < end:
        moment += unit
        wall = moment.astimezone(tz).replace(tzinfo=None)
        fire = False
        if cron.matches(wall) and (cron.wildcard or wall not in seen):
            fire = True
        if not cron.wildcard and wall - previous_wall > unit:  # the clock jumped forward
            skipped = previous_wall + unit
            while skipped < wall:
                if cron.matches(skipped):
                    fire = True  # a fixed-time job whose wall time was skipped: run it now
                skipped += unit
        if fire and moment > start:
            found.append(moment)
        seen.add(wall)
        previous_wall = wall
    return found
