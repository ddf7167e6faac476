"""The status page's settings: how much it reads, how often it refreshes.

Each bound keeps a request's cost independent of the table's history: the
default range is the last hour (like ``worksync status``), a request folds
the figures of at most ``max_ticks`` ticks, a timeline shows at most
``timeline_ticks`` due ticks per work (and a few upcoming), and a history page
``page_size`` lines.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from datetime import timedelta

from ..durations import shown
from ..errors import InvalidConfigError

DEFAULT_REFRESH = timedelta(seconds=5)
DEFAULT_WINDOW = timedelta(hours=1)
DEFAULT_TIMELINE_TICKS = 120
DEFAULT_PAGE_SIZE = 50
DEFAULT_MAX_TICKS = 20_000
TOKEN_MIN = 16
TOKEN_CHARACTERS = frozenset(string.ascii_letters + string.digits + string.punctuation)


def check_token(token: object) -> str:
    """``token`` if it is long enough to resist guessing and fits an HTTP header, else raise."""
    if not isinstance(token, str) or len(token) < TOKEN_MIN or not set(token) <= TOKEN_CHARACTERS:
        raise InvalidConfigError(
            f"the auth token must be at least {TOKEN_MIN} printable ASCII characters without "
            "spaces; make one with: python -c 'import secrets; print(secrets.token_urlsafe())'"
        )
    return token


@dataclass(frozen=True, slots=True, kw_only=True)
class PageConfig:
    """What one page shows and how often it refreshes."""

    refresh: timedelta = DEFAULT_REFRESH
    """How often an open page fetches fresh figures (in place, no reload)."""
    window: timedelta = DEFAULT_WINDOW
    """The default range: ticks from this long ago on (upcoming ones included)."""
    timeline_ticks: int = DEFAULT_TIMELINE_TICKS
    """Most due ticks per work in its timeline (the latest ones), plus a few upcoming."""
    page_size: int = DEFAULT_PAGE_SIZE
    """Lines per page of the history."""
    max_ticks: int = DEFAULT_MAX_TICKS
    """Most ticks one request folds; a wider range is cut and the page says so."""

    def __post_init__(self) -> None:
        for name, shortest, longest in (
            ("refresh", timedelta(seconds=1), timedelta(hours=1)),
            ("window", timedelta(minutes=1), timedelta(days=366)),
        ):
            span = getattr(self, name)
            if not isinstance(span, timedelta) or not shortest <= span <= longest:
                raise InvalidConfigError(
                    f"{name} must be a timedelta from {shown(shortest)} to {shown(longest)}, "
                    f"got {shown(span)}"
                )
        for name, low, high in (
            ("timeline_ticks", 1, 1_000),
            ("page_size", 1, 1_000),
            ("max_ticks", 100, 1_000_000),
        ):
            count = getattr(self, name)
            if not isinstance(count, int) or isinstance(count, bool) or not low <= count <= high:
                raise InvalidConfigError(
                    f"{name} must be an int from {low} to {high}, got {count!r}"
                )
