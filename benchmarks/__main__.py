"""Run the benchmarks: ``python -m benchmarks [--db URL|mariadb|postgresql|sqlite] [--quick]``.

Prints an aligned table and writes ``benchmarks/results/<db>.json``
(``<db>-quick.json`` with ``--quick``). MariaDB is the default target.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from .asyncio_claims import async_uncontended
from .claims import acquire_due, table_growth, uncontended
from .contended import contended, sustained
from .due_history import due_history
from .empty_look import empty_look
from .fleet import fleet
from .harness import Report, bench_engine, label_of, resolve_url
from .ledger_history import ledger_history
from .passes import memory, scheduler_passes
from .status_last import status_last
from .web_page import web_page

BENCHMARKS = (
    "uncontended",
    "asyncio",
    "contended",
    "sustained",
    "due",
    "history",
    "empty",
    "passes",
    "growth",
    "ledger",
    "memory",
    "web",
    "status",
    "fleet",
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--db", help="SQLAlchemy URL, or mariadb (default), postgresql, sqlite")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke test")
    parser.add_argument(
        "--only", nargs="+", choices=BENCHMARKS, help="run only these, merged into the last run"
    )
    args = parser.parse_args(argv)
    url = resolve_url(args.db)
    engine = bench_engine(url)
    report = Report(label_of(engine), args.quick)
    chosen = args.only or BENCHMARKS
    shown = engine.url.render_as_string(hide_password=True)
    print(f"worksync_sa benchmarks on {shown}{' (quick)' if args.quick else ''}", flush=True)
    started = time.monotonic()
    steps = {
        "uncontended": lambda: uncontended(engine, report, quick=args.quick),
        "asyncio": lambda: async_uncontended(engine, report, quick=args.quick),
        "contended": lambda: contended(engine, url, report, quick=args.quick),
        "sustained": lambda: sustained(engine, url, report, quick=args.quick),
        "due": lambda: acquire_due(engine, report, quick=args.quick),
        "history": lambda: due_history(engine, report, quick=args.quick),
        "empty": lambda: empty_look(engine, report, quick=args.quick),
        "passes": lambda: scheduler_passes(engine, report, quick=args.quick),
        "growth": lambda: table_growth(engine, report, quick=args.quick),
        "ledger": lambda: ledger_history(engine, url, report, quick=args.quick),
        "memory": lambda: memory(engine, url, report, quick=args.quick),
        "web": lambda: web_page(engine, report, quick=args.quick),
        "status": lambda: status_last(engine, url, report, quick=args.quick),
        "fleet": lambda: fleet(engine, report, quick=args.quick),
    }
    for name in BENCHMARKS:
        if name in chosen:
            began = time.monotonic()
            steps[name]()
            print(f"  {name} done in {time.monotonic() - began:.0f} s", flush=True)
    report.results["seconds"] = round(time.monotonic() - started, 1)
    report.print()
    saved = report.save(engine, merge=bool(args.only))
    print(f"written to {saved} in {report.results['seconds']:.0f} s")
    engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
