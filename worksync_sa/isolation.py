"""Where a :class:`Worker` runs a handler: on a thread (the default) or in a process of its own.

This module owns the choice and what crosses into a child process: the
``isolation`` values, the check that each handler can be sent to a child at
all, and :class:`ClaimView`, the read-only copy of a claim the handler gets
there. Running and supervising the child is ``_run.child``'s business.

Why a process: a thread cannot be killed. A handler that hangs in C code
holding the GIL, leaks memory, or simply must be stoppable at its timeout
can only be ended for good by running it in a process the worker may kill
(Celery's prefork pool and its hard time limit are the model). The price is
a process start per claim (a spawned interpreter that imports the
handler's module: some 50 ms for a small one, more for a large application),
and a handler that sees a :class:`ClaimView`, not the :class:`Claim`: the
claim, its heartbeat and its outcome stay in the worker.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from .errors import InvalidArgumentError, describe

ISOLATIONS = ("thread", "process")
"""``thread``: each claim's handler runs on a thread of the worker (the default);
``process``: in a child process that a timeout or a stop kills."""


@dataclass(frozen=True, slots=True)
class ClaimView:
    """What a handler run with ``isolation="process"`` gets: a read-only copy of its claim.

    The child process holds no database handle: the worker keeps the claim,
    heartbeats it while the child runs and records its outcome. So there is
    no ``success()``, ``fail()`` or ``heartbeat()`` here: the handler returns
    (SUCCESS) or raises (FAILED, with the exception's text), and that is all.
    """

    id: int
    """The claimed row's primary key."""
    name: str
    """The work's name."""
    sequence: str
    """The tick's sequence."""
    slot: int | None
    """Which of the tick's ``max_run`` rows this is (0-based); None for rows others wrote."""
    tick_at: datetime | None
    """The tick as an aware UTC datetime; None for rows another program wrote."""
    attempt: int
    """How many times the row has been claimed, this claim included."""
    worker_id: str
    """The worker that claimed it (``claimed_by``)."""


ProcessHandler = Callable[[ClaimView], object]
"""A handler for ``isolation="process"``: a module-level function taking a :class:`ClaimView`."""


def check_isolation(value: object) -> str:
    """``value`` if it is one of :data:`ISOLATIONS`, else an error naming it."""
    if not isinstance(value, str) or value not in ISOLATIONS:
        raise InvalidArgumentError(
            f"isolation must be {' or '.join(map(repr, ISOLATIONS))}, got {value!r}"
        )
    return value


def check_picklable(handlers: Mapping[str, Callable[..., object]]) -> None:
    """Refuse, at construction, a handler that a child process could not be given.

    A spawned child starts a fresh interpreter and finds the handler by
    importing it by name (that is what pickling a function records), so a
    lambda, a nested function or a method of an object that does not pickle
    would only fail at the first claim, once per tick, forever.
    """
    tried: dict[int, str | None] = {}
    for name, handler in handlers.items():
        if id(handler) not in tried:
            try:
                pickle.dumps(handler)
                tried[id(handler)] = None
            except Exception as exc:  # PicklingError, AttributeError ("local object"), ...
                tried[id(handler)] = describe(exc)
        problem = tried[id(handler)]
        if problem is not None:
            raise InvalidArgumentError(
                f"handler for work {name!r} cannot run with isolation='process': the child "
                "process imports it by name, so it must be a module-level function (not a "
                f"lambda, a nested function or an object that does not pickle); {problem}"
            )
