"""What a worker decides, written once for :class:`Worker` and :class:`AsyncWorker`.

A worker's choices are the same whether it blocks or awaits: which works it
serves and with which handler, how far back a due claim may look, which work
a free runner goes to (``shares``), when to claim at all (only while a runner is free, so it
never holds a claim it cannot run), how long to wait, how to outlive an
outage, and what to log when a handler fails. Those choices are generators
of steps here (as ``_core.passes`` does for the schedulers); each twin performs
the steps with threads or with tasks.
"""

from __future__ import annotations

import inspect
import logging
import random
import time
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from .._run.steps import Idle
from .._sql.text import check_text
from ..durations import as_timedelta, format_duration
from ..errors import ClaimLostError, HandlerTimeoutError, InvalidArgumentError, describe
from ..work import Work
from .claims import ClaimCore, DuePlan
from .outage import Outage, is_stop
from .shares import Shares
from .wakeups import NOTIFY, wakeups_for

logger = logging.getLogger("worksync_sa.worker")

DEFAULT_MAX_BACKOFF = timedelta(seconds=30)
"""The longest wait between looks while the database cannot be reached."""
DEFAULT_DRAIN = timedelta(seconds=30)
"""How long a stopping worker waits for its running claims before recording them FAILED.

Long enough for most jobs to end on their own; short enough that a hung handler
cannot keep a service from stopping (supervisors kill after 90 s or so)."""
DEFAULT_POLL = timedelta(seconds=1)
"""The longest wait between looks for due ticks (without wake-ups, or while they are not heard)."""
MAX_CONCURRENCY_LIMIT = 1024
SPREAD_SECONDS = 0.1
"""How widely a fleet's looks at a tick are spread (each worker waits a random part of it)."""


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def spread() -> float:
    """A small random delay added to each wait for a tick: workers do not all look at once.

    A fleet's workers all wake for the same tick; at the same instant they
    would queue on the same rows and index pages. Spread over
    ``SPREAD_SECONDS`` their looks meet far less, and the lag stays well
    under half a second.
    """
    return random.uniform(0.0, SPREAD_SECONDS)


SPARE_SHARE = 0.1
"""Above this share of a worker's looks at a tick coming back short, its fleet has lookers
to spare, and a look that filled every free runner is not followed by another (``Spare``)."""


class Spare:
    """How often a worker's first look at a tick found fewer rows than it asked for.

    A look that filled every free runner may have left more due, so it used
    to be followed by another at once. In a fleet with more workers than due
    rows (W = 128 on M = 100 per-second works) that second look almost always
    finds nothing: the workers that look later in the tick's spread take the
    rest. Each such look is a statement, a third of the fleet's. A worker
    cannot count the fleet, but it sees the sign of spare lookers: its own
    looks at a tick coming back short while rows were due. Above
    ``SPARE_SHARE`` of them (a moving average over some ten ticks), it leaves
    what is left of a tick to the others and looks again at the next one.
    Rows due since an earlier tick (a backlog) bring the share down again, a
    tick at a time, as long as every look fills up; polls between ticks
    (nothing due) are not counted.
    """

    __slots__ = ("at_tick", "share", "waits_for_tick")
    WEIGHT = 0.2

    def __init__(self) -> None:
        self.share = 0.0
        self.waits_for_tick = False
        """Whether the last wait computed ends at a tick of one of the works (not at the poll)."""
        self.at_tick = False
        """Whether the next round's first look is at a tick, after a wait nothing cut short."""

    def observed(self, *, short: bool) -> None:
        self.share += self.WEIGHT * ((1.0 if short else 0.0) - self.share)


@dataclass(frozen=True, slots=True)
class AcquireBatch:
    """Claim up to ``limit`` due rows among the worker's works in one statement.

    The answer: the claims, at most ``limit`` (an empty list: nothing was
    due, or others took it). ``places``: each work's place in the order of
    ``shares``, least used first.
    """

    plan: DuePlan
    places: dict[str, int]
    limit: int


