"""A PostgreSQL primary and a streaming-replication standby on loopback, for failover tests.

Both clusters live in one temporary folder owned by ``postgres`` (the server
refuses to run as root), each on a free port of its own, with its Unix socket
in that folder: the system cluster on 5432 is never touched. The primary is
made by ``initdb`` (trust authentication, replication allowed from
127.0.0.1), the standby by ``pg_basebackup -R`` from it. Replication is
asynchronous, or synchronous (``synchronous_standby_names = '*'`` on the
primary only, so the promoted standby does not wait for a standby it lacks).

:meth:`PostgresPair.kill_primary` is a crash: the postmaster and every one of
its children are frozen, then killed with SIGKILL, so no backend commits
anything after the others died (PostgreSQL children leave the postmaster's
process group, so a signal to the group would not reach them).
:meth:`PostgresPair.promote` is what an operator or a failover manager does:
``pg_ctl promote`` on the standby. Services reach whichever is primary through
a libpq multi-host URL with ``target_session_attrs=read-write``.

Also the process bodies of the failover tests: a scheduler and a worker that
stop on an event, and a worker that journals every claim with its token and
what became of it (finished, lost, failed), flushed line by line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from worksync_sa import Claim, Scheduler, SchedulerConfig, Worker

from .extras import skip_module
from .racers import blueprints
from .topology import Daemon, as_user, chown_to, free_ports, need, wait_until

try:  # the postgresql extra: without it, the modules importing this one are skipped
    import psycopg
except ModuleNotFoundError as missing:
    skip_module(missing)

USER = "postgres"
DATABASE = "test"
STARTUP_TIMEOUT = 60.0


def _version(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.name))


def server_bin() -> Path:
    """The newest PostgreSQL server's programs (``WORKSYNC_PG_BIN`` to choose another)."""
    chosen = os.environ.get("WORKSYNC_PG_BIN")
    if chosen:
        return Path(chosen)
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version)
    return found[-1] if found else Path("/usr/lib/postgresql/15/bin")


PROGRAMS = ("initdb", "pg_ctl", "pg_basebackup", "postgres")

# Settings both clusters share (the standby copies them with the base backup).
SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "shared_buffers": "'16MB'",
    "max_connections": "80",
    "wal_level": "replica",
    "max_wal_senders": "4",
    "wal_keep_size": "'64MB'",
    "hot_standby": "on",
    # Dynamic shared memory as files in the data folder, not /dev/shm: a crashed
    # cluster leaves nothing behind once its folder is removed.
    "dynamic_shared_memory_type": "mmap",
    # A killed process loses nothing the kernel already has, and the folders are thrown
    # away: fsync would only cost the 2-core box time. Commits still wait for the WAL
    # write, and a synchronous standby still acknowledges its flush.
    "fsync": "off",
    "full_page_writes": "off",
    "synchronous_commit": "on",
    "log_min_messages": "warning",
    "log_line_prefix": "'%m [%p] '",
}


