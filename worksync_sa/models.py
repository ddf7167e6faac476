"""The work table: its columns, its keys, and the ORM class over it.

This module owns the table's shape and nothing else; statements live in
``_sql/`` and migrations in ``migrations/``. The table is built by
:func:`work_table` so a host can choose its name; :class:`WorkRecord` maps the
default one, ``works``, as in the original Go library.

Column meanings (the first seven are the original's and keep its meaning):

``id, created_at, name, status, sequence, started_at, finished_at``
    As in worksync. ``status`` holds a :class:`WorkStatus` code.
``slot``
    ``0 .. max_run-1`` for rows the scheduler creates. Together with
    ``(name, sequence)`` it is the unique key that makes creation idempotent.
    Rows written by another program leave it NULL; NULLs never collide in a
    unique key, so such rows stay claimable.
``tick_at``
    The tick as a UTC instant; what ``acquire_due`` compares with the
    database clock.
``token``
    A random value set by each claim; every later write of that claim
    (heartbeat, finish) is fenced by it.
``claimed_by``
    Who claimed the row (``host:pid`` by default), for people reading the table.
``error``
    The failure text recorded by ``Claim.fail``, or the reason recovery, or a
    scheduler closing the row as surplus, gave.
``lease_until``
    While RUNNING: when the claim's lease runs out, by the database clock.
    Heartbeats move it forward; past it, recovery may take the row back.
``lease_seconds, grace_seconds, max_attempts``
    The work's policy, copied into each row by the scheduler so that workers
    and recovery need no copy of the work definitions. NULL (rows written by
    other programs) means the defaults: 300 s, 60 s, 1 attempt.
``attempts``
    How many times the row has been claimed (more than once only when a work
    opts in to re-queueing rows whose lease expired).
``closed_by``
    Who finished the row: ``worker`` (success or fail), ``lease`` (recovery
    after the lease ran out), ``missed`` (nobody claimed it within grace),
    ``surplus`` (a scheduler closed it unclaimed because the work's settings
    changed: fewer runs, another cron or another sequence) or ``paused`` (an
    operator paused the work, or a scheduler closed the row while it was
    paused). A surplus or paused row gives up its slot (``slot`` becomes
    NULL), so the slot can be made again.

Negative slots (``-1 .. -max_run``) belong to operators' rows: ``run-now``
ticks, and ticks retried past their grace (see ``actions``). No scheduler
makes them, so they never collide with a scheduler's rows on either unique
key, and no scheduler closes them as surplus (it closes slots from 0 up).

Beside the work table, two small tables of the operators' actions (see
:func:`pause_table` and :func:`action_table`): which works are paused, and
the append-only record of every action.
``spec``
    The settings of the scheduler that created the row (or, for a surplus
    row, closed it): its sequence kind, ``max_run``, cron and time zone. Lets
    a scheduler see that another one disagrees, name both settings, and tell
    retention whether the row's label can ever come back.
"""

from __future__ import annotations

import enum
import functools
import re
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped

from .errors import InvalidArgumentError, InvalidConfigError

DEFAULT_TABLE = "works"
TEXT_MAX = 255
"""Longest name or sequence, in characters (``varchar(255)`` as in the original)."""
ERROR_TEXT_MAX = 16_000
"""Longest stored error text, in characters; fits MySQL ``TEXT`` even at 4 bytes a character."""
DEFAULT_LEASE_SECONDS = 300
DEFAULT_GRACE_SECONDS = 60
DEFAULT_MAX_ATTEMPTS = 1
CLOSED_BY_WORKER = "worker"
CLOSED_BY_LEASE = "lease"
CLOSED_BY_MISSED = "missed"
CLOSED_BY_SURPLUS = "surplus"
CLOSED_BY_PAUSED = "paused"
CLOSED_UNCLAIMED = (CLOSED_BY_SURPLUS, CLOSED_BY_PAUSED)
"""Rows a scheduler or an operator closed before any claim: they gave up their slot and
count against no tick's budget."""
LEASE_EXPIRED = "lease expired (worker lost)"
MISSED = "missed: nobody claimed it within its grace period"

# 40 characters leaves room for the derived names (``uq_<table>_tick``,
# ``<table>_alembic_version``, ``ix_<table>_actions_name``) under MySQL's 64 and
# PostgreSQL's 63 limits.
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")


class WorkStatus(enum.IntEnum):
    """The original's status codes; stored as a small integer."""

    QUEUED = 1
    RUNNING = 2
    SUCCESS = 3
    FAILED = 4


