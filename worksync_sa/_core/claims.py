"""What ``WorkSync`` and ``AsyncWorkSync`` (and their claims) share: all of it but the waiting.

Checked inputs, the database calls (see ``_run.steps``), the claim's bookkeeping
and error messages, what ``with claim:`` does around its body (heartbeats,
recording the outcome through an outage), and what gets logged and emitted
all live here once. ``sync.py`` and ``async_sync.py`` only perform the steps,
blocking or awaited, the heartbeat in a thread or a task.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Generator, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy.engine import Connection

from .._run.identity import default_worker_id, new_token
from .._run.steps import Call, Idle, Sleep, Steps
from .._sql.direct import in_others_transaction
from .._sql.driver_errors import is_database_away
from .._sql.text import check_text
from ..config import RetryPolicy
from ..durations import as_timedelta, shown
from ..errors import (
    ClaimLostError,
    ClaimNotCommittedError,
    InvalidArgumentError,
    InvalidWorkError,
    describe,  # its home is errors (a child process uses it)
)
from ..events import Event, Events, Listener
from ..models import (
    DEFAULT_LEASE_SECONDS,
    WorkStatus,
    checked_moment,
    table_named,
    validate_table_name,
)
from ..repository import MaintenanceRepository, floor_seconds
from ..rows import ClaimedRow, claimed_row
from ..work import LONGEST_POLICY
from .maintenance import check_prune, prune_steps, recover_steps
from .outage import Outage
from .repositories import ClaimCalls, ClaimState

logger = logging.getLogger(__name__)


def _checked(value: object, what: str) -> str:
    try:
        return check_text(value, what)
    except InvalidArgumentError as exc:
        raise InvalidWorkError(str(exc)) from None


def checked_floor(grace: object) -> int:
    """How far back a due claim looks, in seconds (see ``repository.floor_seconds``).

    ``None`` is the longest grace any row can have (365 days): always
    correct, but only the work's own grace keeps the index range as short as
    the ticks that can still be claimed.
    """
    if grace is None:
        return floor_seconds(None)
    try:
        delta = as_timedelta(grace, "grace")  # type: ignore[arg-type]
    except ValueError as exc:
        raise InvalidArgumentError(str(exc)) from None
    if delta > LONGEST_POLICY:
        raise InvalidArgumentError(f"grace must be at most 365 days, got {shown(delta)}")
    return floor_seconds(delta)


@dataclass(frozen=True, slots=True)
class DuePlan:
    """A worker's works for its one claim statement per look: grouped by how far back each looks.

    Works that share a floor (their grace, in seconds) share one ``name IN
    (...)`` and one range; a worker's works usually all do.
    """

    groups: tuple[tuple[int, tuple[str, ...]], ...]

    @classmethod
    def of(cls, graces: dict[str, timedelta | None]) -> DuePlan:
        by_floor: dict[int, list[str]] = {}
        for name in sorted(graces):
            by_floor.setdefault(checked_floor(graces[name]), []).append(name)
        return cls(tuple((floor, tuple(names)) for floor, names in sorted(by_floor.items())))

    @property
    def shape(self) -> tuple[int, ...]:
        """How many works each group holds: what the statement's text depends on."""
        return tuple(len(names) for _, names in self.groups)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for _, names in self.groups for name in names)


_ROW_FIELDS: tuple[tuple[str, type, bool, str], ...] = (
    ("id", int, False, "an int"),
    ("name", str, False, "a string"),
    ("sequence", str, False, "a string"),
    ("token", str, False, "a string"),
    ("lease_seconds", int, True, "an int or None"),
    ("slot", int, True, "an int or None"),
    ("tick_at", datetime, True, "a datetime or None"),
    ("attempt", int, True, "an int or None"),
    ("started_at", datetime, True, "a datetime or None"),
)
"""Each ``ClaimedRow`` field: its name, its type, whether None is allowed, and how it is said."""


