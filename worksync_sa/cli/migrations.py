"""``worksync migrate`` and ``worksync check``: the work table's schema, standalone.

Both read the revision from the work table's own version table,
``<table>_alembic_version``, which is where the packaged migrations record it
when run on their own (``worksync migrate``, ``worksync_sa.upgrade``,
``alembic upgrade head`` in this repository). A host that runs our revisions
inside its own Alembic history keeps the revision in its own version table:
it should use ``alembic current`` / ``alembic upgrade`` there, not these.

``check`` exits 0 when the table is at head, or ahead of it and compatible
(a newer release of the same major version migrated it: its revisions only
add, see ``worksync_sa.schema``), and 1 otherwise, so a deploy can wait for
the migration before starting schedulers and workers, and an older pod of a
rolling deploy still passes its gate. ``migrate`` on a table that is ahead
does nothing, says so, and exits 0.
"""

from __future__ import annotations

import argparse

import sqlalchemy as sa

from ..models import version_table_for
from ..schema import (
    ORIGINAL_COLUMNS,
    SchemaState,
    SchemaStatus,
    head_revision,
    recorded_revisions,
    schema_status,
    upgrade,
)
from .options import (
    Commands,
    Failure,
    Secrets,
    add_database_options,
    add_logging_options,
    database_url,
    open_engine,
    read_config,
    setup_logging,
    shown,
    table_name,
)

CONFIG_HELP = "config file whose [database] section names the database and table"


def register(commands: Commands) -> None:
    """Add ``migrate`` and ``check``."""
    migrate = commands.add_parser(
        "migrate",
        help="create or upgrade the work table (the packaged migrations, to head)",
        description="Run the packaged Alembic migrations to head on the work table, creating "
        "it if needed, and print from which revision to which. Safe to run again. A table "
        "ahead of head (a newer release of the same major version migrated it) is left as it "
        "is: nothing to do, exit 0.",
    )
    add_database_options(migrate, config=CONFIG_HELP)
    add_logging_options(migrate, default="warning")
    migrate.set_defaults(runner=run_migrate)

    check = commands.add_parser(
        "check",
        help="exit 0 if the work table is at the head revision (or ahead and compatible), "
        "1 if not (a deploy gate)",
        description="Print the work table's current and head revisions. Exit 0 when it is "
        "at head, or ahead of it at a later worksync_NNNN (a newer release of the same major "
        "version migrated it); 1 when it is behind, missing, at an unknown revision, or the "
        "database cannot be reached.",
    )
    add_database_options(check, config=CONFIG_HELP)
    add_logging_options(check, default="warning")
    check.set_defaults(runner=run_check)


def head_revisions() -> tuple[str, ...]:
    """The head revision(s) of the packaged migrations (one: a test holds that)."""
    return (head_revision(),)


def current_revisions(engine: sa.Engine, table: str) -> tuple[str, ...]:
    """The revision(s) recorded for ``table``; empty if never migrated."""
    with engine.connect() as conn:
        return recorded_revisions(conn, table)


def existing_columns(engine: sa.Engine, table: str) -> frozenset[str] | None:
    """The columns of ``table``, or None if it does not exist."""
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        if not inspector.has_table(table):
            return None
        return frozenset(column["name"] for column in inspector.get_columns(table))


def unversioned(engine: sa.Engine, table: str) -> str | None:
    """Why ``table`` cannot be migrated here, if it exists with no revision recorded.

    Such a table was made outside these migrations (``create_all``, or a
    host's own Alembic history, which keeps the revision in its own version
    table); running ours would fail on CREATE TABLE, so say so instead. The
    Go original's table is the exception: migrating adopts it.
    """
    columns = existing_columns(engine, table)
    if columns is None or columns == ORIGINAL_COLUMNS:
        return None
    return (
        f"table {table!r} on {shown(engine.url)} exists but {version_table_for(table)!r} "
        "records no revision: it was created outside these migrations (create_all, or a "
        "host's own Alembic history: use `alembic upgrade` there, see the host-app guide, "
        "docs/guides/host-app.md)"
    )


def _names(revisions: tuple[str, ...]) -> str:
    return ", ".join(revisions) if revisions else "(none)"


def ahead(status: SchemaStatus) -> str:
    """What ``migrate`` and ``check`` say about a table that is ahead, and compatible."""
    return (
        f"ahead, compatible: at {_names(status.current)}, newer than this release's head "
        f"{status.head} (a newer release of the same major version migrated it, and its "
        "revisions only add)"
    )


def run_migrate(args: argparse.Namespace, secrets: Secrets) -> int:
    """Upgrade to head and say from which revision to which (a table ahead: nothing to do)."""
    setup_logging(args.log_level, secrets)
    config = read_config(args.config)
    url = database_url(args, config, secrets)
    table = table_name(args, config)
    engine = open_engine(url, must_exist=False)
    try:
        found = schema_status(engine, table=table)
        before = found.current
        if found.state is SchemaState.UNKNOWN:  # Alembic would only say it cannot locate it
            raise Failure(f"{found.problem()}; nothing was changed (on {shown(url)})")
        adopting = not before and found.columns == ORIGINAL_COLUMNS
        if not before and not adopting and (problem := unversioned(engine, table)):
            raise Failure(problem)
        upgrade(engine, table=table)
        status = schema_status(engine, table=table)
        after = status.current
    finally:
        engine.dispose()
    where = f"table {table!r} on {shown(url)}"
    if status.state is SchemaState.AHEAD:
        print(f"{where} is {ahead(status)}; nothing to do")
    elif adopting:
        print(
            f"{where}: adopted the table of worksync (Go) in place, every row kept, and "
            f"migrated it to {_names(after)} (head)"
        )
    elif before == after:
        print(f"{where}: already at head ({_names(after)}); nothing to do")
    else:
        print(f"{where}: migrated from {_names(before)} to {_names(after)} (head)")
    return 0


def run_check(args: argparse.Namespace, secrets: Secrets) -> int:
    """Print current and head; 0 when they are the same, or the table is ahead and compatible."""
    setup_logging(args.log_level, secrets)
    config = read_config(args.config)
    url = database_url(args, config, secrets)
    table = table_name(args, config)
    heads = head_revisions()
    engine = open_engine(url)  # a SQLite file that is not there: say so, do not create it
    try:
        status = schema_status(engine, table=table)
        current = status.current
        problem = None if current else unversioned(engine, table)
        original = not current and status.columns == ORIGINAL_COLUMNS
    finally:
        engine.dispose()
    where = f"table {table!r} on {shown(url)}"
    print(f"current revision: {_names(current)}")
    print(f"head revision:    {_names(heads)}")
    if status.state is SchemaState.CURRENT:
        print(f"{where} is at head")
        return 0
    if status.state is SchemaState.AHEAD:
        print(f"{where} is {ahead(status)}")
        return 0
    if problem:
        print(problem)
    elif original:
        print(f"{where} is the table of worksync (Go): `worksync migrate` adopts it in place")
    elif not current:
        print(f"{where} has no migrations applied: run `worksync migrate`")
    elif status.state is SchemaState.UNKNOWN:
        print(
            f"{where} is at {_names(current)}, unknown to this worksync_sa and not a later "
            f"worksync_NNNN than its head, so not known to be compatible: use the release "
            "that migrated it"
        )
    else:
        print(f"{where} is behind head: run `worksync migrate`")
    return 1
