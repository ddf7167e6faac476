"""``worksync work``: a worker loop that runs a function of yours for each claimed tick.

The function is named ``module:function`` and imported with the current
directory on ``sys.path``, so ``worksync work --run jobs:send_report`` finds
``./jobs.py``. It is called with the :class:`~worksync_sa.Claim` inside
``with claim:``: returning records SUCCESS, raising records FAILED with the
error's text (the loop logs it and goes on). ``--run NAME=module:function``
(repeatable) gives one work its own function; a bare ``--run`` serves the
works no pair names. ``--concurrency N`` runs up to N claims at once, each on
a thread of its own, and never claims more than it can run. ``async def``
functions run on an ``AsyncWorker`` instead (each claim a task, the database
reached through its asyncio driver); the two kinds are never mixed in one
command.

Which works: those of ``--config`` (all of them, or the ones ``--name``
picks), whose crons also tell the loop when to look next; or, without a
config file, the ``--name``\\ s, else the names of the ``--run`` pairs, and
the loop polls every ``--poll``.
Claims are due ticks by the database clock (``acquire_due``), so workers
need no clock agreement.

``--timeout`` limits how long a function may run for the works without a
``timeout`` of their own; past it the claim is recorded FAILED ("timed out")
and the worker goes on (a thread left to run on, a task cancelled).
``--isolation process`` runs each claim's (plain) function in a child process
of its own instead, which a timeout or the end of ``--drain`` kills: the
function gets a read-only ``ClaimView``, and each claim pays a process start.

The handler is imported before anything connects, so a bad ``--run`` is a
usage error (exit 2) that touches nothing. SIGINT/SIGTERM stop claiming and
wait up to ``--drain`` for the running claims; those still running then are
recorded FAILED ("shut down") and the exit code is 3. A second signal records
what it can within a second and exits 1. Exit code 4: more timed-out
functions' threads ran on than ``--max-stuck``, and the worker stopped so
that its supervisor can start a fresh process.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.machinery
import logging
import os
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

import sqlalchemy as sa

from .._core.worker import MAX_CONCURRENCY_LIMIT, is_async_handler
from .._run import child as children
from ..config_file import ConfigFile, WorkerSettings
from ..durations import format_duration
from ..events import Event
from ..isolation import ISOLATIONS
from ..work import Work
from ..worker import DEFAULT_DRAIN, DEFAULT_MAX_BACKOFF, DEFAULT_POLL, Handler, Worker
from .on_loop import LoopWorker
from .options import (
    Commands,
    Failure,
    Secrets,
    UsageError,
    add_database_options,
    add_logging_options,
    database_url,
    duration_arg,
    open_engine,
    read_config,
    require_ready_table,
    setup_logging,
    shown,
    table_name,
    wait_for_table,
)
from .stopping import ForcedStop, StopSignals
from .text import plural

log = logging.getLogger("worksync_sa.cli.work")

RUN_FORM = "module:function, e.g. myapp.jobs:send_report"


def register(commands: Commands) -> None:
    """Add ``work``."""
    parser = commands.add_parser(
        "work",
        help="claim due ticks and run a function of yours for each, until SIGINT/SIGTERM",
        description="Claim every due tick of the works (those of --config, or --name) and "
        "call MODULE:FUNCTION with the claim: returning records SUCCESS, raising records "
        "FAILED. The current directory is on the import path.",
    )
    add_database_options(
        parser, config="config file: the works to run (all, or those --name picks), [worker]"
    )
    parser.add_argument(
        "--run",
        metavar="[NAME=]MODULE:FUNCTION",
        action="append",
        required=True,
        help=f"the function to call with each claim ({RUN_FORM}); NAME=MODULE:FUNCTION "
        "gives work NAME its own (repeat for more)",
    )
    parser.add_argument(
        "--concurrency",
        metavar="N",
        type=concurrency_arg,
        help="claims run at once, each on a thread of its own (async def functions: a "
        "task each) (default: [worker] concurrency, else 1)",
    )
    parser.add_argument(
        "--name",
        metavar="NAME",
        action="append",
        help="run only this work (repeat for more); without --config, the works to poll",
    )
    parser.add_argument(
        "--poll",
        metavar="DURATION",
        type=duration_arg,
        help="longest wait between looks for due ticks (default: [worker] poll, else 1s)",
    )
    parser.add_argument(
        "--max-backoff",
        metavar="DURATION",
        type=duration_arg,
        help="longest wait between attempts while the database is away "
        "(default: [worker] max_backoff, else 30s)",
    )
    parser.add_argument(
        "--drain",
        metavar="DURATION",
        type=duration_arg,
        help="on a stop, how long to wait for running claims before recording them FAILED "
        '("shut down") and exiting 3 (default: [worker] drain, else 30s)',
    )
    parser.add_argument(
        "--timeout",
        metavar="DURATION",
        type=duration_arg,
        help="longest a function may run for a work without a timeout of its own; past it "
        'the claim is recorded FAILED ("timed out") (default: [worker] timeout, else none)',
    )
    parser.add_argument(
        "--max-stuck",
        metavar="N",
        type=concurrency_arg,
        help="timed-out functions' threads that may run on; one more stops the worker, "
        "exit code 4 (default: [worker] max_stuck, else the concurrency)",
    )
    parser.add_argument(
        "--isolation",
        choices=ISOLATIONS,
        help="thread: call each function on a thread; process: in a child process of its "
        "own, killed past its timeout (a process start per claim; plain functions only) "
        "(default: [worker] isolation, else thread)",
    )
    parser.add_argument(
        "--worker-id",
        metavar="ID",
        help="recorded in claimed_by (default host:pid)",
    )
    parser.add_argument(
        "--once",
        action="store_true",
        help="claim and run everything due now, print how many, and exit",
    )
    add_logging_options(parser, default="info")
    parser.set_defaults(runner=run)


def load_handler(spec: str) -> Handler:
    """Import ``module:function`` (a dotted attribute path is fine); usage errors say why not."""
    module_name, colon, attribute = spec.strip().partition(":")
    parts = attribute.split(".")
    if not colon or not all(part.isidentifier() for part in (*module_name.split("."), *parts)):
        raise UsageError(f"--run {spec!r} is not {RUN_FORM}")
    here = os.getcwd()
    if here not in sys.path:  # `python -m` puts it there; the console script does not
        sys.path.insert(0, here)
    try:
        target: object = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
            raise UsageError(
                f"--run {spec!r}: no module named {exc.name!r} "
                "(looked in the current directory and on sys.path)"
            ) from None
        raise UsageError(f"--run {spec!r}: importing {module_name!r} failed: {exc}") from None
    except Exception as exc:  # the module itself is broken: say how, without a traceback
        raise UsageError(
            f"--run {spec!r}: importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from None
    for depth, part in enumerate(parts):
        try:
            target = getattr(target, part)
        except AttributeError:
            owner = ".".join([module_name, *parts[:depth]])
            raise UsageError(f"--run {spec!r}: {owner!r} has no attribute {part!r}") from None
    if not callable(target):
        raise UsageError(
            f"--run {spec!r} is {type(target).__name__}, not a function taking a claim"
        )
    return target


def concurrency_arg(text: str) -> int:
    """``--concurrency``: a whole number of claims from 1 to the limit."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_CONCURRENCY_LIMIT:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a whole number from 1 to {MAX_CONCURRENCY_LIMIT}"
        )
    return value


