"""The batch look's plan does not depend on the planner's statistics.

A table as a busy fleet leaves it (``tests/plans.py``): 200 per-second works,
200 finished rows each from before their grace, 3 due rows each, and
statistics either absent (never analyzed, autovacuum off), stale (gathered
while every row was queued), or unused (PostgreSQL's generic plan of a
prepared statement). Before, each claim per work read 250 to 990 index
entries at M = 100 on PostgreSQL with such statistics, and the first batch
look read every work's due rows along ``(status, tick_at)``. The look of a
worker serving 100 of the works reads one index range per work, bounded by
its floor: its works' due slice, 300 entries, whatever the statistics; not
the history, not the other works' rows, and never the whole table.
"""

from __future__ import annotations

import pytest

from .conftest import Db
from .plans import explain, load, nodes

WORKS, OTHERS, HISTORY, DUE = 100, 100, 200, 3
SLICE = WORKS * DUE
"""The due rows of the works the look names; as many of other works are due too."""


@pytest.mark.parametrize("stats", ["none", "stale", "generic"])
def test_the_look_reads_its_works_due_slice_not_the_history_nor_other_works(
    server_db: Db, stats: str
) -> None:
    db = server_db
    if stats == "generic" and db.name != "postgresql":
        pytest.skip("a prepared statement's generic plan is PostgreSQL's")
    load(db.engine, db.table, WORKS + OTHERS, HISTORY, DUE, "none" if stats == "generic" else stats)
    plan, read = explain(db.engine, db.table, WORKS, 50, generic=stats == "generic")
    if db.name == "postgresql":
        every = nodes(plan)
        assert not [n for n in every if n["Node Type"] == "Seq Scan"], every
        scans = [n for n in every if "Index Name" in n]
        # The pick: one range of the queued rows' index per named work, its due rows only.
        (picked,) = [n for n in scans if n["Index Name"] == f"ix_{db.table}_queued"]
        assert picked["Actual Loops"] == WORKS, picked
        assert picked["Actual Rows"] * picked["Actual Loops"] <= SLICE, picked
        keyed = [n for n in scans if n is not picked]
        # Each candidate found by its key to be locked, then the 50 taken updated by key.
        assert all(n["Index Name"] == f"{db.table}_pkey" for n in keyed), keyed
        assert sum(n["Actual Rows"] * n["Actual Loops"] for n in keyed) <= SLICE + 50
        assert read < 3000  # buffers, the 50 rows' updates and their index entries included
    else:
        (row,) = plan
        assert row["type"] == "range", row
        assert row["key"] == f"ix_{db.table}_status", row
        assert int(row["rows"]) <= SLICE * 1.5
        # Handler reads: a range start per named work, its due rows, the 50 rows' updates.
        assert read <= WORKS + SLICE + 50
