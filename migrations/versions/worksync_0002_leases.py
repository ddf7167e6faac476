"""Leases, recovery and catch-up.

Revision ID: worksync_0002
Revises: worksync_0001
Create Date: 2026-11-26

Adds the lease (lease_until, lease_seconds), the work's grace and attempt
policy copied into each row, and who closed the row (closed_by). Replaces the
(name, status, tick_at) index with (status, name, tick_at), which also serves
recovery, and adds (name, tick_at) for per-work time ranges.

Every new column is nullable, so rows written before this revision, or by
other programs, keep working with the defaults.

Uses only ``op`` and ``sa``, never the live model: this file must create the
same schema forever, whatever the model becomes later.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op
from alembic.util import CommandError
from sqlalchemy.dialects import mysql

revision: str = "worksync_0002"
down_revision: str | None = "worksync_0001"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None

COLUMNS = ("lease_until", "lease_seconds", "grace_seconds", "attempts", "max_attempts", "closed_by")


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


def upgrade() -> None:
    table = _table()
    utc_datetime = sa.DateTime(timezone=True).with_variant(
        mysql.DATETIME(fsp=6), "mysql", "mariadb"
    )
    with op.batch_alter_table(table) as batch:
        batch.add_column(sa.Column("lease_until", utc_datetime, nullable=True))
        batch.add_column(sa.Column("lease_seconds", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("grace_seconds", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("max_attempts", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("closed_by", sa.String(16), nullable=True))
    op.drop_index(f"ix_{table}_due", table_name=table)
    op.create_index(f"ix_{table}_status", table, ["status", "name", "tick_at"])
    op.create_index(f"ix_{table}_tick", table, ["name", "tick_at"])


def downgrade() -> None:
    table = _table()
    op.drop_index(f"ix_{table}_tick", table_name=table)
    op.drop_index(f"ix_{table}_status", table_name=table)
    op.create_index(f"ix_{table}_due", table, ["name", "status", "tick_at"])
    with op.batch_alter_table(table) as batch:
        for column in reversed(COLUMNS):
            batch.drop_column(column)
