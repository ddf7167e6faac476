"""The host-app guide's lifespan under uvicorn, with a handler that hangs: it still stops.

``async with AsyncWorker(...)`` in a lifespan used to wait for running claims forever,
so uvicorn ignored SIGTERM and SIGINT and needed SIGKILL. Leaving it now waits at most
the worker's ``drain``; the hung claim is cancelled and recorded FAILED ("shut down").
A real uvicorn process, a real signal, each database through its asyncio driver.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from worksync_sa import Scheduler, SchedulerConfig, Work, WorkStatus

from .conftest import Db
from .topology import free_ports
from .twins import async_url

pytest.importorskip("uvicorn", reason="the web extra brings uvicorn")

APP = """
import asyncio
import contextlib
import pathlib

from sqlalchemy.ext.asyncio import create_async_engine
from starlette.applications import Starlette

from worksync_sa import AsyncWorker

engine = create_async_engine({url!r})


async def hangs(claim):
    pathlib.Path("started").write_text(str(claim.id))
    await asyncio.sleep(3600)


@contextlib.asynccontextmanager
async def lifespan(app):
    async with AsyncWorker(engine, ["hung"], hangs, table={table!r}, drain="2s"):
        yield
    await engine.dispose()


app = Starlette(lifespan=lifespan)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_the_lifespan_stops_within_the_drain_when_a_handler_hangs(
    db: Db, tmp_path: Path, sig: signal.Signals
) -> None:
    url = async_url(db.engine.url).render_as_string(hide_password=False)
    Scheduler(
        db.engine, [Work("hung", "* * * * * *")], SchedulerConfig(lookahead="1m", interval="10s"),
        table=db.table,
    ).run_pass(db.db_now() - timedelta(seconds=2))  # fmt: skip
    (tmp_path / "app.py").write_text(APP.format(url=url, table=db.table))
    (port,) = free_ports(1)
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app:app", "--port", str(port), "--log-level", "info"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "started").exists():
            assert server.poll() is None, server.communicate()[0]
            assert time.monotonic() < deadline, "the handler never started"
            time.sleep(0.1)
        begun = time.monotonic()
        server.send_signal(sig)
        output, _ = server.communicate(timeout=30)
        took = time.monotonic() - begun
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    # uvicorn re-raises the signal it handled once its shutdown is complete (newer releases)
    assert server.returncode in (0, -sig), output
    assert "Application shutdown complete" in output
    assert took < 2 + 5, output  # the drain, then cancelling, recording and exiting
    claimed = int((tmp_path / "started").read_text())
    (row,) = db.rows(id=claimed)
    assert row.status == WorkStatus.FAILED
    assert row.error.endswith("shut down: still running 2 s after the worker was asked to stop")
