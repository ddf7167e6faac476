"""``worksync schedule``: run a scheduler for the works of a config file.

The scheduler creates each tick's rows ``lookahead`` ahead and recovers
abandoned rows once per ``interval``, and with ``retention`` prunes every few
minutes. Run one per service instance if you like: they insert the same rows
and the unique key keeps one copy.

It fails fast at start (no table, a table behind the revision this release
needs, a database that refuses us: exit 1 with the fix, so a supervisor sees
it; a table ahead, migrated by a newer release, is fine) and survives outages
afterwards (the loop logs once, backs off, and
resumes). SIGINT or SIGTERM stops it after the current pass; a second one
quits at once.
"""

from __future__ import annotations

import argparse
import logging

import sqlalchemy as sa

from ..config_file import ConfigFile
from ..durations import format_duration
from ..scheduler import PassReport, Scheduler
from .options import (
    Commands,
    Failure,
    Secrets,
    UsageError,
    add_database_options,
    add_logging_options,
    database_url,
    open_engine,
    read_config,
    require_ready_table,
    setup_logging,
    shown,
    table_name,
    wait_for_table,
)
from .stopping import StopSignals
from .text import format_moment, plural

log = logging.getLogger("worksync_sa.cli.schedule")

LIVENESS_CHECK_SECONDS = 5.0
"""How often the main thread checks that the scheduler thread is still alive."""


def register(commands: Commands) -> None:
    """Add ``schedule``."""
    parser = commands.add_parser(
        "schedule",
        help="run a scheduler for the works of a config file until SIGINT/SIGTERM",
        description="Create the rows of every tick of the config file's works ahead of time, "
        "recover abandoned rows and prune old ones (with [scheduler] retention), until SIGINT "
        "or SIGTERM. Run as many as you like. With --once, run one pass and print what it did.",
    )
    add_database_options(
        parser,
        config="config file: the works, [scheduler] settings and [database]",
        config_required=True,
    )
    parser.add_argument(
        "--once", action="store_true", help="run a single pass, print what it did, and exit"
    )
    add_logging_options(parser, default="info")
    parser.set_defaults(runner=run)


def run(args: argparse.Namespace, secrets: Secrets) -> int:
    """Run the scheduler until a stop signal, or one pass with ``--once``."""
    setup_logging(args.log_level, secrets)
    config = read_config(args.config)
    assert config is not None  # --config is required
    if not config.works:
        raise UsageError(f"{config.source}: no works to schedule; add a [[works]] table for each")
    url = database_url(args, config, secrets)
    table = table_name(args, config)
    engine = open_engine(url)
    try:
        scheduler = Scheduler(engine, config.works, config.scheduler, table=table)
        if args.once:
            require_ready_table(engine, table)
            return _once(scheduler, table)
        return _serve(scheduler, engine, config, table)
    finally:
        engine.dispose()


def describe_pass(report: PassReport, table: str) -> list[str]:
    """What a pass did, for people."""
    changed = [
        f"{count} {what}"
        for count, what in (
            (report.closed, "closed as surplus"),
            (report.paused, "closed as paused"),
            (report.adopted, "adopted from another program"),
        )
        if count
    ]
    lines = [
        f"pass at {format_moment(report.now)} UTC on table {table!r}: "
        f"{plural(report.planned, 'row')} planned, {report.created} created in "
        f"{plural(report.batches, 'batch')}, {', '.join([*changed, ''])}"
        f"{report.recovered} recovered, {report.pruned} pruned"
    ]
    lines += [
        f"skipped {plural(count, 'tick')} of work {name!r}, missed by more than catchup"
        for name, count in sorted(report.skipped.items())
    ]
    return lines


def _once(scheduler: Scheduler, table: str) -> int:
    try:
        scheduler.run_pass()
    finally:
        scheduler.close()
    assert scheduler.last_pass is not None
    print("\n".join(describe_pass(scheduler.last_pass, table)))
    return 0


def _names(scheduler: Scheduler, shown_at_most: int = 5) -> str:
    names = [work.name for work in scheduler.works]
    more = len(names) - shown_at_most
    return ", ".join(names[:shown_at_most]) + (f" and {more} more" if more > 0 else "")


def _serve(scheduler: Scheduler, engine: sa.Engine, config: ConfigFile, table: str) -> int:
    settings = config.scheduler
    with StopSignals() as stop:
        try:
            if not wait_for_table(engine, table, stop, log, settings.max_backoff.total_seconds()):
                log.info("%s received before the database came back", stop.received)
                return 0
            scheduler.start()
            log.info(
                "scheduler started on %s, table %r: %s (%s), a pass every %s, lookahead %s",
                shown(engine.url),
                table,
                plural(len(scheduler.works), "work"),
                _names(scheduler),
                format_duration(settings.interval),
                format_duration(settings.lookahead),
                extra={"action": "started"},
            )
            while not stop.wait(LIVENESS_CHECK_SECONDS):
                if not scheduler.running:
                    raise Failure("the scheduler thread stopped unexpectedly")
            log.info(
                "%s received: stopping after the current pass (send it again to quit at once)",
                stop.received,
                extra={"action": "stopping"},
            )
        finally:
            scheduler.close()  # a second signal interrupts this wait: ForcedStop
    log.info("scheduler stopped", extra={"action": "stopped"})
    return 0
