"""The one fixture that makes a module part of the contract suite."""

from __future__ import annotations

import pytest

from ..conftest import Db


@pytest.fixture
def db(twin_db: Db) -> Db:
    """An empty table on each backend, served by each twin in turn."""
    return twin_db
