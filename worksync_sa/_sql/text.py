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
# Letters and marks that draw nothing, though their categories are not "format".
_BLANK_LETTERS = frozenset("\u034f\u115f\u1160\u17b4\u17b5\u3164\uffa0")
# Control, format (zero-width, bidirectional, tags), line and paragraph separators,
# surrogates and unassigned code points: none draws a glyph of its own.
_UNSEEN_CATEGORIES = frozenset(("Cc", "Cf", "Zl", "Zp", "Cs", "Cn"))
_ZWJ = "\u200d"
# A zero-width joiner between pictographs draws them as one (a family emoji).
_PICTOGRAPH_CATEGORIES = frozenset(("So", "Sk"))
_EMOJI_PRESENTATION = "\ufe0f"


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
    """``text`` as a person may safely be shown it: what cannot be seen, escaped.

    Every view of the table (``worksync status``, the log lines of the
    command line, the status page) shows text through this one function, so
    a name reads the same everywhere. Escaped as Python writes them
    (``\\n``, ``\\x1b``, ``\\u202e``): control characters, which move a
    terminal's cursor or forge lines; bidirectional overrides and isolates,
    which show ``rtl-\\u202etxt.exe`` as ``rtl-exe.txt``; and the characters
    that draw nothing (zero-width spaces and joiners, soft hyphens, tags,
    Hangul fillers), which make two different names look the same. A
    zero-width joiner between pictographs is kept: there it draws one emoji
    (a family) rather than hiding anything. Backslashes are left alone, so a
    name that spells out an escape reads like one escaped here; the
    difference never matters for telling two names apart on one screen,
    where both would show the same text as the table's raw value.
    """
    if text.isprintable() and not any(ch in _BLANK_LETTERS for ch in text):
        return text
    shown = []
    for index, ch in enumerate(text):
        if _unseen(ch) and not (ch == _ZWJ and _joins_pictographs(text, index)):
            shown.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            shown.append(ch)
    return "".join(shown)


def printable_lines(text: str) -> list[str]:
    """``text`` line by line, each line :func:`printable`: for a long error shown whole.

    A traceback reads best on its own lines; only the line breaks are kept
    as breaks (``\\r\\n`` and ``\\r`` read as one), every other character
    escaped as :func:`printable` escapes it.
    """
    return [printable(line) for line in text.replace("\r\n", "\n").split("\n")]


def _unseen(ch: str) -> bool:
    return ch in _BLANK_LETTERS or unicodedata.category(ch) in _UNSEEN_CATEGORIES


def _joins_pictographs(text: str, index: int) -> bool:
    """Whether the joiner at ``index`` sits between two pictographs (an emoji sequence)."""
    before = text[index - 1] if index > 0 else ""
    if before == _EMOJI_PRESENTATION and index > 1:
        before = text[index - 2]
    after = text[index + 1] if index + 1 < len(text) else ""
    return bool(before and after) and all(
        unicodedata.category(ch) in _PICTOGRAPH_CATEGORIES for ch in (before, after)
    )
