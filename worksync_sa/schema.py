"""Schema management: where our Alembic scripts are, and how to run them.

Alembic owns the table. A host either runs our migrations on their own
(:func:`upgrade`, or ``alembic upgrade head`` from this repository), or adds
our versions directory to its own Alembic environment; our revisions carry
the branch label ``worksync`` and namespaced ids, so they sit beside the
host's history without touching it.

:func:`include_object` is for the host's ``env.py``: with it, the host's
autogenerate never proposes to drop the work table it does not model.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Engine

from ._tx import checked_engine
from .models import DEFAULT_TABLE, validate_table_name, version_table_for

BRANCH_LABEL = "worksync"
IncludeObject = Callable[[Any, "str | None", str, bool, Any], bool]


def migrations_path() -> Path:
    """The directory holding our ``env.py`` and ``versions/``.

    Inside an installed wheel it is ``worksync_sa/migrations``; in a source
    checkout it is the repository's top-level ``migrations/``.
    """
    here = Path(__file__).resolve().parent
    for candidate in (here / "migrations", here.parent / "migrations"):
        if (candidate / "env.py").is_file() and (candidate / "versions").is_dir():
            return candidate
    raise FileNotFoundError(f"worksync_sa migrations not found next to {here}")


def alembic_config(*, table: str = DEFAULT_TABLE) -> Config:
    """An Alembic Config that runs our own environment against one work table."""
    config = Config()
    config.set_main_option("script_location", str(migrations_path()).replace("%", "%%"))
    config.attributes["worksync_table"] = validate_table_name(table)
    return config


def upgrade(engine: Engine, revision: str = "head", *, table: str = DEFAULT_TABLE) -> None:
    """Create or upgrade the work table (``alembic upgrade``) on ``engine``."""
    _run(engine, table, lambda config: command.upgrade(config, revision))


def downgrade(engine: Engine, revision: str = "base", *, table: str = DEFAULT_TABLE) -> None:
    """Downgrade the work table; ``base`` drops it."""
    _run(engine, table, lambda config: command.downgrade(config, revision))


def _run(engine: Engine, table: str, action: Callable[[Config], None]) -> None:
    config = alembic_config(table=table)
    with checked_engine(engine).begin() as conn:
        config.attributes["connection"] = conn
        action(config)


def include_object_for(*tables: str) -> IncludeObject:
    """An Alembic ``include_object`` hook that hides these work tables from autogenerate."""
    hidden = set()
    for table in tables or (DEFAULT_TABLE,):
        hidden.update({validate_table_name(table), version_table_for(table)})

    def include_object(
        obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
    ) -> bool:
        if type_ == "table":
            return name not in hidden
        owner = getattr(obj, "table", None)
        return getattr(owner, "name", None) not in hidden

    return include_object


include_object: IncludeObject = include_object_for(DEFAULT_TABLE)
"""Hides the default ``works`` table from a host's autogenerate (see :func:`include_object_for`)."""