@dataclass
class Node:
    """One PostgreSQL cluster: its port, data folder and postmaster."""

    role: str
    port: int
    data: Path
    socket_dir: Path
    bin: Path
    daemon: Daemon | None = None
    shm: tuple[int, int] | None = None
    """(key, id) of the SysV segment the postmaster made; a crash leaves it behind."""

    @property
    def cluster_name(self) -> str:
        return f"ws-{self.role}-{self.port}"

    @property
    def url(self) -> str:
        """This cluster alone, whatever its role."""
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}/{DATABASE}"

    def launch(self) -> None:
        argv = [
            str(self.bin / "postgres"),
            "-D", str(self.data),
            "-p", str(self.port),
            "-k", str(self.socket_dir),
            "-c", f"cluster_name={self.cluster_name}",
        ]  # fmt: skip
        log = self.data.parent / f"{self.role}.log"
        self.daemon = Daemon(self.role, as_user(USER, argv), log, cwd=self.data.parent).start()

    def postmaster(self) -> int | None:
        """The postmaster's pid, from ``postmaster.pid``, while it runs."""
        try:
            lines = (self.data / "postmaster.pid").read_text().splitlines()
        except OSError:
            return None
        if not lines or not lines[0].strip().isdigit():
            return None
        pid = int(lines[0])
        if len(lines) > 6:
            numbers = lines[6].split()
            if len(numbers) == 2 and all(n.isdigit() for n in numbers):
                self.shm = (int(numbers[0]), int(numbers[1]))
        return pid if _alive(pid) else None

    def processes(self) -> list[int]:
        """The postmaster and its children (a child's ``ps`` title names the cluster)."""
        pids = []
        postmaster = self.postmaster()
        if postmaster is not None:
            pids.append(postmaster)
        prefix = f"postgres: {self.cluster_name}: ".encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == postmaster:
                continue
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            if (postmaster is not None and parent == postmaster) or cmdline.startswith(prefix):
                pids.append(int(entry.name))
        return pids

    def query(self, sql: str, timeout: int = 3) -> list[tuple[Any, ...]]:
        """Rows of ``sql`` (autocommit) on this cluster, on a connection of its own."""
        with psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=USER,
            dbname=DATABASE,
            connect_timeout=timeout,
            autocommit=True,
        ) as conn:
            cur = conn.execute(sql)
            return list(cur.fetchall()) if cur.description else []

    def crash(self) -> None:
        """Freeze the postmaster and all its children, then SIGKILL them all."""
        postmaster = self.postmaster()
        if postmaster is not None:
            _signal(postmaster, signal.SIGSTOP)  # no new children from here on
        victims = self.processes()
        for pid in victims:
            _signal(pid, signal.SIGSTOP)
        for pid in victims:
            _signal(pid, signal.SIGKILL)
        if self.daemon is not None:
            self.daemon.kill()  # reaps the runuser wrapper
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in victims) and time.monotonic() < deadline:
            time.sleep(0.02)
        self._remove_segment()

    def _remove_segment(self) -> None:
        """Remove the SysV segment a crashed postmaster left, once nobody is attached."""
        if self.shm is None:
            return
        key, shmid = self.shm
        with contextlib.suppress(OSError):
            for line in Path("/proc/sysvipc/shm").read_text().splitlines()[1:]:
                fields = line.split()  # key shmid perms size cpid lpid nattch ...
                if int(fields[0]) == key and int(fields[1]) == shmid and fields[6] == "0":
                    subprocess.run(["ipcrm", "-m", str(shmid)], check=False, capture_output=True)
        self.shm = None

    def stop(self) -> None:
        """An immediate shutdown (it removes its shared memory), then a crash for leftovers."""
        for pid in self.processes():
            _signal(pid, signal.SIGCONT)  # a paused walsender must hear the shutdown
        if self.postmaster() is not None:
            subprocess.run(
                as_user(USER, [str(self.bin / "pg_ctl"), "stop", "-D", str(self.data),
                               "-m", "immediate", "-w", "-t", "30"]),
                cwd=self.data.parent, capture_output=True, timeout=60, check=False,
            )  # fmt: skip
        self.crash()

    def tail(self, lines: int = 40) -> str:
        return self.daemon.tail(lines) if self.daemon is not None else ""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _run(argv: Sequence[str], cwd: Path, what: str) -> None:
    done = subprocess.run(
        as_user(USER, argv), cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}): {done.stdout}{done.stderr}")


