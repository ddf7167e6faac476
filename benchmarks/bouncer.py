"""PgBouncer in transaction mode in front of the benchmark's PostgreSQL, for large fleets.

Every worker keeps a connection of its own (its lane), so a fleet of W
workers needs some W connections; this machine's PostgreSQL takes 100.
Production fleets that size sit behind a pooler, as the issue's own
measurement at W = 128 did: PgBouncer in transaction pooling shares
``SERVER_POOL`` server connections among them all.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa

PGBOUNCER = "/usr/sbin/pgbouncer"
SERVER_POOL = 40


def available() -> bool:
    return Path(PGBOUNCER).exists()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def write_config(
    folder: Path,
    port: int,
    server: sa.URL,
    *,
    mode: str,
    pool_size: int,
    round_robin: bool = False,
) -> Path:
    """A PgBouncer config in ``folder`` for ``server``'s database, trusting its user."""
    database = server.database or "postgres"
    user = server.username or "postgres"
    trusted = f'"{user}" ""\n'  # auth_type trust: the user, with no password
    (folder / "users.txt").write_text(trusted)
    ini = folder / "pgbouncer.ini"
    lines = [
        "[databases]",
        f"{database} = host={server.host or '127.0.0.1'} port={server.port or 5432} "
        f"dbname={database}",
        "[pgbouncer]",
        "listen_addr = 127.0.0.1",
        f"listen_port = {port}",
        "unix_socket_dir =",
        "auth_type = trust",
        f"auth_file = {folder / 'users.txt'}",
        f"pool_mode = {mode}",
        f"default_pool_size = {pool_size}",
        "max_client_conn = 1000",
        f"logfile = {folder / 'pgbouncer.log'}",
        f"pidfile = {folder / 'pgbouncer.pid'}",
    ]
    if round_robin:
        lines.append("server_round_robin = 1")
    ini.write_text("\n".join([*lines, ""]))
    return ini


@contextlib.contextmanager
def bouncer(server_url: str) -> Iterator[str]:
    """``server_url`` through a PgBouncer of its own (transaction pooling), until the block ends."""
    server = sa.make_url(server_url)
    folder = Path(tempfile.mkdtemp(prefix="ws-bench-pgbouncer-"))
    port = _free_port()
    ini = write_config(folder, port, server, mode="transaction", pool_size=SERVER_POOL)
    command = [PGBOUNCER, str(ini)]
    if os.geteuid() == 0:  # PgBouncer refuses to run as root
        shutil.chown(folder, "postgres")
        for path in folder.iterdir():
            shutil.chown(path, "postgres")
        command = ["runuser", "-u", "postgres", "--", *command]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not _open(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"PgBouncer did not start: see {folder / 'pgbouncer.log'}")
            time.sleep(0.1)
        yield server.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(folder, ignore_errors=True)
