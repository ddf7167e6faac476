"""How the page writes figures: one place, so the HTML and the live refresh agree.

Durations read the way they are typed (``300ms``, ``1.5s``, ``1m30s``), by the
writer ``worksync status`` uses too; instants are UTC, ``YYYY-MM-DD HH:MM:SS``.
Every figure the page shows is written here. The table's text is shown as
``worksync status`` shows it (:func:`shown`, the command line's
``printable``): what cannot be seen is escaped, so ``rtl-\u202etxt.exe`` reads
as typed and not as ``rtl-exe.txt``. Markup is left as it is: escaping that
is the template's and the browser's job, so the page shows a work named
``<b>`` literally instead of bold or mangled. Raw values (a link's name,
a data attribute) are kept apart from these shown ones.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from .._sql.text import printable, printable_lines
from ..durations import format_duration
from ..models import as_utc

NONE = "-"
ERROR_LINE = 160
"""Most characters of an error's first line shown before the rest is one click away."""
ELLIPSIS = "\u2026"

shown = printable
"""Table text as the page shows it: as ``worksync status`` does."""

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


def error_line(text: str | None) -> str:
    """An error's first line, escaped and cut to :data:`ERROR_LINE` (``…`` if there is more).

    A 16,000-character traceback would fill a screen; its first line says
    what failed, and the page shows the rest on demand.
    """
    if not text:
        return ""
    lines = printable_lines(text)
    first = lines[0]
    if len(first) > ERROR_LINE:
        return first[: ERROR_LINE - 1] + ELLIPSIS
    return first + ELLIPSIS if any(line.strip() for line in lines[1:]) else first


def error_full(text: str | None) -> str:
    """The whole error, each line escaped, its line breaks kept."""
    return "\n".join(printable_lines(text)) if text else ""


def age(delta: timedelta | None) -> str:
    """How long ago (or until), to the second: ``3h2m5s``."""
    if delta is None:
        return NONE
    return format_duration(timedelta(seconds=round(delta.total_seconds())))
