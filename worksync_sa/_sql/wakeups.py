"""PostgreSQL wake-ups: the channel a table's writers notify, and what they say on it.

Writers that make rows due now (an operator's run-now or retry, a scheduler
pass that creates ticks late) notify the table's channel in their own
transaction; a worker listening there looks at once instead of at its next
poll. NOTIFY is transactional: it is delivered at commit, so a listener never
hears of rows it cannot see yet, and a rolled-back write wakes nobody.

Only the channel name cannot be bound: ``LISTEN`` takes an identifier. It is
made here from a table name already held to letters, digits and underscores
(``models.validate_table_name``), kept within PostgreSQL's 63 bytes, and
quoted by the dialect's identifier preparer. The notify itself binds both the
channel and the payload (``pg_notify``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from ..models import validate_table_name

CHANNEL_PREFIX = "worksync_"
CHANNEL_MAX_BYTES = 63
"""PostgreSQL's identifiers (``NAMEDATALEN`` - 1): a longer channel is refused by
``pg_notify`` and cut short by ``LISTEN``, so the two would never meet."""
PAYLOAD_MAX_BYTES = 7999
"""PostgreSQL refuses a payload of 8000 bytes or more."""
_CHANNEL = re.compile(rf"worksync_[A-Za-z0-9_]{{1,{CHANNEL_MAX_BYTES - len(CHANNEL_PREFIX)}}}")
ANYTHING = ""
"""The payload that wakes every listener: too many names to say, or none known."""


def channel_for(table: str) -> str:
    """``worksync_<table>``; past 63 bytes, its start and a hash of the whole (deterministic).

    Every writer and listener of one table derives the same name, with no
    setting to keep in step across a fleet.
    """
    name = CHANNEL_PREFIX + validate_table_name(table)
    if len(name.encode()) <= CHANNEL_MAX_BYTES:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:12]
    return f"{name[: CHANNEL_MAX_BYTES - len(digest) - 1]}_{digest}"


def payload_for(names: Iterable[str]) -> str:
    """The work names as a JSON list, or :data:`ANYTHING` when that would not fit."""
    text = json.dumps(sorted(set(names)), ensure_ascii=False, separators=(",", ":"))
    return text if len(text.encode()) <= PAYLOAD_MAX_BYTES else ANYTHING


def names_in(payload: str) -> frozenset[str] | None:
    """The work names a payload wakes; None for anything (empty); empty for no work of ours.

    A payload that is not a list of names (a worker's start-up probe, another
    program's message) names no work.
    """
    if payload == ANYTHING:
        return None
    if not payload.startswith("["):
        return frozenset()
    try:
        found = json.loads(payload)
    except ValueError:
        return frozenset()
    if not isinstance(found, list):
        return frozenset()
    return frozenset(name for name in found if isinstance(name, str))


def notify() -> sa.Select[Any]:
    """``SELECT pg_notify(:channel, :payload)``, both bound; sent when the transaction commits."""
    return sa.select(
        sa.func.pg_notify(
            sa.bindparam("channel", type_=sa.String()), sa.bindparam("payload", type_=sa.String())
        )
    )


def listen_sql(dialect: Dialect, channel: str) -> str:
    """``LISTEN "<channel>"``: the one statement here with an identifier in its text.

    ``channel`` must come from :func:`channel_for` (checked again here): the
    preparer quotes it, so its case and characters reach the server as they are.
    """
    if not _CHANNEL.fullmatch(channel):
        raise ValueError(f"not a wake-up channel: {channel!r}")
    return "LISTEN " + dialect.identifier_preparer.quote_identifier(channel)


def name_session() -> sa.Select[Any]:
    """Set ``application_name`` to ``:name`` for the session: operators see who listens."""
    return sa.select(
        sa.func.set_config("application_name", sa.bindparam("name", type_=sa.String()), False)
    )
