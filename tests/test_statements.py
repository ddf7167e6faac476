"""The statements, compiled per dialect and read as SQL. No database needed.

These pin the shape the design relies on: one guarded UPDATE per claim,
ORDER BY before LIMIT on MySQL, SKIP LOCKED only as an optimisation, inserts
the unique key may refuse, and every value bound as a parameter.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Dialect

from worksync_sa._sql import claims as claim_sql
from worksync_sa._sql.claims import claim_statement
from worksync_sa._sql.dialect import Family
from worksync_sa._sql.schedule import insert_batch
from worksync_sa.models import work_table

TABLE = work_table("jobs")
MYSQL: Dialect = mysql.dialect()
MARIADB: Dialect = mysql.dialect(is_mariadb=True)
POSTGRESQL: Dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
SQLITE: Dialect = sqlite.dialect()
DIALECTS: list[tuple[Family, Dialect]] = [
    ("mysql", MYSQL),
    ("mysql", MARIADB),
    ("postgresql", POSTGRESQL),
    ("sqlite", SQLITE),
]


def sql(statement: Any, dialect: Dialect) -> str:
    return " ".join(str(statement.compile(dialect=dialect)).split())


@pytest.mark.parametrize(("family", "dialect"), DIALECTS[:2])
class TestMySQLClaim:
    def test_is_one_ordered_update_that_hands_back_the_id(
        self, family: Family, dialect: Dialect
    ) -> None:
        text = sql(claim_statement(TABLE, family, due=False), dialect)
        assert text.startswith("UPDATE jobs SET id=last_insert_id(jobs.id), status=%s")
        assert "started_at=utc_timestamp(6)" in text
        assert "WHERE jobs.name = %s AND jobs.sequence = %s AND jobs.status = %s" in text
        assert text.endswith("ORDER BY jobs.slot, jobs.id LIMIT 1")
        assert "SELECT" not in text

    def test_due_claim_orders_by_tick(self, family: Family, dialect: Dialect) -> None:
        text = sql(claim_statement(TABLE, family, due=True), dialect)
        assert "jobs.tick_at <= utc_timestamp(6)" in text
        assert text.endswith("ORDER BY jobs.tick_at, jobs.id LIMIT 1")


def test_postgresql_claim_skips_locked_rows_and_rechecks_status() -> None:
    text = sql(claim_statement(TABLE, "postgresql", due=False), POSTGRESQL)
    assert "FOR UPDATE SKIP LOCKED" in text
    assert "ORDER BY jobs.slot, jobs.id LIMIT" in text
    # The outer guard keeps the claim correct even if the lock clause did nothing.
    # (SQLAlchemy 2.1 casts the bound status; 2.0 does not.)
    assert re.search(r"\) AND jobs\.status = %\(status_\d+\)s(::SMALLINT)? RETURNING", text)
    assert text.endswith(
        "RETURNING jobs.id, jobs.sequence, jobs.lease_seconds, jobs.slot, jobs.tick_at, "
        "jobs.attempts, jobs.started_at"
    )
    assert "started_at=statement_timestamp()" in text


def test_postgresql_bulk_insert_is_one_statement_over_arrays() -> None:
    text = sql(insert_batch(TABLE, "postgresql"), POSTGRESQL)
    assert "FROM unnest(%(name_list)s::VARCHAR(255)[]" in text
    assert "AS batch(name, sequence, slot, tick_at, lease_seconds" in text
    assert "spec, max_run)" in text
    assert text.endswith("ORDER BY batch.name, batch.sequence, batch.slot ON CONFLICT DO NOTHING")


def test_mysql_bulk_insert_is_one_statement_over_json_compared_exactly() -> None:
    text = sql(insert_batch(TABLE, "mysql"), MYSQL)
    assert text.startswith("INSERT IGNORE INTO jobs (created_at, status, name, sequence, slot")
    assert "FROM JSON_TABLE(%s, '$[*]' COLUMNS (" in text
    # Names compare as the table stores them (binary), not in the connection's collation.
    assert "name VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin PATH '$[0]'" in text
    # the batch, the QUEUED status, the surplus and paused markers: all bound
    assert text.count("%s") == 4


@pytest.mark.parametrize(("family", "dialect"), DIALECTS)
def test_a_batch_row_counts_other_programs_rows_against_its_tick(
    family: Family, dialect: Dialect
) -> None:
    """Rows without a slot (the Go original's) use up the tick's budget before our slots."""
    text = sql(insert_batch(TABLE, family), dialect)
    assert re.search(
        r"WHERE .+ \+ \(SELECT count\(\*\) AS count_1 FROM jobs AS held WHERE held\.name = .+ "
        r"AND held\.sequence = .+ AND held\.slot IS NULL AND \(held\.closed_by IS NULL OR "
        r"held\.closed_by != \S+ AND held\.closed_by != \S+\)\) < ",
        text,
    ), text


def test_sqlite_claim_uses_returning_without_lock_clauses() -> None:
    text = sql(claim_statement(TABLE, "sqlite", due=False), SQLITE)
    assert "FOR UPDATE" not in text
    assert text.endswith(
        "RETURNING id, sequence, lease_seconds, slot, tick_at, attempts, started_at"
    )
    assert "started_at=strftime(?, ?)" in text


def test_due_claim_can_bind_an_explicit_now() -> None:
    text = sql(claim_statement(TABLE, "postgresql", due=True, explicit_now=True), POSTGRESQL)
    assert "jobs.tick_at <= %(now)s" in text
    assert "statement_timestamp()" in text  # still stamps started_at by the server clock


@pytest.mark.parametrize(
    ("family", "dialect", "prefix", "suffix"),
    [
        ("mysql", MYSQL, "INSERT IGNORE INTO jobs", "< batch.max_run"),
        ("postgresql", POSTGRESQL, "INSERT INTO jobs", "ON CONFLICT DO NOTHING"),
        ("sqlite", SQLITE, "INSERT INTO jobs", "ON CONFLICT DO NOTHING"),
    ],
)
def test_create_ahead_lets_the_unique_key_refuse_duplicates(
    family: Family, dialect: Dialect, prefix: str, suffix: str
) -> None:
    text = sql(insert_batch(TABLE, family), dialect)
    assert text.startswith(prefix)
    assert text.endswith(suffix)


@pytest.mark.parametrize(("family", "dialect"), DIALECTS)
def test_finish_is_fenced_by_id_token_and_running_status(family: Family, dialect: Dialect) -> None:
    text = sql(claim_sql.finish(TABLE, family), dialect)
    assert re.search(r"WHERE jobs\.id = \S+ AND jobs\.token = \S+ AND jobs\.status = \S+", text)


@pytest.mark.parametrize(("family", "dialect"), DIALECTS)
def test_claim_from_rows_check_is_a_plain_read_by_id_that_takes_no_lock(
    family: Family, dialect: Dialect
) -> None:
    """It must never wait on the row lock of the host's open transaction that claimed it."""
    text = sql(claim_sql.claim_state(TABLE), dialect)
    assert re.fullmatch(
        r"SELECT jobs\.status, jobs\.token, jobs\.attempts FROM jobs WHERE jobs\.id = \S+", text
    )


@pytest.mark.parametrize(("family", "dialect"), DIALECTS)
def test_values_are_bound_never_inlined(family: Family, dialect: Dialect) -> None:
    """Compile with real values: none of them may appear in the SQL text."""
    evil = "x'); DROP TABLE jobs; --"
    statements = [
        (claim_statement(TABLE, family, due=False), {"work_name": evil, "tick_sequence": evil}),
        (claim_statement(TABLE, family, due=True), {"work_name": evil}),
        (claim_sql.finish(TABLE, family), {"claim_token": evil, "error_text": evil}),
    ]
    for statement, params in statements:
        compiled = statement.compile(dialect=dialect)
        assert evil not in str(compiled)
        assert set(params) <= set(compiled.params)


# -- a worker's look: one statement across its works ------------------------------------------

PLACES = "CASE WHEN (jobs.name = {0}) THEN {0} WHEN (jobs.name = {0}) THEN {0} ELSE {0} END"


@pytest.mark.parametrize(("family", "dialect"), DIALECTS[:2])
def test_mysql_look_is_one_ordered_update_with_a_bound_limit_and_no_id_trick(
    family: Family, dialect: Dialect
) -> None:
    text = sql(claim_sql.claim_batch_statement(TABLE, family, (2,)), dialect)
    # One range per named work on (status, name, tick_at), whatever the statistics.
    assert text.startswith("UPDATE jobs FORCE INDEX (ix_jobs_status) SET status=%s")
    assert "last_insert_id" not in text  # the rows are read back by the batch's token
    assert "token=%s" in text
    assert "WHERE jobs.status = %s AND jobs.name IN (%s, %s) AND jobs.tick_at >= " in text
    order = "ORDER BY " + PLACES.format("%s") + ", jobs.tick_at, jobs.slot, jobs.id LIMIT %s"
    assert text.endswith(order)
    read = sql(claim_sql.batch_by_token(TABLE, 2), dialect)
    assert read.endswith("WHERE jobs.status = %s AND jobs.name IN (%s, %s) AND jobs.token = %s")


def test_mariadb_look_is_one_insert_colliding_with_the_rows_it_picked_returning_them() -> None:
    dialect = mysql.dialect(is_mariadb=True)
    dialect.insert_returning = True  # as MariaDB 10.5 and later report on connecting
    text = sql(claim_sql.claim_batch_returning(TABLE, (2,)), dialect)
    assert text.startswith(
        "INSERT INTO jobs (id, name, sequence, status) SELECT chosen.id, chosen.name, "
        "chosen.sequence, chosen.status FROM (SELECT picked.id AS id,"
    )
    assert (
        "FROM jobs AS picked FORCE INDEX (ix_jobs_status) "
        "WHERE picked.status = %s AND picked.name IN (%s, %s) AND "
    ) in text
    order = PLACES.replace("jobs.", "picked.").format("%s")
    assert f"ORDER BY {order}, picked.tick_at, picked.slot, picked.id LIMIT %s FOR UPDATE) " in text
    assert ") AS chosen ON DUPLICATE KEY UPDATE started_at = CASE WHEN (jobs.status = %s)" in text
    claim, returned = text.split(" ON DUPLICATE KEY UPDATE ")[1].split(" RETURNING ")
    assert claim.count("CASE WHEN (jobs.status = %s) THEN") == 9  # every assignment guarded
    assert "token = CASE WHEN (jobs.status = %s) THEN %s ELSE jobs.token END" in claim
    assert claim.endswith("status = CASE WHEN (jobs.status = %s) THEN %s ELSE jobs.status END")
    assert returned == (
        "jobs.name, jobs.token, jobs.id, jobs.sequence, jobs.lease_seconds, jobs.slot, "
        "jobs.tick_at, jobs.attempts, jobs.started_at"
    )
    # A work table named as the pick's aliases gets others: its own name stays unambiguous.
    odd = sql(claim_sql.claim_batch_returning(work_table("picked"), (1,)), dialect)
    assert "FROM picked AS picked_rows FORCE INDEX (ix_picked_status) WHERE" in odd
    odd = sql(claim_sql.claim_batch_returning(work_table("chosen"), (1,)), dialect)
    assert ") AS chosen_rows ON DUPLICATE KEY UPDATE" in odd


def test_mysql_look_gives_each_floor_its_own_range() -> None:
    text = sql(claim_sql.claim_batch_statement(TABLE, "mysql", (1, 2)), MYSQL)
    assert "AND (jobs.name IN (%s) AND jobs.tick_at >= timestampadd(SECOND, -%s, " in text
    assert "OR jobs.name IN (%s, %s) AND jobs.tick_at >= timestampadd(SECOND, -%s, " in text


def test_postgresql_look_picks_once_in_a_materialized_cte_and_rechecks_status() -> None:
    text = sql(claim_sql.claim_batch_statement(TABLE, "postgresql", (2,)), POSTGRESQL)
    assert text.startswith("WITH picked AS MATERIALIZED (SELECT jobs.id AS id FROM jobs WHERE")
    assert re.search(r"LIMIT %\(batch_limit\)s(::INTEGER)? FOR UPDATE SKIP LOCKED\) UPDATE", text)
    assert re.search(r"FROM picked WHERE jobs\.id = picked\.id AND jobs\.status = ", text)
    assert "RETURNING jobs.name, jobs.id, jobs.sequence" in text


def test_sqlite_look_uses_in_and_returning_without_lock_clauses() -> None:
    text = sql(claim_sql.claim_batch_statement(TABLE, "sqlite", (2,)), SQLITE)
    assert "WHERE jobs.id IN (SELECT jobs.id FROM jobs WHERE jobs.status = ?" in text
    assert "FOR UPDATE" not in text
    assert text.endswith(
        "RETURNING name, id, sequence, lease_seconds, slot, tick_at, attempts, started_at"
    )
