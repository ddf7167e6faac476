"""Cron expressions read as cron reads them, and their ticks in a time zone.

This module owns the meaning of a cron string; croniter only iterates. Every
field is parsed here into the values it allows, validated with an error that
names the field, and handed to croniter as a plain list of values, so none
of croniter's own readings (``5-5`` as "every", a day rule of its own) can
change what a cron means. The rules, Vixie cron's and robfig/cron's (the Go
original's library) where those agree:

* a field is a comma list of elements: ``*`` or ``?``, a value, or a range
  ``a-b``, each with an optional ``/step``; ``a/step`` means ``a-max/step``;
  a range whose ends are equal is that one value;
* month and weekday names are case-insensitive; weekday 0 and 7 are Sunday,
  but ``*`` and ``a/step`` in the day of week end at 6 (robfig's bounds), so
  ``1/3`` is Monday and Thursday and never Sunday again;
* the day rule: a day field whose text starts with ``*`` or ``?`` is
  unrestricted. If either day field is unrestricted a day must match both;
  only when both are restricted does a day match if either does.

Beyond them: ``L`` in the day of month (the month's last day); ``5L`` or
``FRIL`` in the day of week (the month's last Friday) and ``5#2`` or
``FRI#2`` (its second Friday), which only combine with an unrestricted day of
month. Refused, with the field named: ranges that run backwards (``FRI-MON``),
``*`` or ``?`` inside a list of days (implementations disagree whether such a
day field is restricted), ``W``, and ``H`` and ``R`` (hashed and random fields
differ between processes).

Readings: 5 fields are Unix cron (minute first), 6 fields second first, and
``syntax="original"`` reads 5 fields as the Go original's ``cron.Parse``
does (second, minute, hour, day of month, month), refusing what it refuses.

Time zones and daylight saving follow Vixie cron: a job whose minute and
hour fields are both fixed runs once when its wall time repeats in autumn
(the first time) and once right after the spring gap for wall times the gap
skipped; a job whose minute or hour field starts with ``*`` or ``?`` follows
the real clock, at every instant whose wall time matches (twice through a
repeated hour, never in a skipped one).
"""

from __future__ import annotations

import functools
import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from croniter import CroniterBadDateError, croniter

from .durations import parse_every

SYNTAXES = ("standard", "original")
"""``standard``: 5 fields are Unix cron. ``original``: 5 fields as the Go original reads them."""

_UTC = timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=_UTC)
_DESCRIPTORS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_WEEKDAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
# A DST shift moves wall time by at most this much (some zones once moved two hours).
_LONGEST_SHIFT = timedelta(hours=3)


class CronProblem(ValueError):
    """Why a cron string is unusable; the caller adds which work and field."""


@dataclass(frozen=True)
class _Bounds:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    first_name: int = 0  # the value of names[0]
    runs_to: int | None = None
    """Where ``*`` and ``a/step`` end, if not at ``high``."""

    @property
    def last(self) -> int:
        return self.high if self.runs_to is None else self.runs_to


_SECOND = _Bounds("second", 0, 59)
_MINUTE = _Bounds("minute", 0, 59)
_HOUR = _Bounds("hour", 0, 23)
_DOM = _Bounds("day-of-month", 1, 31)
_MONTH = _Bounds("month", 1, 12, _MONTHS, 1)
_DOW = _Bounds("day-of-week", 0, 7, _WEEKDAYS, 0, runs_to=6)
"""7 is Sunday where written (Vixie), but ``*`` and ``a/step`` stop at Saturday, as in
robfig/cron (day of week 0 to 6): ``1/3`` is Monday and Thursday there, never Sunday."""


@dataclass(frozen=True)
class _Field:
    values: tuple[int, ...]
    special: tuple[str, ...]  # croniter's tokens for L, last and nth weekdays
    unrestricted: bool
    bare: bool  # just ``*`` or ``?``

    def croniter_text(self) -> str:
        return "*" if self.bare else ",".join([*map(str, self.values), *self.special])


