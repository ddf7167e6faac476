"""Schema management: where our Alembic scripts are, how to run them, and where a table stands.

Alembic owns the table. A host either runs our migrations on their own
(:func:`upgrade`, or ``alembic upgrade head`` from this repository), or adds
our versions directory to its own Alembic environment; our revisions carry
the branch label ``worksync`` and namespaced ids, so they sit beside the
host's history without touching it.

Migrations are expand-only within a major version. Every revision after the
first only adds: nullable columns (or ones with a server default), tables,
indexes, and constraints that every older release's writes already satisfy;
it never drops or narrows a column, a table or a constraint, and may replace
a plain (non-unique) index, which changes speed, never results. So a release
keeps working beside a table that a newer release of the same major version
migrated, and a rolling deploy may run both at once. ``tests/test_upgrades.py``
reads every revision's ``upgrade()`` to hold this.

The revision numbering is the contract; nothing else is stored. The revisions
of one major version are named ``worksync_NNNN``, numbered in order. A table
at ``worksync_NNNN`` with NNNN above this release's head was migrated by a
newer release of the same major version: it is *ahead* and compatible, so
:func:`upgrade` to head leaves it alone (saying so) and :func:`schema_status`
calls it ready. A release that must contract the schema starts a new major
version and names its revisions differently, so older releases see an
unknown revision and refuse it instead of guessing.

:func:`include_object` is for the host's ``env.py``: with it, the host's
autogenerate never proposes to drop the work table it does not model.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from ._run.engines import checked_engine
from ._run.poolers import unprepared
from ._run.writelock import writer_lock
from ._sql.dialect import family_of
from .errors import SchemaNotReadyError, WorksyncError
from .models import (
    DEFAULT_TABLE,
    actions_table_for,
    pauses_table_for,
    validate_table_name,
    version_table_for,
    work_table,
)

if TYPE_CHECKING:  # Alembic loads when a migration or a head lookup runs, not on import:
    # every `worksync` command imports this module, and most never migrate (0.08 s saved).
    from alembic.config import Config
    from alembic.script import ScriptDirectory

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
    from alembic.config import Config  # noqa: PLC0415 - see TYPE_CHECKING above

    config = Config()
    config.set_main_option("script_location", str(migrations_path()).replace("%", "%%"))
    config.attributes["worksync_table"] = validate_table_name(table)
    return config


REVISION_FORM = re.compile(r"worksync_(\d{4})")
"""The ids of one major version's revisions, numbered in order (see the module docstring)."""
TO_HEAD = frozenset({"head", "heads", f"{BRANCH_LABEL}@head"})
MIGRATE_FIX = (
    "`worksync migrate`, `alembic upgrade heads` in your app, or worksync_sa.upgrade(engine)"
)
ORIGINAL_COLUMNS = frozenset(
    {"id", "created_at", "name", "status", "sequence", "started_at", "finished_at"}
)
"""The columns of the Go original's table, which the first revision adopts in place."""


class SchemaState(enum.Enum):
    """Where a work table stands against this release's migrations."""

    MISSING = "missing"
    """No table."""
    UNVERSIONED = "unversioned"
    """A table, but no revision in its version table: made by ``create_all``, kept in a
    host's own Alembic history, or the Go original's table."""
    BEHIND = "behind"
    """At a revision this release knows, older than its head: migrate."""
    CURRENT = "current"
    """At this release's head."""
    AHEAD = "ahead"
    """At a later ``worksync_NNNN`` than this release's head: a newer release of the same
    major version migrated it; its revisions only add, so this release works beside it."""
    UNKNOWN = "unknown"
    """At a revision this release cannot place (another major version's, or a foreign one)."""


def revision_number(revision: str) -> int | None:
    """NNNN of ``worksync_NNNN``; None for any other id."""
    match = REVISION_FORM.fullmatch(revision)
    return int(match[1]) if match else None


def classify(current: Iterable[str], head: str, known: Iterable[str]) -> SchemaState:
    """The state of a table recorded at ``current``, for a release whose head is ``head``.

    Pure: the revision numbering alone tells a newer compatible table from
    a foreign one (see the module docstring).
    """
    revisions = sorted(set(current))
    if not revisions:
        return SchemaState.MISSING
    if revisions == [head]:
        return SchemaState.CURRENT
    if set(revisions) <= set(known):
        return SchemaState.BEHIND
    ours, theirs = revision_number(head), [revision_number(r) for r in revisions]
    if len(theirs) == 1 and ours is not None and theirs[0] is not None and theirs[0] > ours:
        return SchemaState.AHEAD
    return SchemaState.UNKNOWN


@functools.cache
def _scripts() -> ScriptDirectory:
    from alembic.script import ScriptDirectory  # noqa: PLC0415 - see TYPE_CHECKING above

    return ScriptDirectory(str(migrations_path()))


def head_revision() -> str:
    """This release's head revision (our history has one head; a test holds that)."""
    head = _scripts().get_current_head()
    assert head is not None
    return head


def known_revisions() -> frozenset[str]:
    """Every revision this release's migrations know."""
    return frozenset(revision.revision for revision in _scripts().walk_revisions())


def recorded_revisions(conn: Connection, table: str) -> tuple[str, ...]:
    """The revision(s) recorded for ``table`` in its own version table; empty if none.

    Read with a plain SELECT rather than Alembic's MigrationContext, which
    logs two INFO lines each time: noise in every start-up of a service.
    """
    versions = version_table_for(table)
    if not sa.inspect(conn).has_table(versions):
        return ()
    recorded = sa.table(versions, sa.column("version_num"))
    return tuple(sorted(str(v) for v in conn.execute(sa.select(recorded.c.version_num)).scalars()))


