"""A worker loop: claim the due ticks of some works and run a function for each.

The original left the loop to the host ("fancyWorker.do(...)"); this one is
for hosts that want it done right. It claims with ``acquire_due`` (database
clock, grace respected), runs the handler inside ``with claim:`` (heartbeat
while it runs, SUCCESS or FAILED after), and survives database outages:
it logs once, backs off with jitter up to a cap, and resumes by itself.

Its own clock only decides when to look again; whether a tick is due is the
database's call, so a worker whose clock is off still claims the right ticks.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

from sqlalchemy.engine import Engine

from ._claiming import describe
from ._loop import Outage, ended, is_stop
from ._text import check_text
from .config import RetryPolicy
from .durations import as_timedelta
from .errors import ClaimLostError, InvalidArgumentError
from .events import Listener
from .models import DEFAULT_TABLE
from .sync import Claim, WorkSync
from .work import Work

logger = logging.getLogger(__name__)

DEFAULT_POLL = timedelta(seconds=1)
"""The longest wait between looks for due ticks."""
DEFAULT_MAX_BACKOFF = timedelta(seconds=30)
"""The longest wait between looks while the database cannot be reached."""

Handler = Callable[[Claim], object]
MAX_CONCURRENCY_LIMIT = 1024


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _handlers_for(names: list[str], handler: object) -> dict[str, Handler]:
    """One handler per work: the same function for all, or a mapping from each name."""
    if callable(handler):
        return dict.fromkeys(names, handler)
    if not isinstance(handler, Mapping):
        raise InvalidArgumentError(
            "handler must be a function taking a Claim, or a mapping of work names to them"
        )
    missing = [name for name in names if name not in handler]
    extra = sorted(str(name) for name in handler if name not in names)
    if missing or extra:
        raise InvalidArgumentError(
            "handler must name every work and no other: "
            + "; ".join(
                part
                for part in (
                    f"no handler for {', '.join(map(repr, missing))}" if missing else "",
                    f"not a work: {', '.join(map(repr, extra))}" if extra else "",
                )
                if part
            )
        )
    bad = sorted(name for name in names if not callable(handler[name]))
    if bad:
        raise InvalidArgumentError(f"handler for {', '.join(map(repr, bad))} is not a function")
    return {name: handler[name] for name in names}


class Worker:
    """Runs a handler for every due tick of ``works`` this process can claim.

    ``works`` are :class:`Work` objects (the loop then also sleeps until the
    next tick) or plain names (it polls). ``handler`` is one function for
    every work, or a mapping from each work's name to its own function.
    ``max_concurrency`` claims run at once, on a pool of threads (see
    :meth:`run_once`). ``poll`` is the longest wait between looks. ``clock``
    is this process's idea of the time, injectable for tests.
    """

    def __init__(
        self,
        engine: Engine,
        works: Iterable[Work | str],
        handler: Handler | Mapping[str, Handler],
        *,
        max_concurrency: int = 1,
        table: str = DEFAULT_TABLE,
        poll: timedelta | str = DEFAULT_POLL,
        worker_id: str | None = None,
        retry: RetryPolicy | None = None,
        max_backoff: timedelta | str = DEFAULT_MAX_BACKOFF,
        clock: Callable[[], datetime] = _utcnow,
        listeners: Iterable[Listener] | None = None,
    ) -> None:
        if isinstance(works, (str, Work)) or not isinstance(works, Iterable):
            raise InvalidArgumentError("works must be a list of Work objects or names")
        self.works = [w for w in works if isinstance(w, Work)]
        names = [w.name if isinstance(w, Work) else w for w in works]
        if not names:
            raise InvalidArgumentError("works is empty: name at least one work to run")
        for name in names:
            check_text(name, "work name")
        self.names = sorted(set(names))
        self._grace: dict[str, timedelta] = {}
        """Per work, the longest grace its Work objects give: how far back a claim looks."""
        for work in self.works:
            self._grace[work.name] = max(work.grace, self._grace.get(work.name, work.grace))
        self._handlers = _handlers_for(self.names, handler)
        if (
            not isinstance(max_concurrency, int)
            or isinstance(max_concurrency, bool)
            or not 1 <= max_concurrency <= MAX_CONCURRENCY_LIMIT
        ):
            raise InvalidArgumentError(
                f"max_concurrency must be an int from 1 to {MAX_CONCURRENCY_LIMIT}, "
                f"got {max_concurrency!r}"
            )
        self.max_concurrency = max_concurrency
        if not callable(clock):
            raise InvalidArgumentError("clock must be a function returning an aware datetime")
        try:
            self.poll = as_timedelta(poll, "poll").total_seconds()
            self.max_backoff = as_timedelta(max_backoff, "max_backoff").total_seconds()
        except ValueError as exc:
            raise InvalidArgumentError(str(exc)) from None
        self.handler = handler
        self.clock = clock
        self._free = threading.BoundedSemaphore(max_concurrency)
        """One permit per claim this worker can run at once: it never holds more."""
        self._pool: ThreadPoolExecutor | None = None
        self._wake = threading.Event()
        """Set by stop() and whenever a running claim ends: look again now."""
        self._count_lock = threading.Lock()
        self.sync = WorkSync(
            engine, table=table, worker_id=worker_id, retry=retry, listeners=listeners
        )
        self.handled = 0
        """Claims this worker has run (finished or not)."""
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def __repr__(self) -> str:
        return f"Worker({self.sync!r}, works={self.names!r})"

    def run_once(self) -> int:
        """Claim and run everything due right now; returns how many claims it started.

        With ``max_concurrency`` 1 each claim runs here, one after the other.
        Above 1, claims run on a pool of that many threads, and a claim is
        only made while a thread is free to run it: the works take turns,
        one claim each per round, so a slow job never keeps another work
        from its ticks, and the worker never holds a claim it cannot run.
        """
        if self.max_concurrency == 1:
            ran = 0
            for name in self.names:
                while not self._stopping.is_set():
                    claim = self.sync.acquire_due(name, grace=self._grace.get(name))
                    if claim is None:
                        break
                    self._handle(claim)
                    ran += 1
            self.handled += ran
            return ran
        pool = self._pool
        if pool is None:
            pool = self._pool = ThreadPoolExecutor(
                self.max_concurrency, thread_name_prefix="worksync-work"
            )
        started, busy = 0, set(self.names)
        while busy and not self._stopping.is_set():
            for name in list(busy):
                if not self._free.acquire(blocking=False):
                    return started  # every thread is busy: look again when one is free
                try:
                    claim = self.sync.acquire_due(name, grace=self._grace.get(name))
                except BaseException:
                    self._free.release()
                    raise
                if claim is None:
                    self._free.release()
                    busy.discard(name)
                    continue
                pool.submit(self._run_and_free, claim)
                started += 1
        return started

    def _run_and_free(self, claim: Claim) -> None:
        try:
            self._handle(claim)
        finally:
            with self._count_lock:
                self.handled += 1
            self._free.release()
            self._wake.set()

    def _handle(self, claim: Claim) -> None:
        try:
            with claim:
                self._handlers[claim.name](claim)
        except ClaimLostError:
            logger.warning("%r was lost before it finished", claim, extra={"action": "lost"})
        except BaseException as exc:
            # `with claim:` recorded FAILED with the reason; the loop goes on with the next
            # tick, even after the handler's sys.exit(): one job must not stop every other.
            if is_stop(exc):
                raise
            if not (claim.finished or claim.lost):  # the database stayed away all the lease
                logger.error(
                    "the outcome of %r could not be recorded (%s): recovery closes its row "
                    "once the lease has run out",
                    claim,
                    describe(exc),
                    extra={"action": "failed"},
                )
                return
            logger.error(
                "work %r failed: %s", claim.name, describe(exc), extra={"action": "failed"}
            )
            logger.debug("work %r failed here:", claim.name, exc_info=True)

    def _next_wait(self) -> float:
        """Until the next tick by this process's clock, but never longer than ``poll``."""
        if not self.works:
            return self.poll
        now = self.clock()
        soonest = min(work.next_tick(now) for work in self.works)
        return max(0.0, min(self.poll, (soonest - now).total_seconds()))

    def run(self, *, until: float | None = None) -> None:
        """Loop until :meth:`stop` (or the ``time.time()`` deadline ``until``).

        Only a stop signal (Ctrl-C) ends it early, and the log says so.
        """
        try:
            self._loop(until)
        except BaseException as exc:
            ended(logger, f"worker {self.sync.worker_id} loop", exc)
            raise

    def _loop(self, until: float | None) -> None:
        outage = Outage(logger, f"worker {self.sync.worker_id}", cap=self.max_backoff)
        while not self._stopping.is_set() and (until is None or time.time() < until):
            try:
                ran = self.run_once()
            except BaseException as exc:  # the database is away: back off, then resume
                if is_stop(exc):
                    raise
                self._stopping.wait(outage.failed(exc))
                continue
            outage.succeeded()
            if not ran:
                self._wake.wait(self._next_wait())
                self._wake.clear()

    def start(self) -> None:
        """Run the loop in a background thread; returns at once."""
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("worker is already running")
        self._stopping.clear()
        self._thread = threading.Thread(target=self.run, name="worksync-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Ask the loop to stop after the claims it is running; waits for the thread.

        Claims already running on the pool run to their end (``close`` waits
        for them); no new claim is made.
        """
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if not self._thread.is_alive():
                self._thread = None

    @property
    def running(self) -> bool:
        """True while the background thread is alive (False once it has died or stopped)."""
        return self._thread is not None and self._thread.is_alive()

    def close(self) -> None:
        """Stop, let running claims finish, and give back the worker's connections."""
        self.stop()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self.sync.close()

    def __enter__(self) -> Worker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
