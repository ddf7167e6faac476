"""Index the overdue rows, so recovery stays cheap however many ticks are queued.

Revision ID: worksync_0003
Revises: worksync_0002
Create Date: 2026-11-26

Recovery looks for queued rows whose tick has passed and running rows whose
lease has: with (status, tick_at) it reads only those, not every queued row
of every upcoming tick (a million, for 100,000 works ten minutes ahead).

Uses only ``op`` and ``sa``, never the live model: this file must create the
same schema forever, whatever the model becomes later.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from alembic import context, op
from alembic.util import CommandError

revision: str = "worksync_0003"
down_revision: str | None = "worksync_0002"
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
    op.create_index(f"ix_{table}_overdue", table, ["status", "tick_at"])


def downgrade() -> None:
    table = _table()
    op.drop_index(f"ix_{table}_overdue", table_name=table)