def checked_row(row: object) -> ClaimedRow:
    """A row for ``claim_from_row``: what a ``ClaimRepository`` claim returned.

    A ``ClaimedRow`` is a named tuple a host can also build, so each field's
    type is checked here: a string id, say, would otherwise be refused only
    by the finish at the end of the work, or match no row and look like a
    lost claim.
    """
    if not isinstance(row, ClaimedRow):
        raise InvalidArgumentError(
            f"row must be the ClaimedRow a ClaimRepository claim returned, not {type(row).__name__}"
        )
    for field, kind, optional, said in _ROW_FIELDS:
        value = getattr(row, field)
        if value is None and optional:
            continue
        if not isinstance(value, kind) or isinstance(value, bool):
            raise InvalidArgumentError(
                f"row.{field} must be {said}, got {type(value).__name__} {value!r:.60}"
            )
    if row.id < 1:
        raise InvalidArgumentError(f"row.id must be a row's id (1 or more), got {row.id}")
    if not 1 <= len(row.token) <= 32:
        raise InvalidArgumentError(
            f"row.token must be the claim's token (1 to 32 characters), got {len(row.token)}"
        )
    return row


def held_from_row(row: ClaimedRow, state: ClaimState | None, table: str) -> ClaimedRow:
    """``row`` if its claim is committed and still holds it, else the error naming why not.

    ``state`` is the row as committed, read by ``claim_from_row`` on the
    service's own connection. Any other answer than RUNNING with the row's
    token means the claim cannot be used: its transaction has not committed
    (the row is still as it was before it), or it committed and the row has
    since moved on. A claim made from it would heartbeat into the host's row
    lock (MySQL/MariaDB waits, past the lease), or fail its fenced writes
    late and misleadingly, so it is refused now, before anything is written.
    """
    where = f"row {row.id} of table {table!r}"
    after = "call claim_from_row after the transaction that claimed the row has committed"
    if state is None:
        raise ClaimNotCommittedError(
            f"{where} is not there as committed: the transaction that created and claimed "
            f"it has not committed yet (or was rolled back, or the row was deleted); {after}"
        )
    if state.token == row.token and state.status == WorkStatus.RUNNING:
        return row
    is_ours = state.token == row.token
    status = state.status.name
    if state.status == WorkStatus.QUEUED:
        requeued = (
            row.attempt is not None and state.attempts is not None and state.attempts >= row.attempt
        )
        if not requeued:
            raise ClaimNotCommittedError(
                f"{where} is still QUEUED as committed: the transaction that claimed it has "
                f"not committed yet (or was rolled back); {after}"
            )
        raise ClaimLostError(
            f"{where} was claimed with this token, then recovered and queued again (its lease "
            "ran out): this claim no longer holds it; nothing was written"
        )
    if is_ours:
        raise ClaimLostError(
            f"{where} was already finished as {status} by this claim (or recovered): it no "
            "longer holds it; nothing was written"
        )
    raise ClaimLostError(
        f"{where} is {status} under another claim's token: this claim was lost (recovered "
        "and claimed again), or the transaction that claimed it was rolled back; nothing "
        "was written"
    )


def checked_now(now: object) -> datetime | None:
    """An explicit ``now`` as aware UTC, None for the database clock, else a clear error."""
    return None if now is None else checked_moment(now, "now")


def error_text(error: object) -> str | None:
    """What ``fail(error)`` stores, or a clear error for a value it cannot store."""
    if isinstance(error, BaseException):
        return describe(error)
    if error is not None and not isinstance(error, str):
        raise InvalidArgumentError(
            f"error must be a string or an exception, not {type(error).__name__}"
        )
    return error


def heartbeat_period(lease_seconds: int | None) -> float:
    """How often a kept-alive claim heartbeats: a third of its lease, but no less than 0.5 s."""
    return max(0.5, (lease_seconds or DEFAULT_LEASE_SECONDS) / 3)


class ReadLease:
    """Read the claimed row's lease (a MySQL claim by sequence does not return it)."""


class Beat:
    """Heartbeat once: ``claim.heartbeat()``."""


@dataclass(frozen=True, slots=True)
class Record:
    """Record the outcome: SUCCESS if ``exc`` is None, else FAILED with it."""

    exc: BaseException | None


READ_LEASE, BEAT = ReadLease(), Beat()
ClaimStep = ReadLease | Beat | Record | Sleep | Idle


