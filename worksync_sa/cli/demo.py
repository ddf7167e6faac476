"""``worksync demo``: a scheduler and racing worker processes, then the per-tick proof.

Unchanged by the other commands: it keeps its own SQLite default
(``worksync-demo.db`` in the current folder), ignores WORKSYNC_DATABASE_URL,
and migrates its table itself. See :mod:`worksync_sa.demo`.
"""

from __future__ import annotations

import argparse

from ..config_file import parse_url
from ..models import DEFAULT_TABLE
from .options import Commands, Secrets, UsageError, table_name


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
    """Run the demo. Failures reach ``main`` like any command's: bad arguments exit 2,
    anything else exits 1 with one masked line."""
    if args.seconds <= 0 or args.workers < 1:
        raise UsageError("--seconds must be positive and --workers at least 1")
    table = table_name(args, None)  # --table always has a value: the environment is not read
    if args.db is not None:
        try:
            secrets.add_url(parse_url(args.db, "--db"))
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    from ..demo import run_demo  # noqa: PLC0415 - loaded when it runs: other commands start sooner

    return run_demo(args.db, seconds=args.seconds, workers=args.workers, table=table)
