"""What an operator's action decides, with no database: its input, its policy, its rows.

``Operator`` (``actions.py``) reads the table and writes through
``ActionRepository``; everything it decides is here, pure and tested with
plain values: who acts by default, what a reason may hold, the settings a
run-now tick gets, the label that no scheduler's can equal, which rows of a
tick a retry offers again and where, and a work's next ticks and labels.
"""

from __future__ import annotations

import getpass
import secrets
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from .._sql.text import check_text
from ..errors import InvalidArgumentError
from ..models import (
    CLOSED_UNCLAIMED,
    DEFAULT_GRACE_SECONDS,
    DEFAULT_LEASE_SECONDS,
    DEFAULT_MAX_ATTEMPTS,
    TEXT_MAX,
    WorkStatus,
    as_utc,
)
from ..rows import TickRow
from ..sequences import default_sequence, local_sequence, sequence_kind
from ..work import Work
from .reconcile import spec_fields, spec_of

RUN_NOW_PREFIX = "run-now "
"""How a run-now tick's label starts: no scheduler's default or local label does."""
ACTIONS = ("pause", "resume", "run-now", "retry")


def default_actor() -> str:
    """``user@host``: who acts, when the caller does not say."""
    try:
        user = getpass.getuser()
    except Exception:  # no login name (a container without a passwd entry)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def checked_actor(actor: object) -> str:
    return default_actor()[:TEXT_MAX] if actor is None else check_text(actor, "by")


def checked_reason(reason: object) -> str:
    """A reason as stored: up to 255 characters of valid text, no NUL; "" when none."""
    if reason is None:
        return ""
    if not isinstance(reason, str):
        raise InvalidArgumentError(f"reason must be a string, not {type(reason).__name__}")
    if len(reason) > TEXT_MAX:
        raise InvalidArgumentError(
            f"reason has {len(reason)} characters; the limit is {TEXT_MAX}: say it shorter"
        )
    return check_text(reason.strip(), "reason") if reason.strip() else ""


@dataclass(frozen=True, slots=True)
class Policy:
    """What a run-now tick's rows carry: the work's settings as its rows hold them."""

    max_run: int
    lease_seconds: int
    grace_seconds: int
    max_attempts: int
    spec: str | None


def policy_of_work(work: Work, sequence: Callable[[datetime], str]) -> Policy:
    """A config file's work, with the spec a scheduler with ``sequence`` would record."""
    return Policy(
        work.max_run,
        work.lease_seconds,
        work.grace_seconds,
        work.max_attempts,
        spec_of(work, sequence_kind(sequence)),
    )


def policy_of_row(
    lease: int | None, grace: int | None, attempts: int | None, spec: str | None, slots: int
) -> Policy:
    """The policy of the work's latest row: ``max_run`` from its spec, else its tick's slots."""
    max_run = spec_max_run(spec) or max(slots, 1)
    return Policy(
        max_run,
        DEFAULT_LEASE_SECONDS if lease is None else int(lease),
        DEFAULT_GRACE_SECONDS if grace is None else int(grace),
        DEFAULT_MAX_ATTEMPTS if attempts is None else int(attempts),
        spec,
    )


def spec_max_run(spec: str | None) -> int | None:
    if not spec:
        return None
    text = spec_fields(spec).get("max_run", "")
    return int(text) if text.isdigit() and int(text) > 0 else None


def run_now_label(at: datetime, nonce: str | None = None) -> str:
    """``run-now 2026-12-07T19:00:38.123456Z 3f9a1c``: when, and a nonce of its own.

    A scheduler's default label is ``YYYY-MM-DD HH:MM:SS``: it never starts
    with ``run-now``. A custom sequence could make any text, so the label
    alone proves nothing; the negative slots do (see ``models``).
    """
    stamp = as_utc(at).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return f"{RUN_NOW_PREFIX}{stamp} {nonce or secrets.token_hex(3)}"


def run_now_slots(max_run: int) -> list[int]:
    """The slots of a run-now tick: ``-1 .. -max_run``, which no scheduler makes."""
    return [-(slot + 1) for slot in range(max_run)]


