"""What both runners hold and how they start a call: one definition for the twins.

A runner (``_run.blocking``, ``_run.async_runner``) only performs the steps
that ``_run.attempts`` yields, by blocking or by awaiting. What a call's
attempts are given is chosen here, once: its retry rule, its counters, whether
a success commits (no lanes on a pool that shares one connection), and whether
its work queues for the SQLite writers' lock.
"""

from __future__ import annotations

from typing import TypeVar

from sqlalchemy.engine import URL

from ..config import RetryPolicy
from .attempts import Attempts, Counters, attempts
from .retry import Retry
from .steps import Call
from .writelock import WriteLock, writer_lock

T = TypeVar("T")


class RunnerBase:
    """The state both runners keep: table, retry policy, counters and the writers' lock."""

    def __init__(self, url: URL, dialect: str, table: str, policy: RetryPolicy) -> None:
        self.table = table
        self.policy = policy
        self.sqlite = dialect == "sqlite"
        self.mysql = dialect in ("mysql", "mariadb")
        self.writer: WriteLock | None = writer_lock(url) if self.sqlite else None
        """SQLite's writers' lock, across processes; None on a server or a memory or URI file."""
        self.counters = Counters()

    @property
    def lost_connections(self) -> int:
        """Connections lost or refused so far (see ``Counters``)."""
        return self.counters.lost_connections

    def attempts(self, call: Call[T], *, lanes: bool) -> Attempts[T]:
        """The steps of ``call`` (``lanes``: it runs on autocommit lanes, so nothing to commit)."""
        return attempts(
            call,
            Retry(self.policy, self.table, self.sqlite, call.what, call.wait_out_locks),
            self.counters,
            transactional=not lanes,
            locked=self.writer is not None,
        )