class ClaimCore:
    """A claim's state, shared by :class:`Claim` and :class:`AsyncClaim`.

    What ``with claim:`` does around the body (keep the lease alive, record
    the outcome through an outage) is written once here as steps; each twin
    performs them by blocking or by awaiting.
    """

    __slots__ = ("_held_until", "_lost", "_outcome", "_row")

    def __init__(self, row: ClaimedRow) -> None:
        self._row = row
        self._outcome: WorkStatus | None = None
        self._lost = False
        self._held_until = time.monotonic() + (row.lease_seconds or DEFAULT_LEASE_SECONDS)
        """When the lease runs out, as far as this process knows (its own clock)."""

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
    def slot(self) -> int | None:
        """Which of the tick's ``max_run`` rows this is (0-based): the shard to work on.

        None for rows another program wrote (the Go original's carry no slot).
        """
        return self._detailed().slot

    @property
    def tick_at(self) -> datetime | None:
        """The tick as an aware UTC datetime; None for rows another program wrote."""
        return self._detailed().tick_at

    @property
    def attempt(self) -> int:
        """How many times the row has been claimed, this claim included (1 unless re-queued)."""
        attempt = self._detailed().attempt
        assert attempt is not None
        return attempt

    def _detailed(self) -> ClaimedRow:
        """The row with its details; each twin learns them its own way when missing."""
        return self._row

    @property
    def finished(self) -> bool:
        """True once success() or fail() has been recorded."""
        return self._outcome is not None

    @property
    def lost(self) -> bool:
        """True once a heartbeat or a finish found the row no longer ours (recovered, say).

        A long-running body can check it and stop early; its finish would raise
        :class:`ClaimLostError` anyway.
        """
        return self._lost

    def __repr__(self) -> str:
        kind = type(self).__name__
        return f"{kind}(id={self.id}, name={self.name!r}, sequence={self.sequence!r})"

    def _may_heartbeat(self) -> None:
        if self._outcome is not None:
            raise ClaimLostError(f"{self!r} is already finished; nothing to keep alive")

    def _heartbeat_done(self, kept: bool) -> None:
        if not kept:
            self._lost = True
            raise ClaimLostError(
                f"{self!r} no longer holds row {self.id}: its lease ran out and it was "
                "recovered, or its claim was lost in a failover, or someone else changed "
                "it; nothing was written"
            )
        self._held_until = time.monotonic() + (self._row.lease_seconds or DEFAULT_LEASE_SECONDS)

    def _learned_lease(self, seconds: int | None) -> None:
        """The row's lease, read by the heartbeat where the claim did not return it (MySQL)."""
        if seconds is not None and self._row.lease_seconds is None:
            self._row = self._row._replace(lease_seconds=seconds)
            self._held_until = time.monotonic() + seconds

    # -- what `with claim:` does, written once for both twins (see ClaimStep) -------------

    def _keepalive_steps(self) -> Generator[ClaimStep, Any, None]:
        """Heartbeat every third of the lease until stopped or the claim is lost.

        While the database is away the heartbeat keeps trying, with capped
        backoff, until stopped (the fenced write is harmless once the lease
        has ended); a heartbeat that finds the row gone marks the claim lost
        and stops.
        """
        lease = self._row.lease_seconds
        if lease is None:
            try:
                lease = yield READ_LEASE
            except Exception:  # the default applies; the first heartbeat will tell
                lease = None
        self._learned_lease(lease)
        every = heartbeat_period(lease)
        outage = Outage(logger, f"heartbeat of {self!r}", base=every / 4, cap=every)
        wait = every
        while not (yield Idle(wait)):
            try:
                yield BEAT
            except ClaimLostError:
                if not self.finished:
                    logger.warning(
                        "%r was lost: its row was recovered, or the claim was lost in a failover",
                        self,
                        extra={"action": "lost"},
                    )
                return
            except Exception as exc:  # the database is away, say: keep trying until stopped
                wait = outage.failed(exc)
                continue
            outage.succeeded()
            wait = every

    def _record_steps(self, exc: BaseException | None) -> Generator[ClaimStep, Any, None]:
        """SUCCESS, or FAILED with ``exc``; tried again while the database is away.

        ``with claim:`` does not give up on an outcome while the database is
        away (a restart, a failover): the work ran, and the row should say
        so. It keeps trying until the lease runs out; after that recovery may
        have closed the row, and the fenced write would change nothing.
        """
        outage: Outage | None = None
        while True:
            try:
                yield Record(exc)
            except ClaimLostError:
                raise
            except Exception as error:
                left = self._held_until - time.monotonic()
                if not (is_database_away(error) and left > 0):
                    raise
                if outage is None:
                    what = f"recording the outcome of {self!r}"
                    outage = Outage(logger, what, base=0.25, cap=5.0)
                yield Sleep(min(outage.failed(error), left))
                continue
            if outage is not None:
                outage.succeeded()
            return

    def _may_finish(self) -> None:
        if self._outcome is not None:
            raise ClaimLostError(
                f"{self!r} was already finished as {self._outcome.name}; nothing was written"
            )

    def _finish_done(self, status: WorkStatus, written: bool) -> None:
        if not written:
            self._lost = True
            raise ClaimLostError(
                f"{self!r} no longer holds row {self.id}: it was finished, recovered or "
                "changed by someone else; nothing was written"
            )
        self._outcome = status

    def _log_lost_failure(self) -> None:
        # The body's exception is the one the caller needs; the lost claim is logged.
        logger.warning(
            "could not record failure of %r", self, exc_info=True, extra={"action": "lost"}
        )


