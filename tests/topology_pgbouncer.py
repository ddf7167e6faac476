"""PgBouncer on loopback, in front of the test PostgreSQL server, for the topology tests."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from benchmarks.bouncer import write_config

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
    # Transaction pooling: fewer server connections than clients, so transactions
    # really do move between them, each on the next server connection in turn, so a
    # client never finds its own session state (prepares) again. Session pooling
    # gives each client connection a server connection of its own, for good.
    return write_config(
        folder,
        port,
        server,
        mode=mode,
        pool_size=4 if mode == "transaction" else 60,
        round_robin=True,
    )


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
