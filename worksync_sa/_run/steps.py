"""Service logic written once, run by a blocking or an asyncio runner.

Every service call is a short series of database calls with plain logic in
between (a scheduler pass: read the clock, read the horizon, insert a few
batches, recover, prune). That logic is written as a generator that yields a
:class:`Call` for each database call and receives its result, without doing
any I/O itself. :func:`drive` runs it on the blocking runner (``_run.blocking``),
:func:`drive_async` on the asyncio one (``_run.async_runner``). So ``Scheduler`` and
``AsyncScheduler``, ``WorkSync`` and ``AsyncWorkSync`` share every decision,
statement and retry rule, and differ only in how they wait.

A ``Call``'s functions take a blocking :class:`~sqlalchemy.engine.Connection`:
the repositories' code. The asyncio runner runs them through
``AsyncConnection.run_sync``, where SQLAlchemy drives the async driver.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy.engine import Connection

from .._sql.dialect import read_clock

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One database call of a service, retried as a whole by the runner.

    ``work`` runs on a lane in autocommit (or, where the pool gives no lanes,
    in a transaction the runner commits). ``resolve`` finds the outcome
    of an attempt whose connection was lost after the statement went out
    (None: it did not happen). ``peek`` says, on a busy SQLite file, whether
    waiting for the write lock is worth it; if not, the call's result is
    ``nothing``. ``wait_out_locks=False``: a lock wait that timed out is not
    retried here but raised at once, for a caller that first finds out what
    holds the lock (a scheduler pass, see ``_core.blockers``).
    """

    what: str
    work: Callable[[Connection], T]
    resolve: Callable[[Connection], T | None] | None = None
    peek: Callable[[Connection], bool] | None = None
    nothing: T | None = None
    wait_out_locks: bool = True

    def steps(self) -> Steps[T]:
        """This call as a service call of one step, for :func:`drive` given a lone ``Call``.

        The runners take a single call directly (``runner.call``), the claim's
        hot path; :func:`drive` takes either.
        """
        result: T = yield self
        return result


@dataclass(frozen=True, slots=True)
class Sleep:
    """A step: sleep ``seconds``, whatever happens meanwhile; the answer is None.

    The wait before a retry (``_run.attempts``) or before recording an outcome
    again: nothing but time should end it, or a stop would turn into a burst
    of attempts.
    """

    seconds: float


@dataclass(frozen=True, slots=True)
class Idle:
    """A step of a loop: wait ``seconds`` unless told to stop; the answer is True if stopped.

    ``wake``: the wait also ends early, answering whether stopped, when one of
    the worker's running claims ends, so a freed runner is used at once.
    Every shell has one stop signal, and a worker one wake signal (and a
    nudge, set by a stop or a wake-up, that ends its other waits too). ``Sleep``
    and ``Idle`` are the waits every core may ask for; a worker's core also
    waits for a running claim to end (``_core.worker.AwaitOne``).
    """

    seconds: float
    wake: bool = False


Steps = Generator[Call[Any], Any, T]
"""A service call: yields the database calls it needs, returns its result."""


class _Pump(Generic[T]):
    """A generator of steps being driven: all that both drivers share, as they differ by ``await``.

    ``step`` is the step to do next. Once the generator returns, ``done`` is
    set and ``value`` holds what it returned. Errors the generator raises
    pass out of :meth:`send` and :meth:`fail`.
    """

    __slots__ = ("done", "step", "steps", "value")

    def __init__(self, steps: Generator[Any, Any, T] | Call[T]) -> None:
        self.steps = steps.steps() if isinstance(steps, Call) else steps
        self.done = False
        self.step: Any = None
        self.value: T | None = None
        self._resume(self.steps.send, None)

    def send(self, result: Any) -> None:
        """The step was done: its result goes back where the generator yielded it."""
        self._resume(self.steps.send, result)

    def fail(self, exc: BaseException) -> None:
        """The step failed: its error is thrown in where the generator yielded it.

        A ``GeneratorExit`` means the driver itself is being closed (an asyncio
        task collected at shutdown): the steps are closed, not failed.
        """
        if isinstance(exc, GeneratorExit):
            self.steps.close()
            raise exc
        self._resume(self.steps.throw, exc)

    def _resume(self, how: Callable[[Any], Any], arg: Any) -> None:
        try:
            self.step = how(arg)
        except StopIteration as stop:
            self.done = True
            self.value = stop.value


def drive(steps: Generator[Any, Any, T] | Call[T], run: Callable[[Any], Any]) -> T:
    """Run ``steps`` to the end, doing each step it yields with ``run`` (blocking).

    A step is a :class:`Call`, or whatever other kind of step the generator's
    shells agree on (``_core.claims``'s claim steps); an error doing one is
    thrown back into the generator where it yielded. A single ``Call`` is
    driven as its own one step.
    """
    pump = _Pump(steps)
    while not pump.done:
        try:
            result = run(pump.step)
        except BaseException as exc:
            pump.fail(exc)
        else:
            pump.send(result)
    return pump.value  # type: ignore[return-value]  # done: the generator's own return value


async def drive_async(
    steps: Generator[Any, Any, T] | Call[T], run: Callable[[Any], Awaitable[Any]]
) -> T:
    """Run ``steps`` to the end, awaiting each step with ``run`` (asyncio); as :func:`drive`."""
    pump = _Pump(steps)
    while not pump.done:
        try:
            result = await run(pump.step)
        except BaseException as exc:
            pump.fail(exc)
        else:
            pump.send(result)
    return pump.value  # type: ignore[return-value]  # done: the generator's own return value


CLOCK: Call[datetime] = Call("clock", read_clock)
"""The database clock, as a call of its own: the first step of a pass or a prune without ``now``."""
