"""What ``pip install worksync_sa`` with no extras gives a user.

SQLAlchemy 2.1 no longer installs greenlet, and its asyncio module refuses to
import without it. Each check runs in a child process in which greenlet cannot
be imported (``sys.modules['greenlet'] = None`` is how Python marks a missing
module), so it holds in a venv that has greenlet too; the compatibility matrix
(``scripts/matrix``) also runs this file in a real venv with no extras.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from worksync_sa.schema import head_revision

BLOCK = "import sys; sys.modules['greenlet'] = None\n"


def _child(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCK + code],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_blocking_services_work_without_greenlet(tmp_path: Path) -> None:
    code = """
import sys
import datetime as dt
import worksync_sa as ws

engine = ws.create_engine("sqlite:///w.db")
ws.upgrade(engine)
scheduler = ws.Scheduler(engine, [ws.Work("job", "* * * * *", max_run=2)])
tick = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
scheduler.run_pass(now=tick - dt.timedelta(seconds=30))
sync = ws.WorkSync(engine)
sequence = ws.default_sequence(tick)
claims = [sync.acquire("job", sequence) for _ in range(3)]
won = [c for c in claims if c is not None]
for claim in won:
    claim.success()
print(len(won), "sqlalchemy.ext.asyncio" in sys.modules, sys.modules["greenlet"] is not None)
"""
    done = _child(code, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["2", "False", "False"]


def test_the_asyncio_twins_name_the_extra_when_used_without_greenlet(tmp_path: Path) -> None:
    code = """
import worksync_sa as ws
for name in ("AsyncWorkSync", "AsyncScheduler"):
    twin = getattr(ws, name)
    try:
        twin(object()) if name == "AsyncWorkSync" else twin(object(), [ws.Work("j", "* * * * *")])
    except ws.InvalidArgumentError as exc:
        print(name, exc)
"""
    done = _child(code, tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2
    for line in lines:
        assert "pip install 'worksync_sa[asyncio]'" in line, line


def test_the_command_runs_without_greenlet(tmp_path: Path) -> None:
    code = """
import sys
from worksync_sa.__main__ import main
sys.exit(main(["migrate", "--db", "sqlite:///w.db"]))
"""
    done = _child(code, tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"to {head_revision()} (head)" in done.stdout + done.stderr
    listed = _child("from worksync_sa.__main__ import main\nmain(['--help'])", tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "usage: worksync" in listed.stdout
