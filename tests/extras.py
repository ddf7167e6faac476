"""Skips that name the extra to install, so a venv without it still collects cleanly.

The compatibility matrix (``scripts/matrix``) runs the suite in a venv made by
a plain ``pip install .``: there a test that needs an optional dependency is
skipped, and its reason says which ``worksync_sa[...]`` extra brings it. In
the full venv (``scripts/test``) every one of them is installed and nothing
here skips.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import NoReturn

import pytest

EXTRA_OF = {
    "greenlet": "asyncio",
    "aiosqlite": "async-sqlite",
    "aiomysql": "async-mysql",
    "MySQLdb": "mysql",
    "psycopg": "postgresql",
    "prometheus_client": "prometheus",
    "starlette": "web",
    "uvicorn": "web",
    "jinja2": "web",
    "anyio": "web",
    "httpx": "dev",
    "selenium": "dev",
    "asyncmy": "dev",
}
"""The extra that installs each optional module the tests import."""


def reason(module: str, extra: str | None = None) -> str:
    """Why a test is skipped: the missing module and the extra that installs it."""
    top = module.partition(".")[0]
    return f"{top} is not installed: pip install 'worksync_sa[{extra or EXTRA_OF[top]}]'"


def need(module: str, extra: str | None = None) -> ModuleType:
    """The module, or a skip naming its extra (the whole module's, at module level)."""
    found: ModuleType = pytest.importorskip(module, reason=reason(module, extra))
    return found


def skip_module(missing: ModuleNotFoundError) -> NoReturn:
    """Skip the importing test module for the optional module it could not import.

    For ``try: import ... except ModuleNotFoundError as missing: skip_module(missing)``.
    A module the tests do not know as optional is a real error, and is raised.
    """
    name = (missing.name or "").partition(".")[0]
    if name not in EXTRA_OF:
        raise missing
    importer = sys._getframe(1).f_globals.get("__name__", "?")  # pytest shows this file's line
    pytest.skip(f"{importer}: {reason(name)}", allow_module_level=True)
