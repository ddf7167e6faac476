"""The scheduler side: create each tick's rows before the tick comes.

A pass looks at ``(now, now + lookahead]`` and, for every tick of every work
in it, inserts ``max_run`` QUEUED rows (slots ``0 .. max_run-1``). The unique
key on (name, sequence, slot) makes a pass idempotent, so any number of
schedulers can run at once and a restart is harmless: the database refuses
what already exists, and no scheduler is a leader.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import datetime
from functools import partial
from itertools import islice

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ._dialects import db_now, family_of
from ._tx import Transactions
from .config import RetryPolicy, SchedulerConfig
from .errors import InvalidConfigError, InvalidWorkError
from .models import DEFAULT_TABLE, as_utc, table_named, validate_table_name
from .repository import NewRow, ScheduleRepository
from .work import Work, check_text

logger = logging.getLogger(__name__)

BATCH_ROWS = 1000
"""Rows per INSERT statement and per transaction: short locks, few round trips."""


def _batches(rows: list[NewRow], size: int) -> Iterator[list[NewRow]]:
    it = iter(rows)
    while batch := list(islice(it, size)):
        yield batch


def _checked_works(works: Iterable[Work]) -> tuple[Work, ...]:
    if isinstance(works, (str, bytes, Work)):
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
    """Creates rows ahead of every tick of its works.

    Call :meth:`tick` yourself (one pass, returns rows inserted), or
    :meth:`start` a background thread that passes every ``config.interval``
    until :meth:`stop`.
    """

    def __init__(
        self,
        engine: Engine,
        works: Iterable[Work],
        config: SchedulerConfig | None = None,
        *,
        table: str = DEFAULT_TABLE,
        retry: RetryPolicy | None = None,
    ) -> None:
        if config is not None and not isinstance(config, SchedulerConfig):
            raise InvalidConfigError(
                f"config must be a SchedulerConfig, not {type(config).__name__}"
            )
        table = validate_table_name(table)
        self.works = _checked_works(works)
        self.config = config or SchedulerConfig()
        self._tx = Transactions(engine, table, retry or RetryPolicy())
        self._repo = ScheduleRepository(table_named(table))
        self._lock = threading.Lock()
        # The last pass's `now` and horizon: a following pass only plans beyond it.
        self._covered: tuple[datetime, datetime] | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # -- one pass -----------------------------------------------------------------

    def plan(self, after: datetime, until: datetime) -> list[NewRow]:
        """The rows for every tick in ``(after, until]``, sorted, without touching the database.

        Ticks whose sequences are equal share one budget: only the earliest
        of them gets rows. Every sequence is checked before anything is
        written, so a bad sequence generator writes nothing.
        """
        after, until = as_utc(after), as_utc(until)
        rows: list[NewRow] = []
        for work in self.works:
            seen: set[str] = set()
            for tick in work.ticks(after, until):
                sequence = self._sequence(work, tick)
                if sequence in seen:
                    continue
                seen.add(sequence)
                rows.extend(NewRow(work.name, sequence, slot, tick) for slot in range(work.max_run))
        rows.sort(key=lambda r: (r.name, r.sequence, r.slot))
        return rows

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

    def tick(self, now: datetime | None = None) -> int:
        """Run one pass: create the rows of every tick in ``(now, now + lookahead]``.

        Returns how many rows were inserted (rows that already existed are not
        counted). ``now`` defaults to the database clock; a naive value is taken
        as UTC. Rows go in batches of ``BATCH_ROWS``, each in a short transaction.
        """
        if now is not None and not isinstance(now, datetime):
            raise InvalidConfigError(f"now must be a datetime, not {type(now).__name__}")
        with self._lock:
            now = as_utc(now) if now is not None else self._database_now()
            until = now + self.config.lookahead_delta
            after = now
            if self._covered is not None:
                last_now, horizon = self._covered
                if last_now <= now < horizon:
                    after = horizon  # the previous pass already created up to its horizon
            rows = self.plan(after, until)
            inserted = 0
            for batch in _batches(rows, BATCH_ROWS):
                inserted += self._tx.run("create", partial(self._repo.insert_queued, rows=batch))
            self._covered = (now, until)
        logger.debug(
            "pass at %s: %d rows planned, %d inserted",
            now.isoformat(),
            len(rows),
            inserted,
            extra={"action": "created", "planned": len(rows), "inserted": inserted},
        )
        return inserted

    def _database_now(self) -> datetime:
        def read(conn: sa.Connection) -> datetime:
            value = conn.execute(sa.select(db_now(family_of(conn.dialect)))).scalar_one()
            return as_utc(value)

        return self._tx.run("clock", read)

    # -- in the background --------------------------------------------------------

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

    @property
    def running(self) -> bool:
        """True while the background thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> Scheduler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        period = self.config.interval_delta.total_seconds()
        due = time.monotonic()
        failing = False
        while not self._stopping.is_set():
            try:
                self.tick()
            except Exception:
                if not failing:  # once per outage, not once per attempt
                    logger.exception(
                        "scheduler pass failed; retrying every %s",
                        self.config.interval_delta,
                        extra={"action": "pass_failed"},
                    )
                failing = True
            else:
                if failing:
                    logger.info("scheduler passes succeed again", extra={"action": "recovered"})
                failing = False
            due += period
            now = time.monotonic()
            due = max(due, now)  # after an overrun, carry on without a burst of passes
            self._stopping.wait(due - now)
