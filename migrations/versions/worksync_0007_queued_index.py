"""On PostgreSQL, index the queued rows by work and tick: the worker's look reads only its own.

Revision ID: worksync_0007
Revises: worksync_0006
Create Date: 2026-12-07

A worker's look claims the due rows of its works in one statement. On
PostgreSQL it reads each work's due rows from ``ix_<table>_queued``, a
partial index on ``(name, tick_at)`` of the rows whose status is QUEUED
(1): the only index that serves that condition, so the planner takes it
whatever its statistics. (With absent statistics it read the due rows of
every work along ``(status, tick_at)`` instead.) It holds only the queued
rows, a few per work, so it stays small however long the history grows.

MySQL/MariaDB have no partial indexes, and their range optimizer reads the
named works' ranges of ``(status, name, tick_at)`` from index dives, not
statistics; SQLite serialises writers. Neither gets this index.

Uses only ``op`` and ``sa``, never the live model: this file must create the
same schema forever, whatever the model becomes later.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op
from alembic.util import CommandError

revision: str = "worksync_0007"
down_revision: str | None = "worksync_0006"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def _table() -> str:
    # Our env.py passes the table; a host's env.py gives -x table=, WORKSYNC_TABLE or "works".
    name = (
        op.get_context().opts.get("worksync_table")
        or context.get_x_argument(as_dictionary=True).get("table")
        or os.environ.get("WORKSYNC_TABLE")
        or "works"
    )
    if not (name.isascii() and name.isidentifier() and len(name) <= 40):
        raise CommandError(f"table name {name!r} is not allowed: use 1-40 letters, digits or _")
    return str(name)


def _postgresql() -> bool:
    return bool(op.get_bind().dialect.name == "postgresql")


def upgrade() -> None:
    if _postgresql():
        table = _table()
        op.create_index(
            f"ix_{table}_queued",
            table,
            ["name", "tick_at"],
            postgresql_where=sa.column("status") == 1,
        )


def downgrade() -> None:
    if _postgresql():
        table = _table()
        op.drop_index(f"ix_{table}_queued", table_name=table)