@dataclass(frozen=True, slots=True)
class RunHere:
    """Run the claim's handler now, in the loop itself (one claim at a time)."""

    claim: Any


@dataclass(frozen=True, slots=True)
class TakeRunner:
    """Reserve a free runner, without waiting (the answer: whether one was free)."""


@dataclass(frozen=True, slots=True)
class FreeRunner:
    """Give back a runner reserved for a claim that was not made."""


@dataclass(frozen=True, slots=True)
class Launch:
    """Run the claim on the reserved runner; it frees the runner when it ends.

    When it ends, the runner reports how long it ran: ``shares.ended(name,
    charge, seconds)``.
    """

    claim: Any
    charge: float


@dataclass(frozen=True, slots=True)
class Round:
    """A loop step: one round of claims (the answer: how many claims it started)."""


ROUND = Round()


@dataclass(frozen=True, slots=True)
class AwaitOne:
    """Wait until one of the claims running on their own runners ends.

    The answer: False at once when none is running (``asyncio.wait`` refuses
    an empty set, and there would be nothing to wait for), else True.
    """


def is_async_handler(function: object) -> bool:
    """An ``async def`` function, or an object whose ``__call__`` is one (a partial of one too)."""
    if inspect.iscoroutinefunction(function):
        return True
    call = getattr(function, "__call__", None)  # noqa: B004 (an object with async __call__)
    return inspect.iscoroutinefunction(call)


def handlers_for(names: list[str], handler: object) -> dict[str, Any]:
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
        parts = [f"no handler for {', '.join(map(repr, missing))}"] if missing else []
        parts += [f"not a work: {', '.join(map(repr, extra))}"] if extra else []
        raise InvalidArgumentError("handler must name every work and no other: " + "; ".join(parts))
    bad = sorted(name for name in names if not callable(handler[name]))
    if bad:
        raise InvalidArgumentError(f"handler for {', '.join(map(repr, bad))} is not a function")
    return {name: handler[name] for name in names}


