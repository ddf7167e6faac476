"""Plain-text rendering for the commands: durations, instants and aligned tables.

Output is for people reading a terminal or a CI log, so it is plain aligned
text with no colour, and durations read the way they are typed (``1m30s``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from ..models import as_utc


def format_moment(moment: datetime | None) -> str:
    """An instant in UTC as ``YYYY-MM-DD HH:MM:SS`` (sub-seconds only when there are some)."""
    if moment is None:
        return "-"
    utc = as_utc(moment)
    text = utc.strftime("%Y-%m-%d %H:%M:%S")
    return f"{text}.{utc.microsecond:06d}".rstrip("0") if utc.microsecond else text


def plural(count: int, word: str) -> str:
    """``1 row``, ``2 rows``, ``2 batches``."""
    if count == 1:
        return f"{count} {word}"
    return f"{count} {word}es" if word.endswith(("s", "sh", "ch", "x")) else f"{count} {word}s"


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
