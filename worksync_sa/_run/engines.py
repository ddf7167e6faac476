"""The check every blocking entry point makes of what it was handed as an engine.

A service given something else (a URL string, an ``AsyncEngine``, a
``Connection``) would fail later, deep in a statement, with an error that
names none of the caller's code; the check makes it fail at construction.
The asyncio services check theirs with ``_run.async_runner.checked_async_engine``.
"""

from __future__ import annotations

from sqlalchemy.engine import Engine

from ..errors import InvalidArgumentError


def checked_engine(engine: object) -> Engine:
    """``engine`` if it is a SQLAlchemy Engine, else a clear error."""
    if not isinstance(engine, Engine):
        raise InvalidArgumentError(
            f"engine must be a sqlalchemy Engine (sqlalchemy.create_engine(url)), "
            f"not {type(engine).__name__}"
        )
    return engine
