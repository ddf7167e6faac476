"""What differs between MySQL/MariaDB, PostgreSQL and SQLite and every feature shares.

Claims, finishes and passes are stamped by the database server, so workers
with skewed clocks agree: how to read that clock, how to shift a time by a
number of seconds held in a column, and how to write a time as the default
sequence labels it, each per database. Statements whose whole shape differs
by database live with their feature (``claims``, ``schedule``, ``maintenance``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect

from ..errors import UnsupportedDatabaseError
from ..models import (
    DEFAULT_GRACE_SECONDS,
    DEFAULT_LEASE_SECONDS,
    UTCDateTime,
    as_utc,
)

Family = Literal["mysql", "postgresql", "sqlite"]


_FAMILIES: dict[str, Family] = {
    "mysql": "mysql",
    "mariadb": "mysql",
    "postgresql": "postgresql",
    "sqlite": "sqlite",
}


def family_of(dialect: Dialect) -> Family:
    """Which of the three supported families a dialect belongs to."""
    try:
        return _FAMILIES[dialect.name]
    except KeyError:
        raise UnsupportedDatabaseError(
            f"database {dialect.name!r} is not supported; use MySQL/MariaDB, PostgreSQL or SQLite"
        ) from None


def returns_inserted(dialect: Dialect) -> bool:
    """Whether a MySQL-family server returns rows from an INSERT (MariaDB 10.5 and later).

    SQLAlchemy learns it when it first connects, from the server's version;
    MySQL's ``insert_returning`` stays False.
    """
    return bool(getattr(dialect, "is_mariadb", False) and dialect.insert_returning)


def db_now(family: Family) -> sa.ColumnElement[datetime]:
    """The database server's current UTC time, microseconds where the server has them."""
    if family == "mysql":
        # The precision must be a literal: MySQL does not accept a placeholder there.
        return sa.func.utc_timestamp(sa.literal_column("6"), type_=UTCDateTime())
    if family == "postgresql":
        return sa.func.statement_timestamp(type_=UTCDateTime())
    # SQLite's %f is SS.SSS; pad to the six digits SQLAlchemy stores, so the
    # text compares correctly with the datetimes it writes.
    return sa.func.strftime("%Y-%m-%d %H:%M:%f000", "now", type_=UTCDateTime())


def clock(family: Family, explicit: bool) -> sa.ColumnElement[datetime]:
    """``:now`` when the caller passes an explicit time (tests), else the database clock."""
    return sa.bindparam("now", type_=UTCDateTime()) if explicit else db_now(family)


def utc_label(family: Family, moment: sa.ColumnElement[datetime]) -> sa.ColumnElement[str]:
    """``moment`` as the default sequence writes it (``YYYY-MM-DD HH:MM:SS``, UTC), in SQL."""
    if family == "mysql":
        return sa.func.date_format(moment, "%Y-%m-%d %H:%i:%s", type_=sa.String())
    if family == "postgresql":
        utc = sa.func.timezone("UTC", moment)
        return sa.func.to_char(utc, "YYYY-MM-DD HH24:MI:SS", type_=sa.String())
    return sa.func.substr(moment, 1, 19, type_=sa.String())  # stored as ISO text


def shifted(
    family: Family, moment: sa.ColumnElement[datetime], seconds: sa.ColumnElement[int]
) -> sa.ColumnElement[datetime]:
    """``moment`` plus ``seconds`` (an integer expression, e.g. a column), in SQL."""
    if family == "mysql":
        return sa.func.timestampadd(
            sa.literal_column("SECOND"), seconds, moment, type_=UTCDateTime()
        )
    if family == "postgresql":
        return sa.type_coerce(
            moment + sa.func.make_interval(0, 0, 0, 0, 0, 0, seconds), UTCDateTime()
        )
    return sa.func.strftime(
        "%Y-%m-%d %H:%M:%f000", moment, sa.func.printf("%+d seconds", seconds), type_=UTCDateTime()
    )


def lease_seconds(table: sa.Table) -> sa.ColumnElement[int]:
    """A row's lease in seconds: its own, or the default for rows written without one."""
    return sa.func.coalesce(table.c.lease_seconds, DEFAULT_LEASE_SECONDS)


def _grace_seconds(table: sa.FromClause) -> sa.ColumnElement[int]:
    return sa.func.coalesce(table.c.grace_seconds, DEFAULT_GRACE_SECONDS)


def read_clock(conn: Connection) -> datetime:
    """The database server's clock, as aware UTC."""
    return as_utc(conn.execute(sa.select(db_now(family_of(conn.dialect)))).scalar_one())