@dataclass(frozen=True)
class Handlers:
    """What the ``--run`` options ask for: a default function, and functions by work."""

    default: str | None
    by_work: dict[str, str]

    @classmethod
    def parse(cls, specs: Sequence[str]) -> Handlers:
        """Split ``[NAME=]MODULE:FUNCTION`` values (a name may itself hold ``=``)."""
        default: str | None = None
        by_work: dict[str, str] = {}
        for value in specs:
            name, equals, spec = value.rpartition("=")
            if not equals:
                if default is not None:
                    raise UsageError(
                        f"--run {default!r} and --run {value!r}: give one function for every "
                        "work, or name each work's: --run NAME=MODULE:FUNCTION"
                    )
                default = value
                continue
            if not name.strip():
                raise UsageError(f"--run {value!r}: the work name before '=' is empty")
            if name in by_work:
                raise UsageError(f"--run {value!r}: work {name!r} already has a function")
            by_work[name] = spec
        return cls(default, by_work)

    def load(self, names: Sequence[str]) -> dict[str, Handler]:
        """Import each work's function (each spec once); usage errors name what is wrong."""
        unknown = [name for name in self.by_work if name not in names]
        if unknown:
            raise UsageError(
                f"--run {unknown[0]}=...: {unknown[0]!r} is not among the works to run "
                f"({', '.join(map(repr, names))})"
            )
        missing = [name for name in names if name not in self.by_work]
        if missing and self.default is None:
            raise UsageError(
                f"no function for work {missing[0]!r}: add --run {missing[0]}=MODULE:FUNCTION "
                "or a --run MODULE:FUNCTION for every work without one"
            )
        loaded: dict[str, Handler] = {}
        handlers: dict[str, Handler] = {}
        for name in names:
            spec = self.by_work.get(name) or self.default
            assert spec is not None
            if spec not in loaded:
                loaded[spec] = load_handler(spec)
            handlers[name] = loaded[spec]
        return handlers

    def describe(self) -> str:
        """For the start-up log line."""
        parts = [f"{name}={spec}" for name, spec in self.by_work.items()]
        if self.default is not None:
            parts.append(self.default if not parts else f"others={self.default}")
        return ", ".join(parts)


