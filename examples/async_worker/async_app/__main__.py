"""``python -m async_app [--seconds N] [--migrate-only]``: run the service as a server would.

Creates or upgrades the tables, then enters ``lifespan`` (what an ASGI server
does at startup), serves until ``--seconds`` have passed or SIGINT/SIGTERM
comes, leaves the lifespan (shutdown) and prints the jobs this copy ran.
``--migrate-only`` stops after the tables: the deploy step, run once before
the copies start. The database is ``ASYNC_APP_DATABASE_URL``, or
``async-app.db`` in the current folder.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal

import sqlalchemy as sa

from async_app.app import lifespan
from async_app.db import create_schema, database_url


async def serve(seconds: float | None) -> list[tuple[str, str]]:
    """Run the lifespan until ``seconds`` pass or a signal comes; the jobs this copy ran."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows: Ctrl-C still raises
            loop.add_signal_handler(signum, stop.set)
    async with lifespan(app=None) as state:
        print(f"serving as {state['worker'].sync.worker_id}", flush=True)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
        print("stopping", flush=True)
    return state["ran"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m async_app")
    parser.add_argument(
        "--seconds", type=float, help="stop after this many seconds (default: at SIGINT/SIGTERM)"
    )
    parser.add_argument(
        "--migrate-only", action="store_true", help="create or upgrade the tables, then exit"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if not args.migrate_only:  # Alembic's progress lines, only where they are news
        logging.getLogger("alembic").setLevel(logging.WARNING)

    print(f"database: {sa.make_url(database_url()).render_as_string(hide_password=True)}")
    # A real deployment runs its migrations once, before starting the copies
    # (`alembic upgrade heads`, or `worksync migrate`), not in every copy; see db.py.
    create_schema()
    if args.migrate_only:
        print("tables ready")
        return 0
    ran = asyncio.run(serve(args.seconds))
    for work, sequence in ran:
        print(f"ran {work} for tick {sequence}")
    print(f"stopped: {len(ran)} job(s) run by this copy")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
