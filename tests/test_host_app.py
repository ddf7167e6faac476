"""A host app with its own Alembic environment includes our migrations.

One ``alembic upgrade heads`` creates both schemas, and the host's
autogenerate stays clean: with ``include_object`` it never proposes to drop
the works table, and without it, it would.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from worksync_sa import include_object, include_object_for, migrations_path, upgrade, work_table

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


def test_a_table_made_by_worksync_migrate_joins_the_hosts_history_by_a_stamp(
    host_database: str, tmp_path: Path
) -> None:
    """`worksync migrate` first, then our branch added to the host's history (the guide's path)."""
    engine = sa.create_engine(host_database)
    try:
        upgrade(engine)  # what `worksync migrate` does
    finally:
        engine.dispose()
    ini = build_host(tmp_path / "host", host_database, str(migrations_path() / "versions"))
    refused = alembic(ini, "upgrade", "heads")
    assert refused.returncode != 0
    said = refused.stderr + refused.stdout
    assert "already exists" in said
    assert f"alembic stamp {our_head()}" in said  # the one step that fixes it, named exactly
    assert "Traceback" not in refused.stderr or "CommandError" in refused.stderr
    stamped = alembic(ini, "stamp", our_head())
    assert stamped.returncode == 0, stamped.stderr
    upgraded = alembic(ini, "upgrade", "heads")
    assert upgraded.returncode == 0, upgraded.stderr
    checked = alembic(ini, "check")
    assert checked.returncode == 0, checked.stderr + checked.stdout


def test_x_table_names_the_work_table_in_a_hosts_environment(
    host_database: str, tmp_path: Path
) -> None:
    ini = build_host(tmp_path / "host", host_database, str(migrations_path() / "versions"))
    result = alembic(ini, "-x", "table=jobs", "upgrade", "heads")
    assert result.returncode == 0, result.stderr
    engine = sa.create_engine(host_database)
    try:
        assert sa.inspect(engine).has_table("jobs")
        assert not sa.inspect(engine).has_table("works")
        assert {ix["name"] for ix in sa.inspect(engine).get_indexes("jobs")} >= {"ix_jobs_status"}
    finally:
        engine.dispose()
    down = alembic(ini, "-x", "table=jobs", "downgrade", "worksync@base")
    assert down.returncode == 0, down.stderr


@pytest.mark.parametrize("how", ["x", "environment"])
def test_a_bad_table_name_is_refused_however_it_is_given(
    host_database: str, tmp_path: Path, how: str
) -> None:
    ini = build_host(tmp_path / "host", host_database, str(migrations_path() / "versions"))
    bad = "works; DROP TABLE customers"
    if how == "x":
        result = alembic(ini, "-x", f"table={bad}", "upgrade", "heads")
    else:
        result = alembic(ini, "upgrade", "heads", env={"WORKSYNC_TABLE": bad})
    assert result.returncode != 0
    assert "is not allowed" in result.stderr + result.stdout
    engine = sa.create_engine(host_database)
    try:
        assert not sa.inspect(engine).has_table("works")  # nothing of ours was written
    finally:
        engine.dispose()


def test_a_new_apps_first_autogenerate_beside_our_branch(
    host_database: str, tmp_path: Path
) -> None:
    """The host-app guide's exact command for an app whose history starts now."""
    folder = tmp_path / "host"
    ini = build_host(folder, host_database, str(migrations_path() / "versions"), own=False)
    versions = folder / "alembic" / "versions"
    ours = alembic(ini, "upgrade", "heads")  # autogenerate wants the database at every head
    assert ours.returncode == 0, ours.stderr
    made = alembic(
        ini, "revision", "--autogenerate", "-m", "create customers", "--head", "base",
        "--branch-label", "shop", "--version-path", str(versions),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    (first,) = versions.glob("*create_customers.py")
    text = first.read_text()
    assert "create_table('customers'" in text or 'create_table("customers"' in text
    assert "works" not in text  # our table stays out of the host's migration
    upgraded = alembic(ini, "upgrade", "heads")
    assert upgraded.returncode == 0, upgraded.stderr
    checked = alembic(ini, "check")
    assert checked.returncode == 0, checked.stderr + checked.stdout
