"""The rows the repositories take and return: values, checked where a host can build them.

They are the vocabulary the repositories, the services and the cores share,
and what a host holds when it calls a repository inside its own
transaction. A module of their own lets each of those name them without
depending on the code that runs the statements, and gives the public API
one place to export them from. ``repository`` still imports every one, so
``from worksync_sa.repository import NewRow`` keeps working.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from ._sql.text import check_text
from .errors import InvalidArgumentError
from .models import (
    DEFAULT_GRACE_SECONDS,
    DEFAULT_LEASE_SECONDS,
    DEFAULT_MAX_ATTEMPTS,
    as_utc,
    checked_moment,
)

BatchRow = tuple[str, str, int, datetime, int, int, int, "str | None", int]
"""A :class:`NewRow` as the batched insert takes it: its values and its tick's
``max_run``, in ``BATCH_FIELDS`` order. The scheduler plans rows in this form
directly (its values were checked once, when its works were built); a host
builds a ``NewRow``, which checks every value, and ``fields()`` gives this."""
QueuedRow = BatchRow
"""Deprecated name of :data:`BatchRow` (it named the same row as ``NewRow``), kept until 1.0."""
NO_BUDGET = 2**31 - 1
"""The ``max_run`` of a row whose caller set none: only the unique keys decide."""


def _check_int(name: str, value: object, least: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise InvalidArgumentError(f"NewRow: {name} must be an int >= {least}, got {value!r}")


@dataclass(frozen=True, slots=True)
class NewRow:
    """One QUEUED row to create: one slot of one tick of one work, with the work's policy."""

    name: str
    sequence: str
    slot: int
    tick_at: datetime
    lease_seconds: int = DEFAULT_LEASE_SECONDS
    grace_seconds: int = DEFAULT_GRACE_SECONDS
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    spec: str | None = None
    """The creator's settings, as the scheduler records them (see ``models``)."""
    max_run: int | None = None
    """The tick's budget: rows of other programs for the same tick count against it. None: no
    budget, the unique keys alone decide."""

    def __post_init__(self) -> None:
        # Repositories are public: a host may build rows itself, and INSERT IGNORE
        # would quietly truncate a bad value instead of refusing it.
        try:
            check_text(self.name, "name")
            check_text(self.sequence, "sequence")
        except InvalidArgumentError as exc:
            raise InvalidArgumentError(f"NewRow: {exc}") from None
        for name, least in (
            ("slot", 0),
            ("lease_seconds", 1),
            ("grace_seconds", 1),
            ("max_attempts", 1),
        ):
            _check_int(name, getattr(self, name), least)
        if self.max_run is not None:
            _check_int("max_run", self.max_run, 1)
        if self.spec is not None and (not isinstance(self.spec, str) or len(self.spec) > 255):
            raise InvalidArgumentError("NewRow: spec must be a string of at most 255 characters")
        object.__setattr__(self, "tick_at", checked_moment(self.tick_at, "NewRow: tick_at"))

    def fields(self) -> BatchRow:
        """The row in ``BATCH_FIELDS`` order, as the batched insert takes it."""
        budget = NO_BUDGET if self.max_run is None else self.max_run
        return (
            self.name,
            self.sequence,
            self.slot,
            self.tick_at,
            self.lease_seconds,
            self.grace_seconds,
            self.max_attempts,
            self.spec,
            budget,
        )


class TickState(NamedTuple):
    """What the table holds for one (name, tick, sequence) under one ``spec``."""

    name: str
    tick_at: datetime
    sequence: str
    spec: str | None
    slotted: int
    """Rows holding a slot: queued, running or finished (surplus rows gave theirs up)."""
    top_queued: int | None
    """The highest slot still queued, or None."""
    foreign: int
    """Rows without a slot that count against the budget: another program's."""
    touched: datetime | None
    """When a scheduler last created or closed one of these rows (database clock)."""


class Adoption(NamedTuple):
    """A tick whose rows another program wrote: the time and policy they get."""

    name: str
    sequence: str
    tick_at: datetime
    lease_seconds: int
    grace_seconds: int
    max_attempts: int


class Surplus(NamedTuple):
    """Close the queued slots ``keep`` and above of one tick, saying why, and who closes them."""

    name: str
    tick_at: datetime
    sequence: str
    keep: int
    reason: str
    closer: str | None = None
    """The closing scheduler's spec, recorded in the closed rows."""


class ClaimedRow(NamedTuple):
    """What a successful claim learned about its row.

    ``lease_seconds`` is None when the row has no lease of its own (the
    default applies), or after a MySQL claim by sequence, which does not
    read it. ``slot``, ``tick_at``, ``attempt`` and ``started_at``
    come back with the claim itself (RETURNING on PostgreSQL and SQLite, the
    read a due claim makes anyway on MySQL). A claim by sequence on MySQL
    returns only the row's id, so there they are None (``attempt`` is never
    None once they are known) and :class:`~worksync_sa.Claim` reads them
    when first asked. A named tuple: one is made per claim, on the hot path.
    """

    id: int
    name: str
    sequence: str
    token: str
    lease_seconds: int | None = None
    slot: int | None = None
    """Which of the tick's ``max_run`` rows (0-based); None for rows other programs wrote."""
    tick_at: datetime | None = None
    """The tick as an aware UTC datetime; None for rows other programs wrote."""
    attempt: int | None = None
    """How many times the row has been claimed, this claim included (1 unless re-queued)."""
    started_at: datetime | None = None
    """When the claim took the row, by the database clock."""

    @property
    def detailed(self) -> bool:
        """Whether slot, tick_at, attempt and started_at were learned (see above)."""
        return self.attempt is not None

    @property
    def lag(self) -> float | None:
        """Seconds from the tick to this claim, by the database clock, when both are known."""
        if self.tick_at is None or self.started_at is None:
            return None
        return (self.started_at - self.tick_at).total_seconds()


def claimed_row(name: str, token: str, row: Sequence[Any]) -> ClaimedRow:
    """A :class:`ClaimedRow` from a row of ``claim_details`` columns."""
    claim_id, sequence, lease, slot, tick_at, attempts, started_at = row
    return ClaimedRow(
        claim_id,
        name,
        sequence,
        token,
        lease,
        slot,
        None if tick_at is None else as_utc(tick_at),
        attempts,
        None if started_at is None else as_utc(started_at),
    )


@dataclass(frozen=True, slots=True)
class TickCount:
    """How many rows of one (name, sequence) are in each status."""

    name: str
    sequence: str
    tick_at: datetime | None
    total: int
    queued: int
    running: int
    succeeded: int
    failed: int

    @property
    def claimed(self) -> int:
        """Rows that left QUEUED: running, succeeded or failed."""
        return self.running + self.succeeded + self.failed


class Recovered(NamedTuple):
    """One row recovery changed: ``kind`` is "lease" (failed), "requeued" or "missed"."""

    name: str
    sequence: str
    kind: str


class PauseState(NamedTuple):
    """One row of the pauses table: a work paused, until when (None: until resumed)."""

    name: str
    until: datetime | None
    reason: str
    paused_by: str
    paused_at: datetime

    def active(self, now: datetime) -> bool:
        """Whether the pause still holds at ``now`` (an ended one is ignored, and replaced)."""
        return self.until is None or self.until > now


class TickRow(NamedTuple):
    """One row of a tick, as a retry judges it."""

    id: int
    sequence: str
    slot: int | None
    tick_at: datetime | None
    status: int
    closed_by: str | None
    attempts: int | None
    max_attempts: int | None
    grace_seconds: int | None
