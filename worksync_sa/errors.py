"""Exceptions raised by worksync_sa.

One base class, :class:`WorksyncError`, so a host can catch everything we raise
in one place; where a standard base fits (``ValueError`` for bad input) we add
it too, so code that already catches ``ValueError`` keeps working. Ordinary
SQLAlchemy errors that the host already knows how to handle are not wrapped.
"""

from __future__ import annotations

import sys


class WorksyncError(Exception):
    """Base class of every error worksync_sa raises on purpose."""


class InvalidArgumentError(WorksyncError, ValueError):
    """A value passed to a public call is malformed or out of range; nothing was written.

    The message names the argument and what is wrong with it.
    """


class InvalidWorkError(InvalidArgumentError):
    """A work blueprint (name, cron, max_run, timezone, ...) is not usable.

    The message names the work and the field, so a config file with fifty
    works points straight at the bad line.
    """


class InvalidConfigError(InvalidArgumentError):
    """A setting (scheduler config, retry policy, table name) is not usable."""


class SchemaNotReadyError(WorksyncError):
    """The work table is missing or older than this library expects.

    Raised instead of the driver's "no such table" so the message can say how
    to fix it: run the migrations.
    """


class ClaimLostError(WorksyncError):
    """A heartbeat or a finishing write found the row no longer held by this claim.

    Either the claim was already finished, or the row was recovered or changed
    by someone else. Nothing was written. ``claim_from_row`` raises it too,
    for a row whose committed claim has since been finished or recovered.
    """


class HandlerTimeoutError(WorksyncError, TimeoutError):
    """A worker's handler ran past its work's ``timeout``.

    The worker records the claim FAILED with this error ("timed out ..."),
    stops its heartbeat and frees its slot; anything the handler finishes
    later is fenced off (``ClaimLostError``). A ``TimeoutError`` too.
    """

    where: str = ""
    """Where the handler was when its time ran out (its stack), for the log."""


class HandlerProcessError(WorksyncError):
    """A handler run in a process of its own (``Worker(isolation="process")``) failed.

    Its text is what the claim's row stores, verbatim: the handler's own
    exception as ``Type: message`` (the very text thread mode stores, so a
    dashboard cannot tell the modes apart), or how its process died ("the
    handler's process exited with code 3"). The exception itself stayed in
    the child, where it was raised: only its text and traceback cross back
    (an exception need not pickle), the traceback as this error's
    ``__cause__``, which the worker's ERROR log line shows.
    """

    def __init__(self, text: str, traceback: str = "") -> None:
        super().__init__(text)
        self.text = text
        """What the row stores: ``Type: message``, or how the process died."""
        self.traceback = traceback
        """The child's traceback of the handler's exception ("" when the process died)."""


class ClaimNotCommittedError(InvalidArgumentError):
    """``claim_from_row`` was given a row whose claim is not committed (yet).

    The host's transaction that claimed it with ``ClaimRepository`` is still
    open, or was rolled back. ``claim_from_row`` finds out with one read that
    takes no lock and writes nothing, so the host's transaction and its row
    are left as they were: commit it, then call ``claim_from_row``. An
    :class:`InvalidArgumentError` (a ``ValueError``): it is a misuse of the call.
    """


class DetailsNotLoadedError(WorksyncError, RuntimeError):
    """An :class:`AsyncClaim`'s ``slot``, ``tick_at`` or ``attempt`` was read before they were.

    A claim by sequence on MySQL/MariaDB returns only the row's id; reading
    the rest is a round trip, which a property of an asyncio claim cannot
    await. ``async with claim:`` reads them as it begins, and so does
    ``await claim.load_details()``. (A blocking :class:`Claim` reads them on
    first use instead.) A ``RuntimeError``, as before it had a name.
    """


class UnsupportedDatabaseError(WorksyncError):
    """The database cannot be used: not MySQL/MariaDB, PostgreSQL or SQLite, a server
    too old, or a MySQL/MariaDB connection that does not speak utf8mb4."""


def describe(exc: BaseException) -> str:
    """An exception as stored in ``error``: its type, and its text if it has one.

    Never raises: an exception whose ``__str__`` fails is still recorded (by
    its type), because a failure that cannot be written is a failure lost.
    Here, beside the errors, because a handler's child process describes its
    exception too, and must not import the rest of the package to do it.
    """
    if isinstance(exc, HandlerProcessError):  # described in the child, where it was raised
        return exc.text
    kind = type(exc).__name__
    try:
        text = str(exc)
    except Exception:
        return f"{kind}: (its message could not be read)"
    asyncio = sys.modules.get("asyncio")  # not imported: exc is no asyncio.CancelledError
    if asyncio is not None and isinstance(exc, asyncio.CancelledError) and not text:
        return "CancelledError: the task running the claim was cancelled"
    return f"{kind}: {text}" if text else kind