@dataclass
class PostgresPair:
    """A primary and its streaming standby in ``folder``."""

    folder: Path
    synchronous: bool = False
    bin: Path = field(default_factory=server_bin)
    primary: Node = field(init=False)
    standby: Node = field(init=False)
    paused: int | None = None
    """The walsender stopped by :meth:`pause_replication`, if any."""

    def __post_init__(self) -> None:
        first, second = free_ports(2)
        self.primary = Node("primary", first, self.folder / "primary", self.folder, self.bin)
        self.standby = Node("standby", second, self.folder / "standby", self.folder, self.bin)

    @property
    def url(self) -> str:
        """Both hosts, libpq tries them in order and keeps the one that accepts writes.

        SQLAlchemy's psycopg dialect turns repeated ``host=`` query values into
        libpq's comma-separated ``host`` and ``port``. ``connect_timeout``
        bounds each host's attempt (a crashed host that does not refuse).
        """
        return (
            f"postgresql+psycopg://{USER}@/{DATABASE}"
            f"?host=127.0.0.1:{self.primary.port}&host=127.0.0.1:{self.standby.port}"
            "&target_session_attrs=read-write&connect_timeout=3"
        )

    def start(self) -> None:
        """initdb, start the primary, create ``test``, base-backup and start the standby."""
        primary, standby = self.primary, self.standby
        _run(
            [str(self.bin / "initdb"), "-D", str(primary.data), "-U", USER, "-A", "trust",
             "-E", "UTF8", "--no-sync", "--no-instructions"],
            self.folder, "initdb",
        )  # fmt: skip
        with open(primary.data / "postgresql.conf", "a") as conf:
            conf.write("\n# worksync topology test\n")
            for key, value in SETTINGS.items():
                conf.write(f"{key} = {value}\n")
        with open(primary.data / "pg_hba.conf", "a") as hba:
            hba.write("host replication all 127.0.0.1/32 trust\n")
        primary.launch()
        self._wait_ready(primary)
        self._create_database()
        _run(
            [str(self.bin / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary.port),
             "-U", USER, "-D", str(standby.data), "-R", "-X", "stream", "-c", "fast",
             "--no-sync"],
            self.folder, "pg_basebackup",
        )  # fmt: skip
        standby.launch()
        self._wait_ready(standby)
        wait_until(
            lambda: self.replication_state() == ("streaming", "async"),
            STARTUP_TIMEOUT,
            "the standby streaming from the primary",
        )
        if self.synchronous:
            primary.query("ALTER SYSTEM SET synchronous_standby_names = '*'")
            primary.query("SELECT pg_reload_conf()")
            wait_until(
                lambda: self.replication_state() == ("streaming", "sync"),
                STARTUP_TIMEOUT,
                "the standby streaming synchronously",
            )

    def _create_database(self) -> None:
        with psycopg.connect(
            host="127.0.0.1", port=self.primary.port, user=USER, dbname="postgres",
            autocommit=True, connect_timeout=3,
        ) as conn:  # fmt: skip
            conn.execute(f"CREATE DATABASE {DATABASE}")

    def _wait_ready(self, node: Node) -> None:
        def ready() -> bool:
            if node.daemon is None or not node.daemon.alive:
                raise AssertionError(f"{node.role} exited:\n{node.tail()}")
            with psycopg.connect(
                host="127.0.0.1", port=node.port, user=USER, dbname="postgres", connect_timeout=2
            ):
                return True

        try:
            wait_until(ready, STARTUP_TIMEOUT, f"the {node.role} accepting connections", 0.1)
        except BaseException:
            print(f"--- {node.role} log ---\n{node.tail(60)}")
            raise

    def replication_state(self) -> tuple[str, str] | None:
        """The primary's view of its standby: (state, sync_state), None if none is connected."""
        rows = self.primary.query("SELECT state, sync_state FROM pg_stat_replication")
        return (str(rows[0][0]), str(rows[0][1])) if rows else None

    def pause_replication(self) -> None:
        """Stop the primary's walsender (SIGSTOP): the standby falls behind from now on.

        Only with asynchronous replication; a synchronous primary would stop committing.
        """
        assert not self.synchronous, "a paused synchronous standby blocks every commit"
        ((pid,),) = self.primary.query("SELECT pid FROM pg_stat_replication")
        self.paused = int(pid)
        os.kill(self.paused, signal.SIGSTOP)

    def standby_lag(self) -> int:
        """Bytes of WAL the primary has written that the standby has not replayed."""
        ((lag,),) = self.primary.query(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn) FROM pg_stat_replication"
        )
        return int(lag)

    def kill_primary(self) -> float:
        """Crash the primary (every process SIGKILLed); returns the wall-clock time of it."""
        at = time.time()
        self.primary.crash()
        self.paused = None
        return at

    def promote(self) -> float:
        """``pg_ctl promote -w`` on the standby; returns the seconds it took."""
        started = time.monotonic()
        _run(
            [str(self.bin / "pg_ctl"), "promote", "-D", str(self.standby.data), "-w", "-t", "60"],
            self.folder, "pg_ctl promote",
        )  # fmt: skip
        return time.monotonic() - started

    def close(self) -> None:
        for node in (self.standby, self.primary):
            node.stop()


@contextlib.contextmanager
def postgres_pair(synchronous: bool = False) -> Iterator[PostgresPair]:
    """A started primary and standby; both end and their folder is removed afterwards."""
    bin_dir = server_bin()
    need(*(str(bin_dir / program) for program in PROGRAMS), "runuser", "ipcrm")
    folder = Path(tempfile.mkdtemp(prefix="ws-pg-"))
    chown_to(folder, USER)
    pair = PostgresPair(folder, synchronous, bin_dir)
    try:
        pair.start()
        yield pair
    finally:
        pair.close()
        shutil.rmtree(folder, ignore_errors=True)


