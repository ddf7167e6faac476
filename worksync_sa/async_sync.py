"""The worker side on asyncio: ``AsyncWorkSync`` and ``AsyncClaim`` on an ``AsyncEngine``.

Twins of :class:`~worksync_sa.WorkSync` and :class:`~worksync_sa.Claim` for
FastAPI-style services. They share every statement, check, retry rule and
event with the blocking side (``_core.claims``); a claim is still one atomic
UPDATE, with the same guarantees. ``async with claim:`` heartbeats in a
background task while the body runs.

Drivers: ``mysql+aiomysql`` or ``mysql+asyncmy`` (MariaDB/MySQL),
``postgresql+psycopg`` (psycopg 3's async mode), ``sqlite+aiosqlite``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ._core.claims import (
    Beat,
    ClaimCore,
    ClaimStep,
    DuePlan,
    Record,
    WorkSyncCore,
    WorkSyncSettings,
    checked_row,
    error_text,
)
from ._run.async_runner import AsyncRunner
from ._run.steps import Idle, Sleep, drive_async
from .config import RetryPolicy
from .engine import shown_url
from .errors import ClaimLostError, DetailsNotLoadedError
from .events import Listener
from .models import DEFAULT_TABLE, WorkStatus
from .rows import ClaimedRow

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

logger = logging.getLogger(__name__)

_NO_LOCK = contextlib.nullcontext()


class AsyncClaim(ClaimCore):
    """A row this task holds. Finish it exactly once: ``await claim.success()`` or ``fail()``.

    ``async with claim:`` heartbeats in a background task while the body runs,
    then records SUCCESS when the body returns and FAILED, with the
    exception's text, when it raises (the exception is then re-raised).

    ``slot``, ``tick_at`` and ``attempt`` are known at once, except for a claim
    by sequence on MySQL/MariaDB: ``async with claim:`` or ``await
    claim.load_details()`` reads them, and reading them before raises
    :class:`DetailsNotLoadedError`, since a property cannot await. This is the
    one way the twins differ here: :class:`Claim` reads them on first use.
    """

    __slots__ = ("_keepalive", "_lock", "_sync", "_unchecked")

    def __init__(self, sync: AsyncWorkSync, row: ClaimedRow, *, unchecked: bool = False) -> None:
        super().__init__(row)
        self._sync = sync
        self._unchecked = unchecked
        """Made by ``claim_from_row``, whose check (a read) waits for the first awaited call."""
        # Heartbeat and finish must not overlap once a keep-alive task exists:
        # a finish landing under an in-flight heartbeat would look like a lost claim.
        self._lock: contextlib.AbstractAsyncContextManager[Any] = _NO_LOCK
        self._keepalive: asyncio.Task[None] | None = None

    async def heartbeat(self) -> None:
        """Extend the lease by the work's lease length, from now on the database clock.

        Raises :class:`ClaimLostError` if the row is no longer ours.
        """
        await self._check_from_row()
        async with self._lock:
            self._may_heartbeat()
            sync = self._sync
            self._heartbeat_done(await sync._runner.call(sync._core.heartbeat(self._row)))

    async def success(self) -> None:
        """Record SUCCESS. Raises :class:`ClaimLostError` if the row is no longer ours."""
        await self._finish(WorkStatus.SUCCESS, None)

    async def fail(self, error: str | BaseException | None = None) -> None:
        """Record FAILED with ``error`` (text or an exception) stored verbatim.

        Raises :class:`ClaimLostError` if the row is no longer ours.
        """
        await self._finish(WorkStatus.FAILED, error_text(error))

    async def _finish(self, status: WorkStatus, error: str | None) -> None:
        await self._check_from_row()
        async with self._lock:
            self._may_finish()
            core = self._sync._core
            written = await self._sync._runner.call(core.finish(self._row, status, error))
            self._finish_done(status, written)
            core.finished(self._row, status)

    def _detailed(self) -> ClaimedRow:
        if not self._row.detailed:
            raise DetailsNotLoadedError(
                f"{self!r} was claimed by sequence on MySQL, whose claim returns only the "
                "row's id: slot, tick_at and attempt are read when `async with claim:` "
                "begins, or by `await claim.load_details()`"
            )
        return self._row

    async def _check_from_row(self) -> None:
        """A claim from ``claim_from_row``: check, once, that its claim is committed and ours.

        ``AsyncWorkSync.claim_from_row`` cannot await, so its read runs first
        thing in the claim's first awaited call, before anything is written
        (see ``WorkSync.claim_from_row``).
        """
        if self._unchecked:
            sync = self._sync
            self._row = await sync._runner.call(sync._core.from_row(self._row))
            self._unchecked = False

    async def load_details(self) -> None:
        """Read slot, tick_at and attempt where the claim could not return them.

        Only a claim by sequence on MySQL/MariaDB needs it (one read); ``async
        with claim:`` calls it. Elsewhere, and for due claims, it does nothing.
        For a claim from :meth:`AsyncWorkSync.claim_from_row` it first makes
        that call's check (one read): ``await claim.load_details()`` right
        after ``claim_from_row`` raises at once if the claim is not committed.
        """
        await self._check_from_row()
        if not self._row.detailed:
            sync = self._sync
            self._row = await sync._runner.call(sync._core.details(self._row))

    async def __aenter__(self) -> AsyncClaim:
        await self.load_details()
        if self._sync.keep_alive and self._outcome is None and self._keepalive is None:
            self._lock = asyncio.Lock()
            self._keepalive = asyncio.create_task(
                _keep_alive(self), name=f"worksync-heartbeat-{self.id}"
            )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task, self._keepalive = self._keepalive, None
        if task is not None:
            task.cancel()
            # wait(), not await task: if we are cancelled meanwhile, that must propagate.
            await asyncio.wait({task})
        if self._outcome is not None:
            return
        try:
            await self._record(exc)
        except ClaimLostError:
            if exc is None:
                raise
            self._log_lost_failure()

    async def _record(self, exc: BaseException | None) -> None:
        await drive_async(self._record_steps(exc), self._do)

    async def _do(self, step: ClaimStep) -> Any:
        """One step of ``async with claim:`` (``ClaimCore``), by awaiting."""
        if isinstance(step, Record):
            return await (self.success() if step.exc is None else self.fail(step.exc))
        if isinstance(step, (Sleep, Idle)):
            await asyncio.sleep(step.seconds)  # cancelling the task is what stops it
            return False
        if isinstance(step, Beat):
            return await self.heartbeat()
        return await self._sync._runner.call(self._sync._core.lease_seconds(self._row))


async def _keep_alive(claim: AsyncClaim) -> None:
    """Heartbeat every third of the lease until cancelled or the claim is lost."""
    await drive_async(claim._keepalive_steps(), claim._do)


class AsyncWorkSync(WorkSyncSettings):
    """Claims rows for asyncio workers; the twin of :class:`~worksync_sa.WorkSync`.

    Use it as ``async with AsyncWorkSync(engine) as sync:``, or call
    :meth:`close` when done: its held connections need an event loop to close.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        table: str = DEFAULT_TABLE,
        worker_id: str | None = None,
        retry: RetryPolicy | None = None,
        keep_alive: bool = True,
        listeners: Iterable[Listener] | None = None,
    ) -> None:
        self._core = WorkSyncCore(table, worker_id, retry, keep_alive, listeners)
        self._runner = AsyncRunner(engine, self._core.table_name, self._core.policy)
        self.keep_alive = keep_alive

    def __repr__(self) -> str:
        url = shown_url(self._runner.engine.url)
        return f"AsyncWorkSync({url!r}, table={self.table!r})"

    async def close(self) -> None:
        """Close the connections this AsyncWorkSync holds (it reopens them if used again)."""
        await self._runner.close()

    async def __aenter__(self) -> AsyncWorkSync:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def acquire(self, name: str, sequence: str) -> AsyncClaim | None:
        """Claim one QUEUED row of tick ``(name, sequence)``; None when none is left."""
        return self._claimed(await self._runner.call(self._core.acquire(name, sequence)))

    async def acquire_due(
        self,
        name: str,
        *,
        now: datetime | None = None,
        grace: timedelta | str | None = None,
    ) -> AsyncClaim | None:
        """Claim the earliest QUEUED row of ``name`` whose tick has come; None if none.

        "Has come" is judged by the database clock, or by ``now`` when given;
        ``grace`` as in :meth:`WorkSync.acquire_due`.
        """
        return self._claimed(await self._runner.call(self._core.acquire_due(name, now, grace)))

    def claim_from_row(self, row: ClaimedRow) -> AsyncClaim:
        """A :class:`AsyncClaim` for a row claimed with ``ClaimRepository`` in your own transaction.

        Call it once that transaction has committed: the claim then heartbeats
        inside ``async with claim:``, and its finish is fenced by the row's token,
        exactly as for a claim this service made.

        The row's fields are checked here; the check that its claim is
        committed and still holds the row (one read that takes no lock and
        writes nothing, as :meth:`WorkSync.claim_from_row` makes) cannot be
        awaited in a plain call, so it runs as the claim's first awaited call
        begins: ``async with claim:``, ``await claim.load_details()``, a
        heartbeat or a finish. It raises :class:`ClaimNotCommittedError` there,
        before anything is written, if the host's transaction has not
        committed yet, and :class:`ClaimLostError` if the row has since been
        finished or recovered.
        """
        return AsyncClaim(self, checked_row(row), unchecked=True)

    async def _acquire_batch(
        self, plan: DuePlan, places: dict[str, int], limit: int
    ) -> list[AsyncClaim]:
        """Up to ``limit`` due claims among a worker's works, in one statement: a look."""
        rows = await self._runner.call(self._core.acquire_batch(plan, places, limit))
        claimed = []
        for row in rows:
            self._core.claimed(row)
            claimed.append(AsyncClaim(self, row))
        return claimed

    def _claimed(self, row: ClaimedRow | None) -> AsyncClaim | None:
        if row is None:
            return None
        self._core.claimed(row)
        return AsyncClaim(self, row)

    async def recover(self, *, now: datetime | None = None) -> int:
        """Take back abandoned rows now; see :meth:`WorkSync.recover`."""
        return await drive_async(self._core.recover(now), self._runner.call)

    async def prune(self, older_than: timedelta, batch_size: int = 1000) -> int:
        """Delete rows that finished more than ``older_than`` ago; see :meth:`WorkSync.prune`."""
        return await drive_async(self._core.prune(older_than, batch_size), self._runner.call)
