"""The real Go original (worksync v0.0.3), compiled and run beside worksync_sa.

``tests/go_original/main.go`` is one program with the original's two roles, a
scheduler and a worker, written as its README uses them. This module finds the
original's sources (``../shared/go-original``, see its README.md) and a Go of 1.20
or newer, builds the program once per test session with no module proxy, starts
its processes (each with a time zone, its output to a file, killed at teardown
whatever happens) and reads their claims.

It also makes the sandbox those processes need on MariaDB: a database of the
test's own and one user per process, each limited by ``MAX_USER_CONNECTIONS``.
The original leaks a connection per tick it finds already created (``createWork``
returns without Commit or Rollback), so an unlimited one would take the shared
server's every connection within a minute and break every other test.

Under ``CI=true`` a missing Go or a missing source folder fails the tests; elsewhere
they are skipped with the reason. It must not import worksync_sa: the sandbox is
plain SQL sent by the test's own administrative engine.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, NoReturn

import pytest
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
PROGRAM = Path(__file__).resolve().parent / "go_original" / "main.go"
SOURCES_ENV = "WORKSYNC_GO_ORIGINAL"
DEBIAN_GO = Path("/usr/lib/go-1.22/bin/go")
OLDEST_GO = (1, 20)  # v0.0.3 uses time.DateTime
MODULES = {  # module: (version, folder under the sources)
    "github.com/go-sql-driver/mysql": ("v1.7.1", "mysql"),
    "github.com/mehditeymorian/worksync": ("v0.0.3", "worksync"),
    "github.com/robfig/cron": ("v1.2.0", "cron"),
}
USER_CONNECTIONS = 30
"""Each process's own MariaDB user may hold this many connections, leaks included."""


