"""Which database the shop uses, and its engine. Alembic's env.py reads the same URL."""

from __future__ import annotations

import os

import sqlalchemy as sa

DEFAULT_URL = "sqlite:///shop.db"
"""A file in the current folder, so the example runs with nothing installed but Python."""


def database_url() -> str:
    """``SHOP_DATABASE_URL`` if set, for example ``mysql+mysqldb://app@db/shop``."""
    return os.environ.get("SHOP_DATABASE_URL") or DEFAULT_URL


def make_engine(url: str | None = None) -> sa.Engine:
    """The shop's one engine. worksync_sa needs no engine of its own: it takes this one.

    ``pool_pre_ping`` replaces connections that died while idle (a database
    restart), which a long-running scheduler will meet sooner or later.
    ``worksync_sa.create_engine`` would add the same, plus utf8mb4 on MySQL
    and WAL on SQLite; any engine works.
    """
    return sa.create_engine(url or database_url(), pool_pre_ping=True)
