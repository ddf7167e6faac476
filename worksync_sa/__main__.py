"""The ``worksync`` command (also ``python -m worksync_sa``).

Exit codes: 0 ok, 1 runtime failure, 2 usage error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .demo import run_demo
from .errors import WorksyncError
from .models import DEFAULT_TABLE


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="worksync",
        description="Run each cron job at most N times per tick across a fleet.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        if args.seconds <= 0 or args.workers < 1:
            parser.error("--seconds must be positive and --workers at least 1")
        try:
            return run_demo(args.db, seconds=args.seconds, workers=args.workers, table=args.table)
        except WorksyncError as exc:
            print(f"worksync: {exc}", file=sys.stderr)
            return 1
        except Exception as exc:  # a driver or connection error: say it, no traceback
            print(f"worksync: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
    parser.error(f"unknown command {args.command!r}")
    return 2  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
