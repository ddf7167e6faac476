"""Operators' actions: which works are paused, and a record of every action taken.

Revision ID: worksync_0006
Revises: worksync_0005
Create Date: 2026-12-07

Two new tables beside the work table, nothing changed in it (expand-only):

``<table>_pauses``
    One row per paused work: until when (NULL: until resumed), why, who, when.
    Every scheduler of this release reads it once a pass. A scheduler of an
    earlier release does not: beside one, a paused work keeps getting ticks
    from it, which the next pass of a scheduler of this release closes as
    ``paused`` (they are not yet due, so no worker has claimed them).
``<table>_actions``
    Append-only: every pause, resume, run-now and retry, who took it, when
    (the database clock) and why, written in the action's own transaction.

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

revision: str = "worksync_0006"
down_revision: str | None = "worksync_0005"
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


def _instant() -> sa.DateTime:
    """The work table's instants: microseconds on MySQL/MariaDB, with a zone on PostgreSQL."""
    return sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    table = _table()
    op.create_table(
        f"{table}_pauses",
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("paused_until", _instant(), nullable=True),
        sa.Column("reason", sa.String(255), nullable=False),
        sa.Column("paused_by", sa.String(255), nullable=False),
        sa.Column("paused_at", _instant(), nullable=False),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
    )
    actions = f"{table}_actions"
    op.create_table(
        actions,
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("acted_at", _instant(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("tick", sa.String(255), nullable=True),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("reason", sa.String(255), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
    )
    op.create_index(f"ix_{actions}_name", actions, ["name", "id"])


def downgrade() -> None:
    table = _table()
    op.drop_index(f"ix_{table}_actions_name", table_name=f"{table}_actions")
    op.drop_table(f"{table}_actions")
    op.drop_table(f"{table}_pauses")
