"""Which way a repository's statement goes (``_sql.direct``), decided from the statement alone.

Compiled per dialect, no server: the direct path is for single writes whose
SQL is final at compile time; everything else goes through SQLAlchemy.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite

from worksync_sa._sql.claims import claim_statement, finish
from worksync_sa._sql.direct import ISOLATION, Compiled, Outcome, isolation_sql
from worksync_sa._sql.maintenance import delete_finished
from worksync_sa._sql.schedule import insert_batch
from worksync_sa.models import table_named

TABLE = table_named("works")
DIALECTS: dict[str, sa.Dialect] = {
    "mysql": mysql.dialect(),
    "postgresql": postgresql.dialect(),  # type: ignore[no-untyped-call]
    "sqlite": sqlite.dialect(),
}


@pytest.mark.parametrize("family", sorted(DIALECTS))
def test_claims_and_finishes_take_the_direct_path(family: str) -> None:
    dialect = DIALECTS[family]
    assert Compiled.of(claim_statement(TABLE, family, due=False), dialect).direct  # type: ignore[arg-type]
    assert Compiled.of(finish(TABLE, family), dialect).direct  # type: ignore[arg-type]


@pytest.mark.parametrize("family", sorted(DIALECTS))
def test_an_in_list_goes_through_sqlalchemy(family: str) -> None:
    """``IN :ids`` is expanded per call (post-compile): a compiled string cannot hold it."""
    assert not Compiled.of(delete_finished(TABLE, family), DIALECTS[family]).direct  # type: ignore[arg-type]


@pytest.mark.parametrize("family", sorted(DIALECTS))
def test_reads_go_through_sqlalchemy(family: str) -> None:
    read = sa.select(TABLE.c.id).where(TABLE.c.name == sa.bindparam("name"))
    assert not Compiled.of(read, DIALECTS[family]).direct


def test_the_batch_insert_asks_for_repeatable_read_on_mysql_only() -> None:
    """The count of another program's rows must be a locking read whatever the server default."""
    assert isolation_sql(insert_batch(TABLE, "mysql")) == (
        "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"
    )
    compiled = Compiled.of(insert_batch(TABLE, "mysql"), DIALECTS["mysql"])
    assert compiled.direct
    assert compiled.isolation == isolation_sql(insert_batch(TABLE, "mysql"))
    assert isolation_sql(insert_batch(TABLE, "sqlite")) is None
    assert isolation_sql(insert_batch(TABLE, "postgresql")) is None
    # PostgreSQL binds one array per column through SQLAlchemy's ARRAY type.
    assert not Compiled.of(insert_batch(TABLE, "postgresql"), DIALECTS["postgresql"]).direct


def test_an_isolation_level_is_one_of_the_four_or_refused() -> None:
    """It becomes SQL text, so nothing but the standard's four names may pass."""
    statement = sa.update(TABLE).values(status=1)
    with pytest.raises(ValueError, match="unknown isolation level"):
        isolation_sql(statement.execution_options(**{ISOLATION: "READ COMMITTED; DROP TABLE x"}))
    assert isolation_sql(statement.execution_options(**{ISOLATION: "SERIALIZABLE"})) == (
        "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"
    )


def test_an_outcome_reads_as_a_result_does() -> None:
    one = Outcome(1, None, [(7, "a")])
    none = Outcome(0, None, [])
    two = Outcome(2, None, [(1, "a"), (2, "b")])
    assert one.one() == (7, "a")
    assert one.scalar_one() == 7
    assert one.first() == (7, "a")
    assert none.first() is None
    assert none.one_or_none() is None
    assert none.scalar_one_or_none() is None
    assert two.scalars() == [1, 2]
    with pytest.raises(sa.exc.NoResultFound):
        none.one()
    with pytest.raises(sa.exc.MultipleResultsFound):
        two.one_or_none()