def select_works(
    config: ConfigFile | None, names: Sequence[str] | None, run_names: Sequence[str] = ()
) -> list[Work | str]:
    """The works to run: the config's (all, or those named), the bare names, or ``--run``'s."""
    wanted = list(dict.fromkeys(names or ()))
    if config is None:
        wanted = wanted or list(run_names)
        if not wanted:
            raise UsageError(
                "no works to run: pass --config FILE (its works), --name NAME, "
                "or --run NAME=MODULE:FUNCTION"
            )
        return list(wanted)
    if not config.works:
        raise UsageError(f"{config.source}: no works; add a [[works]] table for each")
    if not wanted:
        return list(config.works)
    by_name = {work.name: work for work in config.works}
    for name in wanted:
        if name not in by_name:
            known = ", ".join(sorted(by_name))
            raise UsageError(f"--name {name!r} is not a work of {config.source} (it has: {known})")
    return [by_name[name] for name in wanted]


def _log_event(event: Event) -> None:
    """One line per finished claim: the operator's view of what this worker did."""
    if event.action == "finished":
        log.info(
            "ran %s @ %s: %s",
            event.name,
            event.sequence,
            event.status,
            extra={"action": "ran", "work": event.name, "sequence": event.sequence},
        )


def run(args: argparse.Namespace, secrets: Secrets) -> int:
    """Run the worker loop until a stop signal, or with ``--once`` everything due now."""
    setup_logging(args.log_level, secrets)
    runs = Handlers.parse(args.run)
    config = read_config(args.config)
    works = select_works(config, args.name, list(runs.by_work))
    names = list(dict.fromkeys(w.name if isinstance(w, Work) else w for w in works))
    handlers = runs.load(names)  # before connecting: a bad --run touches nothing
    url = database_url(args, config, secrets)
    table = table_name(args, config)
    settings = config.worker if config is not None else WorkerSettings()
    poll: timedelta = args.poll or settings.poll or DEFAULT_POLL
    max_backoff: timedelta = args.max_backoff or settings.max_backoff or DEFAULT_MAX_BACKOFF
    concurrency: int = args.concurrency or settings.concurrency or 1
    drain: timedelta = _first(args.drain, settings.drain, DEFAULT_DRAIN)
    isolation: str = args.isolation or settings.isolation or "thread"
    options: dict[str, Any] = {
        "drain": drain,
        "timeout": args.timeout or settings.timeout,
        "max_stuck": args.max_stuck or settings.max_stuck,
        "max_concurrency": concurrency,
        "table": table,
        "poll": poll,
        "worker_id": args.worker_id,
        "max_backoff": max_backoff,
        "listeners": [_log_event],
    }
    engine = open_engine(url)
    try:
        worker: Worker | LoopWorker
        if kind_of(handlers) == "async":
            if isolation != "thread":
                raise UsageError(
                    f"isolation {isolation!r} is for plain functions: async def ones run as "
                    "tasks, which their timeout cancels already"
                )
            worker = _async_worker(url, works, handlers, options)
        else:
            if isolation == "process":
                _children_skip_the_script()
            worker = Worker(engine, works, handlers, isolation=isolation, **options)
        if args.once:
            return _once(worker, engine, table)
        return _serve(worker, engine, table, runs.describe(), poll)
    finally:
        engine.dispose()


