"""A scheduler pass, written once for ``Scheduler`` and ``AsyncScheduler``.

Planning is pure (works and a time window in, sorted rows out); the pass is
a generator of database calls (see ``_run.steps``): read the clock, find where
each work's planning resumes, insert the rows in a few batches, recover,
prune now and then. The background loop is written here too, as steps
(``_loop_steps``). The two schedulers only perform those steps, blocking or
awaited.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial
from itertools import islice
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .._run.steps import CLOCK, Call, Idle, Steps
from .._sql.driver_errors import is_lock_wait
from .._sql.text import check_text
from ..config import RetryPolicy, SchedulerConfig
from ..errors import InvalidArgumentError, InvalidConfigError, InvalidWorkError
from ..events import Event, Events, Listener
from ..models import checked_moment, table_named, validate_table_name
from ..repository import ActionRepository, MaintenanceRepository
from ..rows import Adoption, BatchRow, NewRow, PauseState, TickState
from ..sequences import PRUNABLE_KINDS, sequence_kind
from ..work import Work
from .blockers import LockWatch
from .claims import checked_now
from .maintenance import prune_steps, recover_steps
from .outage import Outage, is_stop
from .reconcile import (
    Plan,
    Reconciliation,
    Sighting,
    difference,
    late_adoptions,
    reconcile,
    spec_of,
)
from .repositories import PassRepository

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Pass:
    """A step of the background loop: run one pass; ``recover``: with recovery (see
    ``RECOVER_EVERY``)."""

    recover: bool = True


LoopStep = Pass | Idle


class Look:
    """A step of the watch loop: one look for the original's leaks (``look_steps``)."""


LOOK = Look()
WatchStep = Look | Idle

WATCH_EVERY = 0.25
"""Seconds between two looks of the watch loop beside the Go original (``_watch_steps``).

Two of its schedulers leave a transaction open on about every tick; while one lives,
the original's next insert waits on it (holding the table's AUTO-INC lock, which every
other insert then waits for), and before our first pass has written the lookahead it
locks every upcoming tick of its work. A look between our own statements comes too
late: a fresh leak forms within milliseconds of the last one ending, so a write that
waited for one in vain met the next on every retry. Looked for this often, on a
connection of its own, a leak lives little more than ``IDLE_SECONDS`` (one second, as
the server counts whole seconds), less than our writes wait for a lock (2 s): a write
waiting on one gets its lock as soon as it ends, while still waiting. The watch spares
younger ones, as the passes' look does: a create of the original's caught between its
two statements is no leak (the lock-wait look, ``steps(now=True)``, spares none)."""
BATCH_ROWS = 5000
"""Rows per INSERT and per transaction: a handful of statements per pass, short locks."""
SQLITE_BATCH_ROWS = 20_000
"""SQLite commits cost an fsync each and its writers queue anyway: fewer, larger batches."""
PRUNE_BATCHES_PER_PASS = 10
PRUNE_BATCH_ROWS = 1000
LOCK_WAIT_TURNS = 8
"""Timed-out lock waits a write of a pass goes through (each a look for what holds the
lock) before the pass fails and the loop's backoff takes over."""
RECOVER_EVERY = 5.0
"""Seconds between the recoveries of the background loop's passes, at least (every pass
when the interval is longer; ``run_pass`` always recovers), or half the shortest lease
or grace of the scheduler's works if that is shorter: a lost worker's row is then
recovered within its lease and half of it, as with a pass every interval before.

Recovery reads for abandoned rows: leases that ran out, ticks past their grace, other
programs' rows surely missed. It finds nothing most of the time, and a lease or a grace
is a whole number of seconds, most often minutes; looking every second, with per-second
passes, made it two statements of a steady pass's six or seven."""
PAUSES_RECHECK_SECONDS = 300.0
"""How often a scheduler whose table has no pauses table (made by ``create_all`` of the work
table alone, or not yet migrated to ``worksync_0006``) looks whether it has one now."""
SKIPPED_COUNT_LIMIT = 10_000
"""Counting skipped ticks stops here ("at least 10000"): a long outage of a
per-second cron must not stall the pass that ends it."""