def _value(text: str, bounds: _Bounds, element: str, field: str) -> int:
    upper = text.upper()
    if upper in bounds.names:
        return bounds.names.index(upper) + bounds.first_name
    if not text.isdigit():
        what = "is" if element == field else f"has {element!r}, which is"
        raise CronProblem(f"its {bounds.name} field {field!r} {what} not a number or a name")
    return int(text)


def _element(element: str, bounds: _Bounds, field: str) -> range:
    span, slash, step_text = element.partition("/")
    if slash and not step_text.isdigit():
        raise CronProblem(f"its {bounds.name} field {field!r} has a step that is not a number")
    step = int(step_text) if slash else 1
    if step < 1:
        raise CronProblem(f"its {bounds.name} field {field!r} has a step of 0")
    if span in ("*", "?"):
        first, last = bounds.low, bounds.last
    elif "-" in span:
        start, _, end = span.partition("-")
        first, last = _value(start, bounds, element, field), _value(end, bounds, element, field)
        if first > last:
            named = start.upper() in bounds.names
            high = bounds.names[-1] if named else 6 if bounds is _DOW else bounds.high
            low = bounds.names[0] if named else bounds.low
            split = f"{start}-{high},{low}-{end}"
            raise CronProblem(
                f"its {bounds.name} field {field!r} has the range {span!r}, which runs "
                f"backwards; write it as two ranges ({split})"
            )
    else:
        first = _value(span, bounds, element, field)
        last = bounds.last if slash else first  # a/step means a-max/step
        if first > last:  # 7/2: a weekday's steps end at Saturday (robfig refuses it too)
            raise CronProblem(
                f"its {bounds.name} field {field!r} has {element!r}, whose steps would start "
                f"after they end at {last}; write {first % 7} instead of {first}"
            )
    if first < bounds.low or last > bounds.high:
        raise CronProblem(
            f"its {bounds.name} field {field!r} is out of range: "
            f"{bounds.name} is {bounds.low} to {bounds.high}"
        )
    return range(first, last + 1, step)


def _field(text: str, bounds: _Bounds, *, extensions: bool) -> _Field:
    """One field: its values, and whether the day rule counts it as unrestricted."""
    unrestricted = text[:1] in ("*", "?")
    elements = text.split(",")
    day_field = bounds.name in ("day-of-month", "day-of-week")
    values: set[int] = set()
    special: list[str] = []
    for element in elements:
        if not element:
            raise CronProblem(f"its {bounds.name} field {text!r} has an empty list element")
        if day_field and element.split("/")[0] in ("*", "?") and len(elements) > 1:
            raise CronProblem(
                f"its {bounds.name} field {text!r} lists {element!r} with other days: cron "
                "implementations disagree on whether such a day field is restricted; "
                f"write {element!r} alone, or list the days"
            )
        upper = element.upper()
        if "W" in upper and bounds is _DOM:
            raise CronProblem(f"its {bounds.name} field {text!r} uses W, which is not supported")
        if upper == "L" and bounds is _DOM and extensions:
            special.append("l")
            continue
        if (
            bounds is _DOW
            and extensions
            and ("#" in upper or (upper.endswith("L") and upper != "L"))
        ):
            special.append(_weekday_token(element, text))
            continue
        values.update(_element(element, bounds, text))
    if bounds is _DOW:
        values = {value % 7 for value in values}  # 7 is Sunday too
        if special and values:
            raise CronProblem(
                f"its day-of-week field {text!r} mixes plain weekdays with '#' or 'L' ones; "
                "use one kind or the other"
            )
    return _Field(tuple(sorted(values)), tuple(special), unrestricted, text in ("*", "?"))


def _weekday_token(element: str, field: str) -> str:
    """``5#2``/``FRI#2`` (second Friday) or ``5L``/``FRIL`` (last Friday), in croniter's words."""
    upper = element.upper()
    if "#" in upper:
        day, _, nth = upper.partition("#")
        if not nth.isdigit() or not 1 <= int(nth) <= 5:
            raise CronProblem(
                f"its day-of-week field {field!r} has {element!r}: the week after '#' is 1 to 5"
            )
        return f"{_value(day, _DOW, element, field) % 7}#{nth}"
    return f"l{_value(upper[:-1], _DOW, element, field) % 7}"


