"""Migrations are code: one head, up/down/up on every backend, no drift from the model."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from worksync_sa import downgrade, migrations_path, upgrade
from worksync_sa.models import action_table, pause_table, version_table_for, work_table
from worksync_sa.schema import alembic_config

from .conftest import Backend, fresh_table_name

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def table_name(backend: Backend) -> Iterator[str]:
    """A table name for a migration test; whatever it leaves behind is dropped."""
    name = fresh_table_name()
    yield name
    with backend.engine.begin() as conn:
        for leftover in (f"{name}_actions", f"{name}_pauses", name, version_table_for(name)):
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {leftover}"))  # validated test names


def our_head() -> str:
    """The newest revision of our migrations."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def drift(engine: sa.Engine, metadata: sa.MetaData, *tables: str) -> list[object]:
    """What autogenerate would change to make the database match ``metadata``."""

    def ours(obj: object, name: str | None, type_: str, reflected: bool, other: object) -> bool:
        owner = name if type_ == "table" else getattr(getattr(obj, "table", None), "name", None)
        return owner in tables

    def named(name: str | None, type_: str, parents: object) -> bool:
        # Reflect only these tables: tests on parallel workers drop theirs at any moment.
        return type_ != "table" or name in tables

    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"include_object": ours, "include_name": named, "compare_type": True}
        )
        return list(compare_metadata(context, metadata))


def test_one_head_namespaced_ids_and_a_branch_label() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    assert len(script.get_heads()) == 1
    revisions = list(script.walk_revisions())
    assert all(rev.revision.startswith("worksync_") for rev in revisions)
    (base,) = [rev for rev in revisions if rev.down_revision is None]
    assert base.branch_labels == {"worksync"}


def test_revision_files_use_only_op_and_sa() -> None:
    allowed = {
        "__future__",
        "os",
        "collections.abc",
        "sqlalchemy",
        "alembic",
        "alembic.util",
        "sqlalchemy.dialects",
    }
    for path in sorted((migrations_path() / "versions").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                modules = {node.module or ""}
            else:
                continue
            assert modules <= allowed, f"{path.name} imports {modules - allowed}"


def test_up_down_up_with_no_drift(backend: Backend, table_name: str) -> None:
    engine = backend.engine
    upgrade(engine, table=table_name)
    inspector = sa.inspect(engine)
    assert inspector.has_table(table_name)
    columns = {c["name"] for c in inspector.get_columns(table_name)}
    assert {
        "id",
        "created_at",
        "name",
        "status",
        "sequence",
        "started_at",
        "finished_at",
    } <= columns
    assert drift(engine, work_table(table_name).metadata, table_name) == []

    downgrade(engine, table=table_name)
    assert not sa.inspect(engine).has_table(table_name)

    upgrade(engine, table=table_name)  # index names were really dropped
    assert drift(engine, work_table(table_name).metadata, table_name) == []
    downgrade(engine, table=table_name)


def test_the_operators_tables_come_and_go_with_worksync_0006(
    backend: Backend, table_name: str
) -> None:
    """Expand-only: 0006 adds two tables beside the work table, whose rows it never touches."""
    engine = backend.engine
    upgrade(engine, "worksync_0005", table=table_name)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                f"INSERT INTO {table_name} (name, status, sequence, slot) VALUES ('w', 1, 's', 0)"
            )
        )
    upgrade(engine, table=table_name)
    metadata = sa.MetaData()
    names = (table_name, f"{table_name}_pauses", f"{table_name}_actions")
    for build in (work_table, pause_table, action_table):
        build(table_name, metadata)
    inspector = sa.inspect(engine)
    assert all(inspector.has_table(name) for name in names)
    assert drift(engine, metadata, *names) == []
    downgrade(engine, "worksync_0005", table=table_name)
    inspector = sa.inspect(engine)
    assert not inspector.has_table(names[1])
    assert not inspector.has_table(names[2])
    with engine.connect() as conn:  # the previous head's table, its rows kept
        assert conn.execute(sa.text(f"SELECT name, sequence FROM {table_name}")).all() == [
            ("w", "s")
        ]
    upgrade(engine, table=table_name)
    assert drift(engine, metadata, *names) == []
    downgrade(engine, table=table_name)
    assert not any(sa.inspect(engine).has_table(name) for name in names)


def test_the_drift_check_has_teeth(backend: Backend, table_name: str) -> None:
    upgrade(backend.engine, table=table_name)
    changed = work_table(table_name)
    changed.append_column(sa.Column("extra", sa.Integer()))
    changed.c.token.type = sa.String(64)
    differences = drift(backend.engine, changed.metadata, table_name)
    assert any("extra" in repr(d) for d in differences)
    downgrade(backend.engine, table=table_name)


def test_upgrade_is_recorded_in_a_version_table_of_its_own(
    backend: Backend, table_name: str
) -> None:
    upgrade(backend.engine, table=table_name)
    with backend.engine.connect() as conn:
        versions = conn.execute(sa.text(f"SELECT version_num FROM {version_table_for(table_name)}"))
        assert [v for (v,) in versions] == [our_head()]
    if sa.inspect(backend.engine).has_table("alembic_version"):  # a host's table stays untouched
        with backend.engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT version_num FROM alembic_version")).all()
        assert (our_head(),) not in rows
    downgrade(backend.engine, table=table_name)