@dataclass(frozen=True, slots=True)
class RetryPlan:
    """Which rows a retry offers again, and where (``redate``: past grace, to now)."""

    row_ids: tuple[int, ...]
    label: str
    tick_at: datetime | None
    past_grace: bool
    moves: tuple[tuple[datetime, int], ...] | None
    """Per row, its new (tick, slot) when re-dated; None within grace."""


def plan_retry(
    name: str, tick: str, rows: Sequence[TickRow], now: datetime, past_grace: bool
) -> RetryPlan:
    """Decide a retry of one tick's rows, or refuse it with the reason (nothing is written).

    Refused: a tick with no rows; one still running or queued (it is in play);
    one whose rows all succeeded, or whose failures gave up their slot
    (closed as surplus or paused: nothing ran); and, without ``past_grace``,
    one whose grace is over. Retried: every failed row holding a slot,
    whether the worker failed it, its lease ran out, or nobody claimed it.
    """
    if not rows:
        raise InvalidArgumentError(
            f"work {name!r} has no tick {tick!r}: give its label or its UTC time "
            "(`worksync next` shows labels to come; the ledger, past ones)"
        )
    label = rows[0].sequence
    where = f"tick {label!r} of work {name!r}"
    statuses = {row.status for row in rows}
    if WorkStatus.RUNNING.value in statuses:
        raise InvalidArgumentError(f"{where} is running: wait for it to end, then retry it")
    if WorkStatus.QUEUED.value in statuses:
        raise InvalidArgumentError(f"{where} is still queued: its workers may yet claim it")
    failed = [
        row
        for row in rows
        if row.status == WorkStatus.FAILED.value
        and row.slot is not None
        and row.closed_by not in CLOSED_UNCLAIMED
    ]
    if not failed:
        if WorkStatus.SUCCESS.value in statuses:
            raise InvalidArgumentError(
                f"{where} succeeded: there is nothing to retry (`worksync run-now` runs the "
                "work once more)"
            )
        raise InvalidArgumentError(
            f"{where} has no failed run to retry: its rows were closed before any claim "
            "(surplus or paused)"
        )
    tick_at = failed[0].tick_at
    ends = [
        row.tick_at + timedelta(seconds=DEFAULT_GRACE_SECONDS if g is None else g)
        for row in failed
        if row.tick_at is not None
        for g in (row.grace_seconds,)
    ]
    over = not ends or min(ends) < now
    if over and not past_grace:
        raise InvalidArgumentError(
            f"{where} is past its grace (it ended {min(ends).isoformat() if ends else 'unknown'}"
            "): pass past_grace=True (--past-grace) to run it now all the same"
        )
    moves = None
    if over:
        moves = tuple(
            (now, row.slot if row.slot is not None and row.slot < 0 else -((row.slot or 0) + 1))
            for row in failed
        )
    return RetryPlan(tuple(row.id for row in failed), label, tick_at, over, moves)


def sequence_for(spec: str | None) -> Callable[[datetime], str] | None:
    """The labeller a spec's sequence kind names, if it can be rebuilt (utc, local:<zone>)."""
    kind = spec_fields(spec).get("sequence") if spec else "utc"
    if kind == "utc":
        return default_sequence
    if kind and kind.startswith("local:"):
        return local_sequence(kind.removeprefix("local:"))
    return None


def work_of_spec(name: str, spec: str) -> Work | None:
    """The work a scheduler's spec describes (cron, time zone, syntax), if it says enough."""
    fields = spec_fields(spec)
    cron, zone = fields.get("cron"), fields.get("timezone")
    if not cron or not zone:
        return None
    syntax = "standard"
    if cron.endswith(" syntax)") and " (" in cron:
        cron, _, rest = cron.rpartition(" (")
        syntax = rest.removesuffix(" syntax)")
    try:
        return Work(name, cron, max(spec_max_run(spec) or 1, 1), timezone=zone, cron_syntax=syntax)
    except InvalidArgumentError:
        return None


def upcoming(
    work: Work, sequence: Callable[[datetime], str] | None, after: datetime, n: int
) -> list[tuple[datetime, str | None]]:
    """The next ``n`` ticks after ``after`` and their labels, as a scheduler plans them."""
    ticks: list[tuple[datetime, str | None]] = []
    at = after
    for _ in range(n):
        at = work.next_tick(at)
        ticks.append((at, None if sequence is None else sequence(at)))
    return ticks
