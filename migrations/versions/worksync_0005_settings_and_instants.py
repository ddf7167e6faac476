"""Record who made each row with which settings, and give each instant one set of slots.

Revision ID: worksync_0005
Revises: worksync_0004
Create Date: 2026-11-30

``spec`` holds the settings of the scheduler that created a row (sequence
kind, max_run, cron, time zone), so schedulers that disagree can see it and
retention knows whether a row's label may come back.

``(name, tick_at, slot)`` becomes unique and replaces the ``(name, tick_at)``
index: two schedulers that label the same instant differently (a rolling
change of the sequence function) can no longer give it two sets of slots.
Tables that already hold such doubles keep every row: the later rows of each
double give up their slot (it becomes NULL), as surplus rows do.

Uses only ``op`` and ``sa``, never the live model: this file must create the
same schema forever, whatever the model becomes later.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op
from alembic.util import CommandError

revision: str = "worksync_0005"
down_revision: str | None = "worksync_0004"
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


def _free_doubled_instants(table: str) -> None:
    """Later rows that share (name, tick_at, slot) with an earlier one give up their slot."""
    t = sa.table(table, sa.column("id"), sa.column("name"), sa.column("tick_at"), sa.column("slot"))
    first = t.alias("first")
    later = (
        sa.select(t.c.id)
        .join(
            first,
            sa.and_(
                first.c.name == t.c.name,
                first.c.tick_at == t.c.tick_at,
                first.c.slot == t.c.slot,
                first.c.id < t.c.id,
            ),
        )
        .distinct()  # a derived table MySQL materialises, so it may read the table it updates
        .subquery("later")
    )
    op.execute(sa.update(t).where(t.c.id.in_(sa.select(later.c.id))).values(slot=None))


def upgrade() -> None:
    table = _table()
    with op.batch_alter_table(table) as batch:
        batch.add_column(sa.Column("spec", sa.String(255), nullable=True))
    if not context.is_offline_mode():
        _free_doubled_instants(table)
    op.drop_index(f"ix_{table}_tick", table_name=table)
    with op.batch_alter_table(table) as batch:
        batch.create_unique_constraint(f"uq_{table}_instant", ["name", "tick_at", "slot"])


def downgrade() -> None:
    table = _table()
    with op.batch_alter_table(table) as batch:
        batch.drop_constraint(f"uq_{table}_instant", type_="unique")
    op.create_index(f"ix_{table}_tick", table, ["name", "tick_at"])
    with op.batch_alter_table(table) as batch:
        batch.drop_column("spec")
