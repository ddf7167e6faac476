"""How the page writes figures: one place, so the HTML and the live refresh agree.

Durations read the way they are typed (``300ms``, ``1.5s``, ``1m30s``), by the
writer ``worksync status`` uses too; instants are UTC, ``YYYY-MM-DD HH:MM:SS``.
Every figure the page shows is written here, and the table's text is left as
it is: escaping is the template's and the browser's job, so the page shows a
work named ``<b>`` literally instead of bold or mangled.
"""

from __future__ import annotations

from datetime import datetime

from ..durations import format_duration
from ..models import as_utc

NONE = "-"

duration = format_duration
"""``delta`` as durations are typed; None is ``-`` (as ``worksync status`` writes them)."""


def moment(at: datetime | None, *, millis: bool = False) -> str:
    """An instant in UTC, to the second (or the millisecond)."""
    if at is None:
        return NONE
    utc = as_utc(at)
    text = utc.strftime("%Y-%m-%d %H:%M:%S")
    return f"{text}.{utc.microsecond // 1000:03d}" if millis else text


def clock_time(at: datetime) -> str:
    """Just the time of day, for axis labels."""
    return as_utc(at).strftime("%H:%M:%S")


def rate(value: float | None) -> str:
    """A success rate as a percentage with one decimal; None (nothing settled) is ``-``."""
    return NONE if value is None else f"{value:.1%}"


def optional(value: object) -> str:
    """A nullable column's value as text."""
    return NONE if value is None else str(value)
