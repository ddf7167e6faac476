"""``worksync demo``: a scheduler and racing worker processes, then the per-tick proof.

Unchanged by the other commands: it keeps its own SQLite default
(``worksync-demo.db`` in the current folder), ignores WORKSYNC_DATABASE_URL,
and migrates its table itself. See :mod:`worksync_sa.demo`.
"""

from __future__ import annotations

import argparse
import sys

import sqlalchemy as sa

from ..demo import run_demo
from ..errors import InvalidConfigError, WorksyncError
from ..models import DEFAULT_TABLE, validate_table_name
from .options import URL_FORM, Commands, Secrets, UsageError


def register(commands: Commands) -> None:
    """Add ``demo``."""
    demo = commands.add_parser(
        "demo",
        help="run a scheduler and racing workers, then show that no tick exceeded max_run",
        description="Run a scheduler and racing worker processes for a while, print each "
        "claim, then a per-tick table. Uses an SQLite file in the current folder by default.",
    )
    demo.add_argument(
        "--db",
        metavar="URL",
        help="SQLAlchemy URL, e.g. mysql+mysqldb://root@127.0.0.1/test "
        "(default: sqlite:///worksync-demo.db)",
    )
    demo.add_argument("--seconds", type=float, default=20.0, help="how long to run (default 20)")
    demo.add_argument("--workers", type=int, default=4, help="worker processes (default 4)")
    demo.add_argument("--table", default=DEFAULT_TABLE, help="work table name (default works)")
    demo.set_defaults(runner=run)


def run(args: argparse.Namespace, secrets: Secrets) -> int:
    """Run the demo; bad arguments exit 2, any other failure is one line on stderr and exit 1."""
    if args.seconds <= 0 or args.workers < 1:
        raise UsageError("--seconds must be positive and --workers at least 1")
    try:  # bad input is a usage error (exit 2), as in every other command
        validate_table_name(args.table)
    except InvalidConfigError as exc:
        raise UsageError(f"--table: {exc}") from None
    if args.db is not None:
        try:
            secrets.add_url(sa.make_url(args.db))
        except sa.exc.ArgumentError:
            raise UsageError(f"--db is not a SQLAlchemy URL ({URL_FORM})") from None
    try:
        return run_demo(args.db, seconds=args.seconds, workers=args.workers, table=args.table)
    except WorksyncError as exc:
        print(f"worksync: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a driver or connection error: say it, no traceback
        print(f"worksync: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
