"""Transactions left open on the work table: seen, logged, and beside the original ended.

A transaction that sits idle while holding locks holds up every write that
meets them, for as long as its connection lives. The Go original leaves one
behind whenever its create finds a tick already complete (see
``_sql.blockers``); beside it, ``leave_to_original`` keeps that from
happening, and this watch ends what still does: on restart the original
creates the next tick whatever its time, even one we completed already.

Only a SERIALIZABLE transaction is ended, and only when ``leave_to_original``
says the original runs beside us: that is its create's fingerprint (no other
statement of either program runs so, nor sits idle inside a transaction).
Anything else is only reported, once a minute while it lasts: it is someone
else's transaction to end.

When one of our writes has just waited for a lock in vain, the watch ends the
original's idle transactions however young (see ``BLOCKED_IDLE_SECONDS``): with
two of its schedulers one is left open per tick per work, a new one every
second or so, and before our first pass has written the lookahead each one's
locks reach over every upcoming tick of its work. Ending them between our own
statements is not enough there: a fresh one forms within milliseconds of the
last one ending, so a started scheduler also runs a watch loop of its own that
ends them while our writes wait (``_core.passes.WATCH_EVERY``).
"""

from __future__ import annotations

import logging
import time
from functools import partial

import sqlalchemy as sa

from .._run.retry import first_line
from .._run.steps import Call, Steps
from .repositories import LockHolder, PassRepository

logger = logging.getLogger("worksync_sa.scheduler")

IDLE_SECONDS = 1
"""How long a transaction with locks must sit idle to count. The original's create never
pauses between its two statements, so a second idle means it was left open; and were a
live one ended, its tick would lose nothing (its transaction rolls back, and the tick gets
its last row from us at ``leave_to_original``). Each second it stays, the original's next
create waits on its lock and falls behind, and finds the next tick complete too."""
BLOCKED_IDLE_SECONDS = 0
"""The same, once one of our writes has waited for a lock in vain (``steps(now=True)``):
any idle SERIALIZABLE transaction may be what holds it, and a leak a second old is
already one too many. The original's creates run about one a second beside two of its
schedulers, so a write that spared the young ones met a new one on every retry. Only
the SERIALIZABLE ones are looked at so young: anything else is reported only once idle
for ``IDLE_SECONDS``."""
REPORT_EVERY = 60.0
"""Seconds between two reports of the same transaction."""
LOOK_EVERY = 60.0
"""Seconds between looks when ending none (beside the original: every pass)."""


class LockWatch:
    """One scheduler's watch for transactions left open in its database."""

    def __init__(self, end_originals: bool, *, reports: bool = True) -> None:
        self.end_originals = end_originals
        self.reports = reports
        """False: only end (the scheduler's watch loop; its passes' own watch reports)."""
        self._looked: float | None = None
        self._reported: dict[int, float] = {}
        self._blind = False
        """The server refused to show its transactions (no PROCESS privilege), or is not MySQL."""

    def steps(self, repo: PassRepository, *, now: bool = False) -> Steps[int]:
        """Look (every pass beside the original, else once a minute); returns how many ended.

        ``now``: look whatever the time, as a write of the pass just waited for a lock in vain;
        beside the original, its transactions are then ended however short their idle.
        """
        at = time.monotonic()
        if self._blind or (
            not (now or self.end_originals)
            and self._looked is not None
            and at - self._looked < LOOK_EVERY
        ):
            return 0
        self._looked = at
        blocked = now and self.end_originals
        idle = BLOCKED_IDLE_SECONDS if blocked else IDLE_SECONDS
        try:
            holders = yield Call("lock holders", partial(repo.idle_lock_holders, idle_seconds=idle))
        except sa.exc.DBAPIError as exc:
            self._blind = True
            logger.warning(
                "cannot look for transactions left open on the work table (%s); grant this "
                "user PROCESS to have them found and reported",
                first_line(exc),
                extra={"action": "lock-holder"},
            )
            return 0
        if holders is None:
            self._blind = True
            return 0
        ended = 0
        for holder in holders:
            if self.end_originals and holder.isolation == "SERIALIZABLE":
                ended += yield from self._end(repo, holder)
            elif self.reports and holder.idle >= IDLE_SECONDS:  # a young one is no leak yet
                self._report(holder, at)
        seen = {holder.connection for holder in holders}
        self._reported = {k: v for k, v in self._reported.items() if k in seen}
        return ended

    def _end(self, repo: PassRepository, holder: LockHolder) -> Steps[int]:
        try:
            yield Call("end connection", partial(repo.end_connection, connection=holder.connection))
        except sa.exc.DBAPIError as exc:
            self._report(holder, time.monotonic(), refused=first_line(exc))
            return 0
        logger.error(
            "ended connection %d (%s@%s): %s, idle %d s, with %d row lock(s) on this database; "
            "the Go original's create leaves one open when it finds a tick already complete: "
            "after a restart, and on every tick of a work that ticks at least as often as its "
            "scheduler looks (each look creates one tick per work, so it falls behind); for "
            "other works, if this repeats, shorten leave_to_original",
            holder.connection,
            holder.user,
            holder.host,
            _described(holder),
            holder.idle,
            holder.rows_locked,
            extra={"action": "lock-holder"},
        )
        return 1

    def _report(self, holder: LockHolder, now: float, refused: str | None = None) -> None:
        last = self._reported.get(holder.connection)
        if last is not None and now - last < REPORT_EVERY:
            return
        self._reported[holder.connection] = now
        if refused is not None:
            advice = (
                f"ending it failed ({refused}): grant this user CONNECTION ADMIN (MariaDB) or "
                f"CONNECTION_ADMIN (MySQL), or end it yourself with KILL {holder.connection}"
            )
        elif holder.isolation == "SERIALIZABLE":
            advice = (
                "the Go original's create leaves one open when it finds a tick already "
                f"complete: end it with KILL {holder.connection}, and set leave_to_original "
                "while the original's scheduler runs (the scheduler then ends these itself)"
            )
        else:
            advice = f"find the program that left it open, or end it with KILL {holder.connection}"
        logger.error(
            "connection %d (%s@%s) holds %d row lock(s) on this database in %s, idle for %d s: "
            "writes that meet its locks wait on it; %s",
            holder.connection,
            holder.user,
            holder.host,
            holder.rows_locked,
            _described(holder),
            holder.idle,
            advice,
            extra={"action": "lock-holder"},
        )


def _described(holder: LockHolder) -> str:
    return f"a {holder.isolation} transaction open for {holder.age} s"