def _children_skip_the_script() -> None:
    """Spare each function's process a run of the ``worksync`` script's imports.

    A "spawn" child first re-runs the parent's main script (a function
    defined there could be the one to call), unless the main module has a
    name ending in ``.__main__``. The console script is such a file, and all
    it imports is this command, SQLAlchemy and every service: some 0.4 s per
    claim for nothing, since the functions come from ``--run`` modules. So
    the script is named what it runs (``python -m worksync_sa`` is already).
    """
    main = sys.modules.get("__main__")
    if main is not None and getattr(main, "__spec__", None) is None:
        main.__spec__ = importlib.machinery.ModuleSpec("worksync_sa.__main__", None)


def _first(*values: timedelta | None) -> timedelta:
    """The first duration given (a zero drain is one: stop at once)."""
    return next(value for value in values if value is not None)


def kind_of(handlers: dict[str, Handler]) -> str:
    """``async`` when every handler is an ``async def``, ``blocking`` when none is; never both.

    Each kind has its worker: a coroutine function called on a thread would only
    return a coroutine, and a blocking function awaited would stall every claim.
    """
    kinds = {name: is_async_handler(handler) for name, handler in handlers.items()}
    if all(kinds.values()):
        return "async"
    if not any(kinds.values()):
        return "blocking"
    awaited = ", ".join(repr(name) for name, is_async in kinds.items() if is_async)
    called = ", ".join(repr(name) for name, is_async in kinds.items() if not is_async)
    raise UsageError(
        f"--run gives async def functions ({awaited}) and plain ones ({called}): one worker "
        "awaits them all or calls them all on threads; run each kind in a worksync work of "
        "its own (--name picks the works)"
    )


def _async_worker(
    url: sa.URL, works: list[Work | str], handlers: dict[str, Handler], options: dict[str, Any]
) -> LoopWorker:
    """``async def`` handlers: an AsyncWorker on the URL's database through an asyncio driver."""
    from ..async_worker import AsyncHandler, AsyncWorker  # noqa: PLC0415 (asyncio when asked)
    from ..engine import create_async_engine  # noqa: PLC0415

    try:
        engine = create_async_engine(url)
    except (ImportError, ValueError) as exc:
        raise Failure(f"the --run functions are async def, and {exc}") from None
    awaited = cast("dict[str, AsyncHandler]", handlers)  # every one is async: kind_of said so
    return LoopWorker(lambda: AsyncWorker(engine, works, awaited, **options), engine)


