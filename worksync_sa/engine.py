"""``create_engine`` with the settings worksync_sa wants from a pool.

Hosts may pass any engine of their own; this helper only gathers the
defaults that matter for long-running schedulers and workers:

* ``pool_pre_ping``: a connection that died while idle (a database restart,
  a proxy timeout) is replaced at checkout instead of failing the next claim;
* MySQL/MariaDB: ``charset=utf8mb4`` unless the URL says otherwise, so any
  name or error text round-trips;
* SQLite: WAL journal (readers never block the writer) and a busy timeout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

if TYPE_CHECKING:  # at run time only when asked for: it needs greenlet, an optional extra
    from sqlalchemy.ext.asyncio import AsyncEngine

SQLITE_BUSY_TIMEOUT_S = 5.0
MASK = "***"
_PLACEHOLDER = "WorksyncMaskedSecret"


def is_secret_key(key: str) -> bool:
    """True for URL query keys that hold a password (``password``, ``passwd``, ``sslpassword``)."""
    return "pass" in key.lower()


def shown_url(url: str | sa.URL) -> str:
    """The URL as it may be printed or logged: every password masked.

    SQLAlchemy's ``hide_password`` masks the password before the ``@``; drivers
    also take one in the query string (``?password=``, ``?passwd=``), which it
    prints in clear, so any query value whose key mentions "pass" is masked too.
    """
    url = sa.make_url(url)
    secret = {key: _PLACEHOLDER for key in url.query if is_secret_key(key)}
    if secret:
        url = url.update_query_dict(secret)
    # The placeholder survives the query string's quoting, which would turn "***" into %2A.
    return url.render_as_string(hide_password=True).replace(_PLACEHOLDER, MASK)


def create_engine(url: str | sa.URL, **kwargs: Any) -> sa.Engine:
    """``sqlalchemy.create_engine`` with worksync_sa's defaults; ``kwargs`` win."""
    url = _with_defaults(sa.make_url(url), kwargs)
    engine = sa.create_engine(url, **kwargs)
    _wal_on_connect(url, engine)
    return engine


def _with_defaults(url: sa.URL, kwargs: dict[str, Any]) -> sa.URL:
    """The URL with utf8mb4 on MySQL; ``kwargs`` given pre-ping and SQLite's busy timeout."""
    kwargs.setdefault("pool_pre_ping", True)
    backend = url.get_backend_name()
    if backend in ("mysql", "mariadb") and "charset" not in url.query:
        url = url.update_query_dict({"charset": "utf8mb4"})
    if backend == "sqlite":
        kwargs.setdefault("connect_args", {}).setdefault("timeout", SQLITE_BUSY_TIMEOUT_S)
    return url


def _wal_on_connect(url: sa.URL, engine: sa.Engine) -> None:
    """SQLite files: each new connection switches to the WAL journal."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return

    @sa.event.listens_for(engine, "connect")
    def _wal(dbapi_conn: Any, record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()


ASYNC_DRIVERS = {"sqlite": ("aiosqlite",), "postgresql": ("psycopg",)}
"""Each database's asyncio drivers, preferred first; MySQL/MariaDB's are in ``_MYSQL_ASYNC``."""
_MYSQL_ASYNC = ("aiomysql", "asyncmy")
_ASYNC_EXTRAS = {"mysql": "async-mysql", "mariadb": "async-mysql", "postgresql": "async-postgresql"}


def async_url(url: str | sa.URL) -> sa.URL:
    """The same database through an asyncio driver: the URL's own if it names one.

    ``worksync work`` runs ``async def`` handlers on an ``AsyncWorker``, which needs
    an ``AsyncEngine``, from the one URL an operator gives every command. The first
    installed driver is taken; with none, the error names the extra that brings one.
    """
    import importlib.util  # noqa: PLC0415 (only this path looks for drivers)

    url = sa.make_url(url)
    backend = url.get_backend_name()
    drivers = _MYSQL_ASYNC if backend in ("mysql", "mariadb") else ASYNC_DRIVERS.get(backend)
    if drivers is None:
        raise ValueError(f"no asyncio driver is known for {backend!r} databases")
    extra = _ASYNC_EXTRAS.get(backend, "async-sqlite")
    if importlib.util.find_spec("greenlet") is None:
        raise ImportError(f"asyncio needs greenlet: pip install 'worksync_sa[{extra}]'")
    if url.get_driver_name() in drivers:
        return url
    for driver in drivers:
        if importlib.util.find_spec(driver) is not None:
            return url.set(drivername=f"{backend}+{driver}")
    raise ImportError(
        f"no asyncio driver for {backend!r} is installed ({' or '.join(drivers)}): "
        f"pip install 'worksync_sa[{extra}]'"
    )


def create_async_engine(url: str | sa.URL, **kwargs: Any) -> AsyncEngine:
    """``create_engine``'s defaults on an ``AsyncEngine`` (see ``async_url``); ``kwargs`` win."""
    from sqlalchemy.ext.asyncio import create_async_engine as create  # noqa: PLC0415 (greenlet)

    url = _with_defaults(async_url(url), kwargs)
    engine = create(url, **kwargs)
    _wal_on_connect(url, engine.sync_engine)
    return engine
