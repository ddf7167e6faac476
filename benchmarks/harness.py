"""What every benchmark shares: targets, raw driver baselines, statistics, tables.

The baseline of every figure is the same statement the library sends, compiled
from the library's own Core statement, issued through the raw DB-API driver on
one held autocommit connection. The library and the baseline are measured in
the same run, interleaved chunk by chunk, so a noisy neighbour hurts both.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from worksync_sa import create_engine
from worksync_sa.models import (
    action_table,
    pause_table,
    table_named,
    validate_table_name,
    work_table,
)

RESULTS = Path(__file__).resolve().parent / "results"
SERVERS = {
    "mariadb": "mysql+mysqldb://root@127.0.0.1:3306/test?charset=utf8mb4",
    "mysql": "mysql+mysqldb://root@127.0.0.1:3306/test?charset=utf8mb4",
    "postgresql": "postgresql+psycopg://postgres@127.0.0.1:5432/test",
}


def resolve_url(target: str | None) -> str:
    """A URL from ``--db``: a full URL, or one of mariadb, mysql, postgresql, sqlite."""
    if target is None or target in SERVERS:
        return SERVERS[target or "mariadb"]
    if target == "sqlite":
        folder = Path(tempfile.mkdtemp(prefix="worksync-bench-"))
        return f"sqlite:///{folder / 'bench.db'}"
    return target


def label_of(engine: sa.Engine) -> str:
    """mariadb, mysql, postgresql or sqlite: the results file's name."""
    with engine.connect():  # the dialect learns the server (MariaDB or MySQL) on connect
        pass
    if engine.dialect.name in ("mysql", "mariadb"):
        return "mariadb" if getattr(engine.dialect, "is_mariadb", False) else "mysql"
    return engine.dialect.name


def bench_engine(url: str) -> sa.Engine:
    """The engine the library runs on: the package's own defaults."""
    return create_engine(url)


def raw_connection(engine: sa.Engine) -> Any:
    """A DB-API connection made the way SQLAlchemy would make it, in autocommit."""
    dialect = engine.dialect
    cargs, cparams = dialect.create_connect_args(engine.url)
    conn = dialect.loaded_dbapi.connect(*cargs, **cparams)
    if dialect.name in ("mysql", "mariadb"):
        conn.autocommit(True)
    elif dialect.name == "postgresql":
        conn.autocommit = True
    else:
        conn.isolation_level = None
        conn.execute("PRAGMA journal_mode=WAL")
    return conn


@dataclass
class RawStatement:
    """A library statement compiled for one dialect, run on a raw cursor."""

    sql: str
    constants: dict[str, Any]
    order: tuple[str, ...] | None
    returns_rows: bool

    @classmethod
    def of(cls, statement: Any, engine: sa.Engine, required: Iterable[str]) -> RawStatement:
        compiled = statement.compile(dialect=engine.dialect)
        names = list(required)
        constants = dict(compiled.construct_params(dict.fromkeys(names)))
        for name in names:
            constants.pop(name, None)
        order = compiled.positiontup
        return cls(
            compiled.string,
            constants,
            tuple(order) if order is not None else None,
            bool(compiled.returning),
        )

    def run(self, cursor: Any, params: dict[str, Any]) -> int:
        """Execute; returns the number of rows claimed (0 or 1)."""
        merged = {**self.constants, **params}
        args = merged if self.order is None else tuple(merged[k] for k in self.order)
        cursor.execute(self.sql, args)
        if self.returns_rows:
            return len(cursor.fetchall())
        return int(cursor.rowcount)


def bulk_insert(engine: sa.Engine, table: str, rows: list[dict[str, Any]]) -> None:
    """Work-table rows (dicts of the same columns, ``tick_at`` aware UTC) through the raw driver.

    In transactions of 20,000 rows: the loaders' tables are large, and
    SQLAlchemy's own insert would make the loading, not the benchmark, the run.
    """
    if not rows:
        return
    columns = list(rows[0])
    insert = (
        sa.insert(table_named(table))
        .values({c: sa.bindparam(c) for c in columns})
        .compile(dialect=engine.dialect)
    )
    order = insert.positiontup
    prepared = []
    for row in rows:
        values = {**row, "tick_at": raw_stamp(engine, row["tick_at"])} if "tick_at" in row else row
        prepared.append(values if order is None else tuple(values[k] for k in order))
    raw = raw_connection(engine)
    cursor = raw.cursor()
    for first in range(0, len(prepared), 20_000):
        cursor.execute("BEGIN")
        cursor.executemany(insert.string, prepared[first : first + 20_000])
        cursor.execute("COMMIT")
    raw.close()


