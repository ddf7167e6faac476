"""The examples work with the INSTALLED package.

The wheel is built from this checkout and installed into a folder; each
example is copied elsewhere and run as subprocesses with only those two on
PYTHONPATH, as an operator would run them. examples/host_app, the application of
the host-app guide (docs/guides/host-app.md): ``alembic upgrade heads``, ``alembic
check``, ``python -m shop demo``, ``alembic downgrade worksync@base``.
examples/async_worker, the asyncio service: two copies at once, through aiosqlite,
aiomysql and psycopg. Each backend test gets a database of its own.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory

from worksync_sa import WorkStatus

from .conftest import ROOT, Backend, Installed
from .twins import async_url

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


def copy_example(dest: Path, example: Path = EXAMPLE) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", "*.db", "*.db-*", ".mypy_cache", ".ruff_cache")
    return Path(shutil.copytree(example, dest, ignore=ignore))


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
    assert (status, error) == (WorkStatus.SUCCESS, None)
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
    """The host-app guide's command for the next migration: it lands in the shop's folder."""
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


# examples/async_worker ------------------------------------------------------------------

ASYNC_EXAMPLE = ROOT / "examples" / "async_worker"
MAX_RUN = {"heartbeat_report": 1, "refresh_shard": 2}
"""The example's works (async_app/jobs.py), both ``@every 2s``."""
SERVING = re.compile(r"^serving as (\S+)$", re.MULTILINE)
RAN = re.compile(r"^ran (\S+) for tick (.+)$", re.MULTILINE)
QUEUED, SUCCESS = WorkStatus.QUEUED, WorkStatus.SUCCESS


@dataclass
class AsyncApp(App):
    """A copy of examples/async_worker: ``url`` is for the test's reads, ``async_url`` the app's."""

    async_url: str = ""

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("WORKSYNC_", "ASYNC_APP_"))}
        env["PYTHONPATH"] = os.pathsep.join((str(self.site), str(self.folder)))
        env["ASYNC_APP_DATABASE_URL"] = self.async_url
        return env

    def start(self, name: str, *args: str) -> Copy:
        """Start ``python -m async_app ARGS`` in the background, its output in files."""
        out, err = (self.folder.parent / f"{name}.{kind}" for kind in ("out", "err"))
        with out.open("w") as stdout, err.open("w") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", "async_app", *args],
                cwd=self.folder,
                env=self.env(),
                stdout=stdout,
                stderr=stderr,
                text=True,
            )
        return Copy(name, process, out, err)


@dataclass
class Copy:
    """One running copy of the async app."""

    name: str
    process: subprocess.Popen[str]
    out: Path
    err: Path

    def stdout(self) -> str:
        return self.out.read_text()

    def stderr(self) -> str:
        return self.err.read_text()

    def worker_id(self, timeout: float = 60) -> str:
        """Wait until the copy serves (its lifespan has started); its worker id."""
        deadline = time.monotonic() + timeout
        while (found := SERVING.search(self.stdout())) is None:
            assert self.process.poll() is None, f"copy {self.name} exited:\n{self.stderr()}"
            assert time.monotonic() < deadline, f"copy {self.name} is not serving"
            time.sleep(0.05)
        return found.group(1)

    def finished(self, timeout: float = 60) -> str:
        """Wait for the exit; insist on status 0 and a clean stderr; return stdout."""
        returncode = self.process.wait(timeout)
        stderr = self.stderr()
        assert returncode == 0, f"copy {self.name} exited {returncode}:\n{stderr}"
        assert "Traceback" not in stderr, stderr
        assert "stopped:" in self.stdout()
        return self.stdout()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def copy_async_example(installed: Installed, dest: Path, url: str) -> AsyncApp:
    """The example copied out of the checkout, to run on ``url`` through its async driver."""
    folder = copy_example(dest / "async_worker", ASYNC_EXAMPLE)
    through = async_url(url).render_as_string(hide_password=False)
    return AsyncApp(folder, installed.site, url, through)


@pytest.fixture
def async_app(
    installed: Installed, backend: Backend, host_database: str, tmp_path: Path
) -> AsyncApp:
    """The async example on a database of its own, through the backend's asyncio driver."""
    return copy_async_example(installed, tmp_path, host_database)


