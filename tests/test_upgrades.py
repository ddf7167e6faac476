"""Releases and upgrades: expand-only migrations, and a release beside another's schema.

Within a major version every revision after the first only adds (read here
from the revision files themselves), so a release keeps working beside a
table that a newer release migrated: its ``migrate`` does nothing and says
so, its ``check`` passes ("ahead, compatible"), its schedulers and workers
run. A table behind the revision a release needs stops its ``schedule`` and
``work`` at start (exit 1, with the fix) instead of being retried forever.

The slow tests prove it with real processes on every database: head facing
a revision one ahead (made in a copy of the migrations), and the previous
release, taken from git history, upgraded with its rows in place, run beside
head in a rolling deploy, and downgraded back to. Every expected value is
read from the table with plain SQL.
"""

from __future__ import annotations

import ast
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from worksync_sa import (
    SchemaNotReadyError,
    SchemaState,
    downgrade,
    require_schema,
    schema_status,
    upgrade,
)
from worksync_sa.models import version_table_for
from worksync_sa.schema import classify, migrations_path

from . import test_cli
from .conftest import ROOT, Backend, fresh_table_name
from .test_cli import (
    FAST,
    HEAD,
    Running,
    Target,
    environment,
    one_line_error,
    worksync,
    write_config,
)

PREVIOUS_RELEASE = "ac7bb0e"
"""The commit that was released as the first 0.1.0 (schema worksync_0004)."""
PREVIOUS_HEAD = "worksync_0004"


# -- the rule: migrations only add -------------------------------------------------------

NARROWING = frozenset({"alter_column", "rename_table", "drop_column", "drop_table"})
"""Operations that change or remove what an older release reads or writes."""
CONSTRAINING = frozenset(
    {"create_unique_constraint", "create_check_constraint", "create_foreign_key"}
)
"""Operations that may refuse an older release's writes: each needs a reviewed reason."""
REVIEWED = {
    ("worksync_0005", "create_unique_constraint"): "uq_<table>_instant: older releases insert "
    "with INSERT IGNORE / ON CONFLICT DO NOTHING (no conflict target) / INSERT OR IGNORE, "
    "so a row it refuses is skipped like a duplicate, never an error",
}
"""Constraints added after the first revision, and why older releases' writes satisfy them."""


def _called(node: ast.Call) -> str | None:
    return node.func.attr if isinstance(node.func, ast.Attribute) else None


def _root_call(node: ast.expr) -> str | None:
    """``sa.update`` of ``sa.update(t).where(...).values(...)``: the call a chain starts from."""
    while isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        inner = node.func.value
        if not isinstance(inner, ast.Call):
            return ast.unparse(node.func)
        node = inner
    return None


def _keyword(node: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in node.keywords if k.arg == name), None)


def expand_only_violations(source: str, revision: str) -> list[str]:
    """What in a revision's upgrade path (everything but ``downgrade``) does more than add."""
    module = ast.parse(source)
    body = [
        node
        for node in module.body
        if not (isinstance(node, ast.FunctionDef) and node.name == "downgrade")
    ]
    found: list[str] = []
    for node in (n for top in body for n in ast.walk(top)):
        if not isinstance(node, ast.Call):
            continue
        name = _called(node)
        where = f"{revision} line {node.lineno}: {name}"
        if name is None:
            continue
        if name in NARROWING or (name.startswith("drop_") and name != "drop_index"):
            found.append(f"{where} narrows or removes")
        elif name == "drop_index":
            index = ast.unparse(node.args[0]) if node.args else ""
            if not index.startswith(("f'ix_", 'f"ix_', "'ix_", '"ix_')):
                found.append(f"{where} of {index}: only plain ix_ indexes may be dropped")
        elif name == "create_index" and _keyword(node, "unique") is not None:
            found.append(f"{where} unique=...: a unique index is a constraint")
        elif name in CONSTRAINING and (revision, name) not in REVIEWED:
            found.append(f"{where} may refuse an older release's writes")
        elif name == "add_column":
            column = node.args[0] if node.args else None
            ok = isinstance(column, ast.Call) and (
                _keyword(column, "server_default") is not None
                or ast.unparse(_keyword(column, "nullable") or ast.Constant(False)) == "True"
            )
            if not ok:
                found.append(f"{where}: a new column must be nullable=True or have a default")
        elif name == "execute":
            root = _root_call(node.args[0]) if node.args else None
            if root not in ("sa.update", "sa.insert"):
                found.append(f"{where}: only data changes (sa.update/sa.insert) may run")
    return found


