"""Schema management: where our Alembic scripts are, and how to run them.

Alembic owns the table. A host either runs our migrations on their own
(:func:`upgrade`, or ``alembic upgrade head`` from this repository), or adds
our versions directory to its own Alembic environment; our revisions carry
the branch label ``worksync`` and namespaced ids, so they sit beside the
host's history without touching it.

:func:`include_object` is for the host's ``env.py``: with it, the host's
autogenerate never proposes to drop the work table it does not model.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.util import CommandError
from sqlalchemy.engine import Connection, Engine

from ._dialects import family_of
from ._poolers import unprepared
from ._tx import checked_engine, writer_lock
from .errors import WorksyncError
from .models import DEFAULT_TABLE, validate_table_name, version_table_for

logger = logging.getLogger(__name__)

BRANCH_LABEL = "worksync"
MIGRATION_WAIT_SECONDS = 300
"""How long a migration waits for another process migrating the same table."""
IncludeObject = Callable[[Any, "str | None", str, bool, Any], bool]


def migrations_path() -> Path:
    """The directory holding our ``env.py`` and ``versions/``.

    Inside an installed wheel it is ``worksync_sa/migrations``; in a source
    checkout it is the repository's top-level ``migrations/``.
    """
    here = Path(__file__).resolve().parent
    for candidate in (here / "migrations", here.parent / "migrations"):
        if (candidate / "env.py").is_file() and (candidate / "versions").is_dir():
            return candidate
    raise FileNotFoundError(f"worksync_sa migrations not found next to {here}")


def alembic_config(*, table: str = DEFAULT_TABLE) -> Config:
    """An Alembic Config that runs our own environment against one work table."""
    config = Config()
    config.set_main_option("script_location", str(migrations_path()).replace("%", "%%"))
    config.attributes["worksync_table"] = validate_table_name(table)
    return config


def upgrade(engine: Engine, revision: str = "head", *, table: str = DEFAULT_TABLE) -> None:
    """Create or upgrade the work table (``alembic upgrade``) on ``engine``."""
    _run(engine, table, lambda config: command.upgrade(config, revision))


def downgrade(engine: Engine, revision: str = "base", *, table: str = DEFAULT_TABLE) -> None:
    """Downgrade the work table; ``base`` drops it."""
    _run(engine, table, lambda config: command.downgrade(config, revision))


def _run(engine: Engine, table: str, action: Callable[[Config], None]) -> None:
    config = alembic_config(table=table)
    engine = checked_engine(engine)
    galera = _galera(engine)
    deadline: float | None = None
    while True:
        try:
            with migrating(engine, table) as conn:
                config.attributes["connection"] = conn
                action(config)
            return
        except Exception as exc:
            if not _concurrent_ddl(exc, galera):
                raise
            deadline = deadline or time.monotonic() + CONCURRENT_DDL_WAIT_SECONDS
            if time.monotonic() > deadline:
                raise
            logger.info(
                "another process is changing table %r (%s): waiting for it, then migrating again",
                table,
                str(exc).splitlines()[0][:200],
                extra={"action": "migrate"},
            )
            time.sleep(1)


CONCURRENT_DDL_WAIT_SECONDS = 60
"""How long a migration that collided with another one's DDL keeps trying again."""
_CONCURRENT_DDL = frozenset({1050, 1060, 1061, 1091, 1205, 1213, 1684})
"""MySQL/MariaDB: a table, column or index already there or gone, being changed, or a
conflict with another node's write to the version table."""


def _galera(engine: Engine) -> bool:
    """Whether a MySQL-family server is a Galera node (its named locks are node-local)."""
    if family_of(engine.dialect) != "mysql":
        return False
    with engine.connect() as conn, unprepared(conn):
        row = conn.exec_driver_sql("SHOW VARIABLES LIKE 'wsrep_on'").first()
    return row is not None and str(row[1]).upper() == "ON"


def _concurrent_ddl(exc: BaseException, galera: bool) -> bool:
    """Whether ``exc`` says another migrator got there first.

    A server's named lock serialises the migrators of one MySQL or MariaDB
    server, but a Galera cluster replicates DDL, not named locks: two nodes
    may migrate the same table at once. The loser's DDL finds the winner's
    table, column or index (or our first revision finds the table without
    its revision yet); it waits, then migrates again and finds the table at
    head. Elsewhere these errors are real and raise at once.
    """
    if not galera:
        return False
    if isinstance(exc, CommandError):
        return "already exists with worksync_sa's columns but no revision" in str(exc)
    code = getattr(getattr(exc, "orig", None), "args", (None,))[0]
    return code in _CONCURRENT_DDL


