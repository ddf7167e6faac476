"""Uncontended claims through the asyncio twin, against the raw async driver.

``AsyncWorkSync.acquire`` on an AsyncEngine (aiomysql, psycopg's async mode,
aiosqlite) beside the same claim statement executed on the async driver's
own connection in autocommit, in alternating chunks on one event loop.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from tests.twins import async_url
from worksync_sa import AsyncWorkSync
from worksync_sa._sql.claims import claim_statement
from worksync_sa._sql.dialect import family_of
from worksync_sa.models import table_named

from .claims import CLAIM_PARAMS, schedule, sequences, show
from .harness import RawStatement, Report, Spread, drop_table, fresh_table, percentile


async def _maybe(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


async def _raw_autocommit(conn: AsyncConnection) -> Any:
    """A cursor on the async driver's own connection, put in autocommit."""
    proxied = await conn.get_raw_connection()
    driver: Any = proxied.driver_connection
    name = conn.dialect.name
    if name in ("mysql", "mariadb"):
        await driver.autocommit(True)
    elif name == "postgresql":
        await driver.set_autocommit(True)
    else:
        await driver.execute("PRAGMA journal_mode=WAL")
        driver.isolation_level = None
    return await _maybe(driver.cursor())


async def _claims(engine: AsyncEngine, table: str, chunk: int, repeats: int) -> dict[str, Any]:
    statement = RawStatement.of(
        claim_statement(table_named(table), family_of(engine.dialect), due=False),
        engine.sync_engine,
        CLAIM_PARAMS,
    )
    raw_conn = await engine.connect()
    cursor = await _raw_autocommit(raw_conn)
    ticks = sequences(chunk * repeats + 200)
    lib_targets, raw_targets = iter(ticks), iter(ticks)
    rates: dict[str, list[float]] = {"library": [], "raw": []}
    latencies: dict[str, list[float]] = {"library": [], "raw": []}
    async with AsyncWorkSync(engine, table=table, keep_alive=False) as sync:

        async def library() -> bool:
            return await sync.acquire("lib", next(lib_targets)) is not None

        async def raw() -> bool:
            merged = {
                **statement.constants,
                "work_name": "raw",
                "tick_sequence": next(raw_targets),
                "claim_token": "r" * 32,
                "worker": "raw",
            }
            args = merged if statement.order is None else tuple(merged[k] for k in statement.order)
            await cursor.execute(statement.sql, args)
            if statement.returns_rows:
                return len(await cursor.fetchall()) == 1
            return int(cursor.rowcount) == 1

        for _ in range(20):  # warm up: lanes open, statements prepared
            assert await library()
            assert await raw()
        for repeat in range(repeats):
            order = ("library", "raw") if repeat % 2 == 0 else ("raw", "library")
            for kind in order:
                claim = library if kind == "library" else raw
                spent = 0.0
                for _ in range(chunk):
                    started = time.perf_counter()
                    won = await claim()
                    took = time.perf_counter() - started
                    assert won, f"{kind} found nothing to claim"
                    spent += took
                    latencies[kind].append(took)
                rates[kind].append(chunk / spent)
    await _maybe(cursor.close())
    await raw_conn.invalidate()  # its autocommit setting must not go back to the pool
    return {
        kind: {
            "claims_per_s": Spread.of(rates[kind]).as_dict(),
            "p50_us": percentile(latencies[kind], 0.5) * 1e6,
            "p99_us": percentile(latencies[kind], 0.99) * 1e6,
        }
        for kind in rates
    }


def async_uncontended(engine: sa.Engine, report: Report, *, quick: bool) -> None:
    chunk, repeats = (300, 3) if quick else (1000, 5)
    table = "bench_async"
    fresh_table(engine, table)
    schedule(engine, table, ["lib", "raw"], chunk * repeats + 1000)

    async def main() -> dict[str, Any]:
        aengine = create_async_engine(async_url(engine.url))
        try:
            return await _claims(aengine, table, chunk, repeats)
        finally:
            await aengine.dispose()

    result = asyncio.run(main())
    drop_table(engine, table)
    report.results["async_uncontended_acquire"] = result
    driver = async_url(engine.url).get_driver_name()
    show(report, "1a asyncio", f"AsyncWorkSync.acquire ({driver})", result)
