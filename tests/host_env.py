"""A throwaway host application with its own Alembic environment.

It models one table of its own (``customers``), has one migration of its own,
and adds worksync_sa's migrations through ``version_locations`` exactly as the
host-app guide (docs/guides/host-app.md) tells a host to.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ENV_PY = """
import os

from alembic import context
from sqlalchemy import Column, Integer, MetaData, String, Table, engine_from_config, pool

import worksync_sa

host_metadata = MetaData()
Table(
    "customers",
    host_metadata,
    Column("id", Integer, primary_key=True),
    Column("email", String(200), nullable=False),
)

MODE = os.environ.get("HOST_MODE", "filter")
if MODE == "filter":    # the guide's way: hide our table from the host's autogenerate
    target, include = host_metadata, worksync_sa.include_object
elif MODE == "both":    # the other way: compare both schemas
    target, include = [host_metadata, worksync_sa.metadata], None
else:                   # neither: autogenerate would drop the works table
    target, include = host_metadata, None

config = context.config
engine = engine_from_config(
    config.get_section(config.config_ini_section), prefix="sqlalchemy.", poolclass=pool.NullPool
)
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=target,
        include_object=include,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
"""

HOST_REVISION = '''
"""Host's own table."""
import sqlalchemy as sa
from alembic import op

revision = "host_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "customers",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("email", sa.String(200), nullable=False),
    )


def downgrade():
    op.drop_table("customers")
'''


# A minimal script.py.mako, as `alembic init` writes one, for the host's autogenerate.
SCRIPT_TEMPLATE = '''"""${message}"""
import sqlalchemy as sa
from alembic import op

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}


def upgrade():
    ${upgrades if upgrades else "pass"}


def downgrade():
    ${downgrades if downgrades else "pass"}
'''


def build_host(folder: Path, url: str, worksync_versions: str, *, own: bool = True) -> Path:
    """Write the host app into ``folder``; returns its alembic.ini.

    ``own``: the host already has its first migration (``host_0001``), as an
    existing app does; without it, its history has not started yet.
    """
    versions = folder / "alembic" / "versions"
    versions.mkdir(parents=True)
    (folder / "alembic" / "env.py").write_text(ENV_PY)
    (folder / "alembic" / "script.py.mako").write_text(SCRIPT_TEMPLATE)
    if own:
        (versions / "host_0001_customers.py").write_text(HOST_REVISION)
    ini = folder / "alembic.ini"
    ini.write_text(
        textwrap.dedent(
            f"""\
            [alembic]
            script_location = %(here)s/alembic
            version_locations = %(here)s/alembic/versions {worksync_versions}
            sqlalchemy.url = {url.replace("%", "%%")}
            """
        )
    )
    return ini


def alembic(
    ini: Path,
    *args: str,
    mode: str = "filter",
    pythonpath: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the host's alembic command in a fresh process, as an operator would."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("WORKSYNC_")}
    environment.update(env or {})
    environment["HOST_MODE"] = mode
    if pythonpath is not None:
        environment["PYTHONPATH"] = pythonpath
    return subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(ini), *args],
        cwd=ini.parent,
        env=environment,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