@dataclass(frozen=True)
class Parsed:
    """A cron expression, checked and normalised for croniter."""

    expression: str
    """Six fields, seconds first, every field a plain list of values (or ``*``)."""
    day_or: bool
    """Both day fields are restricted: a day matches if either does."""
    fixed_time: bool
    """Neither the minute nor the hour field starts with ``*`` or ``?``: Vixie's fixed-time job."""


def parse(cron: str, syntax: str = "standard") -> Parsed:
    """Check ``cron`` (5 or 6 fields) and normalise it; raises :class:`CronProblem`."""
    fields = cron.split(" ")
    if len(fields) not in (5, 6):
        raise CronProblem(
            f"{cron!r} has {len(fields)} fields; use 5 (minute first) or 6 (seconds first)"
        )
    original = syntax == "original"
    if len(fields) == 5:
        fields = [*fields, "*"] if original else ["0", *fields]
    if any(element[:1] in ("H", "h", "R", "r") for field in fields for element in field.split(",")):
        # Hashed and random fields differ between processes unless each is given the
        # same seed; a fleet must agree on ticks.
        raise CronProblem(f"{cron!r} uses H or R fields, which differ between processes")
    bounds = (_SECOND, _MINUTE, _HOUR, _DOM, _MONTH, _DOW)
    if original:  # robfig/cron: weekdays 0-6, none of the extensions
        bounds = (*bounds[:5], _Bounds("day-of-week", 0, 6, _WEEKDAYS, 0))
    try:
        parsed = [
            _field(text, field_bounds, extensions=not original)
            for text, field_bounds in zip(fields, bounds, strict=True)
        ]
    except CronProblem as problem:
        raise CronProblem(f"{cron!r}: {problem}") from None
    _, minute, hour, dom, _, dow = parsed
    if dow.special and not dom.unrestricted:
        raise CronProblem(
            f"{cron!r}: its day-of-week field {fields[5]!r} picks one weekday of the month "
            "('#' or 'L'), so the day of month must be '*' or '?'"
        )
    day_or = not (dom.unrestricted or dow.unrestricted)
    texts = [field.croniter_text() for field in parsed]
    if day_or and not dom.special and len(dom.values) == 31:
        texts[3] = texts[5] = "*"  # "any day of the month" or anything: every day
    if day_or and not dow.special and len(dow.values) == 7:
        texts[3] = texts[5] = "*"
    return Parsed(
        " ".join(texts),
        day_or,
        fixed_time=not (minute.unrestricted or hour.unrestricted),
    )


class Schedule:
    """Ticks of one cron in one zone, in ``(after, until]``, as aware UTC datetimes."""

    def ticks(self, after: datetime, until: datetime) -> Iterator[datetime]:
        raise NotImplementedError


