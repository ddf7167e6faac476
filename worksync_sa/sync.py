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
import logging
import threading
import time
from collections.abc import Iterable
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any

from sqlalchemy.engine import Engine

from ._core.claims import (
    Beat,
    ClaimCore,
    ClaimStep,
    DuePlan,
    ReadLease,
    Record,
    WorkSyncCore,
    WorkSyncSettings,
    checked_row,
    error_text,
)
from ._core.outage import ended
from ._run.blocking import BlockingRunner
from ._run.steps import Idle, Sleep, drive
from .config import RetryPolicy
from .engine import shown_url
from .errors import ClaimLostError
from .events import Listener
from .models import DEFAULT_TABLE, WorkStatus
from .rows import ClaimedRow

logger = logging.getLogger(__name__)

_NO_LOCK = contextlib.nullcontext()


class Claim(ClaimCore):
    """A row this process holds. Finish it exactly once with :meth:`success` or :meth:`fail`.

    As a context manager it keeps the lease alive with a background heartbeat
    while the body runs, then records SUCCESS when the body returns and
    FAILED, with the exception's text, when the body raises (the exception is
    then re-raised). If the body already finished the claim, exit does nothing.

    ``slot``, ``tick_at`` and ``attempt`` are known at once, except for a claim
    by sequence on MySQL/MariaDB, whose claim returns only the row's id: they
    are read (one round trip) the first time one is asked for, or by
    :meth:`load_details`. (:class:`AsyncClaim` cannot read in a property: it
    reads them when ``async with`` begins or on ``await claim.load_details()``.)
    """

    __slots__ = ("_keepalive", "_lock", "_sync")

    def __init__(self, sync: WorkSync, row: ClaimedRow) -> None:
        super().__init__(row)
        self._sync = sync
        # A real lock only once a heartbeat thread may race us: one claim in a
        # hot loop should not pay for a lock it never needs.
        self._lock: contextlib.AbstractContextManager[Any] = _NO_LOCK
        self._keepalive: _KeepAlive | None = None

    def _detailed(self) -> ClaimedRow:
        row = self._row
        if not row.detailed:  # a claim by sequence on MySQL: one read, the first time asked
            sync = self._sync
            row = self._row = sync._runner.call(sync._core.details(row))
        return row

    def load_details(self) -> None:
        """Read slot, tick_at and attempt now, where the claim could not return them.

        As ``AsyncClaim.load_details``: only a claim by sequence on MySQL/MariaDB
        needs it (one read); elsewhere, and for due claims, it does nothing.
        Reading one of them does it too.
        """
        self._detailed()

    def heartbeat(self) -> None:
        """Extend the lease by the work's lease length, from now on the database clock.

        Raises :class:`ClaimLostError` if the row is no longer ours (it was
        finished, or recovered after the lease ran out); nothing is written then.
        """
        with self._lock:
            self._may_heartbeat()
            sync = self._sync
            self._heartbeat_done(sync._runner.call(sync._core.heartbeat(self._row)))

    def success(self) -> None:
        """Record SUCCESS. Raises :class:`ClaimLostError` if the row is no longer ours."""
        self._finish(WorkStatus.SUCCESS, None)

    def fail(self, error: str | BaseException | None = None) -> None:
        """Record FAILED with ``error`` (text or an exception) stored verbatim.

        Raises :class:`ClaimLostError` if the row is no longer ours.
        """
        self._finish(WorkStatus.FAILED, error_text(error))

    def _finish(self, status: WorkStatus, error: str | None) -> None:
        with self._lock:
            self._may_finish()
            core = self._sync._core
            self._finish_done(
                status, self._sync._runner.call(core.finish(self._row, status, error))
            )
            core.finished(self._row, status)

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
        try:
            self._record(exc)
        except ClaimLostError:
            if exc is None:
                raise
            self._log_lost_failure()

    def _record(self, exc: BaseException | None) -> None:
        drive(self._record_steps(exc), self._do)

    def _do(self, step: ClaimStep) -> Any:
        """One step of ``with claim:`` (``ClaimCore``), by blocking."""
        if isinstance(step, Record):
            return self.success() if step.exc is None else self.fail(step.exc)
        if isinstance(step, Sleep):
            return time.sleep(step.seconds)
        raise AssertionError(f"{step!r} outside the heartbeat thread")


class _KeepAlive(threading.Thread):
    """Heartbeats a claim every third of its lease until halted or the claim is lost."""

    def __init__(self, claim: Claim) -> None:
        super().__init__(name=f"worksync-heartbeat-{claim.id}", daemon=True)
        self.claim = claim
        self.stopping = threading.Event()

    def run(self) -> None:
        try:
            drive(self.claim._keepalive_steps(), self._do)
        except BaseException as exc:
            ended(logger, f"heartbeat of {self.claim!r}", exc)
            raise

    def _do(self, step: ClaimStep) -> Any:
        claim = self.claim
        if isinstance(step, Idle):
            return self.stopping.wait(step.seconds)
        if isinstance(step, Beat):
            return claim.heartbeat()
        if isinstance(step, ReadLease):
            return claim._sync._runner.call(claim._sync._core.lease_seconds(claim._row))
        return claim._do(step)

    def halt(self) -> None:
        self.stopping.set()
        if self is not threading.current_thread():
            self.join()


