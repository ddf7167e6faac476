"""Text going into the table, and text coming out of it to a terminal.

Names and sequences are keys: a value the database would store differently
from what was given (cut short, trimmed, re-encoded) could claim another
tick's rows, so such values are refused where they enter. Error texts are
records of a failure: they are never refused, only escaped, because a
failure that cannot be written is a failure lost. Text read back from the
table is escaped once more before a terminal shows it, since anyone who can
name a work could otherwise move the cursor or forge lines.
"""

from __future__ import annotations

import unicodedata

from ..errors import InvalidArgumentError
from ..models import ERROR_TEXT_MAX, TEXT_MAX

# Bidirectional overrides and isolates reorder what follows them on screen.
_BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)


def check_text(value: object, what: str) -> str:
    """Return ``value`` if it can be stored as a name or sequence, else raise
    :class:`InvalidArgumentError` (a ``ValueError``) naming ``what``.

    1 to 255 characters (``varchar(255)``); valid Unicode (a lone surrogate,
    which ``os.listdir`` returns for a file name that is not UTF-8, has no
    encoding any database accepts); no NUL (PostgreSQL rejects it); and no
    trailing whitespace (MySQL compares ``'a '`` equal to ``'a'``, so such a
    value could claim another tick's rows).
    """
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{what} must be a string, not {type(value).__name__}")
    if not value:
        raise InvalidArgumentError(f"{what} is empty; it needs 1 to {TEXT_MAX} characters")
    if len(value) > TEXT_MAX:
        raise InvalidArgumentError(f"{what} has {len(value)} characters; the limit is {TEXT_MAX}")
    if "\x00" in value:
        raise InvalidArgumentError(f"{what} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArgumentError(
            f"{what} contains a lone surrogate ({value[exc.start]!r} at position {exc.start}), "
            "which is not valid Unicode and cannot be stored; decode such text with "
            "errors='replace' first"
        ) from None
    if value[-1].isspace():
        raise InvalidArgumentError(
            f"{what} {value!r} ends with whitespace, which MySQL ignores in keys"
        )
    return value


def stored_error(text: str) -> str:
    """An error text as the ``error`` column keeps it.

    Lone surrogates become their ``\\udcXX`` escape and NUL becomes ``\\x00``
    (no database stores either as such), then the text is cut to
    ``ERROR_TEXT_MAX`` characters. Everything else is kept verbatim.
    """
    escaped = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return escaped.replace("\x00", "\\x00")[:ERROR_TEXT_MAX]


def printable(text: str) -> str:
    """``text`` with control characters escaped (``\\n``, ``\\x1b``, ``\\u202e``), for terminals."""
    if text.isprintable():
        return text
    return "".join(
        ch.encode("unicode_escape").decode("ascii")
        if unicodedata.category(ch) == "Cc" or ch in _BIDI_CONTROLS
        else ch
        for ch in text
    )
