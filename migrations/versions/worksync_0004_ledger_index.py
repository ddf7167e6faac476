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

from alembic import op

revision: str = "worksync_0004"
down_revision: str | None = "worksync_0003"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def _table() -> str:
    # Set by our env.py; a host's own env.py falls back to WORKSYNC_TABLE or "works".
    opts = op.get_context().opts
    return str(opts.get("worksync_table") or os.environ.get("WORKSYNC_TABLE") or "works")


def upgrade() -> None:
    table = _table()
    op.create_index(f"ix_{table}_ledger", table, ["tick_at", "name", "sequence"])


def downgrade() -> None:
    table = _table()
    op.drop_index(f"ix_{table}_ledger", table_name=table)