class WorkerCore:
    """A worker's settings and decisions, shared by both twins."""

    def __init__(
        self,
        works: Iterable[Work | str],
        handler: object,
        *,
        max_concurrency: int,
        poll: timedelta | str | None,
        max_backoff: timedelta | str,
        clock: Callable[[], datetime],
        drain: timedelta | str = DEFAULT_DRAIN,
        timeout: timedelta | str | None = None,
        max_stuck: int | None = None,
        wake: str | None = None,
    ) -> None:
        if isinstance(works, (str, Work)) or not isinstance(works, Iterable):
            raise InvalidArgumentError("works must be a list of Work objects or names")
        works = list(works)
        self.works = [w for w in works if isinstance(w, Work)]
        names = [w.name if isinstance(w, Work) else w for w in works]
        if not names:
            raise InvalidArgumentError("works is empty: name at least one work to run")
        for name in names:
            check_text(name, "work name")
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:  # which of the two would run, with whose grace, would be a guess
            raise InvalidArgumentError(
                f"works name {', '.join(map(repr, twice))} more than once: give each work once"
            )
        self.names = sorted(names)
        self.shares = Shares(self.names)
        """Runner time each work used lately: who claims next when runners are few."""
        self._grace: dict[str, timedelta] = {work.name: work.grace for work in self.works}
        """Per work, its grace: how far back a claim looks."""
        self.plan = DuePlan.of({name: self._grace.get(name) for name in self.names})
        """The works as the one claim statement of a look takes them."""
        self.spread: Callable[[], float] = spread  # a random delay added to each wait for a tick
        self.exhausted = False
        """Whether the last round found less than it asked for: nothing more is due now."""
        self.spare = Spare()  # how often its looks at a tick came back short: spare lookers
        self.handlers = handlers_for(self.names, handler)
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
        self.clock = clock
        try:
            given = None if poll is None else as_timedelta(poll, "poll").total_seconds()
            self.max_backoff = as_timedelta(max_backoff, "max_backoff").total_seconds()
            self.drain = as_timedelta(drain, "drain").total_seconds()
            default = None if timeout is None else as_timedelta(timeout, "timeout")
        except ValueError as exc:
            raise InvalidArgumentError(str(exc)) from None
        self.timeout = default
        self.poll = DEFAULT_POLL.total_seconds() if given is None else given
        """The longest wait between looks while no wake-up is heard."""
        self.wakeups = wakeups_for(wake, given, self.poll, self.max_backoff)
        """With ``wake="notify"``: the listener's state, and the longer poll it allows."""
        self.wake = None if self.wakeups is None else NOTIFY
        own = {work.name: work.timeout for work in self.works if work.timeout is not None}
        self.timeouts: dict[str, float | None] = {
            name: None if (limit := own.get(name, default)) is None else limit.total_seconds()
            for name in self.names
        }
        """Per work, how long its handler may run (None: no limit): its own, else ``timeout``."""
        if max_stuck is None:
            max_stuck = max_concurrency
        if (
            not isinstance(max_stuck, int)
            or isinstance(max_stuck, bool)
            or not 1 <= max_stuck <= MAX_CONCURRENCY_LIMIT
        ):
            raise InvalidArgumentError(
                f"max_stuck must be an int from 1 to {MAX_CONCURRENCY_LIMIT}, got {max_stuck!r}"
            )
        self.max_stuck = max_stuck

    def round_steps(self, stopping: Callable[[], bool]) -> Generator[Any, Any, int]:
        """Claim what is due now among all the works and start it, one statement per look.

        A look asks for as many rows as the worker has free runners, across
        all its works at once (``AcquireBatch``), so a worker costs the
        database one statement per look whatever the number of its works.
        A claim is only made for a runner reserved for it, so the worker
        never holds a claim it cannot run. Which rows it gets is the
        statement's order: the work that used the least runner time lately
        first (``shares``), so quick works are not starved by slow or hung
        ones, then the oldest tick, then its slots.

        A look that got every row it asked for is followed by another (more
        may be due) while a runner is free, unless the fleet has lookers to
        spare (``Spare``); one that got fewer ends the round.
        Returns how many claims were started; ``exhausted`` then says whether
        the last look got fewer rows than it asked for: nothing more is due
        now, and the loop need not look again before the next tick.
        """
        started = 0
        self.exhausted = False
        first, self.spare.at_tick = self.spare.at_tick, False
        while not self.exhausted and not stopping():
            took = yield from self._look_steps()
            if took is None:  # no free runner: the next look when one frees up
                break
            started += took
            if first:
                self.spare.observed(short=self.exhausted)
                first = False
            if not self.exhausted and self.spare.share > SPARE_SHARE:
                self.exhausted = True  # other workers look at this tick too: theirs, the rest
        return started

    def _look_steps(self) -> Generator[Any, Any, int | None]:
        """One claim statement for every free runner; None when no runner was free."""
        if self.max_concurrency == 1:
            claims = yield AcquireBatch(self.plan, self.shares.places(self.names), 1)
            self.exhausted = not claims
            for claim in claims:
                yield RunHere(claim)
            return len(claims)
        free = 0
        while free < self.max_concurrency and (yield TakeRunner()):
            free += 1
        if not free:
            return None
        try:
            claims = yield AcquireBatch(self.plan, self.shares.places(self.names), free)
        except BaseException:
            for _ in range(free):
                yield FreeRunner()
            raise
        for _ in range(free - len(claims)):
            yield FreeRunner()
        self.exhausted = len(claims) < free
        for claim in claims:
            yield Launch(claim, self.shares.started(claim.name))
        return len(claims)

    def due_steps(self) -> Generator[Any, Any, int]:
        """Rounds until nothing is due and nothing runs; returns how many claims were started.

        A round that started nothing while claims run waits for one of them to
        end (its runner is then free) rather than leaving what is due behind.
        """
        ran = 0
        while True:
            started: int = yield ROUND
            ran += started
            if not (yield AwaitOne()):  # the round ran out of due rows or of runners
                return ran

    def loop_steps(self, what: str) -> Generator[Any, Any, None]:
        """The loop, for both twins: a round whenever something may be due, until stopped.

        It outlives any failure of a round (the database away): logged as a
        run of failures starts and ends, retried with capped backoff. Only the
        stop signals end it. ``Idle`` answers True once the loop is asked to
        stop; between rounds that started nothing it also wakes when a running
        claim ends (``wake``).
        """
        outage = Outage(logger, what, cap=self.max_backoff)
        while not (yield Idle(0)):
            try:
                yield ROUND
            except GeneratorExit:  # closed, not failed
                raise
            except BaseException as exc:
                if is_stop(exc):
                    raise
                if (yield Idle(outage.failed(exc))):
                    return
                continue
            outage.succeeded()
            # Nothing more due: the next look is at the next tick, whatever ends
            # meanwhile. Else every runner is busy: look again when one frees up.
            wait = self.next_wait() + self.spread()
            # The next round's first look is at a tick only if nothing woke it early.
            self.spare.at_tick = self.exhausted and self.spare.waits_for_tick
            if (yield Idle(wait, wake=not self.exhausted)):
                return

    @staticmethod
    def wait_length(seconds: float, until: float | None) -> float:
        """How long a wait lasts: ``seconds``, cut short by the epoch-seconds deadline ``until``."""
        if until is None:
            return seconds
        return min(seconds, max(0.0, until - time.time()))

    @staticmethod
    def past(until: float | None) -> bool:
        """Whether the ``time.time()`` deadline ``until`` has come (never, without one)."""
        return until is not None and time.time() >= until

    @property
    def current_poll(self) -> float:
        """``poll``, or the listener's while wake-ups are on (longer once notifies are heard)."""
        return self.poll if self.wakeups is None else self.wakeups.poll

    def next_wait(self) -> float:
        """Until the next tick by this process's clock, but never longer than the poll.

        This clock only decides when to look; whether a tick is due is the
        database's call, so a worker whose clock is off still claims the right ticks.
        """
        poll = self.current_poll
        self.spare.waits_for_tick = False
        if not self.works:
            return poll
        now = self.clock()
        soonest = min(work.next_tick(now) for work in self.works)
        until_tick = (soonest - now).total_seconds()
        self.spare.waits_for_tick = until_tick <= poll
        return max(0.0, min(poll, until_tick))