@dataclass
class PassReport:
    """What one scheduler pass did."""

    now: datetime
    created: int = 0
    planned: int = 0
    batches: int = 0
    """INSERT batches sent, each one statement in its own short transaction."""
    recovered: int = 0
    pruned: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    """Ticks older than the catch-up window, per work, that got no rows."""
    closed: int = 0
    """Queued rows of ticks not yet due closed as surplus: the work's settings changed."""
    adopted: int = 0
    """Rows other programs wrote for planned ticks, dated and given the work's policy."""
    released: int = 0
    """Transactions the Go original left open that this pass ended (``leave_to_original``)."""
    paused: int = 0
    """Queued rows of ticks not yet due closed because their work is paused (``Operator.pause``)."""


def _rows(
    ticks: Iterable[tuple[Work, str, datetime]],
    specs: dict[str, str],
    held_back: set[tuple[str, str]] | None = None,
) -> Iterator[BatchRow]:
    """Rows in BATCH_FIELDS order, sorted by (name, sequence, slot) as the ticks are.

    A tick in ``held_back`` goes without its last slot (left to the original).
    """
    for work, sequence, tick in ticks:
        name, spec = work.name, specs[work.name]
        policy = (work.lease_seconds, work.grace_seconds, work.max_attempts)
        slots = work.max_run - 1 if held_back and (name, sequence) in held_back else work.max_run
        for slot in range(slots):
            yield (name, sequence, slot, tick, *policy, spec, work.max_run)


def due_now(batch: Iterable[BatchRow], now: datetime) -> set[str]:
    """The works with rows in ``batch`` already due at ``now`` and still within their grace.

    A steady pass creates ticks ahead of time and finds none; one catching up
    after an outage, or a new work's first pass, may. Listening workers are
    woken for those only (``_sql.wakeups``): the rest their clocks find.
    """
    return {
        name
        for name, _, _, tick, _, grace, *_ in batch
        if now - timedelta(seconds=grace) < tick <= now
    }


def honour_pauses(
    work_to_do: Reconciliation, paused: dict[str, PauseState], held: Iterable[TickState]
) -> list[tuple[str, datetime | None, str]]:
    """Keep the pass off paused works' ticks; return what to close as paused.

    A paused work gets no rows for its ticks up to the pause's end (none at
    all without one), catch-up included; its queued rows of ticks not yet due
    that another scheduler made meanwhile (one of an earlier release, which
    reads no pauses, or one whose pass raced the pause) are closed as paused
    rather than as surplus. Pure: ``paused`` holds the pauses in force.
    """

    def within(name: str, tick: datetime) -> bool:
        pause = paused.get(name)
        return pause is not None and (pause.until is None or tick <= pause.until)

    work_to_do.create = [item for item in work_to_do.create if not within(item[0].name, item[2])]
    work_to_do.close = [item for item in work_to_do.close if not within(item.name, item.tick_at)]
    queued = {
        state.name
        for state in held
        if state.top_queued is not None and within(state.name, state.tick_at)
    }
    return [
        (name, paused[name].until, f"paused by {paused[name].paused_by}: {paused[name].reason}")
        for name in sorted(queued)
    ]


def _checked_works(works: Iterable[Work]) -> tuple[Work, ...]:
    if isinstance(works, (str, bytes, Work)) or not isinstance(works, Iterable):
        raise InvalidWorkError("works must be a list of Work, not a single value")
    checked: dict[str, Work] = {}
    for work in works:
        if not isinstance(work, Work):
            raise InvalidWorkError(f"works must contain Work objects, got {type(work).__name__}")
        if work.name in checked:
            raise InvalidWorkError(f"work {work.name!r}: name is used by two works")
        checked[work.name] = work
    return tuple(sorted(checked.values(), key=lambda w: w.name))


