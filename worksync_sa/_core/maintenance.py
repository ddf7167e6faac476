"""The services' upkeep: taking back abandoned rows, and deleting old finished ones.

Both are steps (``_run.steps``) that ``WorkSync`` and the scheduler's passes run on
either runner. Recovery takes back at most ``RECOVERY_BATCH`` of our rows a
call: one UPDATE that returns what it changed on PostgreSQL and SQLite; on
MySQL, which cannot return them, a read of the candidates and an UPDATE of
those ids. Then rows another program left waiting past their grace are
closed (from a read of at most ``RECOVERY_BATCH`` of them). Pruning
deletes in small primary-key-ordered batches. Each call commits on its own
(statement by statement on autocommit lanes), so none holds locks across calls.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from functools import partial

from .._run.steps import CLOCK, Call, Steps
from ..config import SHORTEST_RETENTION
from ..durations import shown
from ..errors import InvalidArgumentError
from ..events import Events, report_recovered
from ..repository import MaintenanceRepository
from ..rows import Recovered

logger = logging.getLogger(__name__)

PRUNE_BATCH_LIMIT = 100_000


def recover_steps(
    maintenance: MaintenanceRepository, events: Events, now: datetime | None
) -> Steps[int]:
    """Close or re-queue one batch of abandoned rows; log and tell listeners what changed."""
    recovered: list[Recovered] = yield Call("recover", partial(maintenance.recover, now=now))
    return report_recovered(events, logger, recovered)


def check_prune(older_than: object, batch_size: object) -> None:
    """``prune``'s arguments, or a clear error naming the wrong one."""
    check_older_than(older_than)
    check_batch_size(batch_size)


def check_older_than(older_than: object) -> None:
    """``prune``'s ``older_than``: a timedelta, never shorter than the shortest retention."""
    if not isinstance(older_than, timedelta) or older_than < SHORTEST_RETENTION:
        raise InvalidArgumentError(
            f"older_than must be a timedelta of at least {SHORTEST_RETENTION.days} days, "
            f"got {shown(older_than)}"
        )


def check_batch_size(batch_size: object) -> None:
    """``prune``'s ``batch_size``: an int from 1 to ``PRUNE_BATCH_LIMIT``."""
    if (
        not isinstance(batch_size, int)
        or isinstance(batch_size, bool)
        or not 1 <= batch_size <= PRUNE_BATCH_LIMIT
    ):
        raise InvalidArgumentError(
            f"batch_size must be an int from 1 to {PRUNE_BATCH_LIMIT}, got {batch_size!r}"
        )


def prune_steps(
    maintenance: MaintenanceRepository,
    older_than: timedelta,
    batch_size: int,
    batches: int | None,
    now: datetime | None = None,
) -> Steps[int]:
    """Delete old finished rows batch by batch, each batch its own transaction.

    Stops when a batch comes back short, or after ``batches`` batches. The
    age is judged against ``now`` (the pass's time), else the database clock.
    """
    if now is None:
        now = yield CLOCK
    cutoff = now - older_than
    deleted = done = 0
    while batches is None or done < batches:
        count: int = yield Call(
            "prune", partial(maintenance.prune_batch, cutoff=cutoff, batch_size=batch_size)
        )
        deleted += count
        done += 1
        if count < batch_size:
            break
    if deleted:
        logger.info(
            "pruned %d rows finished before %s",
            deleted,
            cutoff.isoformat(),
            extra={"action": "pruned", "rows": deleted},
        )
    return deleted
