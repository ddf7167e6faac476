"""Operators' actions: pause and resume a work, run a tick now, retry a failed one, look ahead.

What operators of every mature scheduler reach for (Oban Web, Sidekiq-cron,
Kubernetes CronJob ``suspend``, Celery Flower), as one small service,
:class:`Operator`, which ``worksync pause|resume|run-now|retry|next|actions``
and the status page call. Its state lives in the database, so every
scheduler and worker on every host honours it without a restart:

* a **pause** is a row of ``<table>_pauses``; every scheduler pass reads
  them (one statement), makes no ticks of a paused work up to the pause's
  end, and closes its queued rows of ticks not yet due as ``paused``;
* a **run-now** tick is ``max_run`` QUEUED rows at the database's current
  time, labelled ``run-now <time> <nonce>``, in negative slots that no
  scheduler makes, closes or adopts: the work's running workers claim them
  as any due tick;
* a **retry** puts a failed tick's rows back to QUEUED (attempts kept);
  past its grace, it also moves them to now, where a worker's due claim looks.

Each action and its entry in ``<table>_actions`` (who, when by the database
clock, why, what) are written in one transaction: neither exists without the
other. On PostgreSQL, a run-now or a retry also notifies the table's channel in
that transaction, so workers with ``wake="notify"`` start it at once. Bad input
raises :class:`~worksync_sa.InvalidArgumentError` naming what is wrong, and
writes nothing. Transient errors (a deadlock, a busy
SQLite file) run the whole transaction again, a few times.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from ._core.actions import (
    Policy,
    checked_actor,
    checked_reason,
    plan_retry,
    policy_of_row,
    policy_of_work,
    run_now_label,
    run_now_slots,
    sequence_for,
    upcoming,
    work_of_spec,
)
from ._run.engines import checked_engine
from ._sql.driver_errors import is_missing_schema, is_transient
from ._sql.text import check_text
from .errors import InvalidArgumentError, SchemaNotReadyError
from .models import DEFAULT_TABLE, as_utc, validate_table_name
from .repository import ActionRepository
from .rows import PauseState
from .sequences import default_sequence
from .work import Work

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

ATTEMPTS = 8
"""Times an action's transaction is run when it meets a transient error (deadlock, busy)."""
NEXT_LIMIT = 1000
ACTIONS_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class Pause:
    """A work's pause: until when (None: until resumed), why, who, since when."""

    name: str
    until: datetime | None
    reason: str
    by: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Paused:
    """What :meth:`Operator.pause` did."""

    pause: Pause
    closed: int
    """Queued rows of ticks not yet due closed as ``paused``."""


@dataclass(frozen=True, slots=True)
class Resumed:
    """What :meth:`Operator.resume` did: the pause it ended."""

    name: str
    pause: Pause


@dataclass(frozen=True, slots=True)
class RunNow:
    """The tick :meth:`Operator.run_now` made."""

    name: str
    label: str
    tick_at: datetime
    rows: int
    """``max_run`` of the work: how many claims the tick allows."""


@dataclass(frozen=True, slots=True)
class Retried:
    """The tick :meth:`Operator.retry` offered again."""

    name: str
    label: str
    tick_at: datetime | None
    """The tick's time as it was (a row moved past grace is now at ``moved_to``)."""
    rows: int
    past_grace: bool
    moved_to: datetime | None
    """Past grace: the instant the rows were moved to (the database clock)."""


@dataclass(frozen=True, slots=True)
class NextTick:
    """One tick to come, its label, and whether a pause holds it back."""

    tick_at: datetime
    label: str | None
    """None when the work's sequence function cannot be rebuilt here (a custom one)."""
    paused: bool


@dataclass(frozen=True, slots=True)
class Upcoming:
    """What :meth:`Operator.next_ticks` found."""

    name: str
    ticks: tuple[NextTick, ...]
    pause: Pause | None
    """The pause in force, if any."""
    source: str
    """Where the cron came from: ``"works"`` (given) or ``"spec"`` (the work's latest row)."""


@dataclass(frozen=True, slots=True)
class ActionEntry:
    """One entry of the actions ledger."""

    id: int
    at: datetime
    name: str
    action: str
    tick: str | None
    by: str
    reason: str
    detail: str | None