class SchedulerCore:
    """Everything a scheduler knows and decides; subclasses run its calls and loop."""

    def __init__(
        self,
        works: Iterable[Work],
        config: SchedulerConfig | None,
        table: str,
        retry: RetryPolicy | None,
        listeners: Iterable[Listener] | None,
    ) -> None:
        self._events = Events(listeners)
        if config is not None and not isinstance(config, SchedulerConfig):
            raise InvalidConfigError(
                f"config must be a SchedulerConfig, not {type(config).__name__}"
            )
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise InvalidConfigError(f"retry must be a RetryPolicy, not {type(retry).__name__}")
        self.table_name = validate_table_name(table)
        self.works = _checked_works(works)
        self.config = config or SchedulerConfig()
        self.policy = retry or RetryPolicy()
        self._repo = PassRepository(table_named(table))
        self._maintenance = MaintenanceRepository(table_named(table))
        self._actions = ActionRepository(self.table_name)
        self._pauses_seen_at: float | None = None
        """When the pauses table was last found missing (monotonic); None: found, or not
        looked for yet."""
        self._pauses_exist = False
        self._paused_seen: dict[str, tuple[datetime | None, str, str]] = {}
        """The pauses this scheduler honoured last pass, to log each change once."""
        # What each work's rows record of this scheduler's settings (see _core.reconcile).
        kind = sequence_kind(self.config.sequence)
        self._specs = {work.name: spec_of(work, kind) for work in self.works}
        if not kind.startswith(PRUNABLE_KINDS) and self.config.retention is not None:
            logger.info(
                "sequence %r is custom: retention keeps its rows, since a later tick given "
                "the same label would find its budget gone (wrap it in per_tick() if every "
                "tick gets a label of its own)",
                self.config.sequence,
                extra={"action": "retention"},
            )
        # When this scheduler first looked (database clock): rows of other settings made or
        # closed since then come from a scheduler running now, not from before a change.
        self._started: datetime | None = None
        self._reported: set[tuple[str, str | None, bool]] = set()
        # Per work, the last tick time a pass covered; a following pass plans beyond it.
        self._covered: dict[str, datetime] = {}
        self._last_now: datetime | None = None
        self._lost_seen = 0
        self._last_prune: datetime | None = None
        self._recovered_at: float | None = None
        """When a pass last recovered abandoned rows (``time.monotonic()``)."""
        self._locks = LockWatch(end_originals=self.config.leave_to_original is not None)
        self._watch = LockWatch(end_originals=True, reports=False)
        """The watch loop's own (``_watch_steps``): it only ends, the passes' watch reports."""
        self.last_pass: PassReport | None = None
        """What the most recent pass did."""

    # -- planning (no database) ------------------------------------------------------

    def plan(self, after: datetime, until: datetime) -> list[NewRow]:
        """The rows for every tick in ``(after, until]``, sorted, without touching the database.

        Ticks whose sequences are equal share one budget: only the earliest
        of them gets rows. Every sequence is checked before anything is
        written, so a bad sequence generator writes nothing.
        """
        after, until = checked_moment(after, "after"), checked_moment(until, "until")
        plan = self._plan(dict.fromkeys((w.name for w in self.works), after), until)
        ticks = ((work, sequence, tick) for work, pairs in plan for sequence, tick in pairs)
        return [NewRow(*row) for row in _rows(ticks, self._specs)]

    def _plan(
        self, starts: dict[str, datetime], until: datetime, works: Iterable[Work] | None = None
    ) -> Plan:
        """Each work's (sequence, tick) pairs after its start, every sequence already checked.

        Works that share a cron share its ticks, and ticks shared by many works
        get their sequence computed once: a pass over 100,000 works costs a
        few distinct cron expansions, not 100,000.
        """
        expanded: dict[tuple[str, str, str, datetime], tuple[datetime, ...]] = {}
        sequences: dict[datetime, str] = {}
        plan: Plan = []
        for work in self.works if works is None else works:
            start = starts[work.name]
            key = (work.cron, work.timezone, work.cron_syntax, start)
            ticks = expanded.get(key)
            if ticks is None:
                ticks = expanded[key] = tuple(work.iter_ticks(start, until))
            budget: dict[str, datetime] = {}
            for tick in ticks:
                sequence = sequences.get(tick)
                if sequence is None:
                    sequence = sequences[tick] = self._sequence(work, tick)
                budget.setdefault(sequence, tick)  # equal sequences: the earliest tick's budget
            plan.append((work, sorted(budget.items())))
        return plan

    def _sequence(self, work: Work, tick: datetime) -> str:
        try:
            sequence = self.config.sequence(tick)
        except Exception as exc:
            raise InvalidConfigError(
                f"sequence generator failed for work {work.name!r} at {tick.isoformat()}: {exc}"
            ) from exc
        try:
            return check_text(sequence, "sequence")
        except InvalidArgumentError as exc:
            raise InvalidConfigError(
                f"sequence generator gave a bad value for work {work.name!r} at "
                f"{tick.isoformat()}: {exc}"
            ) from None

    # -- one pass ----------------------------------------------------------------------

    def _pass(
        self, now: datetime | None, sqlite: bool, *, mysql: bool = False, recover: bool = True
    ) -> Steps[int]:
        """One pass (see ``Scheduler.run_pass``): its database calls, yielded in order.

        ``mysql``: also look for transactions left open on the table (``_core.blockers``).
        ``recover``: also recover abandoned rows (the loop's passes: see ``RECOVER_EVERY``).
        """
        explicit = checked_now(now)
        at: datetime = explicit if explicit is not None else (yield CLOCK)
        if self._started is None:
            self._started = at if explicit is None else (yield CLOCK)
        report = PassReport(now=at)
        if mysql:  # first, as a transaction left open may hold up this pass's own inserts
            report.released = yield from self._locks.steps(self._repo)
        yield from self._create(at, explicit, report, sqlite, mysql)
        if recover:
            report.recovered = yield from recover_steps(self._maintenance, self._events, explicit)
            self._recovered_at = time.monotonic()
        report.pruned = yield from self._prune_if_due(at)
        self.last_pass = report
        logger.debug(
            "pass at %s: %d rows planned, %d created, %d closed, %d adopted, %d recovered, "
            "%d pruned",
            at.isoformat(),
            report.planned,
            report.created,
            report.closed,
            report.adopted,
            report.recovered,
            report.pruned,
            extra={"action": "created", "rows": report.created},
        )
        if report.created and self._events:
            self._events.emit(Event("created", count=report.created))
        return report.created

    def _create(
        self,
        now: datetime,
        explicit: datetime | None,
        report: PassReport,
        sqlite: bool,
        mysql: bool = False,
    ) -> Steps[None]:
        """Plan up to the lookahead, reconcile the window with the table, then write.

        Every pass looks at every tick not yet due (see ``_core.reconcile``), so a
        change of settings reaches them all on the next pass; then it creates
        what is missing in a few batched statements.
        """
        until = now + self.config.lookahead
        floor = now - self.config.catchup
        known = yield from self._starts(now)
        starts: dict[str, datetime] = {}
        for work in self.works:
            start = known.get(work.name)
            if start is None:
                start = now  # a work never seen before starts now, with no history to catch up
            elif start < floor:
                self._skip(work, start, floor, report)
                start = floor
            starts[work.name] = min(start, now)  # the whole window, for reconciling
        plan = self._plan(starts, until)  # every sequence checked before anything is written
        report.planned = sum(len(pairs) * work.max_run for work, pairs in plan)
        held, waiting, pauses = yield Call("window", partial(self._observe, after=now, until=until))
        leave = self.config.leave_to_original
        work_to_do = reconcile(plan, self._specs, now, held, waiting, leave)
        paused = {p.name: p for p in pauses if p.name in self._specs and p.active(now)}
        self._report_pauses(paused)
        to_close = honour_pauses(work_to_do, paused, held) if paused else []
        self._report_sightings(work_to_do.sightings)
        if work_to_do.close:
            report.closed = yield Call(
                "close",
                partial(self._repo.close_surplus, surplus=work_to_do.close, now=explicit),
            )
            self._report_closed(work_to_do, report.closed)
        if to_close:
            report.paused = yield Call(
                "close-paused", partial(self._actions.close_paused, paused=to_close, now=explicit)
            )
            if report.paused:
                logger.info(
                    "closed %d queued row(s) of paused work(s) %s",
                    report.paused,
                    ", ".join(sorted(repr(name) for name, _, _ in to_close)),
                    extra={"action": "paused", "rows": report.paused},
                )
        work_to_do.adopt.extend(self._late(waiting, now))
        if work_to_do.adopt:
            adopt = partial(self._repo.adopt, ticks=work_to_do.adopt)
            report.adopted = yield from self._writing(Call("adopt", adopt), mysql, report)
        rows = _rows(work_to_do.create, self._specs, work_to_do.held_back)  # streamed
        size = SQLITE_BATCH_ROWS if sqlite else BATCH_ROWS
        late: set[str] = set()
        while batch := list(islice(rows, size)):
            insert = partial(self._repo.insert_rows, rows=batch)
            created: int = yield from self._writing(Call("create", insert), mysql, report)
            report.created += created
            report.batches += 1
            if created:
                late.update(due_now(batch, now))
        if late and not sqlite and not mysql:  # PostgreSQL: wake listening workers
            yield Call("wake", partial(self._repo.wake, names=sorted(late)))
        self._covered = {w.name: max(until, known.get(w.name, until)) for w in self.works}
        self._last_now = now

    def _late(self, waiting: dict[tuple[str, str], int], now: datetime) -> list[Adoption]:
        """Other programs' undated rows of our works' ticks due in the last grace (or lookahead).

        Only works with such rows left are expanded: a fleet without the original
        pays nothing for this.
        """
        names = {name for name, _ in waiting}
        works = [work for work in self.works if work.name in names]
        if not works:
            return []
        ahead = self.config.lookahead
        starts = {work.name: now - min(work.grace, ahead) for work in works}
        return late_adoptions(self._plan(starts, now, works), waiting)

    def _writing(self, call: Call[int], mysql: bool, report: PassReport) -> Steps[int]:
        """A write of the pass; on MySQL, a lock it waits out in vain sends it to the lock watch.

        A transaction left open (the Go original's) can hold a lock for hours:
        retrying blindly would keep the pass, and the claims behind its locks,
        waiting for it. So each timed-out wait first looks for what holds the
        lock, ends or reports it (``_core.blockers``), then tries again. Beside
        the original that look ends its idle transactions however young: with
        two of its schedulers a new one comes every second or so, and one a
        second old would be in the way of every retry.
        """
        if not mysql:
            written: int = yield call
            return written
        call = replace(call, wait_out_locks=False)
        for turn in range(1, LOCK_WAIT_TURNS + 1):
            try:
                result: int = yield call
            except sa.exc.DBAPIError as exc:
                if turn == LOCK_WAIT_TURNS or not is_lock_wait(exc):
                    raise
                report.released += yield from self._locks.steps(self._repo, now=True)
                continue
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _observe(
        self, conn: Connection, after: datetime, until: datetime
    ) -> tuple[list[TickState], dict[tuple[str, str], int], list[PauseState]]:
        """The window's rows, other programs' rows still waiting for a tick time, and pauses.

        One read (``pass_view``). A table without a pauses table (the work
        table made alone by ``create_all``) has no pauses; whether it has one
        is looked up again now and then, not each pass.
        """
        pauses = self._actions.pauses_table if self._pauses_known(conn) else None
        return self._repo.window(conn, after, until, pauses)

    def _pauses_known(self, conn: Connection) -> bool:
        """Whether the table has its pauses table, as far as this pass needs to know."""
        if self._pauses_exist:
            return True
        seen = self._pauses_seen_at
        if seen is not None and time.monotonic() - seen < PAUSES_RECHECK_SECONDS:
            return False
        self._pauses_exist = self._actions.has_pauses(conn)
        if not self._pauses_exist:
            if seen is None:
                logger.info(
                    "table %r has no pauses table (%s): no work can be paused until it "
                    "is migrated to worksync_0006 (`worksync migrate`)",
                    self.table_name,
                    self._actions.pauses_table.name,
                    extra={"action": "paused"},
                )
            self._pauses_seen_at = time.monotonic()
            return False
        self._pauses_seen_at = None
        return True

    def _report_sightings(self, sightings: list[Sighting]) -> None:
        """Log each other setting of a work once: a change as a warning, a live one as an error."""
        started = self._started
        for sighting in sightings:
            live = (
                sighting.spec is not None
                and sighting.touched is not None
                and started is not None
                and sighting.touched >= started
            )
            key = (sighting.name, sighting.spec, live)
            if key in self._reported:
                continue
            self._reported.add(key)
            ours = self._specs[sighting.name]
            how = difference(ours, sighting.spec)
            if live:
                logger.error(
                    "work %r: another scheduler is making its ticks with other settings (%s; "
                    "there: %s; here: %s): until they agree, each tick gets at most the larger "
                    "max_run, and each scheduler undoes the other's upcoming ticks",
                    sighting.name,
                    how,
                    sighting.spec,
                    ours,
                    extra={"action": "disagreement", "work": sighting.name},
                )
            else:
                logger.warning(
                    "work %r: its upcoming ticks were made with other settings (%s; before: "
                    "%s; now: %s), and now follow these",
                    sighting.name,
                    how,
                    sighting.spec,
                    ours,
                    extra={"action": "changed", "work": sighting.name},
                )

    def _report_pauses(self, paused: dict[str, PauseState]) -> None:
        """Log each pause and each resume once, as this scheduler first honours it."""
        now_paused = {name: (p.until, p.paused_by, p.reason) for name, p in paused.items()}
        for name, (until, by, reason) in sorted(now_paused.items()):
            if self._paused_seen.get(name) != (until, by, reason):
                logger.info(
                    "work %r is paused %s by %s%s: making none of its ticks until then",
                    name,
                    "until resumed" if until is None else f"until {until.isoformat()}",
                    by,
                    f" ({reason})" if reason else "",
                    extra={"action": "paused", "work": name},
                )
        for name in sorted(set(self._paused_seen) - set(now_paused)):
            logger.info(
                "work %r is no longer paused: making its ticks again",
                name,
                extra={"action": "resumed", "work": name},
            )
        self._paused_seen = now_paused

    def _report_closed(self, work_to_do: Reconciliation, rows: int) -> None:
        ticks: dict[str, int] = {}
        for item in work_to_do.close:
            ticks[item.name] = ticks.get(item.name, 0) + 1
        logger.info(
            "closed %d surplus row(s) of %d upcoming tick(s), as the works' settings now want",
            rows,
            len(work_to_do.close),
            extra={"action": "surplus", "rows": rows},
        )
        if self._events:
            for name, count in sorted(ticks.items()):
                self._events.emit(Event("surplus", name, count=count))

    def _loop_steps(self) -> Generator[LoopStep, Any, None]:
        """The background loop, for both twins: a pass every interval, until stopped.

        It outlives any failure (an outage, a listener raising ``SystemExit``):
        a run of failures is logged as it starts and as it ends, and retried
        with capped backoff. Only the stop
        signals (Ctrl-C, cancellation) end it. The shells perform ``Pass``
        (one pass, with recovery or not) and ``Idle`` (wait, unless stopped: then the
        answer is True and the loop ends).
        """
        period = self.config.interval.total_seconds()
        outage = Outage(
            logger,
            "scheduler pass",
            base=min(1.0, period),
            cap=self.config.max_backoff.total_seconds(),
        )
        due = time.monotonic()
        while not (yield Idle(0)):
            try:
                yield Pass(recover=self._recovery_due())
            except GeneratorExit:  # closed, not failed
                raise
            except BaseException as exc:  # the loop must outlive any outage, and any listener
                if is_stop(exc):
                    raise
                if (yield Idle(outage.failed(exc))):
                    return
                due = time.monotonic()
                continue
            outage.succeeded()
            due += period
            now = time.monotonic()
            due = max(due, now)  # after an overrun, carry on without a burst of passes
            if (yield Idle(due - now)):
                return

    def _recovery_due(self) -> bool:
        """Whether the loop's next pass recovers: ``RECOVER_EVERY`` after the last one did
        (or half the shortest lease or grace of the works, if shorter).

        Less half an interval, so that with a pass a second every fifth recovers,
        not every sixth, whatever the timers' jitter.
        """
        last = self._recovered_at
        shortest = min(
            (min(work.lease, work.grace).total_seconds() for work in self.works),
            default=RECOVER_EVERY * 2,
        )
        every = min(RECOVER_EVERY, shortest / 2)
        slack = self.config.interval.total_seconds() / 2
        return last is None or time.monotonic() - last >= every - slack

    def watches(self, mysql: bool) -> bool:
        """Whether a watch loop runs beside the passes: beside the original, on MySQL/MariaDB."""
        return mysql and self.config.leave_to_original is not None

    def _watch_steps(self) -> Generator[WatchStep, Any, None]:
        """The watch loop, for both twins: a look every ``WATCH_EVERY`` seconds, until stopped.

        The shells perform ``LOOK`` (``look_steps``, on a connection of the
        loop's own) and ``Idle``. A failed look is retried a second later,
        unlogged: an outage is the pass loop's to report.
        """
        while not (yield Idle(WATCH_EVERY)):
            try:
                yield LOOK
            except GeneratorExit:  # closed, not failed
                raise
            except BaseException as exc:
                if is_stop(exc):
                    raise
                logger.debug("lock watch: look failed: %s", exc, extra={"action": "lock-holder"})
                if (yield Idle(1.0)):
                    return

    def look_steps(self) -> Steps[int]:
        """One look of the watch loop: ends the original's transactions idle for a second."""
        ended: int = yield from self._watch.steps(self._repo)
        return ended

    def pass_after(self, lost_connections: int, steps: Steps[int]) -> Steps[int]:
        """``steps`` (a pass), first forgetting what this process covered if it may be stale.

        After a failed pass, or a lost connection since the last pass, the
        server may be another one: a promoted replica lacks the rows of the
        commits it never received, ticks this process believes it created.
        The pass then reads where each work's rows end from the table, as a
        restarted scheduler does, and recreates what is missing (ticks
        missed by at most ``catchup``; older ones are counted as skipped).
        """
        if lost_connections != self._lost_seen:
            self._lost_seen = lost_connections
            self._forget_horizon()
        try:
            return (yield from steps)
        except BaseException:
            self._forget_horizon()
            raise

    def _forget_horizon(self) -> None:
        self._covered = {}
        self._last_now = None
        self._pauses_exist = False  # the table may be gone (a failed pass), or another server

    def _starts(self, now: datetime) -> Steps[dict[str, datetime]]:
        """Where each work's planning resumes: after what this process (or the table) has."""
        if self._last_now is not None and now >= self._last_now:
            return self._covered
        if self._last_now is not None:
            return {}  # time went backwards (an explicit now): plan the whole window again
        latest: dict[str, datetime] = yield Call("horizon", self._repo.latest_ticks)
        return latest

    def _skip(self, work: Work, start: datetime, floor: datetime, report: PassReport) -> None:
        count = 0
        first = last = None
        for tick in work.iter_ticks(start, floor):
            first = first or tick
            last = tick
            count += 1
            if count >= SKIPPED_COUNT_LIMIT:
                break
        if not count:
            return
        report.skipped[work.name] = count
        self._events.emit(Event("skipped", work.name, count=count))
        logger.warning(
            "work %r: skipped %s%d ticks from %s to %s, missed by more than catchup (%s)",
            work.name,
            "at least " if count >= SKIPPED_COUNT_LIMIT else "",
            count,
            first.isoformat() if first else "?",
            last.isoformat() if last else "?",
            self.config.catchup,
            extra={"action": "skipped", "work": work.name, "ticks": count},
        )

    def _prune_if_due(self, now: datetime) -> Steps[int]:
        retention = self.config.retention
        if retention is None:
            return 0
        # Pruning finds nothing most of the time; looking every few minutes is plenty.
        every = max(self.config.interval, timedelta(minutes=5))
        last = self._last_prune
        if last is not None and last <= now < last + every:
            return 0
        self._last_prune = now
        pruned: int = yield from prune_steps(
            self._maintenance, retention, PRUNE_BATCH_ROWS, PRUNE_BATCHES_PER_PASS, now=now
        )
        return pruned
