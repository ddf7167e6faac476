"""Fixtures: one behaviour suite, run on SQLite, MariaDB/MySQL and PostgreSQL.

Server URLs come from WORKSYNC_TEST_MYSQL_URL and WORKSYNC_TEST_POSTGRESQL_URL
(defaulting to the local servers). An unreachable server is skipped with its
reason, unless WORKSYNC_REQUIRE_BACKENDS names it; then its tests fail.
Each test gets a table of its own, so tests never see each other's rows.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import worksync_sa
from worksync_sa.models import action_table, pause_table, table_named, work_table

ROOT = Path(__file__).resolve().parent.parent

MYSQL_URL = os.environ.get(
    "WORKSYNC_TEST_MYSQL_URL", "mysql+mysqldb://root@127.0.0.1:3306/test?charset=utf8mb4"
)
POSTGRESQL_URL = os.environ.get(
    "WORKSYNC_TEST_POSTGRESQL_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
BACKENDS = ("sqlite", "mysql", "postgresql")
REQUIRED = {
    name.strip()
    for name in os.environ.get("WORKSYNC_REQUIRE_BACKENDS", "").split(",")
    if name.strip()
}


UNIT_MODULES = (
    "test_config.py",
    "test_cron_reference.py",
    "test_plain_install.py",
    "test_settings_types.py",
    "test_work.py",
)
"""Modules outside tests/unit that need no server and no extra either."""


ACCEPTANCE_MODULES = ("test_examples.py", "test_host_app.py", "test_wheel.py")
"""Modules that run the package from outside, as a user installs it (``acceptance``)."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the unit and acceptance tiers by where a test lives."""
    unit_folder = Path(__file__).parent / "unit"
    for item in items:
        path = Path(item.path)
        if unit_folder in path.parents or path.name in UNIT_MODULES:
            item.add_marker(pytest.mark.unit)
        if path.name in ACCEPTANCE_MODULES:
            item.add_marker(pytest.mark.acceptance)


@dataclass
class Backend:
    """A reachable database and an engine on it."""

    name: str
    url: str
    engine: sa.Engine


def _connect_args(name: str) -> dict[str, Any]:
    return {"connect_timeout": 5} if name in ("mysql", "postgresql") else {}


def _open(name: str, url: str) -> tuple[sa.Engine | None, str]:
    try:
        engine = sa.create_engine(url, connect_args=_connect_args(name))
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:  # driver missing, server down, bad credentials
        return None, f"{name} unavailable at {sa.make_url(url).render_as_string()}: {exc}"
    return engine, ""


def sqlite_url(folder: Path) -> str:
    """A SQLite file in WAL mode, so readers do not block the writer."""
    url = f"sqlite:///{folder / 'worksync-test.db'}"
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA journal_mode=WAL")
    engine.dispose()
    return url


@pytest.fixture(scope="session")
def _backends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    urls = {
        "sqlite": sqlite_url(tmp_path_factory.mktemp("sqlite")),
        "mysql": MYSQL_URL,
        "postgresql": POSTGRESQL_URL,
    }
    opened = {name: (*_open(name, url), url) for name, url in urls.items()}
    yield opened
    for engine, _, _ in opened.values():
        if engine is not None:
            engine.dispose()


def require(backends: dict[str, Any], name: str) -> Backend:
    """The backend, or a skip (a failure if WORKSYNC_REQUIRE_BACKENDS names it)."""
    engine, reason, url = backends[name]
    if engine is None:
        if name in REQUIRED:
            pytest.fail(f"required backend {reason}")
        pytest.skip(reason)
    return Backend(name, url, engine)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, _backends: dict[str, Any]) -> Backend:
    """Each backend in turn."""
    return require(_backends, request.param)


@pytest.fixture(params=("mysql", "postgresql"))
def server(request: pytest.FixtureRequest, _backends: dict[str, Any]) -> Backend:
    """Each database server in turn (not SQLite)."""
    return require(_backends, request.param)


@pytest.fixture
def mariadb(_backends: dict[str, Any]) -> Backend:
    """MariaDB/MySQL only, for tests of its particular behaviour."""
    return require(_backends, "mysql")


def fresh_table_name() -> str:
    """A table name no other test (or concurrent run) uses."""
    return f"t_{uuid.uuid4().hex[:12]}"


def _itself(engine: sa.Engine) -> sa.Engine:
    return engine


@dataclass
class Db:
    """A backend plus an empty work table of this test's own.

    ``WorkSync``, ``Scheduler`` and ``Worker`` build the services under test: the
    blocking ones, or on the ``twin_db`` fixture also the asyncio twins
    (see ``twins``), always with the blocking signatures.
    """

    backend: Backend
    table: str
    WorkSync: Callable[..., worksync_sa.WorkSync] = worksync_sa.WorkSync
    Scheduler: Callable[..., worksync_sa.Scheduler] = worksync_sa.Scheduler
    Worker: Callable[..., worksync_sa.Worker] = worksync_sa.Worker
    twin: str = "blocking"
    """Which twin the services are: "blocking" or "asyncio" (for a documented difference)."""
    traced: Callable[[sa.Engine], sa.Engine] = _itself
    """The engine whose events see the statements of the services under test."""

    @property
    def engine(self) -> sa.Engine:
        return self.backend.engine

    @property
    def url(self) -> str:
        return self.backend.url

    @property
    def name(self) -> str:
        return self.backend.name

    def rows(self, **where: Any) -> list[Any]:
        """Rows of the table, filtered by column equality, in id order."""
        t = table_named(self.table)
        query = sa.select(t).where(*(t.c[k] == v for k, v in where.items())).order_by(t.c.id)
        with self.engine.connect() as conn:
            return list(conn.execute(query).all())

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count()).select_from(table_named(self.table))
                ).scalar_one()
            )

    def db_now(self) -> Any:
        from worksync_sa._sql.dialect import db_now, family_of

        with self.engine.connect() as conn:
            return conn.execute(sa.select(db_now(family_of(conn.dialect)))).scalar_one()


