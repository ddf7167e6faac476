"""The scheduler side: create each tick's rows before the tick comes, and repair.

A pass looks at ``(now, now + lookahead]`` and, for every tick of every work
in it, inserts ``max_run`` QUEUED rows (slots ``0 .. max_run-1``). The unique
key on (name, sequence, slot) makes a pass idempotent, so any number of
schedulers can run at once and a restart is harmless: the database refuses
what already exists, and no scheduler is a leader.

Each pass then runs recovery (rows whose lease ran out, ticks nobody claimed
within grace) and, if ``retention`` is set, prunes old finished rows. After
downtime it catches up: ticks missed by at most ``catchup`` are still created;
older ones are skipped, counted and logged once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from itertools import islice

from sqlalchemy.engine import Engine

from ._loop import Outage
from ._tx import Transactions
from .config import RetryPolicy, SchedulerConfig
from .errors import InvalidConfigError, InvalidWorkError
from .events import Event, Events, Listener, report_recovered
from .models import DEFAULT_TABLE, checked_moment, table_named, validate_table_name
from .repository import MaintenanceRepository, NewRow, QueuedRow, ScheduleRepository
from .sync import checked_now, prune
from .work import Work, check_text

logger = logging.getLogger(__name__)

BATCH_ROWS = 5000
"""Rows per INSERT and per transaction: a handful of statements per pass, short locks."""
SQLITE_BATCH_ROWS = 20_000
"""SQLite commits cost an fsync each and its writers queue anyway: fewer, larger batches."""
PRUNE_BATCHES_PER_PASS = 10
PRUNE_BATCH_ROWS = 1000
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


_Plan = list[tuple[Work, list[tuple[str, datetime]]]]


def _rows(plan: _Plan) -> Iterator[QueuedRow]:
    """Rows in QUEUED_COLUMNS order, sorted by (name, sequence, slot): works are sorted by name."""
    for work, pairs in plan:
        name, policy = work.name, (work.lease_seconds, work.grace_seconds, work.max_attempts)
        for sequence, tick in pairs:
            for slot in range(work.max_run):
                yield (name, sequence, slot, tick, *policy)


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


class Scheduler:
    """Creates rows ahead of every tick of its works, and takes back abandoned ones.

    Call :meth:`tick` yourself (one pass, returns rows inserted), or
    :meth:`start` a background thread that passes every ``config.interval``
    until :meth:`stop`. The thread survives database outages: it logs once,
    backs off, and resumes by itself.
    """

    def __init__(
        self,
        engine: Engine,
        works: Iterable[Work],
        config: SchedulerConfig | None = None,
        *,
        table: str = DEFAULT_TABLE,
        retry: RetryPolicy | None = None,
        listeners: Iterable[Listener] | None = None,
    ) -> None:
        self._events = Events(listeners)
        if config is not None and not isinstance(config, SchedulerConfig):
            raise InvalidConfigError(
                f"config must be a SchedulerConfig, not {type(config).__name__}"
            )
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise InvalidConfigError(f"retry must be a RetryPolicy, not {type(retry).__name__}")
        table = validate_table_name(table)
        self.works = _checked_works(works)
        self.config = config or SchedulerConfig()
        self._tx = Transactions(engine, table, retry or RetryPolicy())
        self._repo = ScheduleRepository(table_named(table))
        self._maintenance = MaintenanceRepository(table_named(table))
        self._lock = threading.Lock()
        # Per work, the last tick time a pass covered; a following pass plans beyond it.
        self._covered: dict[str, datetime] = {}
        self._last_now: datetime | None = None
        self._last_prune: float | None = None
        self.last_pass: PassReport | None = None
        """What the most recent pass did."""
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def __repr__(self) -> str:
        url = self._tx.engine.url.render_as_string(hide_password=True)
        return f"Scheduler({url!r}, works={len(self.works)}, table={self._tx.table!r})"

    # -- planning (no database) ------------------------------------------------------

    def plan(self, after: datetime, until: datetime) -> list[NewRow]:
        """The rows for every tick in ``(after, until]``, sorted, without touching the database.

        Ticks whose sequences are equal share one budget: only the earliest
        of them gets rows. Every sequence is checked before anything is
        written, so a bad sequence generator writes nothing.
        """
        after, until = checked_moment(after, "after"), checked_moment(until, "until")
        plan = self._plan(dict.fromkeys((w.name for w in self.works), after), until)
        return [NewRow(*row) for row in _rows(plan)]

    def _plan(self, starts: dict[str, datetime], until: datetime) -> _Plan:
        """Each work's (sequence, tick) pairs after its start, every sequence already checked.

        Works that share a cron share its ticks, and ticks shared by many works
        get their sequence computed once: a pass over 100,000 works costs a
        few distinct cron expansions, not 100,000.
        """
        expanded: dict[tuple[str, str, datetime], tuple[datetime, ...]] = {}
        sequences: dict[datetime, str] = {}
        plan: _Plan = []
        for work in self.works:
            start = starts[work.name]
            key = (work.cron, work.timezone, start)
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
        except ValueError as exc:
            raise InvalidConfigError(
                f"sequence generator gave a bad value for work {work.name!r} at "
                f"{tick.isoformat()}: {exc}"
            ) from None

    # -- one pass ----------------------------------------------------------------------

    def tick(self, now: datetime | None = None) -> int:
        """Run one pass; returns how many rows it inserted.

        Creates the rows of every tick in ``(now, now + lookahead]`` (and,
        after downtime, of ticks missed by at most ``catchup``), then recovers
        abandoned rows, then prunes if ``retention`` is set. ``now`` defaults
        to the database clock; a naive value is taken as UTC. Rows go in
        batches of ``BATCH_ROWS``, each in a short transaction.
        :attr:`last_pass` tells what else the pass did.
        """
        explicit = checked_now(now)
        with self._lock:
            at = explicit if explicit is not None else self._tx.database_now()
            report = PassReport(now=at)
            self._create(at, report)
            recovered = self._tx.run(
                "recover", lambda conn: self._maintenance.recover(conn, explicit)
            )
            report.recovered = report_recovered(self._events, logger, recovered)
            report.pruned = self._prune_if_due()
            self.last_pass = report
        logger.debug(
            "pass at %s: %d rows planned, %d created, %d recovered, %d pruned",
            at.isoformat(),
            report.planned,
            report.created,
            report.recovered,
            report.pruned,
            extra={"action": "created", "rows": report.created},
        )
        if report.created and self._events:
            self._events.emit(Event("created", count=report.created))
        return report.created

    def _create(self, now: datetime, report: PassReport) -> None:
        until = now + self.config.lookahead_delta
        floor = now - self.config.catchup_delta
        known = self._starts(now)
        starts: dict[str, datetime] = {}
        for work in self.works:
            start = known.get(work.name)
            if start is None:
                start = now  # a work never seen before starts now, with no history to catch up
            elif start < floor:
                self._skip(work, start, floor, report)
                start = floor
            starts[work.name] = start
        plan = self._plan(starts, until)  # every sequence checked before anything is written
        report.planned = sum(len(pairs) * work.max_run for work, pairs in plan)
        rows = _rows(plan)  # streamed: a pass over many works never holds all its rows
        size = SQLITE_BATCH_ROWS if self._tx.sqlite else BATCH_ROWS
        while batch := list(islice(rows, size)):
            report.created += self._tx.run(
                "create", partial(self._repo.insert_rows, rows=batch), atomic=True
            )
            report.batches += 1
        self._covered = {w.name: max(until, known.get(w.name, until)) for w in self.works}
        self._last_now = now

    def _starts(self, now: datetime) -> dict[str, datetime]:
        """Where each work's planning resumes: after what this process (or the table) has."""
        if self._last_now is not None and now >= self._last_now:
            return self._covered
        if self._last_now is not None:
            return {}  # time went backwards (an explicit now): plan the whole window again
        return self._tx.run("horizon", self._repo.latest_ticks)

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
            self.config.catchup_delta,
            extra={"action": "skipped", "work": work.name, "ticks": count},
        )

    def _prune_if_due(self) -> int:
        retention = self.config.retention_delta
        if retention is None:
            return 0
        # Pruning finds nothing most of the time; looking every few minutes is plenty.
        every = max(self.config.interval_delta, timedelta(minutes=5)).total_seconds()
        if self._last_prune is not None and time.monotonic() - self._last_prune < every:
            return 0
        self._last_prune = time.monotonic()
        return prune(
            self._tx, self._maintenance, retention, PRUNE_BATCH_ROWS, PRUNE_BATCHES_PER_PASS
        )

    # -- in the background -------------------------------------------------------------

    def start(self) -> None:
        """Run passes every ``config.interval`` in a background thread; returns at once."""
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("scheduler is already running")
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="worksync-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the background thread after its current pass; a no-op if not running."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if not self._thread.is_alive():
                self._thread = None

    def close(self) -> None:
        """Stop, and give back the connection the scheduler holds for its passes."""
        self.stop()
        self._tx.close()

    @property
    def running(self) -> bool:
        """True while the background thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> Scheduler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        period = self.config.interval_delta.total_seconds()
        outage = Outage(
            logger,
            "scheduler pass",
            base=min(1.0, period),
            cap=self.config.max_backoff_delta.total_seconds(),
        )
        due = time.monotonic()
        while not self._stopping.is_set():
            try:
                self.tick()
            except Exception as exc:  # the loop must outlive any outage
                self._stopping.wait(outage.failed(exc))
                due = time.monotonic()
                continue
            outage.succeeded()
            due += period
            now = time.monotonic()
            due = max(due, now)  # after an overrun, carry on without a burst of passes
            self._stopping.wait(due - now)
