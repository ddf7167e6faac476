"""The built wheel carries the migrations, and a host finds them in the installed package."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import sqlalchemy as sa

from .conftest import Installed
from .host_env import alembic, build_host

pytestmark = pytest.mark.slow


@pytest.fixture
def site(installed: Installed) -> Path:
    """The folder the wheel was installed into (built once per session, see conftest)."""
    return installed.site


def test_wheel_carries_migrations_and_type_marker(installed: Installed) -> None:
    names = zipfile.ZipFile(installed.wheel).namelist()
    assert "worksync_sa/migrations/env.py" in names
    assert "worksync_sa/migrations/versions/worksync_0001_create_works.py" in names
    assert "worksync_sa/py.typed" in names


def in_installed(site: Path, code: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(site)}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=site.parent,  # not the checkout, so the source tree cannot shadow the wheel
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip()


def test_installed_package_locates_its_migrations(site: Path) -> None:
    located = in_installed(
        site,
        "import worksync_sa; print(worksync_sa.__file__); print(worksync_sa.migrations_path())",
    ).splitlines()
    assert Path(located[0]).is_relative_to(site)
    migrations = Path(located[1])
    assert migrations == site / "worksync_sa" / "migrations"
    assert (migrations / "versions" / "worksync_0001_create_works.py").is_file()
    resource = in_installed(
        site,
        "from alembic.util import coerce_resource_to_filename as c; "
        "print(c('worksync_sa:migrations/versions'))",
    )
    assert Path(resource) == migrations / "versions"


def test_host_includes_the_installed_migrations_by_package_resource(
    site: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'host.db'}"
    ini = build_host(tmp_path / "host", url, "worksync_sa:migrations/versions")
    result = alembic(ini, "upgrade", "heads", pythonpath=str(site))
    assert result.returncode == 0, result.stderr
    check = alembic(ini, "check", pythonpath=str(site))
    assert check.returncode == 0, check.stderr + check.stdout
    engine = sa.create_engine(url)
    try:
        assert {"customers", "works"} <= set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()
