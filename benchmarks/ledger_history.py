"""The ledger of one work with a day of per-second history, against PostgreSQL in the same run.

Work "big" has 86,400 finished per-second ticks (the last day); ten other
works have a tick a minute each, so the table holds other works' rows too.
Three figures:

* reading every tick of "big" (``Ledger.entries(name="big", since=a day ago)``,
  page by page, 1,000 ticks a page), measured on this database and, when
  this run is on MariaDB/MySQL, on PostgreSQL in the same run, interleaved;
* ``worksync status --name big --last 5`` as the command computes it
  (``View.render``: its default range is the last hour and after);
* the same command as a process, start-up included.

Target (MariaDB): reading all 86,400 ticks takes at most 2x PostgreSQL's
time, and ``status --name big --last 5`` well under a second.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from worksync_sa import Ledger, WorkStatus
from worksync_sa._sql.dialect import db_now, family_of
from worksync_sa.cli.status import View
from worksync_sa.models import as_utc

from .harness import (
    SERVERS,
    Report,
    Spread,
    analyze,
    bench_engine,
    bulk_insert,
    drop_table,
    fresh_table,
    raw_stamp,
)

TABLE = "bench_ledger"
DAY = 86_400
OTHERS = 10


def load(engine: sa.Engine, ticks: int, table: str = TABLE) -> datetime:
    """``ticks`` finished per-second ticks of "big" up to now, and the other works'; returns now."""
    fresh_table(engine, table)
    with engine.connect() as conn:
        now = as_utc(conn.execute(sa.select(db_now(family_of(engine.dialect)))).scalar_one())
    now = now.replace(microsecond=0)

    def row(name: str, moment: datetime) -> dict[str, Any]:
        late = raw_stamp(engine, moment + timedelta(milliseconds=300))
        return {
            "name": name,
            "status": WorkStatus.SUCCESS.value,
            "sequence": moment.strftime("%Y-%m-%d %H:%M:%S"),
            "slot": 0,
            "tick_at": moment,  # bulk_insert stamps it for the driver
            "started_at": late,
            "finished_at": late,
            "closed_by": "worker",
            "attempts": 1,
            "claimed_by": "bench",
        }

    rows = [row("big", now - timedelta(seconds=n)) for n in range(ticks)]
    rows += [
        row(f"other{k}", now - timedelta(minutes=n))
        for k in range(OTHERS)
        for n in range(ticks // 60)
    ]
    bulk_insert(engine, table, rows)
    analyze(engine, table)
    return now


def read_all(ledger: Ledger, since: datetime, ticks: int) -> float:
    started = time.perf_counter()
    count = sum(1 for _ in ledger.entries(name="big", since=since))
    took = time.perf_counter() - started
    assert count == ticks, (count, ticks)
    return took


def status_last_five(ledger: Ledger, now: datetime) -> float:
    args = argparse.Namespace(name="big", since=timedelta(hours=1), until=None, last=5)
    view = View(args, TABLE, "bench")
    started = time.perf_counter()
    lines = view.render(ledger, now)
    took = time.perf_counter() - started
    assert "the last 5 of " in "\n".join(lines), lines[:3]
    return took


def status_process(url: str) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "worksync_sa", "status", "--name", "big", "--last", "5",
         "--db", url, "--table", TABLE],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    took = time.perf_counter() - started
    assert done.returncode == 0, done.stderr
    return took


def ledger_history(engine: sa.Engine, url: str, report: Report, *, quick: bool) -> None:
    repeats = 3
    ticks = DAY // 4 if quick else DAY
    engines = {report.db: (engine, url)}
    if engine.dialect.name in ("mysql", "mariadb"):
        try:
            other = bench_engine(SERVERS["postgresql"])
            with other.connect():
                engines["postgresql"] = (other, SERVERS["postgresql"])
        except Exception as exc:  # PostgreSQL not here: MariaDB's figures alone
            print(f"  ledger: no PostgreSQL to compare with ({exc})", flush=True)
    nows = {db: load(e, ticks) for db, (e, _) in engines.items()}
    ledgers = {db: Ledger(e, table=TABLE) for db, (e, _) in engines.items()}
    figures: dict[str, dict[str, list[float]]] = {
        db: {"read_all_s": [], "status_s": [], "status_process_s": []} for db in engines
    }
    for repeat in range(repeats):
        order = list(engines) if repeat % 2 == 0 else list(reversed(engines))
        for db in order:
            since = nows[db] - timedelta(seconds=ticks - 1)
            figures[db]["read_all_s"].append(read_all(ledgers[db], since, ticks))
            figures[db]["status_s"].append(status_last_five(ledgers[db], nows[db]))
            figures[db]["status_process_s"].append(status_process(engines[db][1]))
    results: dict[str, Any] = {"ticks": ticks}
    for db in engines:
        ledgers[db].close()
        drop_table(engines[db][0], TABLE)
        results[db] = {key: Spread.of(values).as_dict() for key, values in figures[db].items()}
        spread = {key: Spread.of(values) for key, values in figures[db].items()}
        report.row(
            "7 ledger, one work",
            f"{db}: all {ticks:,} ticks of one work",
            f"{spread['read_all_s'].median:.2f} s ({spread['read_all_s'].low:.2f}-"
            f"{spread['read_all_s'].high:.2f})",
            "",
            "",
            f"status --name big --last 5: {spread['status_s'].median * 1e3:.0f} ms to compute, "
            f"{spread['status_process_s'].median:.2f} s as a process",
        )
    if "postgresql" in engines and report.db != "postgresql":
        mine = Spread.of(figures[report.db]["read_all_s"]).median
        theirs = Spread.of(figures["postgresql"]["read_all_s"]).median
        results["vs_postgresql"] = mine / theirs
        report.row(
            "7 ledger, one work",
            f"{report.db} vs postgresql, same run",
            f"{mine / theirs:.2f}x PostgreSQL's time",
            "",
            "",
            "reading every tick of the work",
        )
        engines["postgresql"][0].dispose()
    report.results["ledger_history"] = results