class WorkerSettings:
    """The settings both workers show, read from their shared core: one definition, no drift.

    A mixin for :class:`Worker` and :class:`AsyncWorker`; each sets ``_core``.
    """

    __slots__ = ()
    _core: WorkerCore

    @property
    def works(self) -> list[Work]:
        """The :class:`Work` objects among ``works`` (what the loop sleeps by)."""
        return self._core.works

    @property
    def names(self) -> list[str]:
        """The names of the works served, sorted."""
        return self._core.names

    @property
    def max_concurrency(self) -> int:
        """How many claims run at once, at most: the worker never holds more."""
        return self._core.max_concurrency

    @property
    def poll(self) -> float:
        """The longest wait between looks now, in seconds.

        With ``wake="notify"`` it is the long poll while notifies are heard
        (``wakeups`` is "listening"), else the short one.
        """
        return self._core.current_poll

    @property
    def wakeups(self) -> str:
        """How the worker learns of rows due outside its ticks: "checking", "listening", "polling".

        "polling" without ``wake``; with ``wake="notify"``, "checking" until the
        listener has heard its own probe, then "listening" (the long poll).
        "polling" again while its connection is lost, and for good when the
        probe never came back (LISTEN through PgBouncer in transaction
        pooling: see ``listen_url``, and the WARNING in the log).
        """
        return "polling" if self._core.wakeups is None else self._core.wakeups.state

    @property
    def max_backoff(self) -> float:
        """The longest wait between looks during an outage, in seconds."""
        return self._core.max_backoff

    @property
    def drain(self) -> float:
        """Seconds ``close()`` waits for running claims before recording them FAILED."""
        return self._core.drain

    @property
    def timeout(self) -> timedelta | None:
        """The handlers' time limit for works without a ``timeout`` of their own (None: none)."""
        return self._core.timeout

    @property
    def max_stuck(self) -> int:
        """Timed-out handlers' threads that may run on; one more stops the worker (``Worker``)."""
        return self._core.max_stuck

    @property
    def clock(self) -> Callable[[], datetime]:
        """This process's clock: it only decides when to look (``next_wait``)."""
        return self._core.clock


