"""What only the services run on the table: the repositories' service-side statements.

A host calling the public repositories inside its own transactions needs a
few calls (insert, claim, heartbeat, finish, recover, prune, read). A pass
and a claim need more: the window's state, adoption of other programs'
rows, closing surplus, the resume point, and the reads that resolve a lost
reply or peek at a busy SQLite file. Those live here, on subclasses the cores
use, so the public classes show only what a host should call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .._sql.blockers import end_connection, idle_lock_holders
from .._sql.claims import (
    batch_by_token,
    batch_left,
    claim_batch_returning,
    claim_batch_statement,
    claim_by_token,
    claim_state,
    finished_by_claim,
    lease_of,
    queued_left,
)
from .._sql.dialect import family_of, returns_inserted
from .._sql.direct import execute
from .._sql.schedule import adopt, close_surplus, latest_ticks, pass_view
from ..models import WorkStatus, as_utc, checked_moment
from ..repository import EARLIEST_TICK as EARLIEST
from ..repository import ClaimRepository, ScheduleRepository, now_params, wake_workers
from ..rows import Adoption, ClaimedRow, PauseState, Surplus, TickState, claimed_row


@dataclass(frozen=True, slots=True)
class LockHolder:
    """Another connection idle in a transaction that holds locks (see ``_sql.blockers``)."""

    connection: int
    user: str
    host: str
    idle: int
    """Seconds since its last statement."""
    age: int
    """Seconds since its transaction began."""
    isolation: str
    rows_locked: int


class ClaimState(NamedTuple):
    """A claimed row as committed: what ``claim_from_row`` checks before it makes a claim."""

    status: WorkStatus
    token: str | None
    attempts: int | None


class PassRepository(ScheduleRepository):
    """The scheduler pass's statements beyond the public ``ScheduleRepository``."""

    insert_rows = ScheduleRepository._insert_rows

    def wake(self, conn: Connection, names: Sequence[str]) -> bool:
        """Notify the workers listening on PostgreSQL that ``names`` have rows due now.

        After the batches that wrote them have committed (the pass's writes
        run in autocommit): a listener never looks before the rows are there.
        """
        return wake_workers(conn, self.table.name, names)

    def window(
        self, conn: Connection, after: datetime, until: datetime, pauses: sa.Table | None
    ) -> tuple[list[TickState], dict[tuple[str, str], int], list[PauseState]]:
        """What a pass starts from, in one read (``pass_view``): what the table holds for
        the ticks in ``(after, until]`` (see ``window_state``), the queued rows of other
        programs without a tick time (how many per (name, sequence)), and the rows of
        ``pauses``, the pauses table (None: the table has none)."""
        select = self._statements.get(
            "window" if pauses is None else "window+pauses",
            family_of(conn.dialect),
            lambda t, _: pass_view(t, pauses),
        )
        params = {"after": checked_moment(after, "after"), "until": checked_moment(until, "until")}
        ticks: list[TickState] = []
        undated: dict[tuple[str, str], int] = {}
        paused: list[PauseState] = []
        for row in execute(conn, select, params).rows:
            if row.kind == 1:
                undated[(row.name, row.sequence)] = int(row.foreign)
            elif row.kind == 2:
                until_ = None if row.tick_at is None else as_utc(row.tick_at)
                paused.append(
                    PauseState(row.name, until_, row.sequence, row.spec, as_utc(row.touched))
                )
            else:
                ticks.append(
                    TickState(
                        row.name,
                        as_utc(row.tick_at),
                        row.sequence,
                        row.spec,
                        int(row.slotted),
                        row.top_queued,
                        int(row.foreign),
                        None if row.touched is None else as_utc(row.touched),
                    )
                )
        return ticks, undated, sorted(paused, key=lambda pause: pause.name)

    def idle_lock_holders(self, conn: Connection, idle_seconds: int) -> list[LockHolder] | None:
        """MySQL/MariaDB: other connections idle that long in a transaction holding locks.

        None on other databases, which have nothing to find here.
        """
        if family_of(conn.dialect) != "mysql":
            return None
        rows = execute(conn, idle_lock_holders(), {"idle_seconds": idle_seconds}).rows
        return [
            LockHolder(
                int(row.connection),
                str(row.user),
                str(row.host),
                int(row.idle),
                int(row.age or 0),
                str(row.isolation),
                int(row.rows_locked),
            )
            for row in rows
        ]

    def end_connection(self, conn: Connection, connection: int) -> None:
        """End another connection (``KILL CONNECTION``), rolling its transaction back."""
        execute(conn, end_connection(), {"connection": int(connection)})

    def adopt(self, conn: Connection, ticks: Sequence[Adoption]) -> int:
        """Date other programs' rows of these ticks and give them the works' policy."""
        if not ticks:
            return 0
        update = self._statements.get("adopt", family_of(conn.dialect), lambda t, _: adopt(t))
        params = [
            {
                "work_name": tick.name,
                "tick_sequence": tick.sequence,
                "new_tick": tick.tick_at,
                "new_lease": tick.lease_seconds,
                "new_grace": tick.grace_seconds,
                "new_attempts": tick.max_attempts,
            }
            for tick in ticks
        ]
        return max(execute(conn, update, params).rowcount, 0)

    def close_surplus(
        self, conn: Connection, surplus: Sequence[Surplus], now: datetime | None = None
    ) -> int:
        """Close these ticks' queued slots from each one's ``keep`` up; returns rows closed.

        Only ticks not yet due (by the database clock, or ``now``) and rows not
        yet claimed; each records its reason and its closer's spec.
        """
        if not surplus:
            return 0
        family = family_of(conn.dialect)
        explicit = now is not None
        update = self._statements.get(
            f"close:{explicit}",
            family,
            lambda t, f: close_surplus(t, f, explicit_now=explicit),
        )
        clock_now = now_params(now)
        params = [
            {
                "work_name": item.name,
                "tick": item.tick_at,
                "tick_sequence": item.sequence,
                "keep": item.keep,
                "reason": item.reason,
                "closer": item.closer,
                **clock_now,
            }
            for item in surplus
        ]
        return max(execute(conn, update, params).rowcount, 0)

    def latest_ticks(self, conn: Connection) -> dict[str, datetime]:
        """The latest tick each work has rows for (works without ``tick_at`` rows are absent)."""
        rows = execute(conn, latest_ticks(self.table)).rows
        return {name: as_utc(tick) for name, tick in rows if tick is not None}