def revision_files() -> list[tuple[str, str, str | None]]:
    """(revision, source, down_revision) of every packaged revision file."""
    found = []
    for path in sorted((migrations_path() / "versions").glob("worksync_*.py")):
        source = path.read_text()
        values: dict[str, Any] = {}
        for node in ast.parse(source).body:
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and node.value is not None
                and node.target.id in ("revision", "down_revision")
            ):
                values[node.target.id] = ast.literal_eval(node.value)
        found.append((values["revision"], source, values["down_revision"]))
    return found


def test_every_revision_after_the_first_only_adds() -> None:
    revisions = revision_files()
    assert len(revisions) >= 5
    later = [(rev, source) for rev, source, down in revisions if down is not None]
    assert len(later) == len(revisions) - 1
    problems = [p for rev, source in later for p in expand_only_violations(source, rev)]
    assert problems == []


@pytest.mark.parametrize(
    ("line", "flagged"),
    [
        ("batch.drop_column('spec')", True),
        ("op.drop_table('works')", True),
        ("op.drop_constraint(f'uq_{table}_tick', table)", True),
        ("batch.alter_column('name', type_=sa.String(64))", True),
        ("op.rename_table('works', 'jobs')", True),
        ("op.drop_index(f'uq_{table}_tick', table_name=table)", True),
        ("op.create_index(f'ix_{table}_x', table, ['name'], unique=True)", True),
        ("batch.create_unique_constraint(f'uq_{table}_x', ['name'])", True),
        ("batch.add_column(sa.Column('x', sa.Integer()))", True),
        ("batch.add_column(sa.Column('x', sa.Integer(), nullable=False))", True),
        ("op.execute('ALTER TABLE works DROP COLUMN spec')", True),
        ("batch.add_column(sa.Column('x', sa.Integer(), nullable=True))", False),
        ("batch.add_column(sa.Column('x', sa.Integer(), server_default='0'))", False),
        ("op.create_index(f'ix_{table}_x', table, ['name'])", False),
        ("op.drop_index(f'ix_{table}_x', table_name=table)", False),
        ("op.execute(sa.update(t).where(t.c.id == 1).values(slot=None))", False),
    ],
)
def test_the_expand_only_check_has_teeth(line: str, flagged: bool) -> None:
    source = f"def upgrade() -> None:\n    {line}\n\n\ndef downgrade() -> None:\n    {line}\n"
    assert bool(expand_only_violations(source, "worksync_9999")) is flagged


def test_a_revision_is_placed_by_its_number_alone() -> None:
    known = {"worksync_0001", "worksync_0002", "worksync_0003"}
    head = "worksync_0003"
    assert classify([], head, known) is SchemaState.MISSING
    assert classify(["worksync_0003"], head, known) is SchemaState.CURRENT
    assert classify(["worksync_0001"], head, known) is SchemaState.BEHIND
    assert classify(["worksync_0004"], head, known) is SchemaState.AHEAD
    assert classify(["worksync_0012"], head, known) is SchemaState.AHEAD
    # Not a later worksync_NNNN: another major version's, a host's, or a fork's.
    for foreign in ("worksync_2_0001", "worksync_0002a", "shop_0009", "abc123", "worksync_0000"):
        assert classify([foreign], head, known) is SchemaState.UNKNOWN, foreign
    assert classify(["worksync_0004", "worksync_0005"], head, known) is SchemaState.UNKNOWN


# -- the command line beside a newer and an older schema (cheap: SQLite, MariaDB) --------