def raw_stamp(engine: sa.Engine, moment: datetime) -> Any:
    """An aware UTC ``moment`` as the raw driver stores it in a work table's datetime columns.

    For loaders that insert through the DB-API cursor: PostgreSQL takes the aware
    value, MySQL a naive UTC one, and SQLite the text SQLAlchemy writes.
    """
    if engine.dialect.name == "postgresql":
        return moment
    naive = moment.replace(tzinfo=None)
    if engine.dialect.name == "sqlite":
        return naive.isoformat(sep=" ", timespec="microseconds")
    return naive


def analyze(engine: sa.Engine, table: str) -> None:
    """Fresh planner statistics for ``table`` after a bulk load, as a DBA would gather them."""
    preparer, name = engine.dialect.identifier_preparer, validate_table_name(table)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("VACUUM ANALYZE " + preparer.quote(name))
        elif engine.dialect.name == "sqlite":
            conn.exec_driver_sql("ANALYZE")
        else:
            conn.exec_driver_sql("ANALYZE TABLE " + preparer.quote(name))


def fresh_table(engine: sa.Engine, name: str, *, companions: bool = False) -> sa.Table:
    """Drop and create a benchmark table (the same DDL the migrations make).

    ``companions``: its pauses and actions tables too, as the migrations make
    them, for a benchmark of the scheduler's passes (each pass reads the pauses).
    """
    drop_table(engine, name)
    table = work_table(name)
    table.create(engine)
    if companions:
        pause_table(name).create(engine)
        action_table(name).create(engine)
    return table


def drop_table(engine: sa.Engine, name: str) -> None:
    for table in (action_table(name), pause_table(name), work_table(name)):
        table.drop(engine, checkfirst=True)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1), nearest rank; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Spread:
    """A figure over repeats: its median and the range it moved in."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(statistics.median(values), min(values), max(values))

    def show(self) -> str:
        return f"{self.median:,.0f} ({self.low:,.0f}-{self.high:,.0f})"

    def as_dict(self) -> dict[str, float]:
        return {"median": self.median, "low": self.low, "high": self.high}


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of one call."""
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


@dataclass
class Report:
    """Rows for the printed table and the JSON results of one run."""

    db: str
    quick: bool
    rows: list[tuple[str, ...]] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)

    def row(
        self, benchmark: str, case: str, library: str, raw: str, ratio: str, note: str = ""
    ) -> None:
        self.rows.append((benchmark, case, library, raw, ratio, note))

    def print(self) -> None:
        header = ("benchmark", "case", "library", "raw", "lib/raw", "notes")
        lines = [header, *self.rows]
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        rule = "  ".join("-" * w for w in widths)
        print(rule)
        for n, line in enumerate(lines):
            print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
            if n == 0:
                print(rule)
        print(rule)

    def save(self, engine: sa.Engine, *, merge: bool = False) -> Path:
        """Write the run's JSON; ``merge`` keeps an earlier run's other benchmarks.

        A partial run (``--only``) merges, so re-measuring one benchmark does not
        throw away the rest of the last full run that the report is built from.
        """
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"{self.db}{'-quick' if self.quick else ''}.json"
        results, rows = dict(self.results), [list(r) for r in self.rows]
        if merge and path.exists():
            earlier = json.loads(path.read_text())
            redone = {row[0] for row in rows}
            rows = sorted(
                [row for row in earlier["table"] if row[0] not in redone] + rows,
                key=lambda row: row[0],
            )
            seconds = earlier["benchmarks"].get("seconds", 0) + results.get("seconds", 0)
            results = {**earlier["benchmarks"], **results, "seconds": round(seconds, 1)}
        with engine.connect() as conn:
            version = str(conn.dialect.server_version_info or "")
        document = {
            "db": self.db,
            "server_version": version,
            "quick": self.quick,
            "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "sqlalchemy": sa.__version__,
            },
            "benchmarks": results,
            "table": rows,
        }
        path.write_text(json.dumps(document, indent=2) + "\n")
        return path


def ratio(library: float, raw: float) -> str:
    return f"{library / raw:.2f}x" if raw else "-"