def validate_table_name(name: object) -> str:
    """Return ``name`` if it is a plain SQL identifier, else raise.

    Table names are the one piece of SQL text we cannot bind as a parameter,
    so they are held to letters, digits and underscores.
    """
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise InvalidConfigError(
            f"table name {name!r} is not allowed: use 1-40 letters, digits or "
            "underscores, starting with a letter or underscore"
        )
    return name


def version_table_for(table: str) -> str:
    """The Alembic version table of one work table, kept apart from the host's own."""
    return f"{validate_table_name(table)}_alembic_version"


class StatusCode(sa.types.TypeDecorator[int]):
    """A :class:`WorkStatus` code as the plain small integer it is stored as.

    Before Python 3.11 ``str()`` of an ``IntEnum`` member is its name, and
    mysqlclient escapes an int subclass it has no converter for by its
    ``str()``: ``status = WorkStatus.SUCCESS`` became ``status =
    'WorkStatus.SUCCESS'``, which matches no row (a prune deleted nothing).
    """

    impl = sa.SmallInteger
    cache_ok = True

    def process_bind_param(self, value: int | None, dialect: Dialect) -> int | None:
        return None if value is None else int(value)


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, microseconds kept on every database.

    MySQL's plain ``DATETIME`` drops sub-seconds, so it gets ``DATETIME(6)``;
    PostgreSQL stores ``timestamptz``; SQLite stores ISO text. Naive values
    are taken as UTC, the same rule as everywhere else in the package.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(sa.DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = as_utc(value)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)


def checked_moment(value: object, what: str) -> datetime:
    """A caller's datetime as aware UTC (naive means UTC), or a clear error naming ``what``."""
    if not isinstance(value, datetime):
        raise InvalidArgumentError(f"{what} must be a datetime, not {type(value).__name__}")
    return as_utc(value)


def as_utc(value: datetime) -> datetime:
    """An aware UTC datetime; a naive one is read as UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def work_table(name: str = DEFAULT_TABLE, metadata: sa.MetaData | None = None) -> sa.Table:
    """Build the work table under ``name``; the migrations create exactly this."""
    name = validate_table_name(name)
    return sa.Table(
        name,
        metadata if metadata is not None else sa.MetaData(),
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("created_at", UTCDateTime()),
        sa.Column("name", sa.String(TEXT_MAX), nullable=False),
        sa.Column("status", StatusCode(), nullable=False),
        sa.Column("sequence", sa.String(TEXT_MAX), nullable=False),
        sa.Column("started_at", UTCDateTime()),
        sa.Column("finished_at", UTCDateTime()),
        sa.Column("slot", sa.Integer()),
        sa.Column("tick_at", UTCDateTime()),
        sa.Column("token", sa.String(32)),
        sa.Column("claimed_by", sa.String(TEXT_MAX)),
        sa.Column("error", sa.Text()),
        sa.Column("lease_until", UTCDateTime()),
        sa.Column("lease_seconds", sa.Integer()),
        sa.Column("grace_seconds", sa.Integer()),
        sa.Column("attempts", sa.Integer()),
        sa.Column("max_attempts", sa.Integer()),
        sa.Column("closed_by", sa.String(16)),
        sa.Column("spec", sa.String(255)),
        # Idempotent creation: a second scheduler's insert of the same slot is refused.
        # Also serves acquire(name, sequence): at most max_run entries per tick.
        sa.UniqueConstraint("name", "sequence", "slot", name=f"uq_{name}_tick"),
        # One set of slots per instant, whatever label a scheduler gives it: two
        # schedulers with different sequence functions cannot double a tick's runs.
        # Also serves per-work time ranges: the scheduler's window, restarts, reports.
        sa.UniqueConstraint("name", "tick_at", "slot", name=f"uq_{name}_instant"),
        # Serves acquire_due: the queued rows of one work, earliest tick first,
        # clear of the finished rows that pile up behind them, so a claim's cost
        # does not grow with the table.
        sa.Index(f"ix_{name}_status", "status", "name", "tick_at"),
        # Serves recovery: only the overdue queued rows and the running ones are read.
        sa.Index(f"ix_{name}_overdue", "status", "tick_at"),
        # Serves the ledger across all works: a time range, in (tick, work, sequence) order.
        sa.Index(f"ix_{name}_ledger", "tick_at", "name", "sequence"),
        # Binary collation: names and sequences compare exactly (case-sensitive),
        # and utf8mb4 stores any text a host sends.
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
    )


def pauses_table_for(table: str) -> str:
    """The name of a work table's pauses table: ``<table>_pauses``."""
    return f"{validate_table_name(table)}_pauses"


