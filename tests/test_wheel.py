"""The built wheel carries the migrations, and a host finds them in the installed package."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import sqlalchemy as sa

from .host_env import alembic, build_host

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the wheel from this checkout and install it (no dependencies) into a folder."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = out.glob("worksync_sa-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "worksync_sa/migrations/env.py" in names
    assert "worksync_sa/migrations/versions/worksync_0001_create_works.py" in names
    assert "worksync_sa/py.typed" in names
    site = out / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return site


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


def test_installed_package_locates_its_migrations(installed: Path) -> None:
    located = in_installed(
        installed,
        "import worksync_sa; print(worksync_sa.__file__); print(worksync_sa.migrations_path())",
    ).splitlines()
    assert Path(located[0]).is_relative_to(installed)
    migrations = Path(located[1])
    assert migrations == installed / "worksync_sa" / "migrations"
    assert (migrations / "versions" / "worksync_0001_create_works.py").is_file()
    resource = in_installed(
        installed,
        "from alembic.util import coerce_resource_to_filename as c; "
        "print(c('worksync_sa:migrations/versions'))",
    )
    assert Path(resource) == migrations / "versions"


def test_host_includes_the_installed_migrations_by_package_resource(
    installed: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'host.db'}"
    ini = build_host(tmp_path / "host", url, "worksync_sa:migrations/versions")
    result = alembic(ini, "upgrade", "heads", pythonpath=str(installed))
    assert result.returncode == 0, result.stderr
    check = alembic(ini, "check", pythonpath=str(installed))
    assert check.returncode == 0, check.stderr + check.stdout
    engine = sa.create_engine(url)
    try:
        assert {"customers", "works"} <= set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()
