"""One writer at a time on a SQLite file, queued in the kernel instead of by polling.

SQLite lets one process write at a time; a writer that finds the lock taken
can only sleep and try again. Its own busy handler sleeps 1, 2, 5, 10... 100 ms
between tries, so a handful of busy processes spend most of their time asleep
while the lock sits free. Eight processes claiming at once fall from
thousands of claims a second to about two hundred.

Our writers first take an exclusive ``flock`` on a small file next to the
database. Waiters block in the kernel and wake the moment it is released, so
the SQLite lock is nearly always free when they reach it, and every writer,
the scheduler included, gets its turn. Writers outside worksync_sa still work:
they meet SQLITE_BUSY now and then, which the services retry.
"""

from __future__ import annotations

import os
from types import TracebackType

import sqlalchemy as sa

from .process import pid

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows
    fcntl = None  # type: ignore[assignment]


class WriteLock:
    """An exclusive ``flock`` on ``<database>-worksync.lock``, one per runner.

    The lock belongs to this instance's open file, so it queues other
    processes and other runners, but not threads or tasks sharing this
    runner: for them ``try_acquire`` succeeds while it is held, and one
    ``release`` frees it for all.
    """

    def __init__(self, database: str, suffix: str = "-worksync.lock") -> None:
        self.path = os.path.abspath(database) + suffix
        self._fd: int | None = None
        self._owner = -1

    def _descriptor(self) -> int:
        if self._owner != pid():  # after fork, the descriptor (and its lock) is the parent's
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            self._owner = pid()
        assert self._fd is not None
        return self._fd

    def try_acquire(self) -> bool:
        """Take the lock if it is free right now; False if another writer holds it."""
        if fcntl is None:
            return True
        try:
            fcntl.flock(self._descriptor(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def __enter__(self) -> WriteLock:
        if fcntl is not None:
            fcntl.flock(self._descriptor(), fcntl.LOCK_EX)
        return self

    def release(self) -> None:
        self.__exit__(None, None, None)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if fcntl is not None and self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)


def writer_lock(url: sa.URL, suffix: str = "-worksync.lock") -> WriteLock | None:
    """The writers' lock of a SQLite database file; None for memory and URI databases."""
    database = str(url.database or "")
    if database in ("", ":memory:") or database.startswith("file:"):
        return None
    return WriteLock(database, suffix)
