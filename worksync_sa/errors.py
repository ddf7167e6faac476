"""Exceptions raised by worksync_sa.

One base class, :class:`WorksyncError`, so a host can catch everything we raise
in one place; where a standard base fits (``ValueError`` for bad input) we add
it too, so code that already catches ``ValueError`` keeps working. Ordinary
SQLAlchemy errors that the host already knows how to handle are not wrapped.
"""

from __future__ import annotations


class WorksyncError(Exception):
    """Base class of every error worksync_sa raises on purpose."""


class InvalidWorkError(WorksyncError, ValueError):
    """A work blueprint (name, cron, max_run, timezone, ...) is not usable.

    The message names the work and the field, so a config file with fifty
    works points straight at the bad line.
    """


class InvalidConfigError(WorksyncError, ValueError):
    """A setting or an argument of a public call is out of range or malformed."""


class SchemaNotReadyError(WorksyncError):
    """The work table is missing or older than this library expects.

    Raised instead of the driver's "no such table" so the message can say how
    to fix it: run the migrations.
    """


class ClaimLostError(WorksyncError):
    """A finishing write found the row no longer held by this claim.

    Either the claim was already finished, or the row was recovered or changed
    by someone else. Nothing was written.
    """


class UnsupportedDatabaseError(WorksyncError):
    """The engine's dialect is not MySQL/MariaDB, PostgreSQL or SQLite."""