def record_revision(engine: sa.Engine, table: str, revision: str) -> None:
    """Write a revision into the version table by hand, as a newer release's migrate would."""
    versions = sa.table(version_table_for(table), sa.column("version_num"))
    with engine.begin() as conn:
        conn.execute(sa.update(versions).values(version_num=revision))


def recorded(engine: sa.Engine, table: str) -> list[str]:
    """The version table's rows, by plain SQL."""
    versions = sa.table(version_table_for(table), sa.column("version_num"))
    with engine.connect() as conn:
        return [str(v) for v in conn.execute(sa.select(versions.c.version_num)).scalars()]


target = test_cli.target  # a SQLite file of the test's own, then MariaDB


def test_migrate_and_check_beside_a_newer_revision(target: Target, tmp_path: Path) -> None:
    upgrade(target.engine, table=target.table)
    record_revision(target.engine, target.table, "worksync_0099")

    migrate = worksync("migrate", *target.args(), cwd=tmp_path)
    assert migrate.returncode == 0, migrate.stderr
    assert "ahead, compatible: at worksync_0099" in migrate.stdout
    assert "nothing to do" in migrate.stdout
    assert recorded(target.engine, target.table) == ["worksync_0099"]

    check = worksync("check", *target.args(), cwd=tmp_path)
    assert check.returncode == 0, check.stdout
    assert "current revision: worksync_0099" in check.stdout
    assert f"head revision:    {HEAD}" in check.stdout
    assert f"is ahead, compatible: at worksync_0099, newer than this release's head {HEAD}" in (
        check.stdout
    )
    status = schema_status(target.engine, table=target.table)
    assert (status.state, status.ready) == (SchemaState.AHEAD, True)
    upgrade(target.engine, table=target.table)  # the library's upgrade: the same no-op
    assert recorded(target.engine, target.table) == ["worksync_0099"]


def test_check_and_migrate_refuse_a_revision_of_another_line(
    target: Target, tmp_path: Path
) -> None:
    upgrade(target.engine, table=target.table)
    record_revision(target.engine, target.table, "worksync_2_0001")
    check = worksync("check", *target.args(), cwd=tmp_path)
    assert check.returncode == 1
    assert "unknown to this worksync_sa and not a later worksync_NNNN" in check.stdout
    migrate = worksync("migrate", *target.args(), cwd=tmp_path)
    assert migrate.returncode == 1
    line = one_line_error(migrate)
    assert "is at revision worksync_2_0001, which this release of worksync_sa does not know" in line
    assert "nothing was changed" in line
    assert recorded(target.engine, target.table) == ["worksync_2_0001"]


def test_schedule_and_work_stop_at_start_on_a_table_behind(target: Target, tmp_path: Path) -> None:
    upgrade(target.engine, PREVIOUS_HEAD, table=target.table)
    config = write_config(tmp_path, FAST)
    (tmp_path / "handlers.py").write_text("def handle(claim):\n    pass\n")
    commands = {
        "schedule": ["schedule", "-c", config],
        "schedule --once": ["schedule", "-c", config, "--once"],
        "work": ["work", "-c", config, "--run", "handlers:handle"],
        "work --once": ["work", "-c", config, "--run", "handlers:handle", "--once"],
    }
    for what, args in commands.items():
        result = worksync(*args, *target.args(), cwd=tmp_path, timeout=30)
        assert result.returncode == 1, (what, result.stderr)
        line = one_line_error(result)
        assert f"is at revision {PREVIOUS_HEAD}, behind {HEAD}" in line, what
        assert "run `worksync migrate`" in line, what
    with pytest.raises(SchemaNotReadyError, match=f"behind {HEAD}.*worksync migrate"):
        require_schema(target.engine, table=target.table)
    with target.engine.connect() as conn:
        assert conn.execute(sa.text(f"SELECT COUNT(*) FROM {target.table}")).scalar() == 0


