"""What a request asks to see: a work, a range of ticks, a history cursor; read from its query.

Everything here comes from whoever sends the request, so each value is
checked before it reaches a statement (names as the table's keys are
checked, instants as aware UTC, cursors as exactly what this page wrote),
and a bad one is a :class:`BadRequest` naming the parameter, never a
database error. The range reads like ``worksync status``'s: ``since`` and
``until`` are a duration ago (``30m``, ``7d``) or an ISO date-time (UTC
unless it has an offset); ``until`` left out means no end, so ticks whose
rows already exist ahead of time are included.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from urllib.parse import urlencode

from .._sql.text import check_text
from ..durations import parse_duration
from ..errors import InvalidArgumentError
from ..models import as_utc

Moment = timedelta | datetime
"""A bound as given: that long before each request's now, or a fixed instant."""

Cursor = tuple[datetime, str, str]
"""Where a history page ends: a ledger page's ``after`` (tick, work, sequence).

The history shows the latest ticks first and pages back with ``before``;
``after`` still pages forward, earliest first, as the page did before, so
a program that walked the history that way keeps working."""

MAX_PARAMETER = 1_000
"""Longest query value read; anything longer cannot be a name, time or cursor of ours."""
EARLIEST = datetime(1970, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(9000, 1, 1, tzinfo=timezone.utc)
"""Instants are held to this range, which every database's time type can store."""


class BadRequest(Exception):
    """A query parameter the page cannot use; the message names it (HTTP 400)."""


@dataclass(frozen=True, slots=True)
class Filter:
    """One request's view: which work, which ticks, and where in the history."""

    name: str | None
    since_text: str
    until_text: str
    since: Moment
    until: Moment | None
    after: Cursor | None = None
    before: Cursor | None = None

    def bounds(self, now: datetime) -> tuple[datetime, datetime | None]:
        """The range at ``now``: ``[since, until)``, until None for no end."""
        since = max(_resolve(self.since, now), EARLIEST)
        until = None if self.until is None else max(_resolve(self.until, now), EARLIEST)
        if until is not None and until <= since:
            raise BadRequest("until must be after since")
        return since, until

    def query(self, *, after: Cursor | None = None, before: Cursor | None = None) -> str:
        """This filter as a query string, at the history page ``before`` or ``after`` a cursor."""
        pairs = [("name", self.name or ""), ("since", self.since_text), ("until", self.until_text)]
        if before is not None:
            pairs.append(("before", cursor_text(before)))
        if after is not None:
            pairs.append(("after", cursor_text(after)))
        return urlencode([(key, value) for key, value in pairs if value])

    def first_page(self) -> Filter:
        """The same view at the start of its history: the latest ticks."""
        return replace(self, after=None, before=None)

    def for_work(self, name: str) -> Filter:
        """The same range for one work, from the start of its history."""
        return replace(self, name=name, after=None, before=None)


def read_filter(query: Mapping[str, str], default_since: timedelta) -> Filter:
    """The filter a request's query asks for; blank values mean the defaults."""
    name_text = _value(query, "name")
    try:
        name = check_text(name_text, "name") if name_text else None
    except InvalidArgumentError as exc:
        raise BadRequest(str(exc)) from None
    since_text = _value(query, "since")
    until_text = _value(query, "until")
    since = parse_moment(since_text, "since") if since_text else default_since
    until = parse_moment(until_text, "until") if until_text else None
    after_text = _value(query, "after")
    after = parse_cursor(after_text, "after") if after_text else None
    before_text = _value(query, "before")
    before = parse_cursor(before_text, "before") if before_text else None
    if after is not None and before is not None:
        raise BadRequest("give before or after, not both")
    return Filter(name, since_text, until_text, since, until, after, before)


def _value(query: Mapping[str, str], key: str) -> str:
    value = query.get(key, "")
    if len(value) > MAX_PARAMETER:
        raise BadRequest(f"{key} is longer than {MAX_PARAMETER} characters")
    return value.strip() if key != "name" else value


def parse_moment(text: str, what: str) -> Moment:
    """A duration ago (``1h``, ``7d``; ``0s`` is now) or an ISO 8601 date-time (naive is UTC)."""
    try:
        return parse_duration(text, zero=True)
    except (ValueError, OverflowError):
        pass
    spec = f"{text[:-1]}+00:00" if text.endswith(("Z", "z")) else text  # 3.10 reads no "Z"
    try:
        moment = as_utc(datetime.fromisoformat(spec))
    except ValueError:
        raise BadRequest(
            f"{what} is neither a duration ago (30m, 1h, 7d) nor an ISO date-time "
            "(2026-01-01T06:00:00Z)"
        ) from None
    if not EARLIEST <= moment < LATEST:
        raise BadRequest(f"{what} is outside the years 1970 to 8999")
    return moment


def parse_instant(text: str, what: str) -> datetime:
    """An ISO 8601 date-time such as this page writes (naive is UTC)."""
    moment = parse_moment(text, what)
    if not isinstance(moment, datetime):
        raise BadRequest(f"{what} must be an ISO date-time")
    return moment


def _resolve(moment: Moment, now: datetime) -> datetime:
    if not isinstance(moment, timedelta):
        return moment
    try:
        return now - moment
    except OverflowError:  # further back than datetime goes: the start of the table
        return EARLIEST


def cursor_text(after: Cursor) -> str:
    """A history cursor as one URL-safe token."""
    tick, name, sequence = after
    document = json.dumps([tick.isoformat(), name, sequence], ensure_ascii=False)
    return base64.urlsafe_b64encode(document.encode()).decode().rstrip("=")


def parse_cursor(text: str, what: str = "after") -> Cursor:
    """The cursor :func:`cursor_text` wrote, checked as thoroughly as any other input."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        tick, name, sequence = json.loads(raw.decode())
        if not all(isinstance(part, str) for part in (tick, name, sequence)):
            raise ValueError("not three strings")
        return (
            parse_instant(tick, what),
            check_text(name, what),
            check_text(sequence, what),
        )
    except (ValueError, TypeError, binascii.Error, BadRequest):
        raise BadRequest(
            f"{what} is not a cursor this page wrote; start from the first page"
        ) from None
