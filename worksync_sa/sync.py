"""The worker side: claim a row of a tick, then record how the work went.

This is the original's Syncer. A claim is one guarded UPDATE; at most
``max_run`` of them can succeed per tick because only ``max_run`` rows exist
and each UPDATE takes a row only while it is still QUEUED. Finishing writes
are fenced by the claim's random token, so a claim can never overwrite a row
that is no longer its own.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from datetime import datetime
from types import TracebackType

from sqlalchemy.engine import Engine

from ._tx import Transactions
from .config import RetryPolicy
from .errors import ClaimLostError, InvalidWorkError
from .models import DEFAULT_TABLE, WorkStatus, as_utc, table_named, validate_table_name
from .repository import ClaimedRow, ClaimRepository
from .work import check_text

logger = logging.getLogger(__name__)


def default_worker_id() -> str:
    """``host:pid``: enough for a person reading the table to find the process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _checked(value: object, what: str) -> str:
    try:
        return check_text(value, what)
    except ValueError as exc:
        raise InvalidWorkError(str(exc)) from None


class Claim:
    """A row this process holds. Finish it exactly once with :meth:`success` or :meth:`fail`.

    As a context manager it records SUCCESS when the body returns and FAILED,
    with the exception's text, when the body raises (the exception is then
    re-raised). If the body already finished the claim, exit does nothing.
    """

    __slots__ = ("_outcome", "_row", "_sync")

    def __init__(self, sync: WorkSync, row: ClaimedRow) -> None:
        self._sync = sync
        self._row = row
        self._outcome: WorkStatus | None = None

    @property
    def id(self) -> int:
        """The claimed row's primary key."""
        return self._row.id

    @property
    def name(self) -> str:
        """The work's name."""
        return self._row.name

    @property
    def sequence(self) -> str:
        """The tick's sequence."""
        return self._row.sequence

    @property
    def token(self) -> str:
        """The random token that fences every write this claim makes."""
        return self._row.token

    @property
    def finished(self) -> bool:
        """True once success() or fail() has been recorded."""
        return self._outcome is not None

    def success(self) -> None:
        """Record SUCCESS. Raises :class:`ClaimLostError` if the row is no longer ours."""
        self._finish(WorkStatus.SUCCESS, None)

    def fail(self, error: str | BaseException | None = None) -> None:
        """Record FAILED with ``error`` (text or an exception) stored verbatim.

        Raises :class:`ClaimLostError` if the row is no longer ours.
        """
        if isinstance(error, BaseException):
            error = _describe(error)
        elif error is not None and not isinstance(error, str):
            raise TypeError(f"error must be a string or an exception, not {type(error).__name__}")
        self._finish(WorkStatus.FAILED, error)

    def _finish(self, status: WorkStatus, error: str | None) -> None:
        if self._outcome is not None:
            raise ClaimLostError(
                f"{self!r} was already finished as {self._outcome.name}; nothing was written"
            )
        if not self._sync._finish(self._row, status, error):
            raise ClaimLostError(
                f"{self!r} no longer holds row {self.id}: it was finished, recovered or changed "
                "by someone else; nothing was written"
            )
        self._outcome = status

    def __enter__(self) -> Claim:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._outcome is not None:
            return
        if exc is None:
            self.success()
            return
        try:
            self.fail(exc)
        except ClaimLostError:
            # The body's exception is the one the caller needs; the lost claim is logged.
            logger.warning(
                "could not record failure of %r", self, exc_info=True, extra={"action": "lost"}
            )

    def __repr__(self) -> str:
        return f"Claim(id={self.id}, name={self.name!r}, sequence={self.sequence!r})"


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class WorkSync:
    """Claims rows for workers (the original's Syncer).

    ``acquire(name, sequence)`` is the original's pattern: the worker fires on
    the same cron and names the tick. ``acquire_due(name)`` needs no sequence:
    it takes the earliest queued tick that is due by the database clock, so a
    worker whose clock is a few seconds off still gets its tick.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        table: str = DEFAULT_TABLE,
        worker_id: str | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        table = validate_table_name(table)
        if worker_id is not None:
            worker_id = _checked(worker_id, "worker_id")
        self._worker_id = worker_id
        self._tx = Transactions(engine, table, retry or RetryPolicy())
        self._repo = ClaimRepository(table_named(table))

    @property
    def worker_id(self) -> str:
        """Recorded in ``claimed_by``; ``host:pid`` unless given."""
        return self._worker_id or default_worker_id()

    def acquire(self, name: str, sequence: str) -> Claim | None:
        """Claim one QUEUED row of tick ``(name, sequence)``; None when none is left."""
        name = _checked(name, "name")
        sequence = _checked(sequence, "sequence")
        token, worker = secrets.token_hex(16), self.worker_id
        row = self._tx.run(
            "acquire", lambda conn: self._repo.claim(conn, name, sequence, token, worker)
        )
        return self._claimed(row)

    def acquire_due(self, name: str, *, now: datetime | None = None) -> Claim | None:
        """Claim the earliest QUEUED row of ``name`` whose tick has come; None if none.

        "Has come" is judged by the database clock, or by ``now`` when given
        (tests). Rows without a tick time, written by other programs, are only
        claimable with :meth:`acquire`.
        """
        name = _checked(name, "name")
        if now is not None:
            if not isinstance(now, datetime):
                raise InvalidWorkError(f"now must be a datetime, not {type(now).__name__}")
            now = as_utc(now)
        token, worker = secrets.token_hex(16), self.worker_id
        row = self._tx.run(
            "acquire_due",
            lambda conn: self._repo.claim_due(conn, name, token, worker, now),
        )
        return self._claimed(row)

    def _claimed(self, row: ClaimedRow | None) -> Claim | None:
        if row is None:
            return None
        logger.debug(
            "claimed %s @ %s (row %d)", row.name, row.sequence, row.id, extra={"action": "claimed"}
        )
        return Claim(self, row)

    def _finish(self, row: ClaimedRow, status: WorkStatus, error: str | None) -> bool:
        done = self._tx.run(
            "finish", lambda conn: self._repo.finish(conn, row.id, row.token, status, error)
        )
        if done:
            logger.debug(
                "finished %s @ %s (row %d) as %s",
                row.name,
                row.sequence,
                row.id,
                status.name,
                extra={"action": "finished"},
            )
        return done
