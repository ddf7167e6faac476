"""A three-node MariaDB Galera cluster and an HAProxy in front of it, on loopback.

Every node is a ``mariadbd`` of its own (``--defaults-file`` in a temporary
folder, ports of its own for SQL, group communication, IST and rsync SST).
The servers run as the ``mysql`` user, in a folder of their own under the
system temporary folder (not pytest's, which is 0700 root's): the rsync
daemon of a state transfer, started by a server running as root, would drop
to ``nobody`` and could not write the joiner's datadir. The first node
bootstraps the cluster (``--wsrep-new-cluster``); the others join it by state
transfer. A node can be killed (SIGKILL by default) and restarted: a restart
never bootstraps, it rejoins the running cluster (IST from a survivor's
gcache, or rsync SST).

Also the process bodies of the Galera tests: a scheduler and a worker that
count what the library logged by kind (transient-error retries by error code,
lost-connection retries, outages), which ``racers`` counts only by action.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from worksync_sa import Scheduler, SchedulerConfig, Worker

from .extras import skip_module
from .racers import blueprints
from .topology import Daemon, chown_to, free_ports

try:  # the mysql extra: without it, the modules importing this one are skipped
    import MySQLdb
except ModuleNotFoundError as missing:
    skip_module(missing)

MARIADBD = "/usr/sbin/mariadbd"
INSTALL_DB = "mariadb-install-db"
GALERA = "/usr/lib/galera/libgalera_smm.so"
HAPROXY = "/usr/sbin/haproxy"
PROGRAMS = (MARIADBD, INSTALL_DB, GALERA, "rsync", HAPROXY)

STARTUP_TIMEOUT = 120.0
RECOVERED = re.compile(r"WSREP: Recovered position: ([0-9a-f-]+:-?[0-9]+)")

# Group communication: a killed peer is suspected after 1.5 s without a word and dropped
# from the view soon after (defaults: 5 s and 15 s, during which commits cluster-wide wait).
PROVIDER_OPTIONS = (
    "evs.keepalive_period=PT0.3S",
    "evs.inactive_check_period=PT0.3S",
    "evs.suspect_timeout=PT1.5S",
    "evs.inactive_timeout=PT3S",
    "evs.install_timeout=PT3S",
    "gcache.size=64M",
    "gcs.fc_limit=64",
)


class NodeExited(RuntimeError):
    """A node ended, or did not get synced in time (the message ends with its log)."""


@dataclass
class Node:
    """One cluster member: its ports, its folder, and its server process."""

    number: int
    port: int
    gcomm_port: int
    ist_port: int
    sst_port: int
    folder: Path
    daemon: Daemon | None = None
    joined_by: str = ""
    """How it last got the cluster's state: "IST" (what it missed) or "SST" (a full copy)."""

    @property
    def name(self) -> str:
        return f"node{self.number}"

    @property
    def datadir(self) -> Path:
        return self.folder / "data"

    @property
    def config(self) -> Path:
        return self.folder / "my.cnf"

    @property
    def url(self) -> str:
        return f"mysql+mysqldb://root@127.0.0.1:{self.port}/test?charset=utf8mb4"

    @property
    def alive(self) -> bool:
        return self.daemon is not None and self.daemon.alive

    def tail(self, lines: int = 40) -> str:
        return self.daemon.tail(lines) if self.daemon is not None else ""