def _in_order(rows: list[ClaimedRow]) -> list[ClaimedRow]:
    """A batch's rows by tick, then slot: the order their handlers start in."""
    return sorted(rows, key=lambda r: (r.tick_at or EARLIEST, r.slot or 0, r.id))


class ClaimCalls(ClaimRepository):
    """A claim's statements beyond the public ``ClaimRepository``: checked claims and resolves."""

    claim_checked = ClaimRepository._claim_checked
    details = ClaimRepository._details

    def has_queued(self, conn: Connection, kind: str, params: dict[str, Any]) -> bool:
        """Whether a claim of ``kind`` with ``params`` could find a row (a read, no locks)."""
        family = family_of(conn.dialect)
        select = self._statements.get(
            f"left:{kind}",
            family,
            lambda t, f: queued_left(t, f, due=kind != "claim", explicit_now=kind == "claim_at"),
        )
        keys = ("work_name", "tick_sequence", "now", "floor_seconds")
        return (
            execute(conn, select, {k: params[k] for k in keys if k in params}).first() is not None
        )

    def claim_batch(
        self, conn: Connection, shape: tuple[int, ...], params: dict[str, Any], explicit: bool
    ) -> list[ClaimedRow]:
        """Up to ``params["batch_limit"]`` due rows of a worker's works, in one claim statement.

        MariaDB 10.5 and later claim through an insert that returns the rows
        (``claim_batch_returning``). MySQL returns no rows from an UPDATE
        nor an INSERT: there the rows the batch's token now holds are read
        back, only when it took any.
        """
        family = family_of(conn.dialect)
        token = params["claim_token"]
        if family == "mysql" and returns_inserted(conn.dialect):
            insert = self._statements.get(
                f"batch_returning:{shape}:{explicit}",
                family,
                lambda t, _: claim_batch_returning(t, shape, explicit_now=explicit),
            )
            rows = execute(conn, insert, params).rows
            return _in_order(
                [claimed_row(row[0], token, row[2:]) for row in rows if row[1] == token]
            )
        update = self._statements.get(
            f"batch:{shape}:{explicit}",
            family,
            lambda t, f: claim_batch_statement(t, f, shape, explicit_now=explicit),
        )
        outcome = execute(conn, update, params)
        if family != "mysql":
            return _in_order([claimed_row(row[0], token, row[1:]) for row in outcome.rows])
        if outcome.rowcount < 1:
            return []
        names = [v for k, v in params.items() if k.startswith("work_")]
        return self.batch_found(conn, names, token) or []

    def batch_found(
        self, conn: Connection, names: list[str], token: str
    ) -> list[ClaimedRow] | None:
        """The running rows a batch claim's token holds (None: none, it did not land)."""
        family = family_of(conn.dialect)
        size = len(names)
        select = self._statements.get(
            f"batch_by_token:{size}", family, lambda t, _: batch_by_token(t, size)
        )
        params: dict[str, Any] = {f"work_{i}": name for i, name in enumerate(names)}
        params["claim_token"] = token
        rows = execute(conn, select, params).rows
        return _in_order([claimed_row(row[0], token, tuple(row[1:])) for row in rows]) or None

    def batch_has_queued(
        self, conn: Connection, shape: tuple[int, ...], params: dict[str, Any], explicit: bool
    ) -> bool:
        """Whether a batch claim could find a row (a read, no locks)."""
        family = family_of(conn.dialect)
        select = self._statements.get(
            f"batch_left:{shape}:{explicit}",
            family,
            lambda t, f: batch_left(t, f, shape, explicit_now=explicit),
        )
        wanted = {k: v for k, v in params.items() if k.startswith(("work_", "floor_", "now"))}
        return execute(conn, select, wanted).first() is not None

    def find_claim(self, conn: Connection, name: str, token: str) -> ClaimedRow | None:
        """The running row this token claimed, if that claim committed."""
        family = family_of(conn.dialect)
        select = self._statements.get("by_token", family, lambda t, _: claim_by_token(t))
        row = execute(conn, select, {"work_name": name, "claim_token": token}).one_or_none()
        return None if row is None else claimed_row(name, token, tuple(row))

    def state(self, conn: Connection, claim_id: int) -> ClaimState | None:
        """The row's committed status, token and attempts; None if no committed row has the id."""
        family = family_of(conn.dialect)
        select = self._statements.get("claim_state", family, lambda t, _: claim_state(t))
        row = execute(conn, select, {"claim_id": claim_id}).one_or_none()
        if row is None:
            return None
        status, token, attempts = row
        return ClaimState(WorkStatus(status), token, None if attempts is None else int(attempts))

    def lease_seconds(self, conn: Connection, claim_id: int) -> int | None:
        """The row's own lease length, or None for the default."""
        family = family_of(conn.dialect)
        select = self._statements.get("lease_of", family, lambda t, _: lease_of(t))
        value = execute(conn, select, {"claim_id": claim_id}).scalar_one_or_none()
        return None if value is None else int(value)

    def finished_as(self, conn: Connection, claim_id: int, token: str, status: WorkStatus) -> bool:
        """True if this claim itself already recorded ``status`` (a reply that was lost)."""
        family = family_of(conn.dialect)
        select = self._statements.get(
            "finished_by_claim", family, lambda t, _: finished_by_claim(t)
        )
        params = {"claim_id": claim_id, "claim_token": token, "final_status": status.value}
        return execute(conn, select, params).first() is not None