def create_table(engine: sa.Engine, name: str) -> None:
    """The work table with its pauses and actions tables, as the migrations make them."""
    for table in (work_table(name), pause_table(name), action_table(name)):
        table.create(engine)


def drop_table(engine: sa.Engine, name: str) -> None:
    for table in (action_table(name), pause_table(name), work_table(name)):
        table.drop(engine, checkfirst=True)


@pytest.fixture
def db(backend: Backend) -> Iterator[Db]:
    """An empty work table on each backend; fails the test if it leaks a connection."""
    yield from _table_on(backend)


def _table_on(backend: Backend) -> Iterator[Db]:
    name = fresh_table_name()
    create_table(backend.engine, name)
    try:
        yield Db(backend, name)
    finally:
        drop_table(backend.engine, name)
    pool = backend.engine.pool
    checked_out = pool.checkedout() if isinstance(pool, sa.pool.QueuePool) else 0
    assert checked_out == 0, f"test leaked {checked_out} connection(s): {pool.status()}"


TWINS = ("blocking", "asyncio")


@pytest.fixture(params=TWINS)
def twin_db(request: pytest.FixtureRequest, backend: Backend) -> Iterator[Db]:
    """An empty work table on each backend, for each twin (the contract suite's fixture)."""
    for db in _table_on(backend):
        if request.param == "blocking":
            yield db
            continue
        from .twins import AsyncTwin

        twin = AsyncTwin()
        # The adapters are duck-typed stand-ins: tests see the blocking interface.
        db.WorkSync, db.Scheduler = twin.WorkSync, twin.Scheduler  # type: ignore[assignment]
        db.Worker = twin.Worker  # type: ignore[assignment]
        db.traced = twin.traced
        db.twin = "asyncio"
        try:
            yield db
        finally:
            twin.close()


@pytest.fixture
def maria_db(mariadb: Backend) -> Iterator[Db]:
    """An empty work table on MariaDB/MySQL only."""
    yield from _table_on(mariadb)


@pytest.fixture
def server_db(server: Backend) -> Iterator[Db]:
    """An empty work table on each database server (not SQLite)."""
    yield from _table_on(server)


@pytest.fixture
def host_database(backend: Backend, tmp_path: Path) -> Iterator[str]:
    """A database of its own for a host application, so it can use the default table names."""
    if backend.name == "sqlite":
        yield f"sqlite:///{tmp_path / 'host.db'}"
        return
    name = f"ws_host_{uuid.uuid4().hex[:10]}"
    admin = backend.engine.execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))  # a generated identifier
    try:
        yield backend.engine.url.set(database=name).render_as_string(hide_password=False)
    finally:
        force = " WITH (FORCE)" if backend.name == "postgresql" else ""
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE {name}{force}"))


@dataclass(frozen=True)
class Installed:
    """The wheel built from this checkout, and the folder it was installed into."""

    wheel: Path
    site: Path


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """Build the wheel once per session and install it (no dependencies) into a folder.

    Put ``site`` first on PYTHONPATH and run from outside the checkout, and a
    process imports the package exactly as a user's pip install would give it.
    """
    out = tmp_path_factory.mktemp("wheel")
    pip = [sys.executable, "-m", "pip"]
    build = [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(ROOT)]
    subprocess.run(build, check=True, capture_output=True, timeout=300)
    (wheel,) = out.glob("worksync_sa-*.whl")
    site = out / "site"
    install = [*pip, "install", "--no-deps", "--target", str(site), str(wheel)]
    subprocess.run(install, check=True, capture_output=True, timeout=300)
    return Installed(wheel, site)


@pytest.fixture(scope="session")
def go_original_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Go original's scheduler and worker program, built once per session.

    Skipped with the reason when Go or the original's sources are missing, and
    failed instead under ``CI=true`` (``go_original.build``).
    """
    from . import go_original

    return go_original.build(tmp_path_factory.mktemp("go-original"))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The report line of every order raced beside the Go original (tests/test_go_original.py)."""
    lines = [
        str(value)
        for reports in terminalreporter.stats.values()
        for report in reports
        if getattr(report, "when", None) == "call"
        for name, value in getattr(report, "user_properties", ())
        if name == "go_original_report"
    ]
    if lines:
        terminalreporter.section("beside the Go original")
        for line in lines:
            terminalreporter.write_line(line)


@contextlib.contextmanager
def user_with_password(server: Backend, password: str) -> Iterator[sa.URL]:
    """The server's URL for a user who must give ``password`` (a MariaDB user made for it).

    The local PostgreSQL trusts 127.0.0.1, so there any password connects.
    """
    url = server.engine.url
    if server.name != "mysql":
        yield url.set(password=password)
        return
    user = f"ws_{uuid.uuid4().hex[:8]}"
    with server.engine.begin() as conn:  # generated names; the test's own password
        conn.exec_driver_sql(f"CREATE USER '{user}'@'%%' IDENTIFIED BY '{password}'")
        conn.exec_driver_sql(f"GRANT ALL ON {url.database}.* TO '{user}'@'%%'")
    try:
        yield url.set(username=user, password=password)
    finally:
        with server.engine.begin() as conn:
            conn.exec_driver_sql(f"DROP USER '{user}'@'%%'")