def actions_table_for(table: str) -> str:
    """The name of a work table's actions ledger: ``<table>_actions``."""
    return f"{validate_table_name(table)}_actions"


def pause_table(table: str = DEFAULT_TABLE, metadata: sa.MetaData | None = None) -> sa.Table:
    """Which works of ``table`` are paused, one row each (revision ``worksync_0006``).

    A table of its own rather than a column of the work table: a pause is
    state of a work, not of a tick, and a work may be paused before it has
    any rows. Every scheduler reads it whole once a pass (it holds a row per
    paused work, so it stays small); ``paused_until`` NULL means until resumed.
    """
    return sa.Table(
        pauses_table_for(table),
        metadata if metadata is not None else sa.MetaData(),
        sa.Column("name", sa.String(TEXT_MAX), primary_key=True),
        sa.Column("paused_until", UTCDateTime()),
        sa.Column("reason", sa.String(TEXT_MAX), nullable=False),
        sa.Column("paused_by", sa.String(TEXT_MAX), nullable=False),
        sa.Column("paused_at", UTCDateTime(), nullable=False),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
    )


def action_table(table: str = DEFAULT_TABLE, metadata: sa.MetaData | None = None) -> sa.Table:
    """The operators' actions on the works of ``table``, append-only (revision ``worksync_0006``).

    Written in the same transaction as the action itself, so neither exists
    without the other. ``acted_at`` is the database clock; ``actor`` is who
    (``user@host`` by default), ``reason`` why, ``detail`` what it changed.
    """
    name = actions_table_for(table)
    return sa.Table(
        name,
        metadata if metadata is not None else sa.MetaData(),
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("acted_at", UTCDateTime(), nullable=False),
        sa.Column("name", sa.String(TEXT_MAX), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("tick", sa.String(TEXT_MAX)),
        sa.Column("actor", sa.String(TEXT_MAX), nullable=False),
        sa.Column("reason", sa.String(TEXT_MAX), nullable=False),
        sa.Column("detail", sa.Text()),
        # Serves `worksync actions --name X`: one work's latest actions, newest first.
        sa.Index(f"ix_{name}_name", "name", "id"),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
    )


metadata = sa.MetaData()
"""The package's own metadata: the default ``works`` table, its pauses and its actions."""


class Base(DeclarativeBase):
    """Declarative base private to worksync_sa, so our table never joins a host's metadata."""

    metadata = metadata


class WorkRecord(Base):
    """One row of the ``works`` table: one slot of one tick of one work."""

    __table__ = work_table(DEFAULT_TABLE, metadata)

    id: Mapped[int]
    created_at: Mapped[datetime | None]
    name: Mapped[str]
    status: Mapped[int]
    sequence: Mapped[str]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    slot: Mapped[int | None]
    tick_at: Mapped[datetime | None]
    token: Mapped[str | None]
    claimed_by: Mapped[str | None]
    error: Mapped[str | None]
    lease_until: Mapped[datetime | None]
    lease_seconds: Mapped[int | None]
    grace_seconds: Mapped[int | None]
    attempts: Mapped[int | None]
    max_attempts: Mapped[int | None]
    closed_by: Mapped[str | None]
    spec: Mapped[str | None]

    def __repr__(self) -> str:
        return (
            f"WorkRecord(id={self.id!r}, name={self.name!r}, sequence={self.sequence!r}, "
            f"slot={self.slot!r}, status={self.status!r})"
        )


pause_table(DEFAULT_TABLE, metadata)
action_table(DEFAULT_TABLE, metadata)


@functools.cache
def pauses_named(name: str = DEFAULT_TABLE) -> sa.Table:
    """The shared pauses Table of a work table name."""
    if name == DEFAULT_TABLE:
        return metadata.tables[pauses_table_for(name)]
    return pause_table(name)


@functools.cache
def actions_named(name: str = DEFAULT_TABLE) -> sa.Table:
    """The shared actions Table of a work table name."""
    if name == DEFAULT_TABLE:
        return metadata.tables[actions_table_for(name)]
    return action_table(name)


@functools.cache
def table_named(name: str = DEFAULT_TABLE) -> sa.Table:
    """The shared Table object for a work table name (``works`` is WorkRecord's)."""
    if name == DEFAULT_TABLE:
        return WorkRecord.__table__
    return work_table(name)