def query(port: int, sql: str, timeout: float = 3.0) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` run as root on one server (a connection of its own, closed after)."""
    conn = MySQLdb.connect(
        host="127.0.0.1",
        port=port,
        user="root",
        connect_timeout=max(1, round(timeout)),
        read_timeout=max(1, round(timeout)),
        write_timeout=max(1, round(timeout)),
    )
    try:
        cur = conn.cursor()
        cur.execute(sql)
        rows = list(cur.fetchall())
        conn.commit()
        return rows
    finally:
        conn.close()


def status(port: int, names: Sequence[str], timeout: float = 3.0) -> dict[str, str]:
    """Global status variables of one server, by lower-case name."""
    wanted = ", ".join(f"'{n}'" for n in names)  # literal names from the tests
    rows = query(port, f"SHOW GLOBAL STATUS WHERE Variable_name IN ({wanted})", timeout)
    return {str(k).lower(): str(v) for k, v in rows}


@dataclass
class Cluster:
    """Three Galera nodes in ``folder``; :meth:`start` bootstraps, :meth:`close` ends them."""

    folder: Path
    size: int = 3
    nodes: list[Node] = field(default_factory=list)

    def __post_init__(self) -> None:
        ports = free_ports(4 * self.size)
        for i in range(self.size):
            port, gcomm, ist, sst = ports[4 * i : 4 * i + 4]
            folder = self.folder / f"node{i + 1}"
            (folder / "data").mkdir(parents=True, exist_ok=True)
            (folder / "tmp").mkdir(exist_ok=True)  # see tmpdir in _write_config
            self.nodes.append(Node(i + 1, port, gcomm, ist, sst, folder))

    def node(self, number: int) -> Node:
        return self.nodes[number - 1]

    def _write_config(self, node: Node) -> None:
        peers = ",".join(f"127.0.0.1:{n.gcomm_port}" for n in self.nodes)
        options = "; ".join(
            (
                "base_host=127.0.0.1",
                f"base_port={node.gcomm_port}",
                f"gmcast.listen_addr=tcp://127.0.0.1:{node.gcomm_port}",
                f"ist.recv_addr=127.0.0.1:{node.ist_port}",
                *PROVIDER_OPTIONS,
            )
        )
        node.config.write_text(
            f"""[mariadbd]
user = mysql
datadir = {node.datadir}
# Its own temporary folder: a node starting on the shared /tmp clears the "#sql" files
# of the machine's own MariaDB there, which then fails "Error on delete of /tmp/#sql...".
tmpdir = {node.folder / "tmp"}
port = {node.port}
socket = {node.folder / "mysqld.sock"}
pid-file = {node.folder / "mysqld.pid"}
bind-address = 127.0.0.1
skip-name-resolve
binlog_format = ROW
default_storage_engine = InnoDB
innodb_autoinc_lock_mode = 2
innodb_buffer_pool_size = 32M
innodb_log_file_size = 16M
innodb_flush_log_at_trx_commit = 2
performance_schema = OFF
max_connections = 300
wsrep_on = ON
wsrep_provider = {GALERA}
wsrep_cluster_name = worksync-topology
wsrep_cluster_address = gcomm://{peers}
wsrep_node_name = {node.name}
wsrep_node_address = 127.0.0.1:{node.gcomm_port}
wsrep_provider_options = "{options}"
wsrep_sst_method = rsync
wsrep_sst_receive_address = 127.0.0.1:{node.sst_port}
wsrep_slave_threads = 2
# Certification conflicts reach the client as deadlocks (1213) on the first one: the
# library's retry is what the tests exercise, not the server's own retry of autocommit.
wsrep_retry_autocommit = 0
"""
        )

    def _install(self, node: Node) -> None:
        argv = [
            INSTALL_DB,
            "--no-defaults",
            f"--datadir={node.datadir}",
            f"--tmpdir={node.folder / 'tmp'}",
            "--user=mysql",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            "--innodb-log-file-size=16M",
            "--innodb-buffer-pool-size=32M",
        ]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{INSTALL_DB} failed for {node.name}: {done.stdout}{done.stderr}")

    def _recovered_position(self, node: Node) -> str | None:
        """The last committed position in the node's InnoDB (``uuid:seqno``), as systemd's
        unit finds it with ``--wsrep-recover`` before a start; None if there is none.

        Started with it, a node that was killed asks the cluster only for what it
        missed (IST from a survivor's gcache); without it, after SIGKILL its
        position is unknown and it takes a full rsync SST, which holds a read
        lock on the donor (its writes wait) while the files are copied.
        """
        argv = [MARIADBD, f"--defaults-file={node.config}", "--wsrep-recover"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        with open(node.folder / "server.log", "a") as log:
            log.write(done.stdout + done.stderr)
        found = RECOVERED.search(done.stdout + done.stderr)
        if found is None or found.group(1).endswith(":-1"):
            return None
        return found.group(1)

    def _launch(self, node: Node, *, new_cluster: bool, position: str | None = None) -> None:
        argv = [MARIADBD, f"--defaults-file={node.config}"]
        if new_cluster:
            argv.append("--wsrep-new-cluster")
        if position is not None:
            argv.append(f"--wsrep-start-position={position}")
        node.daemon = Daemon(node.name, argv, node.folder / "server.log").start()

    def start(self) -> None:
        """Install every datadir, bootstrap node 1, join the others; wait for all synced."""
        for node in self.nodes:
            self._write_config(node)
        self._install(self.nodes[0])
        self._launch(self.nodes[0], new_cluster=True)
        self.wait_synced(self.nodes[0], 1)
        query(self.nodes[0].port, "CREATE DATABASE IF NOT EXISTS test")
        for node in self.nodes[1:]:  # one at a time: an rsync donor serves one joiner
            # Its datadir stays empty: the state transfer fills it.
            self._launch(node, new_cluster=False)
            self.wait_synced(node, node.number)
        for node in self.nodes:
            self.wait_synced(node, self.size)

    def kill(self, node: Node, sig: int = signal.SIGKILL) -> float:
        """Kill one node's server; returns the wall-clock time of the kill."""
        assert node.daemon is not None
        at = time.time()
        node.daemon.kill(sig)
        return at

    def restart(self, node: Node) -> float:
        """Start a stopped node again; it rejoins (never bootstraps). Seconds until synced."""
        assert not node.alive, f"{node.name} is still running"
        started = time.monotonic()
        log = node.folder / "server.log"
        seen = log.stat().st_size if log.exists() else 0
        self._launch(node, new_cluster=False, position=self._recovered_position(node))
        self.wait_synced(node, self.size)
        took = time.monotonic() - started
        with open(log, "rb") as text:
            text.seek(seen)
            joined = text.read().decode(errors="replace")
        node.joined_by = "SST" if "SST completed on joiner" in joined else "IST"
        return took

    def wait_synced(self, node: Node, size: int, timeout: float = STARTUP_TIMEOUT) -> float:
        """Wait until ``node`` is Synced and ready in a primary component of ``size`` nodes."""

        def synced() -> bool:
            if not node.alive:
                raise NodeExited(f"{node.name} exited:\n{node.tail(60)}")
            got = status(
                node.port,
                (
                    "wsrep_cluster_size",
                    "wsrep_ready",
                    "wsrep_local_state_comment",
                    "wsrep_cluster_status",
                ),
                timeout=2,
            )
            return (
                got.get("wsrep_cluster_size") == str(size)
                and got.get("wsrep_ready") == "ON"
                and got.get("wsrep_local_state_comment") == "Synced"
                and got.get("wsrep_cluster_status") == "Primary"
            )

        started = time.monotonic()
        while True:
            try:
                if synced():
                    return time.monotonic() - started
            except MySQLdb.Error:  # not up yet
                pass
            if time.monotonic() - started > timeout:
                raise NodeExited(
                    f"{node.name} not synced in a cluster of {size} within {timeout:.0f} s:\n"
                    f"{node.tail(60)}"
                )
            time.sleep(0.2)

    def heal(self) -> None:
        """Restart whatever node is down and wait for the full cluster (between tests)."""
        for node in self.nodes:
            if not node.alive:
                self.restart(node)
        for node in self.nodes:
            self.wait_synced(node, self.size)

    def close(self) -> None:
        """SIGTERM every node at once, SIGKILL what has not ended after 20 s."""
        running = [n.daemon for n in self.nodes if n.daemon is not None and n.alive]
        for daemon in running:
            assert daemon.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(daemon.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for daemon in running:
            assert daemon.proc is not None
            try:
                daemon.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                daemon.kill()


@contextlib.contextmanager
def galera_cluster(size: int = 3) -> Iterator[Cluster]:
    """A started cluster in a new temporary folder; every node ends and the folder goes after."""
    folder = Path(tempfile.mkdtemp(prefix="worksync-galera-"))
    try:
        cluster = Cluster(folder, size)
        chown_to(folder, "mysql")
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def haproxy(folder: Path, servers: Sequence[Node], port: int) -> Daemon:
    """HAProxy in TCP mode on ``port``: every connection goes to ``servers[0]`` while it
    is up, else to the next one (the rest are backups, tried in order).

    Health checks every 0.5 s (0.25 s while a server is failing), down after 2
    failures and up after 2 successes. Client traffic is watched too: one
    connection refused by a server marks it down at once (``observe layer4``),
    without waiting for the checks. Sessions on a server marked down are shut
    at once, and a connection that could not reach its server is retried on
    another one after 0.2 s (the turn-around time is ``timeout connect``).
    """
    lines = [
        "global",
        "    maxconn 2000",
        "defaults",
        "    mode tcp",
        "    timeout connect 200ms",
        "    timeout client 1h",
        "    timeout server 1h",
        "    timeout check 1s",
        "    retries 3",
        "    option redispatch 1",
        "frontend galera",
        f"    bind 127.0.0.1:{port}",
        "    default_backend nodes",
        "backend nodes",
        "    balance first",
        "    default-server inter 500 fastinter 250 downinter 500 fall 2 rise 2"
        " observe layer4 error-limit 1 on-error mark-down on-marked-down shutdown-sessions",
    ]
    for i, node in enumerate(servers):
        backup = "" if i == 0 else " backup"
        lines.append(f"    server {node.name} 127.0.0.1:{node.port} check{backup}")
    config = folder / "haproxy.cfg"
    config.write_text("\n".join(lines) + "\n")
    checked = subprocess.run(
        [HAPROXY, "-c", "-f", str(config)], capture_output=True, text=True, check=False
    )
    if checked.returncode != 0:
        raise RuntimeError(f"haproxy config refused: {checked.stdout}{checked.stderr}")
    return Daemon("haproxy", [HAPROXY, "-db", "-f", str(config)], folder / "haproxy.log").start()


@dataclass(frozen=True)
class Sample:
    """One probe round: when it began, when a node answered (and which), when its write
    committed; None for what did not happen."""

    started: float
    reached: float | None
    node: str | None
    written: float | None


class Probe:
    """A thread that asks which node serves it and writes one row, every ``every`` seconds
    through ``port``, timing both.

    ``fresh``: a new connection per round (what a client reconnecting through a
    proxy sees), else one connection, reopened after an error. A node answers
    ``SELECT @@wsrep_node_name`` at once; the write also waits for the cluster
    (a commit needs the group, which stalls while a lost member is evicted).
    """

    def __init__(self, port: int, table: str, *, every: float = 0.05, fresh: bool = False) -> None:
        self.port = port
        self.table = table  # a generated name, safe to format into the statement
        self.every = every
        self.fresh = fresh
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="galera-probe", daemon=True)

    def __enter__(self) -> Probe:
        query(self.port, f"CREATE TABLE IF NOT EXISTS test.{self.table} (id SERIAL, at DOUBLE)")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _connect(self) -> Any:
        conn = MySQLdb.connect(
            host="127.0.0.1",
            port=self.port,
            user="root",
            connect_timeout=2,
            read_timeout=10,
            write_timeout=10,
        )
        conn.autocommit(True)
        return conn

    def _run(self) -> None:
        conn: Any = None
        while not self._stop.is_set():
            started = time.time()
            reached: float | None = None
            node: str | None = None
            written: float | None = None
            try:
                if conn is None:
                    conn = self._connect()
                cur = conn.cursor()
                cur.execute("SELECT @@wsrep_node_name")
                node, reached = str(cur.fetchone()[0]), time.time()
                cur.execute(f"INSERT INTO test.{self.table} (at) VALUES (%s)", (started,))
                written = time.time()
            except MySQLdb.Error:
                with contextlib.suppress(Exception):
                    conn.close()
                conn = None
            if self.fresh and conn is not None:
                conn.close()
                conn = None
            self.samples.append(Sample(started, reached, node, written))
            self._stop.wait(self.every)
        if conn is not None:
            conn.close()

    def longest_stall(self, since: float) -> tuple[float, float]:
        """(seconds, from when): the longest span after ``since`` without a write committing."""
        done = sorted(s.written for s in self.samples if s.written and s.written >= since)
        gaps = [(later - earlier, earlier) for earlier, later in itertools.pairwise([since, *done])]
        return max(gaps, default=(0.0, since))

    def first_reached(self, since: float, other_than: str) -> float | None:
        """When a round begun after ``since`` first got an answer from another node."""
        return next(
            (
                s.reached
                for s in self.samples
                if s.started >= since and s.node is not None and s.node != other_than
            ),
            None,
        )

    def first_written(self, since: float) -> float | None:
        """When the first write of a round begun after ``since`` committed."""
        return next((s.written for s in self.samples if s.started >= since and s.written), None)

    def nodes(self, since: float = 0.0, until: float = float("inf")) -> set[str]:
        """The nodes that answered rounds begun in ``[since, until)``."""
        return {s.node for s in self.samples if s.node and since <= s.started < until}

    def failures(self) -> int:
        """Rounds in which the connection, the question or the write failed."""
        return sum(1 for s in self.samples if s.written is None)


# -- process bodies -----------------------------------------------------------------------

_CODE = re.compile(r"retrying in [0-9.]+s: \((\d+),")


class LogCounter(logging.Handler):
    """Counts the library's log records by action, retries also by kind and error code
    (``retry transient 1213``, ``retry lost 2013``); ``by_thread`` prefixes the thread name."""

    def __init__(self, by_thread: bool = False) -> None:
        super().__init__(logging.DEBUG)
        self.by_thread = by_thread
        self.counts: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        action = getattr(record, "action", None)
        if not isinstance(action, str):
            return
        key = action
        if action == "retry":
            # "<what>: transient error on attempt N, retrying in Xs: (1213, 'Deadlock ...')"
            message = record.getMessage()
            kind = "lost" if ": lost connection on attempt" in message else "transient"
            code = _CODE.search(message)
            key = f"retry {kind} {code.group(1) if code else '?'}"
        if self.by_thread:
            key = f"{record.threadName}: {key}"
        self.counts[key] = self.counts.get(key, 0) + 1


def _counting() -> LogCounter:
    counter = LogCounter()
    root = logging.getLogger("worksync_sa")
    root.addHandler(counter)
    root.setLevel(logging.DEBUG)
    return counter


@contextlib.contextmanager
def counting_logs(by_thread: bool = True) -> Iterator[LogCounter]:
    """Count this process's worksync_sa log records (DEBUG included) while the block runs."""
    root = logging.getLogger("worksync_sa")
    counter, level = LogCounter(by_thread), root.level
    root.addHandler(counter)
    root.setLevel(logging.DEBUG)
    try:
        yield counter
    finally:
        root.removeHandler(counter)
        root.setLevel(level)


def _engine(url: str) -> sa.Engine:
    return sa.create_engine(
        url, pool_size=2, max_overflow=2, pool_pre_ping=True, connect_args={"connect_timeout": 2}
    )


def galera_scheduler(
    url: str,
    table: str,
    works: list[dict[str, Any]],
    config: dict[str, Any],
    tag: str,
    stop: Any,
    results: Any,
) -> None:
    """A scheduler loop until ``stop`` is set.

    Reports ("ready", tag, None) once started, then ("ok", tag, {"counts",
    "stopped"}) or ("error", tag, repr) on ``results``.
    """
    counter = _counting()
    engine = _engine(url)
    try:
        scheduler = Scheduler(engine, blueprints(works), SchedulerConfig(**config), table=table)
        scheduler.start()
        results.put(("ready", tag, None))
        stop.wait()
        scheduler.stop(timeout=30)
        stopped = not scheduler.running
        scheduler.close()
        results.put(("ok", tag, {"counts": counter.counts, "stopped": stopped}))
    except BaseException as exc:
        results.put(("error", tag, repr(exc)))
        raise
    finally:
        engine.dispose()


def galera_worker(
    url: str,
    table: str,
    works: list[dict[str, Any]],
    journal: str,
    tag: str,
    stop: Any,
    results: Any,
    handle_seconds: float = 0.02,
) -> None:
    """A ``Worker`` loop (worker id ``tag``) until ``stop`` is set, journaling every claim;
    each claim's work takes ``handle_seconds``.

    Each journal line: name, sequence, row id, the claim's token, and the wall
    time of the claim, flushed at once so that the claims of a process that
    loses its node are known. Reports ("ready", tag, None), then ("ok", tag,
    {"handled", "counts", "stopped"}) or ("error", tag, repr) on ``results``.
    """
    counter = _counting()
    engine = _engine(url)
    log = open(journal, "a", buffering=1)  # noqa: SIM115

    def handle(claim: Any) -> None:
        log.write(f"{claim.name}\t{claim.sequence}\t{claim.id}\t{claim.token}\t{time.time():.3f}\n")
        time.sleep(handle_seconds)

    try:
        worker = Worker(
            engine,
            blueprints(works),
            handle,
            table=table,
            poll="200ms",
            max_backoff="1s",
            worker_id=tag,
        )
        worker.start()
        results.put(("ready", tag, None))
        stop.wait()
        worker.stop(timeout=30)
        stopped = not worker.running
        worker.close()
        payload = {"handled": worker.handled, "counts": counter.counts, "stopped": stopped}
        results.put(("ok", tag, payload))
    except BaseException as exc:
        results.put(("error", tag, repr(exc)))
        raise
    finally:
        log.close()
        engine.dispose()


@dataclass(frozen=True)
class JournalLine:
    """One claim as a worker wrote it down when it got it."""

    worker: str
    name: str
    sequence: str
    row_id: int
    token: str
    at: float


def read_journals(folder: Path) -> list[JournalLine]:
    """Every complete line of every ``<worker>.journal`` in ``folder`` (a line cut short by
    a kill is ignored)."""
    lines = []
    for path in sorted(folder.glob("*.journal")):
        for text in path.read_text().splitlines():
            parts = text.split("\t")
            if len(parts) == 5 and parts[4]:
                name, sequence, row_id, token, at = parts
                lines.append(JournalLine(path.stem, name, sequence, int(row_id), token, float(at)))
    return lines


def utc(seconds: float) -> datetime:
    """A wall-clock time as an aware UTC datetime."""
    return datetime.fromtimestamp(seconds, timezone.utc)
