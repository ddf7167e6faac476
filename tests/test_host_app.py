"""A host app with its own Alembic environment includes our migrations.

One ``alembic upgrade heads`` creates both schemas, and the host's
autogenerate stays clean: with ``include_object`` it never proposes to drop
the works table, and without it, it would.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from worksync_sa import include_object, include_object_for, migrations_path, work_table

from .host_env import alembic, build_host
from .test_migrations import our_head


def test_host_upgrades_both_schemas_and_autogenerate_stays_clean(
    host_database: str, tmp_path: Path
) -> None:
    ini = build_host(tmp_path / "host", host_database, str(migrations_path() / "versions"))
    result = alembic(ini, "upgrade", "heads")
    assert result.returncode == 0, result.stderr

    engine = sa.create_engine(host_database)
    try:
        inspector = sa.inspect(engine)
        assert inspector.has_table("customers")
        assert inspector.has_table("works")
        with engine.connect() as conn:
            heads = {v for (v,) in conn.execute(sa.text("SELECT version_num FROM alembic_version"))}
        assert heads == {"host_0001", our_head()}
    finally:
        engine.dispose()

    clean = alembic(ini, "check", mode="filter")
    assert clean.returncode == 0, clean.stderr + clean.stdout
    both = alembic(ini, "check", mode="both")
    assert both.returncode == 0, both.stderr + both.stdout
    unfiltered = alembic(ini, "check", mode="none")
    assert unfiltered.returncode != 0
    assert "remove_table" in unfiltered.stderr + unfiltered.stdout
    assert "works" in unfiltered.stderr + unfiltered.stdout

    result = alembic(ini, "downgrade", "worksync@base")
    assert result.returncode == 0, result.stderr
    engine = sa.create_engine(host_database)
    try:
        assert not sa.inspect(engine).has_table("works")
        assert sa.inspect(engine).has_table("customers")
    finally:
        engine.dispose()


def test_include_object_hides_only_our_tables() -> None:
    works = work_table("works")
    host = sa.Table("customers", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True))
    assert not include_object(works, "works", "table", True, None)
    assert not include_object(works.c.name, "name", "column", True, None)
    for index in works.indexes:
        assert not include_object(index, index.name, "index", True, None)
    assert not include_object(None, "works_alembic_version", "table", True, None)
    assert include_object(host, "customers", "table", True, None)
    assert include_object(host.c.id, "id", "column", True, None)
    jobs = include_object_for("jobs")
    assert not jobs(work_table("jobs"), "jobs", "table", True, None)
    assert jobs(works, "works", "table", True, None)
