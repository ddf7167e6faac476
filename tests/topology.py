"""Shared pieces for the topology tests: free ports, daemons in temporary folders.

Each topology (PgBouncer, Galera, HAProxy, a PostgreSQL primary and standby)
is started by its test module on loopback, on ports of its own, in a
temporary folder, and torn down afterwards. Tests using them carry the
``topology`` marker: ``scripts/test`` leaves them out, ``scripts/test --all`` runs them.
A missing program skips them, unless WORKSYNC_REQUIRE_TOPOLOGIES is set
(``.ci/run`` sets it); then they fail.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

REQUIRED = os.environ.get("WORKSYNC_REQUIRE_TOPOLOGIES", "") not in ("", "0")


def need(*paths: str) -> None:
    """Skip (or fail, when topologies are required) unless every program exists."""
    missing = [p for p in paths if shutil.which(p) is None and not Path(p).exists()]
    if missing:
        message = f"topology programs missing: {', '.join(missing)} (scripts/lib.sh installs them)"
        if REQUIRED:
            pytest.fail(message)
        pytest.skip(message)


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports nobody listens on right now."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, step: float = 0.1) -> float:
    """Seconds it took for ``predicate`` to hold; fails the test naming ``what`` on timeout."""
    started = time.monotonic()
    while True:
        try:
            if predicate():
                return time.monotonic() - started
        except Exception:  # not up yet
            pass
        if time.monotonic() - started > timeout:
            pytest.fail(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(step)


def chown_to(path: Path, user: str) -> None:
    """Give a folder (recursively) to a system user, e.g. ``postgres`` or ``mysql``."""
    subprocess.run(["chown", "-R", f"{user}:{user}", str(path)], check=True)


def as_user(user: str, argv: Sequence[str]) -> list[str]:
    """``argv`` run as ``user`` (the tests run as root; servers refuse to)."""
    if os.geteuid() != 0:
        return list(argv)
    return ["runuser", "-u", user, "--", *argv]


class Daemon:
    """A server process in the foreground of its own process group, with its log file."""

    def __init__(self, name: str, argv: Sequence[str], log: Path, **popen: Any) -> None:
        self.name = name
        self.argv = list(argv)
        self.log = log
        self.popen = popen
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                **self.popen,
            )  # fmt: skip
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (a server's children die with it)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(30)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not ended after 20 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.kill()

    def tail(self, lines: int = 30) -> str:
        """The end of its log, for failure messages."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@contextlib.contextmanager
def daemons() -> Iterator[list[Daemon]]:
    """A list to put daemons in; every one still running is stopped at the end."""
    started: list[Daemon] = []
    try:
        yield started
    finally:
        for daemon in reversed(started):
            daemon.stop()
