"""A table as a busy fleet leaves it for the planner: for the batch look's plan tests.

``works`` per-second works, ``history`` finished rows each from before their
grace, and ``due`` queued rows each inside it; statistics stale (gathered
while every row was queued) or absent (never gathered, autovacuum off).
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from benchmarks.harness import bulk_insert, raw_connection, raw_stamp
from worksync_sa._core.claims import DuePlan
from worksync_sa._sql.claims import claim_batch_returning, claim_batch_statement
from worksync_sa._sql.dialect import db_now, family_of, returns_inserted
from worksync_sa.models import WorkStatus, as_utc, table_named, validate_table_name

GRACE = timedelta(hours=1)


def load(engine: sa.Engine, table: str, works: int, history: int, due: int, stats: str) -> None:
    """Rows as above; ``stats`` is "stale" or "none"."""
    with engine.connect() as conn:
        now = as_utc(conn.execute(sa.select(db_now(family_of(engine.dialect)))).scalar_one())
    rows = []
    for w in range(works):
        moments = [now - GRACE - timedelta(seconds=60 + n) for n in range(history)]
        moments += [now - timedelta(seconds=n) for n in range(due)]
        rows += [
            {
                "name": f"w{w:03d}",
                "status": WorkStatus.QUEUED.value,
                "sequence": f"s{n:09d}",
                "slot": 0,
                "tick_at": moment,
                "grace_seconds": int(GRACE.total_seconds()),
                "lease_seconds": 60,
            }
            for n, moment in enumerate(moments)
        ]
    preparer = engine.dialect.identifier_preparer
    name = preparer.quote(validate_table_name(table))  # validated, then quoted
    raw = raw_connection(engine)
    cursor = raw.cursor()
    if engine.dialect.name == "postgresql":
        cursor.execute(f"ALTER TABLE {name} SET (autovacuum_enabled = off)")
    bulk_insert(engine, table, rows)  # on a connection of its own
    if stats == "stale":
        cursor.execute(
            f"ANALYZE {name}" if engine.dialect.name == "postgresql" else f"ANALYZE TABLE {name}"
        )
        if engine.dialect.name != "postgresql":
            cursor.fetchall()
    cursor.execute("BEGIN")
    t = table_named(table)
    finish = (
        sa.update(t)
        .where(t.c.tick_at < sa.bindparam("cut"))
        .values(status=WorkStatus.SUCCESS.value)
    )
    compiled = finish.compile(dialect=engine.dialect)
    params = dict(compiled.construct_params({"cut": raw_stamp(engine, now - GRACE)}))
    cursor.execute(
        compiled.string,
        params if compiled.positiontup is None else tuple(params[k] for k in compiled.positiontup),
    )
    cursor.execute("COMMIT")
    raw.close()


def batch(
    engine: sa.Engine, table: str, works: int, limit: int, returning: bool | None = None
) -> tuple[str, Any]:
    """The batch look's SQL for ``works`` works with an hour's grace, and its parameters.

    The look the worker makes on ``engine``: on MariaDB the ``INSERT ...
    RETURNING`` form unless ``returning`` is False (MySQL's ``UPDATE ... LIMIT``).
    """
    family = family_of(engine.dialect)
    plan = DuePlan.of({f"w{w:03d}": GRACE for w in range(works)})
    if returning is None:
        engine.connect().close()  # the dialect learns the server's version on connecting
        returning = family == "mysql" and returns_inserted(engine.dialect)
    look: Any = (
        claim_batch_returning(table_named(table), plan.shape)
        if returning
        else claim_batch_statement(table_named(table), family, plan.shape)
    )
    compiled = look.compile(dialect=engine.dialect)
    given: dict[str, Any] = {"claim_token": "x" * 32, "worker": "probe", "batch_limit": limit}
    for g, (floor, names) in enumerate(plan.groups):
        given[f"floor_{g}"] = floor
        for i, work in enumerate(names):
            given[f"work_{g}_{i}"] = work
            given[f"rank_{g}_{i}"] = i
    params = dict(compiled.construct_params(given))
    if compiled.positiontup is not None:
        return compiled.string, tuple(params[k] for k in compiled.positiontup)
    return compiled.string, params


def explain(
    engine: sa.Engine, table: str, works: int, limit: int, returning: bool | None = None
) -> tuple[Any, int]:
    """The batch look's plan (PostgreSQL: JSON; MySQL/MariaDB: EXPLAIN's rows) and what it read.

    What it read: PostgreSQL's buffers, MySQL/MariaDB's handler reads; run and rolled back.
    ``returning``: which MySQL-family look, as ``batch`` takes it.
    """
    sql, params = batch(engine, table, works, limit, returning)
    raw = raw_connection(engine)
    cursor = raw.cursor()
    try:
        if engine.dialect.name == "postgresql":
            cursor.execute("BEGIN")
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, params)
            plan = cursor.fetchone()[0]
            top = (plan if isinstance(plan, list) else json.loads(plan))[0]["Plan"]
            return top, top["Shared Hit Blocks"] + top["Shared Read Blocks"]
        cursor.execute("EXPLAIN " + sql, params)
        columns = [d[0] for d in cursor.description]
        shown = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
        cursor.execute("FLUSH STATUS")
        cursor.execute("BEGIN")
        cursor.execute(sql, params)
        cursor.execute("SHOW SESSION STATUS LIKE 'Handler_read%'")
        return shown, sum(int(value) for _, value in cursor.fetchall())
    finally:
        cursor.execute("ROLLBACK")
        raw.close()


def nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Every node of a PostgreSQL plan, depth first."""
    found = [plan]
    for child in plan.get("Plans", []):
        found.extend(nodes(child))
    return found