class WorkSyncSettings:
    """What both WorkSyncs show, read from their shared core: one definition, no drift.

    A mixin for :class:`WorkSync` and :class:`AsyncWorkSync`; each sets ``_core``.
    """

    __slots__ = ()
    _core: WorkSyncCore

    @property
    def worker_id(self) -> str:
        """Recorded in ``claimed_by``; ``host:pid`` unless given."""
        return self._core.worker_id

    @property
    def table(self) -> str:
        """The work table's name."""
        return self._core.table_name


class WorkSyncCore:
    """The checked settings and the database calls of a WorkSync, blocking or asyncio."""

    def __init__(
        self,
        table: str,
        worker_id: str | None,
        retry: RetryPolicy | None,
        keep_alive: bool,
        listeners: Iterable[Listener] | None,
    ) -> None:
        self.table_name = validate_table_name(table)
        self.events = Events(listeners)
        if worker_id is not None:
            worker_id = _checked(worker_id, "worker_id")
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise InvalidArgumentError(f"retry must be a RetryPolicy, not {type(retry).__name__}")
        if not isinstance(keep_alive, bool):
            raise InvalidArgumentError(f"keep_alive must be True or False, not {keep_alive!r}")
        self.policy = retry or RetryPolicy()
        self.keep_alive = keep_alive
        self._worker_id = worker_id
        self.repo = ClaimCalls(table_named(table))
        self.maintenance = MaintenanceRepository(table_named(table))

    @property
    def worker_id(self) -> str:
        """Recorded in ``claimed_by``; ``host:pid`` unless given."""
        return self._worker_id or default_worker_id()

    # -- claiming ----------------------------------------------------------------------

    def acquire(self, name: str, sequence: str) -> Call[ClaimedRow | None]:
        """The claim of a row of the tick ``(name, sequence)``, as one call."""
        params = {
            "work_name": _checked(name, "name"),
            "tick_sequence": _checked(sequence, "sequence"),
            "claim_token": new_token(),
            "worker": self.worker_id,
        }
        repo = self.repo
        return Call(
            "claim",
            partial(repo.claim_checked, kind="claim", params=params),
            resolve=partial(repo.find_claim, name=params["work_name"], token=params["claim_token"]),
            peek=partial(repo.has_queued, kind="claim", params=params),
        )

    def acquire_due(
        self, name: str, now: datetime | None, grace: timedelta | str | None = None
    ) -> Call[ClaimedRow | None]:
        """The claim of the earliest due row of ``name``, as one call."""
        params: dict[str, Any] = {
            "work_name": _checked(name, "name"),
            "claim_token": new_token(),
            "worker": self.worker_id,
            "floor_seconds": checked_floor(grace),
        }
        at = checked_now(now)
        if at is not None:
            params["now"] = at
        kind = "claim_due" if at is None else "claim_at"
        repo = self.repo
        return Call(
            kind,
            partial(repo.claim_checked, kind=kind, params=params),
            resolve=partial(repo.find_claim, name=params["work_name"], token=params["claim_token"]),
            peek=partial(repo.has_queued, kind=kind, params=params),
        )

    def acquire_batch(
        self, plan: DuePlan, places: dict[str, int], limit: int, now: datetime | None = None
    ) -> Call[list[ClaimedRow]]:
        """The claim of up to ``limit`` due rows among ``plan``'s works, as one call.

        One token for the whole batch: each row's later writes are fenced by
        its id and that token. ``places``: each work's place in the worker's
        order (``Shares``), lowest first among rows of the same slot.
        """
        params: dict[str, Any] = {
            "claim_token": new_token(),
            "worker": self.worker_id,
            "batch_limit": limit,
        }
        for g, (floor, names) in enumerate(plan.groups):
            params[f"floor_{g}"] = floor
            for i, name in enumerate(names):
                params[f"work_{g}_{i}"] = name
                params[f"rank_{g}_{i}"] = places.get(name, 0)
        at = checked_now(now)
        if at is not None:
            params["now"] = at
        explicit = at is not None
        repo, shape, token = self.repo, plan.shape, params["claim_token"]
        return Call(
            "claim_batch",
            partial(repo.claim_batch, shape=shape, params=params, explicit=explicit),
            resolve=partial(repo.batch_found, names=list(plan.names), token=token),
            peek=partial(repo.batch_has_queued, shape=shape, params=params, explicit=explicit),
            nothing=[],
        )

    def claimed(self, row: ClaimedRow) -> None:
        """Tell the log and the listeners about a claim."""
        logger.debug(
            "claimed %s @ %s (row %d)", row.name, row.sequence, row.id, extra={"action": "claimed"}
        )
        if self.events:
            self.events.emit(Event("claimed", row.name, row.sequence, lag=row.lag))

    def from_row(self, row: ClaimedRow) -> Call[ClaimedRow]:
        """The check ``claim_from_row`` makes: one read by id, no lock, nothing written.

        It runs on the service's own autocommit connection, so it reads the
        latest committed row (each statement its own snapshot, on MySQL's
        REPEATABLE READ too) and never waits on the lock a host's open
        transaction holds on it; see :func:`held_from_row`.
        """
        repo, table = self.repo, self.table_name

        def held(conn: Connection) -> ClaimedRow:
            if in_others_transaction(conn):
                raise ClaimNotCommittedError(
                    f"row {row.id} of table {table!r}: this engine's pool shares one "
                    "connection (sqlite://), and a transaction is still open on it; call "
                    "claim_from_row after the transaction that claimed the row has committed"
                )
            return held_from_row(row, repo.state(conn, row.id), table)

        return Call("claim_from_row", held)

    # -- a claim's later writes ------------------------------------------------------------

    def heartbeat(self, row: ClaimedRow) -> Call[bool]:
        return Call("heartbeat", partial(self.repo.heartbeat, claim=row.id, token=row.token))

    def details(self, row: ClaimedRow) -> Call[ClaimedRow]:
        """Read what a MySQL claim by sequence could not return: slot, tick, attempt."""
        repo = self.repo
        return Call(
            "details",
            lambda conn: claimed_row(row.name, row.token, repo.details(conn, row.id)),
        )

    def lease_seconds(self, row: ClaimedRow) -> Call[int | None]:
        return Call("lease", partial(self.repo.lease_seconds, claim_id=row.id))

    def finish(self, row: ClaimedRow, status: WorkStatus, error: str | None) -> Call[bool]:
        repo = self.repo
        return Call(
            "finish",
            partial(repo.finish, claim=row.id, token=row.token, status=status, error=error),
            resolve=lambda conn: repo.finished_as(conn, row.id, row.token, status) or None,
        )

    def finished(self, row: ClaimedRow, status: WorkStatus) -> None:
        """Tell the log and the listeners how a claim ended."""
        logger.debug(
            "finished %s @ %s (row %d) as %s",
            row.name,
            row.sequence,
            row.id,
            status.name,
            extra={"action": "finished"},
        )
        if self.events:
            self.events.emit(Event("finished", row.name, row.sequence, status=status.name))

    # -- maintenance -----------------------------------------------------------------------

    def recover(self, now: datetime | None) -> Steps[int]:
        return recover_steps(self.maintenance, self.events, checked_now(now))

    def prune(self, older_than: timedelta, batch_size: int) -> Steps[int]:
        check_prune(older_than, batch_size)
        return prune_steps(self.maintenance, older_than, batch_size, batches=None)
