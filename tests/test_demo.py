"""The demo the README's Quick start runs, and the command line around it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import Backend, fresh_table_name

pytestmark = pytest.mark.slow


def worksync(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKSYNC_")}
    return subprocess.run(
        [sys.executable, "-m", "worksync_sa", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def check_demo_output(output: str) -> None:
    claims = re.findall(r"worker (\d+) claimed (\S+)\s+@ ([\d-]+ [\d:]+) \(row (\d+)\)", output)
    assert claims, output
    assert len({row for *_, row in claims}) == len(claims)  # no row claimed twice
    table = re.findall(
        r"^  (demo\.\w+)\s+([\d-]+ [\d:]+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", output, re.M
    )
    assert table, output
    for _, _, max_run, claimed, succeeded, failed in table:
        assert int(claimed) <= int(max_run)
        assert int(succeeded) + int(failed) == int(claimed)
    assert re.search(r"^OK: \d+ ticks, \d+ claims", output, re.M), output


def test_demo_runs_on_an_embedded_sqlite_file_by_default(tmp_path: Path) -> None:
    result = worksync("demo", "--seconds", "6", "--workers", "3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "worksync-demo.db").is_file()
    assert "schema at head" in result.stdout
    check_demo_output(result.stdout)


def test_demo_runs_on_a_server(mariadb: Backend, tmp_path: Path) -> None:
    table = fresh_table_name()
    url = mariadb.engine.url.render_as_string(hide_password=False)
    try:
        result = worksync("demo", "--db", url, "--table", table, "--seconds", "5", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        check_demo_output(result.stdout)
    finally:
        with mariadb.engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}, {table}_alembic_version")


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert worksync(cwd=tmp_path).returncode == 2
    assert worksync("demo", "--workers", "0", cwd=tmp_path).returncode == 2
    assert worksync("demo", "--seconds", "soon", cwd=tmp_path).returncode == 2
    bad_table = worksync("demo", "--table", "works; DROP TABLE x", cwd=tmp_path)
    assert bad_table.returncode == 2
    assert "--table: table name 'works; DROP TABLE x' is not allowed" in bad_table.stderr
    assert not (tmp_path / "worksync-demo.db").exists()  # nothing was written


def test_runtime_errors_are_one_clear_line_and_hide_passwords(tmp_path: Path) -> None:
    result = worksync("demo", "--db", "postgresql+psycopg://me:hunter2@127.0.0.1:1/x", cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "hunter2" not in result.stdout + result.stderr


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "worksync"
    result = subprocess.run(
        [str(script), "demo", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    assert "--db" in result.stdout
