"""worksync_sa: run each cron job at most N times per tick across a fleet.

A SQLAlchemy plugin re-creating the Go library worksync: a scheduler writes
``max_run`` QUEUED rows ahead of every tick, and workers claim them with one
atomic UPDATE each. See README.md.

Every name is loaded on first use (PEP 562), from the module that owns it.
The asyncio twins must be: they need greenlet, an optional extra that
SQLAlchemy 2.1 no longer installs, and a plain install must import without
it. The rest are so that ``import worksync_sa`` costs nothing until a name is
used: a handler's child process (``Worker(isolation="process")``) imports the
package for its few small modules, once per claim, and must not pay for
SQLAlchemy and every service each time.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .actions import ActionEntry as ActionEntry
    from .actions import NextTick as NextTick
    from .actions import Operator as Operator
    from .actions import Pause as Pause
    from .actions import Paused as Paused
    from .actions import Resumed as Resumed
    from .actions import Retried as Retried
    from .actions import RunNow as RunNow
    from .actions import Upcoming as Upcoming
    from .async_scheduler import AsyncScheduler as AsyncScheduler
    from .async_sync import AsyncClaim as AsyncClaim
    from .async_sync import AsyncWorkSync as AsyncWorkSync
    from .async_worker import AsyncWorker as AsyncWorker
    from .config import RetryPolicy as RetryPolicy
    from .config import SchedulerConfig as SchedulerConfig
    from .engine import create_engine as create_engine
    from .errors import ClaimLostError as ClaimLostError
    from .errors import ClaimNotCommittedError as ClaimNotCommittedError
    from .errors import DetailsNotLoadedError as DetailsNotLoadedError
    from .errors import HandlerProcessError as HandlerProcessError
    from .errors import HandlerTimeoutError as HandlerTimeoutError
    from .errors import InvalidArgumentError as InvalidArgumentError
    from .errors import InvalidConfigError as InvalidConfigError
    from .errors import InvalidWorkError as InvalidWorkError
    from .errors import SchemaNotReadyError as SchemaNotReadyError
    from .errors import UnsupportedDatabaseError as UnsupportedDatabaseError
    from .errors import WorksyncError as WorksyncError
    from .events import Event as Event
    from .events import Listener as Listener
    from .isolation import ClaimView as ClaimView
    from .ledger import Ledger as Ledger
    from .ledger import LedgerPage as LedgerPage
    from .ledger import TickEntry as TickEntry
    from .ledger import WorkSummary as WorkSummary
    from .models import WorkRecord as WorkRecord
    from .models import WorkStatus as WorkStatus
    from .models import action_table as action_table
    from .models import metadata as metadata
    from .models import pause_table as pause_table
    from .models import work_table as work_table
    from .repository import ClaimRepository as ClaimRepository
    from .repository import MaintenanceRepository as MaintenanceRepository
    from .repository import QueryRepository as QueryRepository
    from .repository import ScheduleRepository as ScheduleRepository
    from .rows import Adoption as Adoption
    from .rows import BatchRow as BatchRow
    from .rows import ClaimedRow as ClaimedRow
    from .rows import NewRow as NewRow
    from .rows import QueuedRow as QueuedRow
    from .rows import Recovered as Recovered
    from .rows import Surplus as Surplus
    from .rows import TickCount as TickCount
    from .rows import TickState as TickState
    from .scheduler import PassReport as PassReport
    from .scheduler import Scheduler as Scheduler
    from .schema import SchemaState as SchemaState
    from .schema import SchemaStatus as SchemaStatus
    from .schema import downgrade as downgrade
    from .schema import include_object as include_object
    from .schema import include_object_for as include_object_for
    from .schema import migrations_path as migrations_path
    from .schema import require_schema as require_schema
    from .schema import schema_status as schema_status
    from .schema import upgrade as upgrade
    from .sequences import default_sequence as default_sequence
    from .sequences import local_sequence as local_sequence
    from .sequences import per_tick as per_tick
    from .sync import Claim as Claim
    from .sync import WorkSync as WorkSync
    from .work import Work as Work
    from .worker import Worker as Worker

_WHERE = {
    "ActionEntry": "actions",
    "NextTick": "actions",
    "Operator": "actions",
    "Pause": "actions",
    "Paused": "actions",
    "Resumed": "actions",
    "Retried": "actions",
    "RunNow": "actions",
    "Upcoming": "actions",
    "RetryPolicy": "config",
    "SchedulerConfig": "config",
    "create_engine": "engine",
    "ClaimLostError": "errors",
    "ClaimNotCommittedError": "errors",
    "DetailsNotLoadedError": "errors",
    "HandlerProcessError": "errors",
    "HandlerTimeoutError": "errors",
    "InvalidArgumentError": "errors",
    "InvalidConfigError": "errors",
    "InvalidWorkError": "errors",
    "SchemaNotReadyError": "errors",
    "UnsupportedDatabaseError": "errors",
    "WorksyncError": "errors",
    "Event": "events",
    "Listener": "events",
    "ClaimView": "isolation",
    "Ledger": "ledger",
    "LedgerPage": "ledger",
    "TickEntry": "ledger",
    "WorkSummary": "ledger",
    "WorkRecord": "models",
    "WorkStatus": "models",
    "metadata": "models",
    "work_table": "models",
    "action_table": "models",
    "pause_table": "models",
    "ClaimRepository": "repository",
    "MaintenanceRepository": "repository",
    "QueryRepository": "repository",
    "ScheduleRepository": "repository",
    "Adoption": "rows",
    "BatchRow": "rows",
    "ClaimedRow": "rows",
    "NewRow": "rows",
    "QueuedRow": "rows",
    "Recovered": "rows",
    "Surplus": "rows",
    "TickCount": "rows",
    "TickState": "rows",
    "PassReport": "scheduler",
    "Scheduler": "scheduler",
    "SchemaState": "schema",
    "SchemaStatus": "schema",
    "downgrade": "schema",
    "include_object": "schema",
    "include_object_for": "schema",
    "migrations_path": "schema",
    "require_schema": "schema",
    "schema_status": "schema",
    "upgrade": "schema",
    "default_sequence": "sequences",
    "local_sequence": "sequences",
    "per_tick": "sequences",
    "Claim": "sync",
    "WorkSync": "sync",
    "Work": "work",
    "Worker": "worker",
    "AsyncScheduler": "async_scheduler",
    "AsyncClaim": "async_sync",
    "AsyncWorkSync": "async_sync",
    "AsyncWorker": "async_worker",
}
"""Each public name, and the module it comes from."""


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        if name.startswith("__"):
            raise AttributeError(f"module 'worksync_sa' has no attribute {name!r}")
        try:  # ``worksync_sa.models`` after a bare ``import worksync_sa``, as before
            return import_module(f".{name}", __name__)
        except ModuleNotFoundError:
            raise AttributeError(f"module 'worksync_sa' has no attribute {name!r}") from None
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))


__all__ = [
    "ActionEntry",
    "Adoption",
    "AsyncClaim",
    "AsyncScheduler",
    "AsyncWorkSync",
    "AsyncWorker",
    "BatchRow",
    "Claim",
    "ClaimLostError",
    "ClaimNotCommittedError",
    "ClaimRepository",
    "ClaimView",
    "ClaimedRow",
    "DetailsNotLoadedError",
    "Event",
    "HandlerProcessError",
    "HandlerTimeoutError",
    "InvalidArgumentError",
    "InvalidConfigError",
    "InvalidWorkError",
    "Ledger",
    "LedgerPage",
    "Listener",
    "MaintenanceRepository",
    "NewRow",
    "NextTick",
    "Operator",
    "PassReport",
    "Pause",
    "Paused",
    "QueryRepository",
    "QueuedRow",
    "Recovered",
    "Resumed",
    "Retried",
    "RetryPolicy",
    "RunNow",
    "ScheduleRepository",
    "Scheduler",
    "SchedulerConfig",
    "SchemaNotReadyError",
    "SchemaState",
    "SchemaStatus",
    "Surplus",
    "TickCount",
    "TickEntry",
    "TickState",
    "UnsupportedDatabaseError",
    "Upcoming",
    "Work",
    "WorkRecord",
    "WorkStatus",
    "WorkSummary",
    "WorkSync",
    "Worker",
    "WorksyncError",
    "action_table",
    "create_engine",
    "default_sequence",
    "downgrade",
    "include_object",
    "include_object_for",
    "local_sequence",
    "metadata",
    "migrations_path",
    "pause_table",
    "per_tick",
    "require_schema",
    "schema_status",
    "upgrade",
    "work_table",
]