@pytest.fixture
def sqlite_async_app(installed: Installed, tmp_path: Path) -> AsyncApp:
    """The async example on a SQLite file, for what does not depend on the database."""
    url = f"sqlite:///{tmp_path / 'async-app.db'}"
    return copy_async_example(installed, tmp_path, url)


def test_the_async_example_imports_the_installed_package(sqlite_async_app: AsyncApp) -> None:
    code = "import async_app, worksync_sa; print(worksync_sa.__file__); print(async_app.__file__)"
    package, app = sqlite_async_app.ok("-c", code).splitlines()
    assert Path(package).is_relative_to(sqlite_async_app.site)
    assert Path(app).is_relative_to(sqlite_async_app.folder)


def test_the_async_app_fails_to_start_without_its_tables(sqlite_async_app: AsyncApp) -> None:
    """The lifespan's first scheduler pass fails the startup, not a background loop."""
    code = (
        "import asyncio\n"
        "from async_app.app import lifespan\n"
        "async def main():\n"
        "    async with lifespan(None):\n"
        "        raise AssertionError('served without tables')\n"
        "asyncio.run(main())\n"
    )
    result = sqlite_async_app.run("-c", code)
    assert result.returncode != 0
    assert "SchemaNotReadyError: table 'works' is missing" in result.stderr
    assert "served without tables" not in result.stderr


def test_two_async_copies_run_each_tick_at_most_max_run_times(async_app: AsyncApp) -> None:
    """Two copies serve at once for ~5 s; the tables show at most max_run runs per tick.

    Copy A stops when its --seconds run out, copy B at SIGTERM (after A): both
    shut down cleanly, and every job a copy reports is a SUCCESS row of the
    works table claimed by that copy and a row of the app's own job_runs.
    """
    assert "tables ready" in async_app.ok("-m", "async_app", "--migrate-only")  # the deploy step
    assert {"works", "job_runs"} <= async_app.tables()

    a = async_app.start("a", "--seconds", "5")
    b = async_app.start("b")  # until a signal, like a server
    try:
        worker_a, worker_b = a.worker_id(), b.worker_id()
        assert worker_a != worker_b
        out_a = a.finished()
        b.process.send_signal(signal.SIGTERM)  # what a service manager sends
        out_b = b.finished()
    finally:
        a.kill()
        b.kill()

    rows = [
        (str(name), str(sequence), status, str(claimed_by))
        for name, sequence, status, claimed_by in async_app.query(
            "SELECT name, sequence, status, claimed_by FROM works"
        )
    ]
    per_tick = Counter((name, sequence) for name, sequence, _, _ in rows)
    assert set(MAX_RUN) == {name for name, _ in per_tick}
    for (name, sequence), created in per_tick.items():
        assert created <= MAX_RUN[name], f"{created} rows for {name} {sequence}"
    # Shut down between jobs: nothing was left RUNNING, nothing FAILED.
    assert {status for _, _, status, _ in rows} <= {QUEUED, SUCCESS}, rows
    succeeded = Counter(
        (name, sequence, claimed_by)
        for name, sequence, status, claimed_by in rows
        if status == SUCCESS
    )
    runs_per_tick = Counter((name, sequence) for name, sequence, _ in succeeded.elements())
    for (name, sequence), runs in runs_per_tick.items():
        assert runs <= MAX_RUN[name], f"{name} ran {runs} times for tick {sequence}"
    for name, max_run in MAX_RUN.items():
        counts = [runs for (work, _), runs in runs_per_tick.items() if work == name]
        assert counts, f"{name} never ran"
        # Both copies look at every tick and take what is left: a tick gets all its runs
        # (only the last one may be cut short by the shutdown).
        assert max(counts) == max_run, f"{name}: {runs_per_tick}"
    assert {worker_a, worker_b} >= {claimed_by for _, _, claimed_by in succeeded}

    # The job's visible effect, the app's own table, matches the SUCCESS rows one for one ...
    job_runs = Counter(
        (str(work), str(sequence), str(worker))
        for work, sequence, worker in async_app.query("SELECT work, sequence, worker FROM job_runs")
    )
    assert job_runs == succeeded
    # ... and so does what each copy printed it ran.
    printed = Counter(
        (work, sequence, worker_id)
        for worker_id, out in ((worker_a, out_a), (worker_b, out_b))
        for work, sequence in RAN.findall(out)
    )
    assert printed == succeeded
