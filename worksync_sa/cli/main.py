"""The ``worksync`` entry point: the parser, and failures turned into exit codes.

Exit codes: 0 ok; 1 runtime failure (the database is unreachable, the table
is missing or behind, a second signal forced a stop); 2 usage or bad input
(an option, the config file, a duration, a cron, a ``--run`` spec); 3 and 4
``work`` stopped with claims cut off, or gave up on stuck handlers.

Every failure is one line on stderr starting ``worksync:``, never a
traceback, with any password this run was given masked out: a person
reading a deploy log should see what to fix, and nothing secret.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

import sqlalchemy as sa

from ..errors import InvalidArgumentError, WorksyncError
from . import actions, demo, migrations, prune, schedule, status, web, work
from .options import Failure, Parser, Secrets, UsageError, describe_error
from .stopping import ForcedStop

Runner = Callable[[argparse.Namespace, Secrets], int]

USAGE = 2
FAILURE = 1


def build_parser() -> Parser:
    """The parser with every command."""
    parser = Parser(
        prog="worksync",
        description="Run each cron job at most N times per tick across a fleet, through one "
        "SQL table. The database comes from --db, else WORKSYNC_DATABASE_URL, else the "
        "[database] url of --config.",
        epilog="Exit codes: 0 ok, 1 runtime failure, 2 usage or bad input, 3 work stopped "
        "with claims still running past --drain, 4 work stopped: more functions stuck past "
        "their timeout than --max-stuck.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (migrations, schedule, work, status, actions, web, prune, demo):
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    secrets = Secrets()
    runner: Runner = args.runner
    try:
        return runner(args, secrets)
    except BaseException as exc:  # even a SystemExit from user code: exit codes stay 0/1/2
        code, message = outcome(exc)
        forced = isinstance(exc, ForcedStop)
    line = " ".join(message.split())  # one line, whatever the message held
    print(f"worksync: {secrets.mask(line)}", file=sys.stderr)
    if forced:
        quit_now(code)
    return code


def quit_now(code: int) -> NoReturn:
    """Exit without the interpreter's teardown: a second signal asked for it at once.

    What could be recorded was (``work``); what is left is handlers' threads
    and connections of an event loop that is gone, whose finalizers would only
    print tracebacks on the way out, or wait.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def outcome(exc: BaseException) -> tuple[int, str]:
    """The exit code and message for a command that raised ``exc``."""
    if isinstance(exc, (UsageError, InvalidArgumentError, sa.exc.ArgumentError)):
        # InvalidArgumentError covers the config file, works and settings (InvalidWorkError,
        # InvalidConfigError); ArgumentError an unusable URL or engine option.
        return USAGE, str(exc)
    if isinstance(exc, (Failure, WorksyncError)):
        return FAILURE, str(exc)
    if isinstance(exc, ForcedStop):
        return FAILURE, f"stopped at once: {exc}"
    if isinstance(exc, KeyboardInterrupt):
        return FAILURE, "interrupted"
    if isinstance(exc, SystemExit):
        return FAILURE, f"stopped by sys.exit({exc.code!r}) in imported code"
    return FAILURE, describe_error(exc)  # a driver or connection error, without a traceback
