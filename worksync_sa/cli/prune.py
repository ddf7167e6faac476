"""``worksync prune``: delete old finished rows now.

The same deletion a scheduler with ``[scheduler] retention`` runs every few
minutes, for deployments that prefer a cron job or a one-off cleanup. Rows go
in small primary-key-ordered batches, each its own short transaction, so a
large backlog never holds long locks. Less than two days is refused by the
library (a restarted scheduler could create a pruned tick again): exit 2.
"""

from __future__ import annotations

import argparse

from .._core.maintenance import check_batch_size, check_older_than
from ..durations import format_duration
from ..errors import InvalidArgumentError
from ..sync import WorkSync
from .options import (
    Commands,
    Secrets,
    UsageError,
    add_database_options,
    add_logging_options,
    database_url,
    duration_arg,
    open_engine,
    positive_int,
    read_config,
    setup_logging,
    shown,
    table_name,
)
from .text import plural

DEFAULT_BATCH_SIZE = 1000


def register(commands: Commands) -> None:
    """Add ``prune``."""
    parser = commands.add_parser(
        "prune",
        help="delete rows that finished longer ago than --older-than (at least 2d)",
        description="Delete finished rows (SUCCESS or FAILED) whose finish is older than "
        "--older-than, in small batches, and print how many went. Queued and running rows "
        "are never touched.",
    )
    add_database_options(parser, config="config file whose [database] section names the table")
    parser.add_argument(
        "--older-than",
        metavar="DURATION",
        type=duration_arg,
        required=True,
        help="keep rows that finished more recently than this (at least 2d), e.g. 7d",
    )
    parser.add_argument(
        "--batch-size",
        metavar="N",
        type=positive_int,
        default=DEFAULT_BATCH_SIZE,
        help=f"rows per DELETE and transaction (default {DEFAULT_BATCH_SIZE})",
    )
    add_logging_options(parser, default="warning")
    parser.set_defaults(runner=run)


def run(args: argparse.Namespace, secrets: Secrets) -> int:
    """Prune and print how many rows went."""
    setup_logging(args.log_level, secrets)
    for option, check, value in (
        ("--older-than", check_older_than, args.older_than),
        ("--batch-size", check_batch_size, args.batch_size),
    ):
        try:  # before connecting: bad input touches nothing
            check(value)
        except InvalidArgumentError as exc:
            raise UsageError(f"{option}: {exc}") from None
    config = read_config(args.config)
    url = database_url(args, config, secrets)
    table = table_name(args, config)
    engine = open_engine(url)
    try:
        sync = WorkSync(engine, table=table)
        try:
            deleted = sync.prune(args.older_than, args.batch_size)
        finally:
            sync.close()
    finally:
        engine.dispose()
    print(
        f"pruned {plural(deleted, 'row')} of table {table!r} on {shown(url)} that finished "
        f"more than {format_duration(args.older_than)} ago"
    )
    return 0
