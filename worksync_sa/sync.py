"""The worker side: claim a row of a tick, keep its lease, record how the work went.

This is the original's Syncer. A claim is one guarded UPDATE; at most
``max_run`` of them can succeed per tick because only ``max_run`` rows exist
and each UPDATE takes a row only while it is still QUEUED. The claim holds a
lease on the database clock; heartbeats extend it, and a worker that stops
heartbeating (it crashed, or lost the database) has its row taken back by
recovery. Every later write is fenced by the claim's random token and the
RUNNING status, so a claim can never overwrite a row that is no longer its own.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import random
import secrets
import socket
import threading
from collections.abc import Iterable
from datetime import datetime, timedelta
from functools import partial
from types import TracebackType
from typing import Any

from sqlalchemy.engine import Engine

from ._loop import Outage
from ._process import pid
from ._tx import Transactions
from .config import SHORTEST_RETENTION, RetryPolicy
from .errors import ClaimLostError, InvalidArgumentError, InvalidWorkError
from .events import Event, Events, Listener, report_recovered
from .models import (
    DEFAULT_LEASE_SECONDS,
    DEFAULT_TABLE,
    WorkStatus,
    checked_moment,
    table_named,
    validate_table_name,
)
from .repository import ClaimedRow, ClaimRepository, MaintenanceRepository
from .work import check_text

logger = logging.getLogger(__name__)

PRUNE_BATCH_LIMIT = 100_000


@functools.cache
def _host_pid(pid: int) -> str:
    return f"{socket.gethostname()}:{pid}"


class _Tokens:
    """Claim tokens: 128 random bits, unique for all practical purposes.

    A fencing token must not repeat; it need not be secret. A PRNG seeded
    from the OS is as unique as ``secrets`` and spares a system call per
    claim. A forked child reseeds, or it would repeat its parent's tokens.
    """

    def __init__(self) -> None:
        self._pid = -1
        self._random = random.Random()

    def __call__(self) -> str:
        if self._pid != pid():
            self._random.seed(secrets.randbits(128))
            self._pid = pid()
        return f"{self._random.getrandbits(128):032x}"


new_token = _Tokens()


def default_worker_id() -> str:
    """``host:pid``: enough for a person reading the table to find the process."""
    return _host_pid(pid())


def _checked(value: object, what: str) -> str:
    try:
        return check_text(value, what)
    except ValueError as exc:
        raise InvalidWorkError(str(exc)) from None


def checked_now(now: object) -> datetime | None:
    """An explicit ``now`` as aware UTC, None for the database clock, else a clear error."""
    return None if now is None else checked_moment(now, "now")


_NO_LOCK = contextlib.nullcontext()


class Claim:
    """A row this process holds. Finish it exactly once with :meth:`success` or :meth:`fail`.

    As a context manager it keeps the lease alive with a background heartbeat
    while the body runs, then records SUCCESS when the body returns and
    FAILED, with the exception's text, when the body raises (the exception is
    then re-raised). If the body already finished the claim, exit does nothing.
    """

    __slots__ = ("_keepalive", "_lock", "_lost", "_outcome", "_row", "_sync")

    def __init__(self, sync: WorkSync, row: ClaimedRow) -> None:
        self._sync = sync
        self._row = row
        self._outcome: WorkStatus | None = None
        self._lost = False
        # A real lock only once a heartbeat thread may race us: one claim in a
        # hot loop should not pay for a lock it never needs.
        self._lock: contextlib.AbstractContextManager[Any] = _NO_LOCK
        self._keepalive: _KeepAlive | None = None

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

    @property
    def lost(self) -> bool:
        """True once a heartbeat found the row no longer ours (recovered by someone else).

        A long-running body can check it and stop early; its finish would raise
        :class:`ClaimLostError` anyway.
        """
        return self._lost

    def heartbeat(self) -> None:
        """Extend the lease by the work's lease length, from now on the database clock.

        Raises :class:`ClaimLostError` if the row is no longer ours (it was
        finished, or recovered after the lease ran out); nothing is written then.
        """
        with self._lock:
            if self._outcome is not None:
                raise ClaimLostError(f"{self!r} is already finished; nothing to keep alive")
            if not self._sync._heartbeat(self._row):
                self._lost = True
                raise ClaimLostError(
                    f"{self!r} no longer holds row {self.id}: its lease ran out and it was "
                    "recovered, or someone else changed it; nothing was written"
                )

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
            raise InvalidArgumentError(
                f"error must be a string or an exception, not {type(error).__name__}"
            )
        self._finish(WorkStatus.FAILED, error)

    def _finish(self, status: WorkStatus, error: str | None) -> None:
        with self._lock:
            if self._outcome is not None:
                raise ClaimLostError(
                    f"{self!r} was already finished as {self._outcome.name}; nothing was written"
                )
            if not self._sync._finish(self._row, status, error):
                self._lost = True
                raise ClaimLostError(
                    f"{self!r} no longer holds row {self.id}: it was finished, recovered or "
                    "changed by someone else; nothing was written"
                )
            self._outcome = status

    def __enter__(self) -> Claim:
        if self._sync.keep_alive and self._outcome is None and self._keepalive is None:
            self._lock = threading.Lock()
            self._keepalive = _KeepAlive(self)
            self._keepalive.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._keepalive is not None:
            self._keepalive.halt()
            self._keepalive = None
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


class _KeepAlive(threading.Thread):
    """Heartbeats a claim every third of its lease until halted or the claim is lost."""

    def __init__(self, claim: Claim) -> None:
        super().__init__(name=f"worksync-heartbeat-{claim.id}", daemon=True)
        self.claim = claim
        self.stopping = threading.Event()

    def run(self) -> None:
        claim = self.claim
        try:
            lease = claim._row.lease_seconds or claim._sync._lease_seconds(claim._row.id)
        except Exception:
            lease = None
        every = max(0.5, (lease or DEFAULT_LEASE_SECONDS) / 3)
        outage = Outage(logger, f"heartbeat of {claim!r}", base=every / 4, cap=every)
        wait = every
        while not self.stopping.wait(wait):
            try:
                claim.heartbeat()
            except ClaimLostError:
                if not claim.finished:
                    logger.warning(
                        "%r was lost: its row was recovered", claim, extra={"action": "lost"}
                    )
                return
            except Exception as exc:  # the database is away: keep trying until the lease ends
                wait = outage.failed(exc)
                continue
            outage.succeeded()
            wait = every

    def halt(self) -> None:
        self.stopping.set()
        if self is not threading.current_thread():
            self.join()


class WorkSync:
    """Claims rows for workers (the original's Syncer), and repairs what workers leave behind.

    ``acquire(name, sequence)`` is the original's pattern: the worker fires on
    the same cron and names the tick. ``acquire_due(name)`` needs no sequence:
    it takes the earliest queued tick that is due by the database clock and
    still within its grace, so a worker whose clock is off still gets its tick.

    ``keep_alive`` (default on) makes ``with claim:`` heartbeat in the
    background while the body runs.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        table: str = DEFAULT_TABLE,
        worker_id: str | None = None,
        retry: RetryPolicy | None = None,
        keep_alive: bool = True,
        listeners: Iterable[Listener] | None = None,
    ) -> None:
        table = validate_table_name(table)
        self._events = Events(listeners)
        if worker_id is not None:
            worker_id = _checked(worker_id, "worker_id")
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise InvalidArgumentError(f"retry must be a RetryPolicy, not {type(retry).__name__}")
        if not isinstance(keep_alive, bool):
            raise InvalidArgumentError(f"keep_alive must be True or False, not {keep_alive!r}")
        self._worker_id = worker_id
        self._tx = Transactions(engine, table, retry or RetryPolicy())
        self._repo = ClaimRepository(table_named(table))
        self._maintenance = MaintenanceRepository(table_named(table))
        self.keep_alive = keep_alive

    @property
    def worker_id(self) -> str:
        """Recorded in ``claimed_by``; ``host:pid`` unless given."""
        return self._worker_id or default_worker_id()

    def close(self) -> None:
        """Give back the connections this WorkSync holds (it reopens them if used again).

        A WorkSync keeps one autocommit connection per thread that uses it at
        the same time, so a claim costs one round trip; they are also given
        back when the WorkSync is garbage-collected.
        """
        self._tx.close()

    def __enter__(self) -> WorkSync:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def table(self) -> str:
        """The work table's name."""
        return self._tx.table

    def __repr__(self) -> str:
        url = self._tx.engine.url.render_as_string(hide_password=True)
        return f"WorkSync({url!r}, table={self.table!r})"

    def acquire(self, name: str, sequence: str) -> Claim | None:
        """Claim one QUEUED row of tick ``(name, sequence)``; None when none is left."""
        params = {
            "work_name": _checked(name, "name"),
            "tick_sequence": _checked(sequence, "sequence"),
            "claim_token": new_token(),
            "worker": self.worker_id,
        }
        return self._claim("claim", params)

    def acquire_due(self, name: str, *, now: datetime | None = None) -> Claim | None:
        """Claim the earliest QUEUED row of ``name`` whose tick has come; None if none.

        "Has come" is judged by the database clock, or by ``now`` when given
        (tests). A tick older than its work's grace is never handed out.
        Rows without a tick time, written by other programs, are only
        claimable with :meth:`acquire`.
        """
        params: dict[str, Any] = {
            "work_name": _checked(name, "name"),
            "claim_token": new_token(),
            "worker": self.worker_id,
        }
        at = checked_now(now)
        if at is not None:
            params["now"] = at
        return self._claim("claim_due" if at is None else "claim_at", params)

    def recover(self, *, now: datetime | None = None) -> int:
        """Take back abandoned rows now (the scheduler also does this every pass).

        Rows whose lease ran out become FAILED ("lease expired (worker lost)")
        or, if their work allows more attempts, QUEUED again; queued rows older
        than their grace become FAILED ("missed"). At most one batch per call;
        returns how many rows changed.
        """
        at = checked_now(now)
        recovered = self._tx.run("recover", lambda conn: self._maintenance.recover(conn, at))
        return report_recovered(self._events, logger, recovered)

    def prune(self, older_than: timedelta, batch_size: int = 1000) -> int:
        """Delete rows that finished more than ``older_than`` ago; returns how many.

        Small primary-key-ordered batches, each in its own short transaction,
        locking only the rows it deletes. ``older_than`` must be at least two
        days, so a restarted scheduler can never create a pruned tick again.
        """
        if not isinstance(older_than, timedelta) or older_than < SHORTEST_RETENTION:
            raise InvalidArgumentError(
                f"older_than must be a timedelta of at least {SHORTEST_RETENTION}, "
                f"got {older_than!r}"
            )
        if (
            not isinstance(batch_size, int)
            or isinstance(batch_size, bool)
            or not 1 <= batch_size <= PRUNE_BATCH_LIMIT
        ):
            raise InvalidArgumentError(
                f"batch_size must be an int from 1 to {PRUNE_BATCH_LIMIT}, got {batch_size!r}"
            )
        return prune(self._tx, self._maintenance, older_than, batch_size, batches=None)

    def _claim(self, kind: str, params: dict[str, Any]) -> Claim | None:
        name, token = params["work_name"], params["claim_token"]
        row = self._tx.run(
            kind,
            partial(self._repo.claim_checked, kind=kind, params=params),
            resolve=partial(self._repo.find_claim, name=name, token=token),
            peek=partial(self._repo.has_queued, kind=kind, params=params),
        )
        if row is None:
            return None
        logger.debug(
            "claimed %s @ %s (row %d)", row.name, row.sequence, row.id, extra={"action": "claimed"}
        )
        if self._events:
            self._events.emit(Event("claimed", row.name, row.sequence))
        return Claim(self, row)

    def _heartbeat(self, row: ClaimedRow) -> bool:
        return self._tx.run("heartbeat", lambda conn: self._repo.heartbeat(conn, row.id, row.token))

    def _lease_seconds(self, claim_id: int) -> int | None:
        return self._tx.run("lease", lambda conn: self._repo.lease_seconds(conn, claim_id))

    def _finish(self, row: ClaimedRow, status: WorkStatus, error: str | None) -> bool:
        done = self._tx.run(
            "finish",
            lambda conn: self._repo.finish(conn, row.id, row.token, status, error),
            resolve=lambda conn: self._repo.finished_as(conn, row.id, row.token, status) or None,
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
            if self._events:
                self._events.emit(Event("finished", row.name, row.sequence, status=status.name))
        return done


def prune(
    tx: Transactions,
    maintenance: MaintenanceRepository,
    older_than: timedelta,
    batch_size: int,
    batches: int | None,
) -> int:
    """Delete old finished rows batch by batch, each batch its own transaction.

    Stops when a batch comes back short, or after ``batches`` batches.
    """
    cutoff = tx.database_now() - older_than
    deleted = done = 0
    while batches is None or done < batches:
        count = tx.run("prune", lambda conn: maintenance.prune_batch(conn, cutoff, batch_size))
        deleted += count
        done += 1
        if count < batch_size:
            break
    if deleted:
        logger.info(
            "pruned %d rows finished before %s",
            deleted,
            cutoff.isoformat(),
            extra={"action": "pruned", "rows": deleted},
        )
    return deleted
