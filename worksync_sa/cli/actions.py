"""``worksync pause|resume|run-now|retry|next|actions``: operators' actions on one work.

Each command is one call of :class:`~worksync_sa.Operator`, which writes the
action and its entry in the actions ledger in one transaction; every
scheduler and worker, on every host, honours it from its next pass or
claim, with no restart. Bad input (an unknown work or tick, a tick that
succeeded, a malformed ``--until``, a reason over 255 characters) is refused
with exit 2 and nothing written; a table not migrated to ``worksync_0006``
is exit 1 with the fix.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from .._sql.text import printable
from ..config_file import ConfigFile
from ..errors import InvalidArgumentError
from .options import (
    Commands,
    Secrets,
    UsageError,
    add_database_options,
    add_logging_options,
    database_url,
    moment_arg,
    open_engine,
    positive_int,
    read_config,
    setup_logging,
    table_name,
)
from .text import format_moment, format_table, plural

if TYPE_CHECKING:  # loaded when an action runs: `worksync status` and the rest start sooner
    from ..actions import Operator, Pause

CONFIG_HELP = (
    "config file: its [[works]] give run-now its settings and next its cron (else the "
    "work's latest row does), its [database] the database and table"
)


def register(commands: Commands) -> None:
    """Add ``pause``, ``resume``, ``run-now``, ``retry``, ``next`` and ``actions``."""
    pause = _command(
        commands,
        "pause",
        "stop the schedulers making a work's ticks (until resumed, or --until)",
        "Every scheduler stops making the work's ticks from its next pass, and its queued rows "
        "of ticks not yet due are closed as 'paused' now. Rows already due or running are left "
        "alone. After --until the schedulers make its ticks again by themselves.",
    )
    pause.add_argument(
        "--until",
        metavar="WHEN",
        type=until_arg,
        help="a duration from now ('30m', '2h') or an ISO 8601 date-time (naive is UTC); "
        "default: until `worksync resume`",
    )
    pause.set_defaults(runner=run_pause)
    resume = _command(
        commands,
        "resume",
        "let the schedulers make a paused work's ticks again",
        "Every scheduler makes the work's ticks again from its next pass.",
    )
    resume.set_defaults(runner=run_resume)
    now = _command(
        commands,
        "run-now",
        "make one tick of a work at the database's current time, for its workers to claim",
        "One tick at the database's current time, with max_run rows (from --config's work, "
        "else the work's latest row), labelled 'run-now <time> <nonce>'. The work's running "
        "workers claim it as any due tick; it never uses a cron tick's budget.",
    )
    now.set_defaults(runner=run_now)
    retry = _command(
        commands,
        "retry",
        "offer a failed tick's failed runs to the workers again",
        "The tick's failed rows (failed by the worker, lease expired, or missed) go back to "
        "QUEUED, attempts kept. Refused when the tick is running or queued, succeeded, or past "
        "its grace without --past-grace.",
    )
    retry.add_argument("tick", metavar="TICK", help="the tick's label, or its UTC time")
    retry.add_argument(
        "--past-grace",
        action="store_true",
        help="retry a tick whose grace is over: its rows move to now, where workers claim",
    )
    retry.set_defaults(runner=run_retry)
    upcoming = _command(
        commands,
        "next",
        "show a work's next ticks and labels, and whether it is paused",
        "The next ticks as the schedulers compute them (cron and zone from --config's work, "
        "else from the work's latest row), from the database's clock.",
        writes=False,
    )
    upcoming.add_argument(
        "-n", metavar="N", type=positive_int, default=10, help="how many ticks (default 10)"
    )
    upcoming.set_defaults(runner=run_next)
    listing = commands.add_parser(
        "actions",
        help="list the operators' actions: who did what, when and why",
        description="The actions ledger, newest first.",
    )
    add_database_options(listing, config=CONFIG_HELP)
    listing.add_argument("--name", metavar="WORK", help="only this work's actions")
    listing.add_argument(
        "--last", metavar="N", type=positive_int, default=20, help="how many (default 20)"
    )
    add_logging_options(listing, default="warning")
    listing.set_defaults(runner=run_actions)


def until_arg(text: str) -> timedelta | datetime:
    """argparse type: a duration from now (``30m``) or an ISO 8601 date-time (naive is UTC)."""
    try:
        return moment_arg(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a duration from now ('30m', '2h', '1d') nor an ISO 8601 "
            "date-time ('2026-01-01T06:00:00Z')"
        ) from None


def _command(
    commands: Commands, name: str, summary: str, description: str, *, writes: bool = True
) -> argparse.ArgumentParser:
    parser = commands.add_parser(name, help=summary, description=description)
    parser.add_argument("name", metavar="NAME", help="the work")
    add_database_options(parser, config=CONFIG_HELP)
    if writes:
        parser.add_argument(
            "--reason", default="", help="why, for the actions ledger (up to 255 characters)"
        )
        parser.add_argument("--by", metavar="WHO", help="who, for the ledger (default user@host)")
    add_logging_options(parser, default="warning")
    return parser


def _operate(
    args: argparse.Namespace, secrets: Secrets, act: Callable[[Operator, ConfigFile | None], int]
) -> int:
    setup_logging(args.log_level, secrets)
    config = read_config(args.config)
    url = database_url(args, config, secrets)
    table = table_name(args, config)
    engine = open_engine(url)
    try:
        try:
            from ..actions import Operator  # noqa: PLC0415 - see TYPE_CHECKING above

            operator = Operator(
                engine,
                table=table,
                by=getattr(args, "by", None),
                works=config.works if config is not None else None,
                sequence=config.scheduler.sequence if config is not None else None,
            )
        except InvalidArgumentError as exc:
            raise UsageError(f"--by: {exc}") from None
        return act(operator, config)
    finally:
        engine.dispose()


def _until(pause: Pause) -> str:
    return "until resumed" if pause.until is None else f"until {format_moment(pause.until)} UTC"


def run_pause(args: argparse.Namespace, secrets: Secrets) -> int:
    """Pause a work."""

    def act(operator: Operator, _: ConfigFile | None) -> int:
        paused = operator.pause(args.name, args.until, args.reason)
        print(
            f"paused work {args.name!r} {_until(paused.pause)} (by {paused.pause.by}); closed "
            f"{plural(paused.closed, 'queued row')} of ticks not yet due"
        )
        return 0

    return _operate(args, secrets, act)


def run_resume(args: argparse.Namespace, secrets: Secrets) -> int:
    """Resume a work."""

    def act(operator: Operator, _: ConfigFile | None) -> int:
        resumed = operator.resume(args.name, args.reason)
        print(
            f"resumed work {args.name!r}: paused by {resumed.pause.by} since "
            f"{format_moment(resumed.pause.at)} UTC; its ticks come back from the schedulers' "
            "next pass"
        )
        return 0

    return _operate(args, secrets, act)


def run_now(args: argparse.Namespace, secrets: Secrets) -> int:
    """Make a run-now tick."""

    def act(operator: Operator, _: ConfigFile | None) -> int:
        made = operator.run_now(args.name, args.reason)
        print(
            f"made tick {made.label!r} of work {args.name!r} at {format_moment(made.tick_at)} "
            f"UTC: {plural(made.rows, 'row')}, for its workers to claim"
        )
        return 0

    return _operate(args, secrets, act)


def run_retry(args: argparse.Namespace, secrets: Secrets) -> int:
    """Retry a failed tick."""

    def act(operator: Operator, _: ConfigFile | None) -> int:
        done = operator.retry(args.name, args.tick, args.past_grace, args.reason)
        moved = (
            f", moved past its grace to {format_moment(done.moved_to)} UTC"
            if done.moved_to is not None
            else ""
        )
        print(
            f"retrying tick {done.label!r} of work {args.name!r}: "
            f"{plural(done.rows, 'failed row')} queued again{moved}"
        )
        return 0

    return _operate(args, secrets, act)


def run_next(args: argparse.Namespace, secrets: Secrets) -> int:
    """Show the next ticks."""

    def act(operator: Operator, config: ConfigFile | None) -> int:
        found = operator.next_ticks(args.name, args.n)
        where = "--config" if found.source == "works" else "the work's latest row"
        state = "not paused"
        if found.pause is not None:
            state = f"PAUSED {_until(found.pause)} by {printable(found.pause.by)}"
            if found.pause.reason:
                state += f": {printable(found.pause.reason)}"
        print(f"work {args.name!r} ({state}); ticks as {where} defines them:")
        rows = [
            [
                format_moment(tick.tick_at),
                "(custom sequence)" if tick.label is None else printable(tick.label),
                "paused" if tick.paused else "",
            ]
            for tick in found.ticks
        ]
        print("\n".join(format_table(["tick (UTC)", "label", ""], rows)))
        return 0

    return _operate(args, secrets, act)


def run_actions(args: argparse.Namespace, secrets: Secrets) -> int:
    """List the actions ledger."""

    def act(operator: Operator, _: ConfigFile | None) -> int:
        entries = operator.actions(args.name, args.last)
        if not entries:
            print("no actions recorded" + (f" for work {args.name!r}" if args.name else ""))
            return 0
        rows = [
            [
                format_moment(entry.at),
                entry.action,
                *map(printable, (entry.name, entry.tick or "", entry.by, entry.reason)),
                printable(entry.detail or ""),
            ]
            for entry in entries
        ]
        headers = ["at (UTC)", "action", "work", "tick", "by", "reason", "detail"]
        print("\n".join(format_table(headers, rows)))
        return 0

    return _operate(args, secrets, act)
