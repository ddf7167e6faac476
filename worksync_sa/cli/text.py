"""Plain-text rendering for the commands: durations, instants and aligned tables.

Output is for people reading a terminal or a CI log, so it is plain aligned
text with no colour, and durations read the way they are typed (``1m30s``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from ..models import as_utc

_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def format_duration(delta: timedelta | None) -> str:
    """``delta`` as durations are typed (``250ms``, ``4.7s``, ``1m30s``, ``2d3h``); None is ``-``.

    Below a minute it keeps milliseconds; above, whole seconds. Negative
    values (a claim that started before its tick) keep their sign.
    """
    if delta is None:
        return "-"
    sign = "-" if delta < timedelta(0) else ""
    seconds = abs(delta).total_seconds()
    if seconds < 1:
        millis = round(seconds * 1000)
        return f"{sign}{millis}ms" if millis else "0s"
    if seconds < 60:
        return f"{sign}{f'{seconds:.3f}'.rstrip('0').rstrip('.')}s"
    rest = round(seconds)
    parts = []
    for unit, size in _UNITS:
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    return sign + "".join(parts)


def format_moment(moment: datetime | None) -> str:
    """An instant in UTC as ``YYYY-MM-DD HH:MM:SS`` (sub-seconds only when there are some)."""
    if moment is None:
        return "-"
    utc = as_utc(moment)
    text = utc.strftime("%Y-%m-%d %H:%M:%S")
    return f"{text}.{utc.microsecond:06d}".rstrip("0") if utc.microsecond else text


def plural(count: int, word: str) -> str:
    """``1 row``, ``2 rows``."""
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def format_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], *, right: Sequence[int] = ()
) -> list[str]:
    """Lines of an aligned table; the columns whose index is in ``right`` align right."""
    widths = [len(header) for header in headers]
    for row in rows:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]
    lines = []
    for row in (headers, *rows):
        cells = [
            cell.rjust(width) if index in right else cell.ljust(width)
            for index, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return lines
