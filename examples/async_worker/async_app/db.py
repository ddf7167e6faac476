"""Which database the app uses, its ``AsyncEngine``, and the schema step.

The URL is ``ASYNC_APP_DATABASE_URL`` with an asyncio driver:
``sqlite+aiosqlite:///async-app.db`` (the default), ``mysql+aiomysql://...``
or ``postgresql+psycopg://...``.
"""

from __future__ import annotations

import os
from typing import Any

import sqlalchemy as sa
import worksync_sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from async_app.jobs import metadata

DEFAULT_URL = "sqlite+aiosqlite:///async-app.db"
"""A file in the current folder: ``pip install "worksync_sa[async-sqlite]"`` is all it needs."""

SYNC_DRIVERS = {
    "aiosqlite": "pysqlite",  # the standard library's sqlite3
    "aiomysql": "pymysql",  # aiomysql is built on PyMySQL, so it is installed with it
    "asyncmy": "pymysql",  # asyncmy brings no blocking driver: pip install pymysql
    "psycopg": "psycopg",  # psycopg 3 is both
}
"""The blocking driver that the schema step uses for each asyncio driver."""


def database_url() -> str:
    """``ASYNC_APP_DATABASE_URL`` if set, else a SQLite file in the current folder."""
    return os.environ.get("ASYNC_APP_DATABASE_URL") or DEFAULT_URL


def make_engine(url: str | None = None) -> AsyncEngine:
    """The app's one AsyncEngine; worksync_sa's asyncio services take it as it is.

    The settings ``worksync_sa.create_engine`` gives a blocking engine, by hand:
    ``pool_pre_ping`` (replace connections that died while idle), ``utf8mb4`` on
    MySQL/MariaDB, and WAL on a SQLite file (readers never block the writer).
    """
    parsed = sa.make_url(url or database_url())
    backend = parsed.get_backend_name()
    if backend in ("mysql", "mariadb") and "charset" not in parsed.query:
        parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    engine = create_async_engine(parsed, pool_pre_ping=True)
    if backend == "sqlite" and parsed.database not in (None, "", ":memory:"):
        # Connection events belong to the sync_engine; they run for aiosqlite too.
        sa.event.listen(engine.sync_engine, "connect", _wal)
    return engine


def _wal(dbapi_conn: Any, record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


def sync_url(url: str | None = None) -> sa.URL:
    """The same database with the blocking driver, for the migrations (Alembic is blocking)."""
    parsed = sa.make_url(url or database_url())
    driver = SYNC_DRIVERS.get(parsed.get_driver_name())
    if driver is None:
        raise ValueError(
            f"{parsed.render_as_string(hide_password=True)}: use one of the asyncio drivers "
            f"{', '.join(sorted(SYNC_DRIVERS))}"
        )
    return parsed.set(drivername=f"{parsed.get_backend_name()}+{driver}")


def create_schema(url: str | None = None) -> None:
    """Create or upgrade the tables: worksync_sa's ``works`` and the app's ``job_runs``.

    A shortcut for the example. A real app runs this once per deploy, before
    any copy starts, and with its own Alembic history holding worksync_sa's
    revisions: ``alembic upgrade heads`` (see examples/host_app), or
    ``worksync migrate`` for the works table alone. Copies that all start at
    once on an empty database would race to create the same tables.
    """
    engine = worksync_sa.create_engine(sync_url(url), poolclass=sa.pool.NullPool)
    try:
        worksync_sa.upgrade(engine)  # worksync_sa's packaged migrations, to head
        metadata.create_all(engine)  # the app's own table (a real app: its own migration)
    finally:
        engine.dispose()
