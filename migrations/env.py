"""Alembic environment for worksync_sa's own migrations.

Which database: a connection handed over in ``config.attributes["connection"]``
(``worksync_sa.upgrade(engine)``), else ``WORKSYNC_DATABASE_URL``, else
``sqlalchemy.url`` from the ini file.

Which table: ``config.attributes["worksync_table"]``, ``-x table=NAME``, the
``WORKSYNC_TABLE`` environment variable, ``worksync_table`` in the ini file, or
``works``. Each work table keeps its own version table
(``<table>_alembic_version``), so our history never mixes with a host's, and
autogenerate here looks at our table only.
"""

from __future__ import annotations

import os
from logging.config import fileConfig
from typing import Any

from alembic import context
from alembic.util import CommandError
from sqlalchemy import create_engine, pool
from sqlalchemy.engine import Connection

from worksync_sa.models import validate_table_name, version_table_for, work_table
from worksync_sa.schema import migrating

config = context.config
if config.config_file_name is not None and config.file_config.has_section("loggers"):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

TABLE = validate_table_name(
    config.attributes.get("worksync_table")
    or context.get_x_argument(as_dictionary=True).get("table")
    or os.environ.get("WORKSYNC_TABLE")
    or config.get_main_option("worksync_table")
    or "works"
)
target_metadata = work_table(TABLE).metadata


def only_our_table(obj: Any, name: str | None, type_: str, reflected: bool, other: Any) -> bool:
    """Autogenerate compares our table only; the database may hold anything else."""
    if type_ == "table":
        return name == TABLE
    return getattr(getattr(obj, "table", None), "name", None) == TABLE


def only_our_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Other tables are not even reflected: another program may drop one meanwhile."""
    return type_ != "table" or name == TABLE


def _configure(**kw: Any) -> None:
    context.configure(
        target_metadata=target_metadata,
        version_table=version_table_for(TABLE),
        include_name=only_our_name,
        include_object=only_our_table,
        compare_type=True,
        worksync_table=TABLE,  # read by the revision scripts
        **kw,
    )


def _url() -> str:
    url = os.environ.get("WORKSYNC_DATABASE_URL") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise CommandError(
            "no database given: set WORKSYNC_DATABASE_URL "
            "(for example mysql+mysqldb://root@127.0.0.1/test) or sqlalchemy.url in alembic.ini"
        )
    return url


def _run_on(connection: Connection) -> None:
    _configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    _configure(url=_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_on(connection)
        return
    engine = create_engine(_url(), poolclass=pool.NullPool)
    # One process migrates a table at a time (see worksync_sa.schema.migrating).
    with migrating(engine, TABLE) as connection:
        _run_on(connection)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