def test_a_table_without_a_revision_is_ready_when_it_has_every_column(
    target: Target, tmp_path: Path
) -> None:
    target.create()  # create_all, as a host whose own history holds our revisions
    assert schema_status(target.engine, table=target.table).ready
    with target.engine.begin() as conn:  # a host's table one revision behind: no spec
        conn.execute(sa.text(f"ALTER TABLE {target.table} DROP COLUMN spec"))
    status = schema_status(target.engine, table=target.table)
    assert (status.state, status.ready, status.missing_columns) == (
        SchemaState.UNVERSIONED,
        False,
        frozenset({"spec"}),
    )
    config = write_config(tmp_path, FAST)
    result = worksync("schedule", "-c", config, "--once", *target.args(), cwd=tmp_path)
    assert result.returncode == 1
    assert "lacks column(s) spec" in one_line_error(result)


# -- slow: real processes beside a newer schema, and beside the previous release ---------

NEXT_REVISION = '''"""A revision one ahead of this release's head, as a newer release would ship it.

Revision ID: worksync_{number:04d}
Revises: {head}
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "worksync_{number:04d}"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table(op.get_context().opts["worksync_table"]) as batch:
        batch.add_column(sa.Column("note", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table(op.get_context().opts["worksync_table"]) as batch:
        batch.drop_column("note")
'''

HANDLER = "def handle(claim):\n    pass\n"
HOLDING = "import time\n\n\ndef handle(claim):\n    time.sleep(0.3)\n"
"""Holds its runner a moment: a worker that won one slot of a tick cannot take the other
before a second worker looks (head's workers look up to 0.1 s after the tick, spread)."""
MAX_RUN = 2
RUN_SECONDS = 8.0


@pytest.fixture
def table_on(backend: Backend) -> Iterator[Target]:
    """A table name of this test's own on each backend; dropped with its version table."""
    target = Target(backend, fresh_table_name())
    try:
        yield target
    finally:
        target.drop()