def server_port(engine: sa.Engine) -> tuple[int, bool]:
    """The port of the server ``engine`` reaches, and whether it is in recovery (a standby)."""
    with engine.connect() as conn:
        port, recovering = conn.execute(
            sa.text("SELECT inet_server_port(), pg_is_in_recovery()")
        ).one()
    return int(port), bool(recovering)


# -- process bodies -----------------------------------------------------------------------


class _Actions(logging.Handler):
    """Counts the library's log records by action; optionally journals a claim's fate.

    The journal gets one line per event of a claim, all tab-separated:
    ``finished <id> <status>`` (the finish was written), ``lost <id> <token> <where>``
    (a heartbeat or a finish found the row no longer the claim's: ``ClaimLostError``),
    ``failed <id> <token> <error>`` (the handler or its finish raised something else,
    such as the database being away for longer than a call's retries).
    """

    def __init__(self, journal: Any = None) -> None:
        super().__init__(logging.DEBUG)
        self.counts: dict[str, int] = {}
        self.journal = journal
        self.current: Claim | None = None

    def emit(self, record: logging.LogRecord) -> None:
        action = getattr(record, "action", None)
        if not isinstance(action, str):
            return
        self.counts[action] = self.counts.get(action, 0) + 1
        if self.journal is None:
            return
        args = record.args if isinstance(record.args, tuple) else ()
        if action == "finished" and len(args) == 4:
            self.journal.write(f"finished\t{args[2]}\t{args[3]}\n")
        elif action == "lost" and args and isinstance(args[0], Claim):
            claim = args[0]
            where = "heartbeat" if "recovered" in str(record.msg) else "finish"
            self.journal.write(f"lost\t{claim.id}\t{claim.token}\t{where}\n")
        elif action == "failed" and self.current is not None:
            text = " ".join(record.getMessage().split())
            self.journal.write(f"failed\t{self.current.id}\t{self.current.token}\t{text}\n")


def _listen(journal: Any = None) -> _Actions:
    handler = _Actions(journal)
    root = logging.getLogger("worksync_sa")
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    return handler


def fleet_scheduler(
    url: str,
    table: str,
    works: list[dict[str, Any]],
    config: dict[str, Any],
    stop: Any,
    results: Any,
) -> None:
    """A scheduler process: the background loop until ``stop`` is set; reports its actions."""
    actions = _listen()
    engine = sa.create_engine(url, pool_pre_ping=True)
    try:
        scheduler = Scheduler(engine, blueprints(works), SchedulerConfig(**config), table=table)
        scheduler.start()
        alive = True
        while not stop.wait(0.2):
            alive = alive and scheduler.running
        alive = alive and scheduler.running
        scheduler.stop(timeout=60)
        scheduler.close()
        results.put(("ok", {"role": "scheduler", "alive": alive, "actions": actions.counts}))
    except BaseException as exc:
        results.put(("error", repr(exc)))
        raise
    finally:
        engine.dispose()


def fleet_worker(
    url: str,
    table: str,
    works: list[dict[str, Any]],
    hold: float,
    journal_path: str,
    stop: Any,
    results: Any,
) -> None:
    """A worker process: the package's ``Worker`` until ``stop`` is set.

    Each run holds its claim ``hold`` seconds. Every claim goes to the journal
    (``claim <name> <sequence> <id> <token> <time>``) before the handler runs,
    and what became of it after (see ``_Actions``); lines are flushed as written.
    """
    journal = open(journal_path, "a", buffering=1)  # noqa: SIM115
    actions = _listen(journal)

    def handle(claim: Claim) -> None:
        actions.current = claim
        journal.write(
            f"claim\t{claim.name}\t{claim.sequence}\t{claim.id}\t{claim.token}\t{time.time():.3f}\n"
        )
        time.sleep(hold)

    engine = sa.create_engine(url, pool_pre_ping=True)
    try:
        worker = Worker(
            engine, blueprints(works), handle, table=table, poll="200ms", max_backoff="2s"
        )
        worker.start()
        alive = True
        while not stop.wait(0.2):
            alive = alive and worker.running
        alive = alive and worker.running
        worker.stop(timeout=60)
        worker.close()
        results.put(
            (
                "ok",
                {
                    "role": "worker",
                    "alive": alive,
                    "handled": worker.handled,
                    "actions": actions.counts,
                },
            )
        )
    except BaseException as exc:
        results.put(("error", repr(exc)))
        raise
    finally:
        engine.dispose()
        journal.close()
