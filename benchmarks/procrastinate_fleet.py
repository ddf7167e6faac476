"""procrastinate's fleet, the anchor of ``benchmarks/fleet.py``: run by procrastinate's own venv.

Not part of the package and never imported by it: ``fleet.py`` runs this file
with the interpreter named by ``WORKSYNC_BENCH_PROCRASTINATE`` (a virtualenv
with ``pip install 'procrastinate>=3,<4'``). Two commands:

    python procrastinate_fleet.py schema CONNINFO
    python procrastinate_fleet.py worker CONNINFO WORKS CONCURRENCY UNTIL DEFERS

``worker`` registers WORKS tasks whose handler sleeps 10 ms and runs one
worker with ``concurrency`` CONCURRENCY until the ``time.time()`` deadline
UNTIL. With DEFERS 1 the tasks are also periodic, every second (croniter's
six-field cron, seconds last: ``* * * * * *``), so this worker's periodic
deferrer defers them; the fleet gives that to one worker process only. With a
deferrer in each of four processes, a deferrer that fell more than a tick
behind on a loaded machine deferred ticks again after the others' newer defers
had replaced their rows in ``procrastinate_periodic_defers``, and ticks ran
twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from typing import Any

import procrastinate  # type: ignore[import-not-found]


def make_app(conninfo: str, works: int, defers: bool = True) -> Any:
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo))

    async def handler(timestamp: int) -> None:
        await asyncio.sleep(0.01)

    for n in range(works):
        task = app.task(name=f"p{n:03d}", pass_context=False)(handler)
        if defers:
            app.periodic(cron="* * * * * *", periodic_id=f"p{n:03d}")(task)
    return app


async def work(conninfo: str, works: int, concurrency: int, until: float, defers: bool) -> None:
    app = make_app(conninfo, works, defers)
    async with app.open_async():
        runner = asyncio.ensure_future(
            app.run_worker_async(concurrency=concurrency, install_signal_handlers=False)
        )
        await asyncio.sleep(max(0.0, until - time.time()))
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner


def main(argv: list[str]) -> int:
    logging.getLogger("procrastinate").setLevel(logging.ERROR)  # not its start-up advice
    if argv[0] == "schema":
        app = make_app(argv[1], 0)
        with app.open():
            app.schema_manager.apply_schema()
        return 0
    _, conninfo, works, concurrency, until, defers = argv
    asyncio.run(work(conninfo, int(works), int(concurrency), float(until), defers == "1"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