def start(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> Running:
    process = subprocess.Popen(
        [sys.executable, "-m", "worksync_sa", *args],
        cwd=cwd,
        env=env if env is not None else environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return Running(process)


def run_fleet(fleet: dict[str, Running], seconds: float) -> None:
    """Wait for every process to start, let them run, stop each with SIGTERM: exit 0, no errors."""
    try:
        for name, running in fleet.items():
            running.wait_for_log("started", timeout=60)
            assert running.process.poll() is None, name
        time.sleep(seconds)
        for name, running in fleet.items():
            code, _ = running.stop(signal.SIGTERM, timeout=30)
            assert code == 0, f"{name} exited {code}:\n{running.err}"
    finally:
        for running in fleet.values():
            running.kill()
    for name, running in fleet.items():
        for bad in (" ERROR ", "Traceback", "retrying with backoff", "SchemaNotReadyError"):
            assert bad not in running.err, f"{name}: {bad!r} in\n{running.err}"


def claims_per_tick(engine: sa.Engine, table: str) -> dict[tuple[str, str], int]:
    """Claimed rows (started) per (work, label), by plain SQL."""
    query = sa.text(
        f"SELECT name, sequence, COUNT(*) FROM {table} "  # a generated test table name
        "WHERE started_at IS NOT NULL GROUP BY name, sequence"
    )
    with engine.connect() as conn:
        return {(str(n), str(s)): int(c) for n, s, c in conn.execute(query)}


def claimers(engine: sa.Engine, table: str) -> set[str]:
    query = sa.text(f"SELECT DISTINCT claimed_by FROM {table} WHERE claimed_by IS NOT NULL")
    with engine.connect() as conn:
        return {str(row[0]) for row in conn.execute(query)}


SNAPSHOT = "id, name, sequence, slot, status, tick_at, started_at, finished_at, claimed_by, token"


def snapshot(engine: sa.Engine, table: str) -> list[tuple[Any, ...]]:
    """Every row's original and claim columns, by plain SQL, in id order."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT {SNAPSHOT} FROM {table} ORDER BY id"))
        return [tuple(row) for row in rows]


@pytest.mark.slow
@pytest.mark.acceptance
def test_head_beside_a_schema_one_revision_ahead(table_on: Target, tmp_path: Path) -> None:
    target, table = table_on, table_on.table
    head_number = int(HEAD.removeprefix("worksync_"))
    ahead = f"worksync_{head_number + 1:04d}"
    # The newer release: our migrations plus one that adds a nullable column.
    migrations = tmp_path / "newer" / "migrations"
    shutil.copytree(migrations_path(), migrations, ignore=shutil.ignore_patterns("__pycache__"))
    (migrations / "versions" / f"{ahead}_note.py").write_text(
        NEXT_REVISION.format(number=head_number + 1, head=HEAD)
    )
    ini = tmp_path / "newer" / "alembic.ini"
    ini.write_text(f"[alembic]\nscript_location = {migrations}\n")
    env = environment(WORKSYNC_DATABASE_URL=target.url)
    alembic = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(ini), "-x", f"table={table}",
         "upgrade", "head"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert alembic.returncode == 0, alembic.stderr
    assert recorded(target.engine, table) == [ahead]
    with target.engine.connect() as conn:  # the newer column is there, and empty
        assert conn.execute(sa.text(f"SELECT COUNT(note) FROM {table}")).scalar() == 0

    migrate = worksync("migrate", *target.args(), cwd=tmp_path)
    assert migrate.returncode == 0, migrate.stderr
    assert f"ahead, compatible: at {ahead}" in migrate.stdout
    assert "nothing to do" in migrate.stdout
    check = worksync("check", *target.args(), cwd=tmp_path)
    assert check.returncode == 0, check.stdout
    assert "ahead, compatible" in check.stdout
    assert recorded(target.engine, table) == [ahead]

    config = write_config(tmp_path, FAST)
    (tmp_path / "handlers.py").write_text(HANDLER)
    work = ["work", "-c", config, "--run", "handlers:handle", *target.args()]
    fleet = {
        "scheduler": start(["schedule", "-c", config, *target.args()], tmp_path),
        "worker 1": start([*work, "--worker-id", "head-1"], tmp_path),
        "worker 2": start([*work, "--worker-id", "head-2"], tmp_path),
    }
    run_fleet(fleet, RUN_SECONDS)

    per_tick = claims_per_tick(target.engine, table)
    assert len(per_tick) >= 3, per_tick  # ticks were created and claimed
    assert max(per_tick.values()) <= MAX_RUN
    assert claimers(target.engine, table) <= {"head-1", "head-2"}
    with target.engine.connect() as conn:
        finished = conn.execute(
            sa.text(f"SELECT COUNT(*) FROM {table} WHERE finished_at IS NOT NULL")
        ).scalar()
        notes = conn.execute(sa.text(f"SELECT COUNT(note) FROM {table}")).scalar()
    assert finished is not None
    assert finished >= 3
    assert notes == 0
    assert recorded(target.engine, table) == [ahead]


@pytest.fixture(scope="module")
def previous_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The source tree of the previous release, from git history (``git archive``).

    An archive rather than ``git worktree add``: the repository's shared
    worktree list is left alone, and a killed run leaves nothing registered.
    """
    known = subprocess.run(
        ["git", "-C", str(ROOT), "cat-file", "-e", f"{PREVIOUS_RELEASE}^{{commit}}"],
        capture_output=True,
        check=False,
    )
    if known.returncode != 0:
        pytest.skip(f"commit {PREVIOUS_RELEASE} is not in this checkout's history")
    folder = tmp_path_factory.mktemp("previous-release")
    archive = folder / "release.tar"
    subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", "-o", str(archive), PREVIOUS_RELEASE],
        check=True,
        capture_output=True,
    )
    source = folder / "src"
    source.mkdir()
    subprocess.run(["tar", "-xf", str(archive), "-C", str(source)], check=True)
    return source


def release_env(source: Path) -> dict[str, str]:
    """A process that imports worksync_sa from ``source`` first (the venv has its dependencies)."""
    return environment(PYTHONPATH=str(source))


def previous(
    source: Path, *args: str, cwd: Path, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return worksync(*args, cwd=cwd, env=release_env(source), timeout=timeout)


@pytest.mark.slow
@pytest.mark.acceptance
def test_the_previous_release_upgraded_in_place_rolled_and_downgraded(
    table_on: Target, previous_release: Path, tmp_path: Path
) -> None:
    target, table = table_on, table_on.table
    engine = target.engine
    where = subprocess.run(
        [sys.executable, "-c", "import worksync_sa; print(worksync_sa.__file__)"],
        cwd=tmp_path, env=release_env(previous_release), capture_output=True, text=True,
        check=True,
    )  # fmt: skip
    assert where.stdout.startswith(str(previous_release)), where.stdout
    config = write_config(tmp_path, FAST)
    (tmp_path / "handlers.py").write_text(HOLDING)

    # The previous release makes the table and some history at its own revision.
    made = previous(previous_release, "migrate", *target.args(), cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert recorded(engine, table) == [PREVIOUS_HEAD]
    planned = previous(previous_release, "schedule", "-c", config, "--once", *target.args(),
                       cwd=tmp_path)  # fmt: skip
    assert planned.returncode == 0, planned.stderr
    time.sleep(3.5)  # the planned ticks fall due
    ran = previous(previous_release, "work", "-c", config, "--run", "handlers:handle",
                   "--once", "--worker-id", "old-0", *target.args(), cwd=tmp_path)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    before = snapshot(engine, table)
    assert len(before) >= 4
    assert sum(1 for row in before if row[7] is not None) >= 2  # finished_at: some ran

    # Head migrates it in place: every row kept as it was.
    migrated = worksync("migrate", *target.args(), cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    assert f"migrated from {PREVIOUS_HEAD} to {HEAD}" in migrated.stdout
    assert recorded(engine, table) == [HEAD]
    assert snapshot(engine, table) == before
    # The previous release did not know the rule yet: its own gate fails beside a newer
    # schema (docs/upgrading.md says so), while its services run, as the fleet shows.
    gate = previous(previous_release, "check", *target.args(), cwd=tmp_path)
    assert gate.returncode == 1
    assert f"{HEAD}, unknown to this worksync_sa" in gate.stdout
    refused = previous(previous_release, "migrate", *target.args(), cwd=tmp_path)
    assert refused.returncode == 1
    assert f"Can't locate revision identified by '{HEAD}'" in refused.stderr
    assert recorded(engine, table) == [HEAD]

    # A rolling deploy: the previous release's scheduler and worker beside head's.
    old_work = ["work", "-c", config, "--run", "handlers:handle", *target.args()]
    old_env = release_env(previous_release)
    fleet = {
        "old scheduler": start(["schedule", "-c", config, *target.args()], tmp_path, old_env),
        "old worker": start([*old_work, "--worker-id", "old-1"], tmp_path, old_env),
        "new scheduler": start(["schedule", "-c", config, *target.args()], tmp_path),
        "new worker": start([*old_work, "--worker-id", "new-1"], tmp_path),
    }
    run_fleet(fleet, RUN_SECONDS)
    per_tick = claims_per_tick(engine, table)
    assert max(per_tick.values()) <= MAX_RUN, per_tick
    assert len(per_tick) >= len({(r[1], r[2]) for r in before}) + 3
    assert {"old-1", "new-1"} <= claimers(engine, table)
    rows = snapshot(engine, table)
    assert rows[: len(before)] == before  # the history from before the upgrade is untouched

    # Down to its revision, with head's library: every row kept, the previous release at home.
    downgrade(engine, PREVIOUS_HEAD, table=table)
    assert recorded(engine, table) == [PREVIOUS_HEAD]
    assert snapshot(engine, table) == rows
    home = previous(previous_release, "check", *target.args(), cwd=tmp_path)
    assert home.returncode == 0, home.stdout
    again = previous(previous_release, "schedule", "-c", config, "--once", *target.args(),
                     cwd=tmp_path)  # fmt: skip
    assert again.returncode == 0, again.stderr
    behind = worksync("schedule", "-c", config, "--once", *target.args(), cwd=tmp_path)
    assert behind.returncode == 1
    assert f"is at revision {PREVIOUS_HEAD}, behind {HEAD}" in one_line_error(behind)