def _once(worker: Worker | LoopWorker, engine: sa.Engine, table: str) -> int:
    try:
        require_ready_table(engine, table)
        ran = worker.run_due()
    finally:
        worker.close()
    print(f"ran {plural(ran, 'claim')} of {', '.join(worker.names)} on table {table!r}")
    return 0


def _serve(
    worker: Worker | LoopWorker, engine: sa.Engine, table: str, spec: str, poll: timedelta
) -> int:
    with StopSignals() as stop:
        try:
            if not wait_for_table(engine, table, stop, log, worker.max_backoff):
                log.info("%s received before the database came back", stop.received)
                worker.close()
                return 0
            worker.start()
            log.info(
                "worker %s started on %s, table %r: running %s for %s, %s at once, "
                "polling every %s",
                worker.sync.worker_id,
                shown(engine.url),
                table,
                spec,
                ", ".join(worker.names),
                plural(worker.max_concurrency, "claim"),
                format_duration(poll),
                extra={"action": "started"},
            )
            while not stop.wait(LOOK_EVERY_SECONDS):
                if not worker.running:
                    return _ended_by_itself(worker)
            log.info(
                "%s received: stopping, waiting up to %s for running claims "
                "(send it again to quit at once)",
                stop.received,
                format_duration(timedelta(seconds=worker.drain)),
                extra={"action": "stopping"},
            )
            worker.close()  # a second signal interrupts this wait: ForcedStop
        except ForcedStop:
            recorded = _record_what_it_can(worker)
            children.kill_all()  # whatever the recording got to: no function's process stays
            log.warning(
                "quitting at once: %s",
                "the running claims were recorded FAILED (shut down)"
                if recorded
                else "a claim still running keeps its row until its lease runs out, then "
                "recovery closes it",
                extra={"action": "forced"},
            )
            raise
        except BaseException:
            worker.close()
            raise
    if worker.cut_off:
        log.warning(
            "worker stopped after %s; %s still running after %s recorded FAILED (shut down)",
            plural(worker.handled, "claim"),
            plural(worker.cut_off, "claim"),
            format_duration(timedelta(seconds=worker.drain)),
            extra={"action": "stopped"},
        )
        return CUT_OFF
    log.info(
        "worker stopped after %s", plural(worker.handled, "claim"), extra={"action": "stopped"}
    )
    return 0


CUT_OFF = 3
"""The exit code of a stop whose drain ran out: some claims were recorded FAILED."""
STUCK = 4
"""The exit code of a worker that stopped itself: more timed-out handlers ran on than allowed."""
LOOK_EVERY_SECONDS = 1.0
"""How often the command checks that its worker's loop still runs."""


def _ended_by_itself(worker: Worker | LoopWorker) -> int:
    """The loop ended with no signal: too many handlers stuck (4), or it died (1, logged)."""
    worker.close()
    if worker.gave_up:
        log.critical(
            "worker stopped: %d timed-out functions still run, more than --max-stuck %d; "
            "exiting %d so that a fresh process takes over",
            worker.stuck,
            worker.max_stuck,
            STUCK,
            extra={"action": "stopped"},
        )
        return STUCK
    log.critical(
        "worker stopped: its loop ended (see the error above); exiting 1",
        extra={"action": "stopped"},
    )
    return 1


QUIT_RECORDING_SECONDS = 1.0
"""How long a second signal lets the worker record its running claims before quitting."""


def _record_what_it_can(worker: Worker | LoopWorker) -> bool:
    """Record the running claims FAILED at once, for at most a couple of seconds; True if done.

    On a thread of its own: a database that does not answer must not keep an
    operator who asked twice from getting the process to quit.
    """
    finished = threading.Event()

    def close_now() -> None:
        with contextlib.suppress(Exception):
            worker.close(timeout=0)
            finished.set()

    threading.Thread(target=close_now, name="worksync-quit", daemon=True).start()
    return finished.wait(QUIT_RECORDING_SECONDS)
