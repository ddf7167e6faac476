"""Microseconds between two times, computed by the database: the page's one dialect-aware piece.

The light per-tick read needs each tick's start lag, for thousands of ticks
per request. Fetched as two datetimes, each would be parsed by the driver
(mysqlclient parses DATETIME in Python) and converted to aware UTC again:
most of a first page's time on MariaDB. Subtracted by the database, the lag
arrives as one integer. SQL has no portable form for it, hence one
construct compiled per database, as SQLAlchemy's compiler extension intends.

SQLite has no time type: it stores the text SQLAlchemy writes,
``YYYY-MM-DD HH:MM:SS.ffffff``, so whole seconds come from ``strftime('%s')``
and the microseconds from the fraction's six digits (none: zero), exactly.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
"""Where the light read counts a tick's microseconds from."""


class microseconds_between(FunctionElement[int]):
    """``later - earlier`` in whole microseconds; NULL if either is NULL."""

    type = sa.BigInteger()
    inherit_cache = True
    name = "microseconds_between"


def _operands(element: microseconds_between, compiler: SQLCompiler, **kw: Any) -> tuple[str, str]:
    later, earlier = list(element.clauses)
    return compiler.process(later, **kw), compiler.process(earlier, **kw)


@compiles(microseconds_between, "postgresql")
def _postgresql(element: microseconds_between, compiler: SQLCompiler, **kw: Any) -> str:
    later, earlier = _operands(element, compiler, **kw)
    return f"CAST(EXTRACT(EPOCH FROM ({later} - {earlier})) * 1000000 AS BIGINT)"


@compiles(microseconds_between, "mysql")
@compiles(microseconds_between, "mariadb")
def _mysql(element: microseconds_between, compiler: SQLCompiler, **kw: Any) -> str:
    later, earlier = _operands(element, compiler, **kw)
    return f"TIMESTAMPDIFF(MICROSECOND, {earlier}, {later})"


@compiles(microseconds_between, "sqlite")
def _sqlite(element: microseconds_between, compiler: SQLCompiler, **kw: Any) -> str:
    later, earlier = _operands(element, compiler, **kw)

    def micros(moment: str) -> str:
        return (
            f"(CAST(strftime('%s', {moment}) AS INTEGER) * 1000000 "
            f"+ CAST(substr({moment}, 21, 6) AS INTEGER))"
        )

    return f"({micros(later)} - {micros(earlier)})"