def report(claim: ClaimCore, exc: BaseException) -> None:
    """Log how a handler's claim ended badly (not by a stop signal); the loop goes on.

    ``with claim:`` has already recorded FAILED with the reason, even after a
    handler's ``sys.exit()``: one job must not stop every other.
    """
    if isinstance(exc, ClaimLostError):
        logger.warning("%r was lost before it finished", claim, extra={"action": "lost"})
        return
    if not (claim.finished or claim.lost):  # the database stayed away all the lease
        logger.error(
            "the outcome of %r could not be recorded (%s): recovery closes its row "
            "once the lease has run out",
            claim,
            describe(exc),
            extra={"action": "failed"},
        )
        return
    row = claim._row  # what the claim returned: never a read here, on the failure's path
    fields = {
        "work": claim.name,
        "sequence": row.sequence,
        "slot": row.slot,
        "attempt": row.attempt,
    }
    place = (
        claim.name,
        row.sequence,
        "-" if row.slot is None else row.slot,
        "?" if row.attempt is None else row.attempt,
    )
    if isinstance(exc, HandlerTimeoutError):  # our traceback says nothing: the handler's stack
        logger.error(
            "work %r timed out at tick %s (slot %s, attempt %s): %s; it was at:\n%s",
            *place,
            exc,
            exc.where.rstrip() or "(its stack could not be read)",
            extra={"action": "timed-out", **fields},
        )
        return
    logger.error(
        "work %r failed at tick %s (slot %s, attempt %s): %s",
        *place,
        describe(exc),
        exc_info=exc,  # where it failed: operators read ERROR, not DEBUG
        extra={"action": "failed", **fields},
    )


def timed_out(seconds: float, where: str) -> HandlerTimeoutError:
    """The error a claim whose handler ran past its timeout is recorded FAILED with.

    ``where``: the handler's stack when its time ran out, for the log (not the row).
    """
    limit = format_duration(timedelta(seconds=seconds))
    error = HandlerTimeoutError(
        f"timed out: the handler was still running after {limit} (the work's timeout)"
    )
    error.where = where
    return error


def shut_down(seconds: float) -> str:
    """The error a claim still running when a worker's drain ran out is recorded with."""
    return f"shut down: still running {seconds:g} s after the worker was asked to stop"


@dataclass(frozen=True, slots=True)
class Fail:
    """Record the claim FAILED with ``error`` (``claim.fail``)."""

    claim: Any
    error: str


def shut_down_steps(claims: list[Any], seconds: float, then: str) -> Generator[Fail, Any, int]:
    """Record the claims still running past a worker's drain FAILED; how many were.

    Both twins do it before letting go of the handlers (``then`` says how, in
    the log), so that nothing those finish later counts.
    """
    recorded = 0
    for claim in claims:
        try:
            yield Fail(claim, shut_down(seconds))
        except ClaimLostError:
            continue  # it ended, or was recovered, meanwhile: its row says so
        except Exception as exc:  # the database is away: lease recovery closes the row
            logger.error(
                "could not record %r as shut down (%s): recovery closes its row once its "
                "lease runs out",
                claim,
                describe(exc),
                extra={"action": "shut-down"},
            )
            continue
        recorded += 1
    if recorded:
        logger.warning(
            "%d claim(s) still running %g s after the stop recorded FAILED (shut down); %s",
            recorded,
            seconds,
            then,
            extra={"action": "shut-down", "count": recorded},
        )
    return recorded