@contextlib.contextmanager
def migrating(engine: Engine, table: str) -> Iterator[Connection]:
    """A connection in a transaction that holds the table's migration lock.

    Every copy of a service running ``worksync migrate`` (or ``upgrade``) as it
    starts is the normal case, not a race to lose: MySQL's DDL is not
    transactional, and two processes creating the same table both fail half
    way. The second one waits here, then finds the table at head and does
    nothing.

    PostgreSQL's lock is a transaction-level advisory lock taken inside the
    migration's own transaction: it holds exactly as long as the DDL it
    guards, and it works behind PgBouncer in transaction pooling, where a
    session-level lock would stay behind on whichever server connection took
    it. MySQL/MariaDB run DDL outside transactions, so there it is a named
    lock (``GET_LOCK``) on a connection of its own, released when the
    migration ends or that connection closes. SQLite: a lock file beside the
    database. Nothing is prepared on the server meanwhile (``_poolers``).
    """
    with _session_lock(engine, table), engine.connect() as conn, unprepared(conn), conn.begin():
        if family_of(engine.dialect) == "postgresql":
            _wait_for(conn, PG_TAKE, _lock_params(engine, table), table)
        yield conn


PG_TAKE = sa.text("SELECT CAST(pg_try_advisory_xact_lock(:lock_key) AS INTEGER)")
MYSQL_TAKE = sa.text("SELECT GET_LOCK(:lock_name, :wait_seconds)")
MYSQL_RELEASE = sa.text("SELECT RELEASE_LOCK(:lock_name)")


def _lock_params(engine: Engine, table: str) -> dict[str, Any]:
    # The database and table, not the host: clients through a proxy and direct ones,
    # or by two names of one host, must take the same lock.
    where = f"{engine.url.database}/{table}"
    digest = hashlib.blake2b(f"worksync-migrate:{where}".encode(), digest_size=20).digest()
    return {
        "lock_name": f"worksync-{digest.hex()[:40]}",
        "lock_key": int.from_bytes(digest[:8], "big", signed=True),
        "wait_seconds": 1,
    }


def _wait_for(conn: Connection, take: sa.TextClause, params: dict[str, Any], table: str) -> None:
    deadline = time.monotonic() + MIGRATION_WAIT_SECONDS
    while conn.execute(take, params).scalar() != 1:
        if time.monotonic() > deadline:
            raise WorksyncError(
                f"another process has been migrating table {table!r} for more than "
                f"{MIGRATION_WAIT_SECONDS} s; try again once it is done"
            )
        time.sleep(0.2)


@contextlib.contextmanager
def _session_lock(engine: Engine, table: str) -> Iterator[None]:
    """MySQL's named lock or SQLite's lock file, held around the migration; none on PostgreSQL."""
    family = family_of(engine.dialect)
    if family == "sqlite":
        lock = writer_lock(engine.url, "-worksync-migrate.lock")
        with lock if lock is not None else contextlib.nullcontext():
            yield
        return
    if family != "mysql":
        yield
        return
    params = _lock_params(engine, table)
    with engine.execution_options(isolation_level="AUTOCOMMIT").connect() as conn:
        with unprepared(conn):
            _wait_for(conn, MYSQL_TAKE, params, table)
        try:
            yield
        finally:
            conn.execute(MYSQL_RELEASE, params)


def include_object_for(*tables: str) -> IncludeObject:
    """An Alembic ``include_object`` hook that hides these work tables from autogenerate."""
    hidden = set()
    for table in tables or (DEFAULT_TABLE,):
        hidden.update({validate_table_name(table), version_table_for(table)})

    def include_object(
        obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
    ) -> bool:
        if type_ == "table":
            return name not in hidden
        owner = getattr(obj, "table", None)
        return getattr(owner, "name", None) not in hidden

    return include_object


include_object: IncludeObject = include_object_for(DEFAULT_TABLE)
"""Hides the default ``works`` table from a host's autogenerate (see :func:`include_object_for`)."""