def _pause(state: PauseState) -> Pause:
    return Pause(state.name, state.until, state.reason, state.paused_by, state.paused_at)


class Operator:
    """Operators' actions on the works of one table, each recorded with who, when and why.

    ``by`` names who acts in the ledger (default ``user@host``). ``works``
    (a config file's) give a run-now tick its settings and ``next_ticks`` its
    cron; without them, both come from the work's latest row in the table.
    ``sequence`` labels ``next_ticks`` as the fleet's schedulers do (default:
    as the latest row's spec says, else UTC).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        table: str = DEFAULT_TABLE,
        by: str | None = None,
        works: Iterable[Work] | None = None,
        sequence: Callable[[datetime], str] | None = None,
    ) -> None:
        self._engine = checked_engine(engine)
        self.table = validate_table_name(table)
        self.by = checked_actor(by)
        given = list(works or ())
        if not all(isinstance(work, Work) for work in given):
            raise InvalidArgumentError("works must be Work objects")
        self.works = {work.name: work for work in given}
        if sequence is not None and not callable(sequence):
            raise InvalidArgumentError("sequence must be a function of the tick")
        self.sequence = sequence
        self._repo = ActionRepository(self.table)

    # -- actions ----------------------------------------------------------------------------

    def pause(
        self, name: str, until: datetime | timedelta | None = None, reason: str = ""
    ) -> Paused:
        """Pause ``name`` until ``until`` (a time, or that long from now; None: until resumed).

        Its queued rows of ticks not yet due (up to ``until``) are closed at
        once; schedulers make none until then. A pause replaces an earlier
        one. Rows already due, running or finished are left alone.
        """
        name, reason = check_text(name, "name"), checked_reason(reason)
        _check_until(until)

        def act(conn: Connection) -> Paused:
            now = self._repo.clock(conn)
            self._known(conn, name)
            end = now + until if isinstance(until, timedelta) else until
            if end is not None and as_utc(end) <= now:
                raise InvalidArgumentError(
                    f"until {as_utc(end).isoformat()} is not in the future (the database's clock "
                    f"reads {now.isoformat()})"
                )
            end = None if end is None else as_utc(end)
            self._repo.set_pause(conn, name, end, reason, self.by)
            why = f"paused by {self.by}" + (f": {reason}" if reason else "")
            closed = self._repo.close_paused(conn, [(name, end, why)])
            until_text = "until resumed" if end is None else f"until {end.isoformat()}"
            self._record(
                conn, name, "pause", None, reason, f"{until_text}; closed {closed} queued row(s)"
            )
            return Paused(Pause(name, end, reason, self.by, now), closed)

        return self._run(act)

    def resume(self, name: str, reason: str = "") -> Resumed:
        """End ``name``'s pause: the schedulers' next passes make its ticks again."""
        name, reason = check_text(name, "name"), checked_reason(reason)

        def act(conn: Connection) -> Resumed:
            now = self._repo.clock(conn)
            state = self._repo.pause_of(conn, name)
            if state is None or not state.active(now):
                ended = "" if state is None else f" (its pause ended {state.until})"
                raise InvalidArgumentError(f"work {name!r} is not paused{ended}: nothing to resume")
            self._repo.delete_pause(conn, name)
            detail = f"paused by {state.paused_by} since {state.paused_at.isoformat()}"
            self._record(conn, name, "resume", None, reason, detail)
            return Resumed(name, _pause(state))

        return self._run(act)

    def run_now(self, name: str, reason: str = "") -> RunNow:
        """One tick of ``name`` at the database's current time, with ``max_run`` rows.

        Its label (``run-now <time> <nonce>``) and its negative slots never
        meet a scheduler's rows on either unique key, so it never takes a
        cron tick's budget, and no scheduler closes or adopts it. Allowed
        while the work is paused: a pause holds back the cron's ticks only.
        """
        name, reason = check_text(name, "name"), checked_reason(reason)

        def act(conn: Connection) -> RunNow:
            now = self._repo.clock(conn)
            policy = self._known(conn, name)
            label = run_now_label(now)
            rows = [
                {
                    "work_name": name,
                    "label": label,
                    "new_slot": slot,
                    "tick": now,
                    "lease": policy.lease_seconds,
                    "grace": policy.grace_seconds,
                    "tries": policy.max_attempts,
                    "row_spec": policy.spec,
                }
                for slot in run_now_slots(policy.max_run)
            ]
            made = self._repo.insert_operator_rows(conn, rows)
            self._repo.wake(conn, name)  # listening workers start it at once (PostgreSQL)
            detail = f"{made} row(s) at {now.isoformat()}"
            self._record(conn, name, "run-now", label, reason, detail)
            return RunNow(name, label, now, made)

        return self._run(act)

    def retry(
        self, name: str, tick: str | datetime, past_grace: bool = False, reason: str = ""
    ) -> Retried:
        """Offer a failed tick's failed rows again: QUEUED, attempts kept.

        ``tick`` is its label, or its time (a datetime, or ISO 8601 text; naive
        is UTC). Refused, with nothing written, when the tick is unknown,
        running or queued, succeeded, or past its grace without
        ``past_grace``. Past grace the rows move to the database's current
        time, so that a worker's due claim, which looks back no further than
        the work's grace, finds them (see ``_sql.actions.requeue``).
        """
        name, reason = check_text(name, "name"), checked_reason(reason)
        if not isinstance(past_grace, bool):
            raise InvalidArgumentError("past_grace must be True or False")
        label, instant = _tick_of(tick)

        def act(conn: Connection) -> Retried:
            now = self._repo.clock(conn)
            rows = self._repo.tick_rows(conn, name, label=label) if label is not None else []
            if not rows and instant is not None:
                rows = self._repo.tick_rows(conn, name, tick=instant)
            shown = label if label is not None else str(tick)
            plan = plan_retry(name, shown, rows, now, past_grace)
            for index, row_id in enumerate(plan.row_ids):
                move = None if plan.moves is None else plan.moves[index]
                if not self._repo.requeue(conn, row_id, move):
                    raise InvalidArgumentError(
                        f"tick {plan.label!r} of work {name!r} changed meanwhile: look again"
                    )
            self._repo.wake(conn, name)  # due again now: listening workers look at once
            moved = now if plan.moves is not None else None
            detail = f"{len(plan.row_ids)} row(s) re-queued" + (
                f", moved past grace to {now.isoformat()}" if moved else ""
            )
            self._record(conn, name, "retry", plan.label, reason, detail)
            return Retried(
                name, plan.label, plan.tick_at, len(plan.row_ids), moved is not None, moved
            )

        return self._run(act)

    # -- reads ------------------------------------------------------------------------------

    def next_ticks(self, name: str, n: int = 10, work: Work | None = None) -> Upcoming:
        """The next ``n`` ticks of ``name`` after the database's clock, as schedulers plan them.

        The cron comes from ``work``, else the ``works`` given, else the
        settings a scheduler recorded in the work's latest row (its spec).
        """
        name = check_text(name, "name")
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= NEXT_LIMIT:
            raise InvalidArgumentError(f"n must be an int from 1 to {NEXT_LIMIT}, got {n!r}")
        if work is not None and not isinstance(work, Work):
            raise InvalidArgumentError(f"work must be a Work, not {type(work).__name__}")
        work = work or self.works.get(name)

        def read(conn: Connection) -> Upcoming:
            now = self._repo.clock(conn)
            found, source = work, "works"
            sequence: Callable[[datetime], str] | None = self.sequence or default_sequence
            if found is None:
                row = self._repo.latest_policy(conn, name)
                if row is None:
                    raise self._unknown(name)
                found = work_of_spec(name, row.spec or "")
                if found is None:
                    raise InvalidArgumentError(
                        f"work {name!r}: its latest row records no cron (another program made "
                        "it): give the work (--config)"
                    )
                sequence, source = self.sequence or sequence_for(row.spec), "spec"
            state = self._repo.pause_of(conn, name)
            pause = _pause(state) if state is not None and state.active(now) else None
            ticks = tuple(
                NextTick(
                    at,
                    label,
                    pause is not None and (pause.until is None or at <= pause.until),
                )
                for at, label in upcoming(found, sequence, now, n)
            )
            return Upcoming(name, ticks, pause, source)

        return self._run(read, write=False)

    def paused(self) -> list[Pause]:
        """The pauses in force now (by the database clock), by work name."""

        def read(conn: Connection) -> list[Pause]:
            now = self._repo.clock(conn)
            return [_pause(state) for state in self._repo.pauses(conn) if state.active(now)]

        return self._run(read, write=False)

    def actions(self, name: str | None = None, limit: int = 50) -> list[ActionEntry]:
        """The latest ``limit`` actions, newest first; of one work when ``name`` is given."""
        if name is not None:
            name = check_text(name, "name")
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= ACTIONS_LIMIT:
            raise InvalidArgumentError(
                f"limit must be an int from 1 to {ACTIONS_LIMIT}, got {limit!r}"
            )

        def read(conn: Connection) -> list[ActionEntry]:
            return [
                ActionEntry(
                    int(row.id),
                    as_utc(row.acted_at),
                    row.name,
                    row.action,
                    row.tick,
                    row.actor,
                    row.reason,
                    row.detail,
                )
                for row in self._repo.actions(conn, name, limit)
            ]

        return self._run(read, write=False)

    # -- plumbing ---------------------------------------------------------------------------

    def _known(self, conn: Connection, name: str) -> Policy:
        """The settings of a known work, or the refusal naming it."""
        work = self.works.get(name)
        if work is not None:
            return policy_of_work(work, self.sequence or default_sequence)
        row = self._repo.latest_policy(conn, name)
        if row is None:
            raise self._unknown(name)
        slots = self._repo.slots_of_tick(conn, name, as_utc(row.tick_at))
        return policy_of_row(
            row.lease_seconds, row.grace_seconds, row.max_attempts, row.spec, slots
        )

    def _unknown(self, name: str) -> InvalidArgumentError:
        given = " nor among the works given" if self.works else ""
        return InvalidArgumentError(
            f"work {name!r} is unknown: table {self.table!r} has no rows of it{given} "
            "(check the name, or pass the config file that defines it)"
        )

    def _record(
        self, conn: Connection, name: str, action: str, tick: str | None, reason: str, detail: str
    ) -> None:
        self._repo.record(
            conn, name=name, action=action, tick=tick, actor=self.by, reason=reason, detail=detail
        )
        logger.info(
            "%s %s%s by %s: %s%s",
            action,
            name,
            f" tick {tick!r}" if tick else "",
            self.by,
            detail,
            f" ({reason})" if reason else "",
            extra={"action": action, "work": name},
        )

    def _run(self, body: Callable[[Connection], _T], *, write: bool = True) -> _T:
        """``body`` in one transaction, run again after a transient error or a lost race."""
        for attempt in range(1, ATTEMPTS + 1):
            try:
                with self._engine.begin() if write else self._engine.connect() as conn:
                    return body(conn)
            except sa.exc.DBAPIError as exc:
                if is_missing_schema(exc):
                    raise SchemaNotReadyError(
                        f"table {self.table!r} or its pauses and actions tables are missing or "
                        f"behind worksync_0006: run the migrations (`worksync migrate`, or "
                        "`alembic upgrade heads` in your app, or worksync_sa.upgrade(engine))"
                    ) from exc
                # A duplicate key here is another operator's action on the same key that
                # committed first (two pauses of one work): run ours again on top of it.
                again = is_transient(exc) or isinstance(exc, sa.exc.IntegrityError)
                if attempt == ATTEMPTS or not again:
                    raise
                time.sleep(min(0.05 * 2**attempt, 1.0))
        raise AssertionError("unreachable")  # pragma: no cover


def _check_until(until: object) -> None:
    if until is None:
        return
    if isinstance(until, timedelta):
        if until <= timedelta(0):
            raise InvalidArgumentError(f"until must be a positive duration, got {until}")
        return
    if not isinstance(until, datetime):
        raise InvalidArgumentError(
            f"until must be a datetime, a timedelta or None, not {type(until).__name__}"
        )


def _tick_of(tick: object) -> tuple[str | None, datetime | None]:
    """A tick as given: a label (and, if it reads as a time, that instant too), or an instant."""
    if isinstance(tick, datetime):
        return None, as_utc(tick)
    label = check_text(tick, "tick")
    text = label.strip()
    if text.endswith(("Z", "z")):
        text = f"{text[:-1]}+00:00"
    try:
        return label, as_utc(datetime.fromisoformat(text))
    except ValueError:
        return label, None
