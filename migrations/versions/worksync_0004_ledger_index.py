"""Index ticks by time for the ledger across all works.

Revision ID: worksync_0004
Revises: worksync_0003
Create Date: 2026-11-26

The ledger reads a time range of ticks, grouped by (tick_at, name, sequence)
in that order. For one work, (name, tick_at) serves it; across all works this
index does, so each page is one ordered range read that stops at its LIMIT.
Claims do not change these columns, so they pay nothing for it.

Uses only ``op`` and ``sa``, never the live model: this file must create the
same schema forever, whatever the model becomes later.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from alembic import context, op
from alembic.util import CommandError

revision: str = "worksync_0004"
down_revision: str | None = "worksync_0003"
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


def upgrade() -> None:
    table = _table()
    op.create_index(f"ix_{table}_ledger", table, ["tick_at", "name", "sequence"])


def downgrade() -> None:
    table = _table()
    op.drop_index(f"ix_{table}_ledger", table_name=table)
