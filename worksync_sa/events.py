"""Events: what the services did, as it happens, for metrics and alerting.

Every service takes ``listeners``: plain callables that receive an
:class:`Event`. Feed Prometheus, StatsD or anything else without worksync_sa
depending on it::

    def count(event):
        COUNTER.labels(event.action, event.name or "").inc(event.count)

    Scheduler(engine, works, listeners=[count])

A listener that raises an ``Exception`` is logged and ignored: metrics never
break claims.
The same events are logged, each with a stable ``extra={"action": ...}``.

========== ============================== ==========================================
action     when                           fields
========== ============================== ==========================================
created    a pass inserted new rows       count (rows); name is None
skipped    ticks older than catch-up      name, count (ticks)
claimed    a claim took a row             name, sequence, lag (seconds from the
                                          tick to the claim, by the database
                                          clock; None when not known)
finished   a claim recorded its outcome   name, sequence, status (SUCCESS, FAILED)
recovered  a lease ran out                name, sequence, count, status (FAILED,
                                          or QUEUED when re-queued)
missed     nobody claimed within grace    name, sequence, count (rows closed)
surplus    a pass closed upcoming rows    name, count (ticks of that work whose
           that the works' settings no    surplus rows were closed)
           longer want (a lower
           ``max_run``, a changed cron)
========== ============================== ==========================================
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .errors import InvalidArgumentError

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Event:
    """One thing a service did (see the module's table)."""

    action: str
    name: str | None = None
    sequence: str | None = None
    count: int = 1
    status: str | None = None
    lag: float | None = None
    """For ``claimed``: seconds from the tick to the claim, by the database clock."""


Listener = Callable[[Event], object]


class Events:
    """The listeners of one service."""

    def __init__(self, listeners: Iterable[Listener] | None) -> None:
        if listeners is None:
            self.listeners: tuple[Listener, ...] = ()
            return
        if isinstance(listeners, (str, bytes)) or not isinstance(listeners, Iterable):
            raise InvalidArgumentError("listeners must be a list of functions taking an Event")
        self.listeners = tuple(listeners)
        if not all(callable(listener) for listener in self.listeners):
            raise InvalidArgumentError("listeners must be a list of functions taking an Event")

    def __bool__(self) -> bool:
        return bool(self.listeners)

    def emit(self, event: Event) -> None:
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:
                logger.exception(
                    "listener %r failed on %s", listener, event.action, extra={"action": "listener"}
                )


def report_recovered(
    events: Events, log: logging.Logger, recovered: Iterable[tuple[str, str, str]]
) -> int:
    """Log and emit what recovery did, one line and one event per tick and kind.

    ``recovered`` holds (name, sequence, kind) per row, kind being "lease",
    "requeued" or "missed". Returns the number of rows.
    """
    groups = Counter(recovered)
    for (name, sequence, kind), count in sorted(groups.items()):
        if kind == "missed":
            log.warning(
                "work %r missed tick %s: %d row(s) unclaimed within grace",
                name,
                sequence,
                count,
                extra={"action": "missed", "work": name, "sequence": sequence, "rows": count},
            )
            events.emit(Event("missed", name, sequence, count))
            continue
        status = "QUEUED" if kind == "requeued" else "FAILED"
        log.warning(
            "work %r tick %s: %d claim(s) lost their lease (worker lost), now %s",
            name,
            sequence,
            count,
            status,
            extra={"action": "recovered", "work": name, "sequence": sequence, "rows": count},
        )
        events.emit(Event("recovered", name, sequence, count, status))
    return sum(groups.values())