@dataclass(frozen=True)
class _Every(Schedule):
    period: timedelta

    def ticks(self, after: datetime, until: datetime) -> Iterator[datetime]:
        # Multiples of the period since the epoch: the same on every process,
        # whenever it started (the original counted from process start).
        tick = _EPOCH + ((after - _EPOCH) // self.period + 1) * self.period
        while tick <= until:
            yield tick
            tick += self.period


@dataclass(frozen=True)
class _Cron(Schedule):
    parsed: Parsed
    zone: ZoneInfo

    def _wall_times(self, start: datetime) -> Iterator[datetime]:
        """Matching wall times after ``start`` (naive), from croniter, in wall-clock order."""
        cursor = croniter(
            self.parsed.expression,
            start,
            day_or=self.parsed.day_or,
            second_at_beginning=True,
            ret_type=datetime,
        )
        while True:
            yield cursor.get_next(datetime)

    def ticks(self, after: datetime, until: datetime) -> Iterator[datetime]:
        # Wall times are walked in the zone's clock and mapped to instants here:
        # a repeated wall time has two, a skipped one none (or the instant after
        # the gap). Around a repeated hour the instants come out of order, so they
        # wait in a heap until no later wall time can map before them: every later
        # wall time maps at or after the earliest instant of this one. The walk
        # starts early enough to meet the second instants of repeated wall times.
        earlier = after - _LONGEST_SHIFT
        offsets = {
            moment.astimezone(self.zone).utcoffset()
            for moment in (earlier, after, after + _LONGEST_SHIFT)
        }
        if len(offsets) == 1:
            earlier = after  # no clock change near: the wall clock runs on with real time
        start = earlier.astimezone(self.zone).replace(tzinfo=None)
        waiting: list[datetime] = []
        last: datetime | None = None
        for wall in self._wall_times(start):
            instants = self._instants(wall)
            if not instants:
                continue
            for instant in instants:
                if instant > after:
                    heapq.heappush(waiting, instant)
            settled = instants[0]
            while waiting and waiting[0] <= settled:
                instant = heapq.heappop(waiting)
                if instant > until:
                    return
                if instant != last:  # skipped wall times share the instant after the gap
                    last = instant
                    yield instant
            if settled > until:
                return

    def _instants(self, wall: datetime) -> list[datetime]:
        """The real instants a wall time stands for (sorted), by Vixie's daylight-saving rule."""
        zone = self.zone
        both = {wall.replace(tzinfo=zone, fold=fold).astimezone(_UTC) for fold in (0, 1)}
        exists = sorted(t for t in both if t.astimezone(zone).replace(tzinfo=None) == wall)
        if not exists:  # skipped in spring: fixed-time jobs run right after the gap
            return [self._gap_end(min(both), max(both), wall)] if self.parsed.fixed_time else []
        return exists[:1] if self.parsed.fixed_time else exists

    def _gap_end(self, low: datetime, high: datetime, wall: datetime) -> datetime:
        """The first second whose wall time is past ``wall``, a wall time a spring gap skipped."""
        first, last = int(low.timestamp()), int(high.timestamp()) + 1
        while last - first > 1:  # local(first) <= wall < local(last)
            middle = (first + last) // 2
            if datetime.fromtimestamp(middle, self.zone).replace(tzinfo=None) > wall:
                last = middle
            else:
                first = middle
        return datetime.fromtimestamp(last, _UTC)


@functools.lru_cache(maxsize=4096)
def schedule_of(cron: str, zone: ZoneInfo, syntax: str = "standard") -> Schedule | str:
    """The schedule of a cron in a zone, or the problem with it.

    Cached: a fleet's works share a handful of crons, and validating one asks
    croniter for its next tick, which costs far more than everything else a
    Work does. Schedules are immutable, so works may share them.
    """
    try:
        return _compile(cron, zone, syntax)
    except CronProblem as problem:
        return str(problem)


def _compile(cron: str, zone: ZoneInfo, syntax: str) -> Schedule:
    spec = " ".join(cron.split())
    if spec.lower().startswith("@every"):
        try:
            period = parse_every(spec)
        except ValueError as exc:
            raise CronProblem(f"{cron!r} is invalid: {exc}") from None
        if period is None:
            raise CronProblem(f"{cron!r} is invalid: write '@every 5m'")
        if period % timedelta(seconds=1) or period < timedelta(seconds=1):
            raise CronProblem(f"{cron!r} must be a whole number of seconds (sequences have 1 s)")
        return _Every(period)
    expression = _DESCRIPTORS.get(spec.lower(), spec)
    if expression.startswith("@"):
        raise CronProblem(f"{cron!r} is not a known descriptor ({', '.join(_DESCRIPTORS)}, @every)")
    if expression is not spec:
        syntax = "standard"  # descriptors stand for Unix crons in either reading
    schedule = _Cron(parse(expression, syntax), zone)
    try:
        # An expression can parse and still never fire (``0 0 30 2 *``).
        next(schedule.ticks(_EPOCH, datetime.max.replace(tzinfo=_UTC) - timedelta(days=2)))
    except (StopIteration, CroniterBadDateError):
        raise CronProblem(f"{cron!r} never fires") from None
    except Exception as exc:  # croniter raises several unrelated types
        raise CronProblem(f"{cron!r} is invalid: {exc}") from None
    return schedule
