"""The batch look's plan does not depend on the planner's statistics.

A table as a busy fleet leaves it (``tests/plans.py``): 100 per-second works,
200 finished rows each from before their grace, 3 due rows each, and
statistics either absent (never analyzed, autovacuum off) or stale (gathered
while every row was queued). Before, each claim per work read 250 to 990
index entries at M = 100 on PostgreSQL with such statistics. The look of
a worker serving all 100 works reads an index range bounded by the floor:
the due slice, 300 entries, whatever the statistics, and never scans the
table.
"""

from __future__ import annotations

import pytest

from .conftest import Db
from .plans import explain, load, nodes

WORKS, HISTORY, DUE = 100, 200, 3
SLICE = WORKS * DUE
RANGES = ("ix_{}_status", "ix_{}_overdue")
"""The indexes that start with the status and hold a work's rows in tick order."""


@pytest.mark.parametrize("neighbours", [0, WORKS], ids=["alone", "beside another service"])
@pytest.mark.parametrize("look", ["own", "mysql update"])
@pytest.mark.parametrize("stats", ["none", "stale"])
def test_the_look_reads_the_due_slice_not_the_history(
    server_db: Db, stats: str, look: str, neighbours: int, request: pytest.FixtureRequest
) -> None:
    """Each database's own look; on MariaDB also MySQL's ``UPDATE ... LIMIT``.

    ``neighbours``: works of another service in the same table, as many with
    as many due rows, which the look does not name.
    """
    db = server_db
    if look != "own" and db.name != "mysql":
        pytest.skip("MySQL's look is MySQL's")
    if db.name == "postgresql" and neighbours and stats == "stale":
        # Statistics gathered while every row was queued make (status, tick_at) look as
        # good as (status, name, tick_at): the pick then also reads the other service's
        # due rows (never the history). PostgreSQL takes no index hint. Known, left open.
        reason = "PostgreSQL's pick may read other works' due rows with stale statistics"
        request.applymarker(pytest.mark.xfail(reason=reason))
    load(db.engine, db.table, WORKS + neighbours, HISTORY, DUE, stats)
    returning = None if look == "own" else False
    plan, read = explain(db.engine, db.table, WORKS, 50, returning)
    ranges = {name.format(db.table) for name in RANGES}
    if db.name == "postgresql":
        every = nodes(plan)
        assert not [n for n in every if n["Node Type"] == "Seq Scan"], every
        scans = [n for n in every if "Index Name" in n]
        picked = [n for n in scans if n["Index Name"] in ranges]
        assert len(picked) == 1, scans  # the pick: one index range over the due rows
        assert picked[0]["Actual Rows"] <= SLICE
        keyed = [n for n in scans if n["Index Name"] not in ranges]
        # Each picked row found again by its key: at most the limit, one per loop.
        assert all(n["Index Name"] == f"{db.table}_pkey" for n in keyed), keyed
        assert sum(n["Actual Rows"] * n["Actual Loops"] for n in keyed) <= 50
        assert read < 3000  # buffers, the 50 rows' updates and their index entries included
    else:
        (row,) = [row for row in plan if row["table"] != "<derived2>"]
        assert row["type"] == "range", row
        assert row["key"] in ranges, row
        assert int(row["rows"]) <= SLICE * 1.5
        assert row["key"] == f"ix_{db.table}_status", row  # forced: one range per named work
        # Handler reads: a lookup per named work's range and the due rows in it (never
        # the other service's), then per taken row its update, and on MariaDB (its
        # INSERT ... SELECT) also its pass through the temporary table and its key.
        taken = 3 * 50 if look == "own" else 50
        assert read <= WORKS + SLICE + taken + 10