@dataclass(frozen=True)
class SchemaStatus:
    """Where ``table`` stands, read by :func:`schema_status`."""

    table: str
    state: SchemaState
    current: tuple[str, ...]
    """The revision(s) recorded in the table's version table."""
    head: str
    """This release's head revision."""
    columns: frozenset[str] | None
    """The table's columns; None when there is no table."""
    missing_columns: frozenset[str]
    """Columns this release writes that the table lacks (read for an unversioned table)."""

    @property
    def ready(self) -> bool:
        """Whether this release's schedulers and workers can use the table.

        At head or ahead (compatible); or unversioned with every column this
        release needs (a host's own history, ``create_all``).
        """
        if self.state is SchemaState.UNVERSIONED:
            return not self.missing_columns
        return self.state in (SchemaState.CURRENT, SchemaState.AHEAD)

    def problem(self) -> str | None:
        """Why the table is not ready, with the fix; None when it is."""
        if self.ready:
            return None
        table, at = self.table, ", ".join(self.current)
        if self.state is SchemaState.MISSING:
            return f"table {table!r} does not exist: run the migrations ({MIGRATE_FIX})"
        if self.state is SchemaState.BEHIND:
            return (
                f"table {table!r} is at revision {at}, behind {self.head}, which this release of "
                f"worksync_sa needs: run the migrations ({MIGRATE_FIX})"
            )
        if self.state is SchemaState.UNKNOWN:
            return (
                f"table {table!r} is at revision {at}, which this release of worksync_sa does not "
                f"know and cannot tell compatible (not a later worksync_NNNN than {self.head}): "
                "run a release that knows it"
            )
        if self.columns == ORIGINAL_COLUMNS:
            return (
                f"table {table!r} is the table of worksync (Go): `worksync migrate` adopts it in "
                "place, every row kept"
            )
        return (
            f"table {table!r} lacks column(s) {', '.join(sorted(self.missing_columns))} that this "
            f"release of worksync_sa needs, and {version_table_for(table)!r} records no "
            "revision: migrate it where it was created (`alembic upgrade heads` in your app)"
        )


def schema_status(engine: Engine, *, table: str = DEFAULT_TABLE) -> SchemaStatus:
    """Where ``table`` stands against this release's migrations (reads, changes nothing)."""
    table = validate_table_name(table)
    with engine.connect() as conn:
        current = recorded_revisions(conn, table)
        inspector = sa.inspect(conn)
        columns = (
            frozenset(column["name"] for column in inspector.get_columns(table))
            if inspector.has_table(table)
            else None
        )
    head = head_revision()
    state = classify(current, head, known_revisions())
    if state is SchemaState.MISSING and columns is not None:
        state = SchemaState.UNVERSIONED
    needed = frozenset(column.name for column in work_table(table).columns)
    missing = needed - columns if columns is not None else needed
    return SchemaStatus(table, state, current, head, columns, missing)


def require_schema(engine: Engine, *, table: str = DEFAULT_TABLE) -> SchemaStatus:
    """:func:`schema_status`, raising :class:`SchemaNotReadyError` with the fix unless ready.

    For a process that should fail at start rather than wait: the services'
    background loops treat a missing or older table as an outage and retry
    until it is migrated (see docs/upgrading.md).
    """
    status = schema_status(engine, table=table)
    problem = status.problem()
    if problem is not None:
        raise SchemaNotReadyError(problem)
    return status


def upgrade(engine: Engine, revision: str = "head", *, table: str = DEFAULT_TABLE) -> None:
    """Create or upgrade the work table (``alembic upgrade``) on ``engine``.

    To head, a table that is ahead (a newer release of the same major
    version migrated it) is left as it is and logged: Alembic alone would
    fail on a revision it cannot locate, and an older pod that migrates as
    it starts must start beside a newer schema during a rolling deploy.
    """

    def action(config: Config) -> None:
        if revision in TO_HEAD:
            current = recorded_revisions(config.attributes["connection"], table)
            head = head_revision()
            if classify(current, head, known_revisions()) is SchemaState.AHEAD:
                logger.info(
                    "table %r is at %s, ahead of this release's head %s and compatible with it "
                    "(a newer release migrated it): nothing to do",
                    table,
                    ", ".join(current),
                    head,
                    extra={"action": "migrate"},
                )
                return
        from alembic import command  # noqa: PLC0415 - see TYPE_CHECKING above

        command.upgrade(config, revision)

    _run(engine, table, action)


def downgrade(engine: Engine, revision: str = "base", *, table: str = DEFAULT_TABLE) -> None:
    """Downgrade the work table; ``base`` drops it."""
    from alembic import command  # noqa: PLC0415 - see TYPE_CHECKING above

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
    from alembic.util import CommandError  # noqa: PLC0415 - see TYPE_CHECKING above

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
    database. Nothing is prepared on the server meanwhile (``_run.poolers``).
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
    """An Alembic ``include_object`` hook that hides these work tables from autogenerate.

    With each, its version table and its pauses and actions tables.
    """
    hidden = set()
    for table in tables or (DEFAULT_TABLE,):
        hidden.update(
            {
                validate_table_name(table),
                version_table_for(table),
                pauses_table_for(table),
                actions_table_for(table),
            }
        )

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