def unavailable(reason: str) -> NoReturn:
    """Skip with the reason; under CI, where these tests must run, fail instead."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"the Go original cannot run under CI: {reason}", pytrace=False)
    pytest.skip(reason)


def _is_sources(folder: Path) -> bool:
    return all((folder / sub / "go.mod").is_file() for _, sub in MODULES.values())


def find_sources() -> Path | None:
    """The original's sources: $WORKSYNC_GO_ORIGINAL, ../shared/go-original, or a parent's."""
    given = os.environ.get(SOURCES_ENV)
    if given:
        return Path(given) if _is_sources(Path(given)) else None
    candidates = [ROOT.parent / "shared" / "go-original"]
    candidates += [parent / "shared" / "go-original" for parent in ROOT.parents]
    candidates.append(Path("/work/shared/go-original"))
    return next((folder for folder in candidates if _is_sources(folder)), None)


def go_version(go: Path | str) -> tuple[int, int] | None:
    """``go version``'s major and minor, or None if it does not run."""
    try:
        said = subprocess.run(
            [str(go), "version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r"\bgo(\d+)\.(\d+)", said)
    return (int(found[1]), int(found[2])) if found else None


def find_go() -> Path | None:
    """Debian's Go 1.22 (scripts/lib.sh ``ensure_go``), else a ``go`` on PATH of 1.20 or newer."""
    on_path = shutil.which("go")
    for go in (DEBIAN_GO, Path(on_path) if on_path else None):
        if go is not None and go.is_file():
            version = go_version(go)
            if version is not None and version >= OLDEST_GO:
                return go
    return None


def go_mod(sources: Path) -> str:
    """The program's go.mod: the three modules at the original's versions, each replaced."""
    lines = ["module fleet", "", "go 1.20", "", "require ("]
    lines += [f"\t{module} {version}" for module, (version, _) in MODULES.items()]
    lines += [")", ""]
    lines += [f"replace {module} => {sources / sub}" for module, (_, sub) in MODULES.items()]
    return "\n".join(lines) + "\n"


def build(folder: Path) -> Path:
    """Build ``main.go`` against the original's sources in ``folder``; the binary's path.

    Skips (fails under CI) when Go or the sources are missing; a build that fails
    is always a failure, with the compiler's output.
    """
    sources = find_sources()
    if sources is None:
        unavailable(
            f"the Go original's sources were not found (${SOURCES_ENV}, "
            f"{ROOT.parent / 'shared' / 'go-original'}, or shared/go-original above the repository)"
        )
    go = find_go()
    if go is None:
        unavailable(
            f"no Go {OLDEST_GO[0]}.{OLDEST_GO[1]} or newer ({DEBIAN_GO} or `go` on PATH); "
            "scripts/lib.sh ensure_go installs it"
        )
    work = folder / "fleet"
    work.mkdir(parents=True, exist_ok=True)
    shutil.copy(PROGRAM, work / "main.go")
    (work / "go.mod").write_text(go_mod(sources))
    env = {
        **os.environ,
        "GOPROXY": "off",
        "GOSUMDB": "off",
        "GOFLAGS": "-mod=mod",
        "GOTOOLCHAIN": "local",
        "GOCACHE": str(folder / "gocache"),
        "GOPATH": str(folder / "gopath"),
    }
    binary = work / "fleet"
    done = subprocess.run(
        [str(go), "build", "-o", str(binary), "."],
        check=False,
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        pytest.fail(f"building the Go original failed:\n{done.stdout}{done.stderr}", pytrace=False)
    return binary


# -- its processes ----------------------------------------------------------------------


@dataclass(frozen=True)
class Account:
    """A MariaDB user made for one process, on the sandbox's database only."""

    user: str
    password: str
    host: str
    port: int
    database: str

    @property
    def dsn(self) -> str:
        """go-sql-driver/mysql's DSN."""
        return f"{self.user}:{self.password}@tcp({self.host}:{self.port})/{self.database}"

    def url(self, base: sa.URL) -> str:
        """A SQLAlchemy URL like ``base`` (its driver, its query) for this user."""
        named = base.set(username=self.user, password=self.password, database=self.database)
        return named.render_as_string(hide_password=False)


@dataclass(frozen=True)
class GoWork:
    """A work as the original's ``Work`` takes it (cron read by robfig/cron v1.2.0)."""

    Name: str
    Cron: str
    MaxRun: int


@dataclass
class GoProcess:
    """One running process of the original, its output going to ``out``."""

    role: str
    account: Account
    popen: subprocess.Popen[bytes]
    out: Path
    _file: IO[bytes] = field(repr=False)

    def kill(self) -> None:
        """SIGKILL (the original has no other way out mid-run) and reap it."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)
        self._file.close()

    def wait(self, timeout: float) -> int:
        """Its exit code once it ends on its own (after ``-for``)."""
        code = self.popen.wait(timeout=timeout)
        self._file.close()
        return code

    def text(self) -> str:
        return self.out.read_text(errors="replace")

    def claims(self) -> list[tuple[str, str]]:
        return parse_claims(self.text())

    def errors(self) -> list[str]:
        """Lines it printed that are neither a claim nor its start and end."""
        quiet = ("claimed\t", "started", "done")
        return [line for line in self.text().splitlines() if not line.startswith(quiet)]


def parse_claims(text: str) -> list[tuple[str, str]]:
    """``(name, sequence)`` of every ``claimed<TAB>name<TAB>sequence`` line."""
    claims = []
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[0] == "claimed":
            claims.append((parts[1], parts[2]))
    return claims


def claims_per_tick(claims: Sequence[tuple[str, str]]) -> Counter[tuple[str, str]]:
    return Counter(claims)


@dataclass
class Launcher:
    """Starts the original's processes and kills every one of them at ``close``."""

    binary: Path
    folder: Path
    started: list[GoProcess] = field(default_factory=list)

    def start(
        self,
        role: str,
        account: Account,
        *,
        table: str,
        works: Sequence[GoWork],
        zone: str,
        seconds: float,
        before: str = "5s",
        check: str = "@every 1s",
        hold: str = "20ms",
        name: str | None = None,
    ) -> GoProcess:
        """``fleet <role>`` as ``account``, in time zone ``zone``, for ``seconds``."""
        out = self.folder / f"{name or role}-{len(self.started)}.out"
        handle = out.open("wb")
        works_json = json.dumps([vars(work) for work in works])
        argv = [
            str(self.binary), role, "-dsn", account.dsn, "-table", table, "-works", works_json,
            "-before", before, "-check", check, "-hold", hold, "-for", f"{seconds:.3f}s",
        ]  # fmt: skip
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TZ": zone}
        popen = subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, env=env)
        process = GoProcess(role, account, popen, out, handle)
        self.started.append(process)
        return process

    def close(self) -> None:
        for process in self.started:
            process.kill()


@contextlib.contextmanager
def launcher(binary: Path, folder: Path) -> Iterator[Launcher]:
    """A ``Launcher`` whose processes are all killed on the way out, whatever happened."""
    started = Launcher(binary, folder)
    try:
        yield started
    finally:
        started.close()


# -- the sandbox on MariaDB ---------------------------------------------------------------


@dataclass
class Sandbox:
    """A database of its own, and a user per process limited to its connections."""

    admin: sa.Engine
    database: str
    prefix: str
    accounts: dict[str, Account] = field(default_factory=dict)

    @property
    def url(self) -> sa.URL:
        """The administrator's URL on the sandbox's database."""
        return self.admin.url.set(database=self.database)

    def account(self, role: str, *, connections: int = USER_CONNECTIONS) -> Account:
        """A user for one process (``role`` names it), on this database alone."""
        if not re.fullmatch(r"[a-z0-9]{1,12}", role):
            raise ValueError(role)
        user = f"{self.prefix}{role}"
        password = secrets.token_hex(12)
        with self.admin.connect() as conn:  # generated names and a password of our own
            conn.exec_driver_sql(
                f"CREATE USER '{user}'@'%%' IDENTIFIED BY '{password}' "
                f"WITH MAX_USER_CONNECTIONS {int(connections)}"
            )
            conn.exec_driver_sql(f"GRANT ALL ON `{self.database}`.* TO '{user}'@'%%'")
        url = self.admin.url
        made = Account(user, password, url.host or "127.0.0.1", url.port or 3306, self.database)
        self.accounts[role] = made
        return made

    def grant_connection_admin(self, account: Account) -> None:
        """PROCESS and CONNECTION ADMIN: to see and end other users' connections (KILL)."""
        mariadb = getattr(self.admin.dialect, "is_mariadb", False)
        privilege = "CONNECTION ADMIN" if mariadb else "CONNECTION_ADMIN"
        with self.admin.connect() as conn:
            conn.exec_driver_sql(f"GRANT PROCESS, {privilege} ON *.* TO '{account.user}'@'%%'")

    def connections(self) -> dict[str, int]:
        """Connections each of this sandbox's users holds now, by role."""
        roles = {account.user: role for role, account in self.accounts.items()}
        with self.admin.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT user, COUNT(*) FROM information_schema.processlist "
                "WHERE user LIKE %s GROUP BY user",
                (f"{self.prefix}%",),
            ).all()
        return {roles.get(user, user): int(count) for user, count in rows}

    def kill_connections(self) -> None:
        """End every connection of the sandbox's users (leaked transactions included)."""
        with self.admin.connect() as conn:
            ids = conn.exec_driver_sql(
                "SELECT id FROM information_schema.processlist WHERE user LIKE %s",
                (f"{self.prefix}%",),
            ).scalars()
            for connection_id in list(ids):
                with contextlib.suppress(sa.exc.DBAPIError):  # it ended meanwhile
                    conn.exec_driver_sql(f"KILL {int(connection_id)}")


@contextlib.contextmanager
def sandbox(admin: sa.Engine) -> Iterator[Sandbox]:
    """A database and users of the test's own; at the end, their connections, users, database."""
    tag = secrets.token_hex(4)
    database = f"ws_go_{tag}"
    engine = admin.execution_options(isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE `{database}`")
    made = Sandbox(engine, database, prefix=f"wsg{tag}_")
    try:
        yield made
    finally:
        with engine.connect() as conn:
            for account in made.accounts.values():
                conn.exec_driver_sql(f"DROP USER IF EXISTS '{account.user}'@'%%'")
        made.kill_connections()  # dropping a user does not end its sessions
        deadline = time.monotonic() + 10
        while made.connections() and time.monotonic() < deadline:
            time.sleep(0.2)
        with engine.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{database}`")