def alembic_cli(*args: str, url: str | None, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKSYNC_")}
    if url is not None:
        env["WORKSYNC_DATABASE_URL"] = url
    return subprocess.run(
        [sys.executable, "-m", "alembic", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_alembic_commands_from_the_repository_root(backend: Backend, table_name: str) -> None:
    url = backend.engine.url.render_as_string(hide_password=False)
    for command in (["upgrade", "head"], ["check"], ["downgrade", "base"], ["upgrade", "head"]):
        result = alembic_cli("-x", f"table={table_name}", *command, url=url)
        assert result.returncode == 0, result.stderr
    assert sa.inspect(backend.engine).has_table(table_name)
    downgrade(backend.engine, table=table_name)


def test_alembic_without_a_database_says_what_to_set() -> None:
    result = alembic_cli("upgrade", "head", url=None)
    assert result.returncode != 0
    assert "WORKSYNC_DATABASE_URL" in result.stderr


def test_alembic_refuses_a_bad_table_name() -> None:
    result = alembic_cli("-x", "table=works; DROP TABLE x", "upgrade", "head", url="sqlite://")
    assert result.returncode != 0
    assert "table name" in result.stderr


@pytest.mark.slow
def test_processes_migrating_at_once_take_turns(backend: Backend, table_name: str) -> None:
    """Every pod running `worksync migrate` as it starts: all succeed, one table at head."""
    from . import racers
    from .test_concurrency import run_processes

    reports = run_processes(racers.race_upgrade, [(backend.url, table_name)] * 4, timeout=120)
    assert reports == [True] * 4
    with backend.engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"version_table": version_table_for(table_name)}
        )
        assert context.get_current_revision() == our_head()
    assert drift(backend.engine, work_table(table_name).metadata, table_name) == []


ORIGINAL_DDL = """
create table {table}
(
    id          int auto_increment
        primary key,
    created_at  datetime     null,
    name        varchar(255) null,
    status      int8         null,
    sequence    varchar(255) null,
    started_at  datetime     null,
    finished_at datetime     null
)
"""


def original_table(backend: Backend, table: str) -> None:
    """The table as the Go original's README creates it, with history in it.

    PostgreSQL has no ``datetime`` type and no ``auto_increment``: there it is
    the same table in PostgreSQL's words.
    """
    ddl = ORIGINAL_DDL.format(table=table)  # a generated identifier
    if backend.name == "postgresql":
        ddl = ddl.replace("int auto_increment", "serial").replace("datetime", "timestamp")
    history = [
        ("2026-01-01 09:59:00", "report", 3, "2026-01-01 10:00:00", "2026-01-01 10:00:01"),
        ("2026-01-01 09:59:00", "report", 4, "2026-01-01 10:00:00", "2026-01-01 10:00:02"),
        ("2026-01-01 10:59:00", "Report", 1, "2026-01-01 11:00:00", None),
    ]
    t = sa.table(
        table,
        *(sa.column(c) for c in ("created_at", "name", "status", "sequence", "finished_at")),
    )
    with backend.engine.begin() as conn:
        conn.exec_driver_sql(ddl)
        conn.execute(
            sa.insert(t),
            [
                dict(
                    zip(
                        ("created_at", "name", "status", "sequence", "finished_at"),
                        row,
                        strict=True,
                    )
                )
                for row in history
            ],
        )


def test_the_originals_table_is_adopted_in_place_with_every_row(
    backend: Backend, table_name: str
) -> None:
    original_table(backend, table_name)
    upgrade(backend.engine, table=table_name)
    assert drift(backend.engine, work_table(table_name).metadata, table_name) == []
    t = work_table(table_name)
    with backend.engine.connect() as conn:
        rows = conn.execute(sa.select(t).order_by(t.c.id)).all()
    assert [(r.id, r.name, r.status, r.sequence, r.slot, r.tick_at) for r in rows] == [
        (1, "report", 3, "2026-01-01 10:00:00", None, None),
        (2, "report", 4, "2026-01-01 10:00:00", None, None),
        (3, "Report", 1, "2026-01-01 11:00:00", None, None),  # names stay case-sensitive
    ]
    assert rows[0].created_at.replace(tzinfo=None) == datetime(2026, 1, 1, 9, 59)
    downgrade(backend.engine, table=table_name)


def test_a_table_that_is_neither_ours_nor_the_originals_is_refused_untouched(
    backend: Backend, table_name: str
) -> None:
    with backend.engine.begin() as conn:
        conn.exec_driver_sql(
            f"create table {table_name} (id integer primary key, note varchar(20))"
        )
    with pytest.raises(Exception, match="is not the table of worksync \\(Go\\)"):
        upgrade(backend.engine, table=table_name)
    columns = {c["name"] for c in sa.inspect(backend.engine).get_columns(table_name)}
    assert columns == {"id", "note"}


def test_an_original_row_without_a_name_stops_the_adoption_with_the_fix(
    backend: Backend, table_name: str
) -> None:
    original_table(backend, table_name)
    with backend.engine.begin() as conn:
        conn.exec_driver_sql(f"insert into {table_name} (status) values (1)")
    with pytest.raises(Exception, match="1 row\\(s\\) without a name, status or sequence"):
        upgrade(backend.engine, table=table_name)
