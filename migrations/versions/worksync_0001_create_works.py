"""Create the work table.

Revision ID: worksync_0001
Revises:
Create Date: 2026-11-26

The original's seven columns keep their meaning; slot, tick_at, token,
claimed_by and error serve idempotent creation, due claims, fencing and
reporting. The unique key (name, sequence, slot) lets concurrent schedulers
insert the same tick safely; the due index serves ``acquire_due``.

A table that already exists with exactly the Go original's columns (the DDL
of its README) is adopted in place instead: altered into this shape, every
row kept. Any other existing table is refused with what to do about it.

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

revision: str = "worksync_0001"
down_revision: str | None = None
branch_labels: Sequence[str] | None = ("worksync",)
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


def _utc_datetime() -> sa.DateTime:
    # DATETIME(6) on MySQL keeps microseconds; timestamptz on PostgreSQL.
    return sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


ORIGINAL_COLUMNS = frozenset(
    {"id", "created_at", "name", "status", "sequence", "started_at", "finished_at"}
)
"""The table the Go original's README creates; this revision adopts it in place."""


def _id_type() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    table = _table()
    if not context.is_offline_mode() and sa.inspect(op.get_bind()).has_table(table):
        _adopt(table)
        return
    op.create_table(
        table,
        sa.Column("id", _id_type(), primary_key=True, autoincrement=True),
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


def _adopt(table: str) -> None:
    """Turn the original's table into this revision's, keeping every row.

    The original's seven columns get this revision's types (``id`` a BIGINT,
    times with microseconds, ``name``, ``status`` and ``sequence`` required),
    the table utf8mb4 with a binary collation on MySQL, and the rest is added.
    Its rows carry no slot: they stay claimable by sequence, and count against
    their tick's ``max_run`` when a scheduler of ours creates the same tick.
    """
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    columns = {column["name"] for column in inspector.get_columns(table)}
    if columns != ORIGINAL_COLUMNS:
        raise CommandError(_not_adoptable(table, columns))
    t = sa.table(table, sa.column("name"), sa.column("status"), sa.column("sequence"))
    blank = sa.or_(t.c.name.is_(None), t.c.status.is_(None), t.c.sequence.is_(None))
    count = bind.execute(sa.select(sa.func.count()).select_from(t).where(blank)).scalar()
    if count:
        raise CommandError(
            f"table {table!r} has {count} row(s) without a name, status or sequence, which no "
            "worker can claim: delete or fill them in, then migrate again (every other row is kept)"
        )
    if bind.dialect.name in ("mysql", "mariadb"):
        target = sa.Table(table, sa.MetaData())
        for statement in (
            "ALTER TABLE %(table)s ENGINE=InnoDB",
            "ALTER TABLE %(table)s CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
        ):  # %(table)s is the quoted table name, filled in by SQLAlchemy's DDL
            op.execute(sa.DDL(statement).against(target))  # type: ignore[no-untyped-call]
    with op.batch_alter_table(table) as batch:
        batch.alter_column(
            "id", type_=_id_type(), nullable=False, autoincrement=_autoincrement(bind)
        )
        for column in ("created_at", "started_at", "finished_at"):
            batch.alter_column(column, type_=_utc_datetime(), existing_nullable=True)
        for column in ("name", "sequence"):
            batch.alter_column(column, type_=sa.String(255), nullable=False)
        batch.alter_column("status", type_=sa.SmallInteger(), nullable=False)
        batch.add_column(sa.Column("slot", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("tick_at", _utc_datetime(), nullable=True))
        batch.add_column(sa.Column("token", sa.String(32), nullable=True))
        batch.add_column(sa.Column("claimed_by", sa.String(255), nullable=True))
        batch.add_column(sa.Column("error", sa.Text(), nullable=True))
        batch.create_unique_constraint(f"uq_{table}_tick", ["name", "sequence", "slot"])
    op.create_index(f"ix_{table}_due", table, ["name", "status", "tick_at"])


def _autoincrement(bind: sa.engine.Connection) -> bool | None:
    # MySQL's MODIFY must repeat AUTO_INCREMENT; PostgreSQL keeps its sequence, SQLite its rowid.
    return True if bind.dialect.name in ("mysql", "mariadb") else None


def _not_adoptable(table: str, columns: set[str]) -> str:
    """Why an existing table cannot be created or adopted here, and what to do instead."""
    bind = op.get_bind()
    versions = f"{table}_alembic_version"
    if "slot" in columns and sa.inspect(bind).has_table(versions):
        recorded = sa.table(versions, sa.column("version_num"))
        found = bind.execute(sa.select(recorded.c.version_num)).scalars().first()
        if found:
            return (
                f"table {table!r} already exists: `worksync migrate` created it and recorded "
                f"revision {found} in {versions}. Record that in this history once with "
                f"`alembic stamp {found}`, then `alembic upgrade heads` (see the README's "
                "Host applications)"
            )
    if "slot" in columns:
        return (
            f"table {table!r} already exists with worksync_sa's columns but no revision: if "
            "it is at the newest schema, `alembic stamp worksync@head` records that"
        )
    return (
        f"table {table!r} already exists and is not the table of worksync (Go): it has "
        f"columns {', '.join(sorted(columns))}; choose another table name"
    )


def downgrade() -> None:
    table = _table()
    op.drop_index(f"ix_{table}_due", table_name=table)
    op.drop_table(table)