class WorkSync(WorkSyncSettings):
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
        self._core = WorkSyncCore(table, worker_id, retry, keep_alive, listeners)
        self._runner = BlockingRunner(engine, self._core.table_name, self._core.policy)
        self.keep_alive = keep_alive

    def close(self) -> None:
        """Give back the connections this WorkSync holds (it reopens them if used again).

        A WorkSync keeps one autocommit connection per thread that uses it at
        the same time, so a claim pays no checkout, BEGIN or COMMIT; they are
        also given back when the WorkSync is garbage-collected.
        """
        self._runner.close()

    def __enter__(self) -> WorkSync:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        url = shown_url(self._runner.engine.url)
        return f"WorkSync({url!r}, table={self.table!r})"

    def acquire(self, name: str, sequence: str) -> Claim | None:
        """Claim one QUEUED row of tick ``(name, sequence)``; None when none is left."""
        return self._claimed(self._runner.call(self._core.acquire(name, sequence)))

    def acquire_due(
        self,
        name: str,
        *,
        now: datetime | None = None,
        grace: timedelta | str | None = None,
    ) -> Claim | None:
        """Claim the earliest QUEUED row of ``name`` whose tick has come; None if none.

        "Has come" is judged by the database clock, or by ``now`` when given
        (tests). A tick older than its work's grace is never handed out.
        Rows without a tick time, written by other programs, are only
        claimable with :meth:`acquire`.

        ``grace`` is the work's grace (``Work.grace``; :class:`Worker` passes
        it): ticks later than that are not looked at, which keeps a claim's
        cost flat however long the work's history, whatever plan the
        database picks. Without it, the claim looks back 365 days, the
        longest grace a row can have.
        """
        return self._claimed(self._runner.call(self._core.acquire_due(name, now, grace)))

    def claim_from_row(self, row: ClaimedRow) -> Claim:
        """A :class:`Claim` for a row claimed with ``ClaimRepository`` in your own transaction.

        Call it once that transaction has committed: the claim then heartbeats
        inside ``with claim:``, and its finish is fenced by the row's token,
        exactly as for a claim this service made.

        One read by id, on this service's own connection, checks that the row
        is RUNNING with the row's token as committed. Called inside the
        transaction that claimed it, the claim's first heartbeat would wait on
        that transaction's own row lock (on MySQL/MariaDB, past the lease) or
        fail late and misleadingly; the read takes no lock, so it never waits
        on the host, and writes nothing. It raises
        :class:`ClaimNotCommittedError` when the claim is not committed yet
        (the host's transaction is left as it was: commit it, then call this),
        :class:`ClaimLostError` when it committed and the row has since been
        finished or recovered, and :class:`InvalidArgumentError` for a row
        whose fields have the wrong types.
        """
        checked = checked_row(row)
        return Claim(self, self._runner.call(self._core.from_row(checked)))

    def _acquire_batch(self, plan: DuePlan, places: dict[str, int], limit: int) -> list[Claim]:
        """Up to ``limit`` due claims among a worker's works, in one statement: a look."""
        rows = self._runner.call(self._core.acquire_batch(plan, places, limit))
        claimed = []
        for row in rows:
            self._core.claimed(row)
            claimed.append(Claim(self, row))
        return claimed

    def _claimed(self, row: ClaimedRow | None) -> Claim | None:
        if row is None:
            return None
        self._core.claimed(row)
        return Claim(self, row)

    def recover(self, *, now: datetime | None = None) -> int:
        """Take back abandoned rows now (the scheduler also does this every pass).

        Rows whose lease ran out become FAILED ("lease expired (worker lost)")
        or, if their work allows more attempts, QUEUED again; queued rows older
        than their grace become FAILED ("missed"). At most one batch per call;
        returns how many rows changed.
        """
        return drive(self._core.recover(now), self._runner.call)

    def prune(self, older_than: timedelta, batch_size: int = 1000) -> int:
        """Delete rows that finished more than ``older_than`` ago; returns how many.

        The rows of a custom sequence are kept: its labels may come back (see
        ``sequences``). Small primary-key-ordered batches, each in its own
        short transaction, locking only the rows it deletes. ``older_than``
        must be at least two days, so a restarted scheduler can never create a
        pruned tick again.
        """
        return drive(self._core.prune(older_than, batch_size), self._runner.call)
