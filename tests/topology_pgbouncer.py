"""PgBouncer on loopback, in front of the test PostgreSQL server, for the topology tests."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from .topology import Daemon, as_user, chown_to, free_ports, need, port_open, wait_until

PGBOUNCER = "/usr/sbin/pgbouncer"


@dataclass
class Bouncer:
    """A running PgBouncer; ``url`` is the server URL pointed at it."""

    daemon: Daemon
    port: int
    url: str
    mode: str


def _config(folder: Path, port: int, server: sa.URL, mode: str) -> Path:
    database = server.database or "postgres"
    user = server.username or "postgres"
    (folder / "users.txt").write_text(f'"{user}" ""\n')
    ini = folder / "pgbouncer.ini"
    ini.write_text(
        "\n".join(
            [
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
                # Transaction pooling: fewer server connections than clients, so
                # transactions really do move between them. Session pooling gives
                # each client connection a server connection of its own, for good.
                f"default_pool_size = {4 if mode == 'transaction' else 60}",
                "max_client_conn = 500",
                # Each transaction on the next server connection in turn, so a
                # client never finds its own session state (prepares) again.
                "server_round_robin = 1",
                f"logfile = {folder / 'pgbouncer.log'}",
                f"pidfile = {folder / 'pgbouncer.pid'}",
                "",
            ]
        )
    )
    return ini


@contextlib.contextmanager
def pgbouncer(server_url: str, mode: str) -> Iterator[Bouncer]:
    """A PgBouncer in ``mode`` (transaction, session) for the database of ``server_url``."""
    need(PGBOUNCER)
    folder = Path(tempfile.mkdtemp(prefix="ws-pgbouncer-"))
    server = sa.make_url(server_url)
    (port,) = free_ports(1)
    ini = _config(folder, port, server, mode)
    chown_to(folder, "postgres")  # PgBouncer refuses to run as root
    daemon = Daemon("pgbouncer", as_user("postgres", [PGBOUNCER, str(ini)]), folder / "out.log")
    try:
        daemon.start()
        wait_until(lambda: port_open(port), 30, f"PgBouncer on port {port}")
        url = server.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
        yield Bouncer(daemon, port, url, mode)
    finally:
        daemon.stop()
        shutil.rmtree(folder, ignore_errors=True)
