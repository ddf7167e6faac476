"""examples/host_app, the README's host application, works with the INSTALLED package.

The wheel is built from this checkout and installed into a folder; the
example is copied elsewhere and every step of its README runs as a
subprocess with only those two on PYTHONPATH, as an operator would run them:
``alembic upgrade heads``, ``alembic check``, ``python -m shop demo``,
``alembic downgrade worksync@base``. Each backend test gets a database of its own.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory

from .conftest import ROOT, Installed

pytestmark = pytest.mark.slow

EXAMPLE = ROOT / "examples" / "host_app"
AT = "2030-01-15T00:00:00+00:00"
"""``demo --at``: the next 02:00 in Berlin after it is 01:00 UTC that day."""
TICK = "2030-01-15 01:00:00"


@dataclass
class App:
    """A copy of the example, run against one database with the installed package."""

    folder: Path
    site: Path
    url: str

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("WORKSYNC_", "SHOP_"))}
        env["PYTHONPATH"] = os.pathsep.join((str(self.site), str(self.folder)))
        env["SHOP_DATABASE_URL"] = self.url
        return env

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *args],
            cwd=self.folder,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    def ok(self, *args: str) -> str:
        """Run, insist on exit status 0, return stdout and stderr together."""
        result = self.run(*args)
        output = result.stdout + result.stderr
        assert result.returncode == 0, f"{' '.join(args)} failed:\n{output}"
        return output

    def alembic(self, *args: str) -> str:
        return self.ok("-m", "alembic", *args)

    def shop(self, *args: str) -> str:
        return self.ok("-m", "shop", *args)

    def query(self, sql: str, **params: object) -> list[tuple[object, ...]]:
        engine = sa.create_engine(self.url)
        try:
            with engine.connect() as conn:
                return [tuple(row) for row in conn.execute(sa.text(sql), params)]
        finally:
            engine.dispose()

    def tables(self) -> set[str]:
        engine = sa.create_engine(self.url)
        try:
            return set(sa.inspect(engine).get_table_names())
        finally:
            engine.dispose()

    def heads(self) -> set[object]:
        return {version for (version,) in self.query("SELECT version_num FROM alembic_version")}

    def worksync_revisions(self) -> list[str]:
        """worksync_sa's revisions as the installed package ships them, newest first."""
        script = ScriptDirectory(str(self.site / "worksync_sa" / "migrations"))
        return [revision.revision for revision in script.walk_revisions()]


def copy_example(dest: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", "*.db", "*.db-*", ".mypy_cache", ".ruff_cache")
    return Path(shutil.copytree(EXAMPLE, dest, ignore=ignore))


@pytest.fixture
def app(installed: Installed, host_database: str, tmp_path: Path) -> App:
    """The example copied out of the checkout, on this test's own database."""
    return App(copy_example(tmp_path / "host_app"), installed.site, host_database)


@pytest.fixture
def sqlite_app(installed: Installed, tmp_path: Path) -> App:
    """The example on SQLite only, for what does not depend on the database."""
    return App(copy_example(tmp_path / "host_app"), installed.site, f"sqlite:///{tmp_path}/shop.db")


def test_the_example_imports_the_installed_package(sqlite_app: App) -> None:
    code = "import shop, worksync_sa; print(worksync_sa.__file__); print(shop.__file__)"
    package, shop = sqlite_app.ok("-c", code).splitlines()
    assert Path(package).is_relative_to(sqlite_app.site)
    assert Path(shop).is_relative_to(sqlite_app.folder)


def test_one_upgrade_creates_both_schemas_and_autogenerate_stays_clean(app: App) -> None:
    app.alembic("upgrade", "heads")
    assert {"customers", "invoices", "works"} <= app.tables()
    assert "works_alembic_version" not in app.tables()  # one version table: the shop's
    assert app.heads() == {"shop_0001", app.worksync_revisions()[0]}
    assert "No new upgrade operations detected" in app.alembic("check")


def test_the_nightly_job_runs_once_per_tick(app: App) -> None:
    app.alembic("upgrade", "heads")

    first = app.shop("demo", "--at", AT)
    assert "1 row(s) created" in first
    assert f"claimed '{TICK}' and sent 1 invoice(s)" in first
    ((status, claimed_by, finished_at, error),) = app.query(
        "SELECT status, claimed_by, finished_at, error FROM works "
        "WHERE name = 'send_invoices' AND sequence = :tick",
        tick=TICK,
    )
    assert (status, error) == (3, None)  # SUCCESS
    assert claimed_by
    assert finished_at is not None
    ((sent_in_tick, sent_at),) = app.query("SELECT sent_in_tick, sent_at FROM invoices")
    assert sent_in_tick == TICK  # the shop's own side effect, in the shop's own table
    assert sent_at is not None

    again = app.shop("demo", "--at", AT)  # another copy of the shop, the same tick
    assert "0 row(s) created" in again
    assert "nothing to claim" in again
    assert app.query("SELECT count(*) FROM works") == [(1,)]
    assert app.query("SELECT sent_in_tick FROM invoices ORDER BY id") == [(TICK,), (None,)]


def test_the_worksync_branch_downgrades_on_its_own(app: App) -> None:
    head, previous = app.worksync_revisions()[:2]
    app.alembic("upgrade", "heads")
    app.alembic("downgrade", "worksync@-1")
    assert app.heads() == {"shop_0001", previous}
    app.alembic("downgrade", "worksync@base")
    assert "works" not in app.tables()
    assert {"customers", "invoices"} <= app.tables()
    assert app.heads() == {"shop_0001"}
    app.alembic("upgrade", "heads")  # and back
    assert app.heads() == {"shop_0001", head}


def test_a_new_shop_revision_follows_the_shop_branch_and_finds_nothing(sqlite_app: App) -> None:
    """The README's command for the host's next migration: it lands in the shop's folder."""
    sqlite_app.alembic("upgrade", "heads")
    sqlite_app.alembic("revision", "--autogenerate", "--head", "shop@head", "-m", "nothing")
    versions = sqlite_app.folder / "migrations" / "versions"
    (new,) = (path for path in versions.glob("*.py") if not path.name.startswith("shop_0001"))
    text = new.read_text()
    assert "down_revision: str | None = 'shop_0001'" in text
    assert "op." not in text  # autogenerate found nothing to do: no drop of the works table


def test_a_split_resource_name_fails_loudly(sqlite_app: App) -> None:
    """With ``path_separator = os`` the resource is cut at ":"; env.py stops the upgrade."""
    ini = sqlite_app.folder / "alembic.ini"
    text = ini.read_text()
    assert "path_separator = newline" in text
    ini.write_text(text.replace("path_separator = newline", "path_separator = os"))
    result = sqlite_app.run("-m", "alembic", "upgrade", "heads")
    assert result.returncode != 0
    assert "worksync_sa's migrations were not found" in result.stderr
    assert "invoices" not in sqlite_app.tables()


def test_serve_runs_until_interrupted(sqlite_app: App) -> None:
    sqlite_app.alembic("upgrade", "heads")
    process = subprocess.Popen(
        [sys.executable, "-m", "shop", "serve"],
        cwd=sqlite_app.folder,
        env=sqlite_app.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("serving"):
                break
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert "stopped" in out
