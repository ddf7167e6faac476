"""Create the work table.

Revision ID: worksync_0001
Revises:
Create Date: 2026-11-26

The original's seven columns keep their meaning; slot, tick_at, token,
claimed_by and error serve idempotent creation, due claims, fencing and
reporting. The unique key (name, sequence, slot) lets concurrent schedulers
insert the same tick safely; the due index serves ``acquire_due``.

Uses only ``op`` and ``sa``, never the live model: this file must create the
same schema forever, whatever the model becomes later.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "worksync_0001"
down_revision: str | None = None
branch_labels: Sequence[str] | None = ("worksync",)
depends_on: Sequence[str] | None = None


def _table() -> str:
    # Set by our env.py; a host's own env.py falls back to WORKSYNC_TABLE or "works".
    opts = op.get_context().opts
    return str(opts.get("worksync_table") or os.environ.get("WORKSYNC_TABLE") or "works")


def _utc_datetime() -> sa.DateTime:
    # DATETIME(6) on MySQL keeps microseconds; timestamptz on PostgreSQL.
    return sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    table = _table()
    op.create_table(
        table,
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("created_at", _utc_datetime(), nullable=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("status", sa.SmallInteger(), nullable=False),
        sa.Column("sequence", sa.String(255), nullable=False),
        sa.Column("started_at", _utc_datetime(), nullable=True),
        sa.Column("finished_at", _utc_datetime(), nullable=True),
        sa.Column("slot", sa.Integer(), nullable=True),
        sa.Column("tick_at", _utc_datetime(), nullable=True),
        sa.Column("token", sa.String(32), nullable=True),
        sa.Column("claimed_by", sa.String(255), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.UniqueConstraint("name", "sequence", "slot", name=f"uq_{table}_tick"),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
    )
    op.create_index(f"ix_{table}_due", table, ["name", "status", "tick_at"])


def downgrade() -> None:
    table = _table()
    op.drop_index(f"ix_{table}_due", table_name=table)
    op.drop_table(table)
