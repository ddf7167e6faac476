"""Repositories: execute statements on a Connection they are given; never commit.

A host application can call these inside its own transactions (create a
tick's rows in the same transaction as the business data that asked for it,
say). The services run them through ``_run``, which is the only place that
retries.

The statements come from the SQL layer (``_sql``, one module per feature; the
one built here is MySQL recovery's re-read after a race), most are built once
per repository and database family, and every one runs through
``_sql.direct.execute``: whether it goes straight to a lane's cursor, and under
which isolation level, is decided there, never here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ._run.identity import default_worker_id, new_token
from ._sql.actions import (
    FOREVER,
    actions_page,
    close_paused,
    delete_pause,
    insert_operator_row,
    insert_pause,
    latest_policy,
    pause_of,
    pauses,
    record_action,
    requeue,
    rows_of_tick,
    slots_of_tick,
)
from ._sql.claims import (
    claim_statement,
    claimed_details,
    finish,
    heartbeat,
)
from ._sql.dialect import Family, db_now, family_of, read_clock
from ._sql.direct import execute
from ._sql.ledger import latest_spec, ledger_page, rows_of, tick_counts, unadopted_ledger
from ._sql.maintenance import (
    RECOVERY_BATCH,
    close_foreign_missed,
    delete_finished,
    foreign_waiting,
    prunable_ids,
    recovery_candidates,
    recovery_statement,
)
from ._sql.page import (
    NAMES_LIMIT,
    TOTALS,
    names_in_range,
    settings_in_range,
    tick_figures,
    tick_rows,
    ticks_figures,
    work_facts,
    work_totals,
)
from ._sql.schedule import (
    BATCH_FIELDS,
    insert_batch,
    json_batch,
)
from ._sql.summary import QUANTILE_COLUMNS, lag_ranks, work_counts, work_lags
from ._sql.summary import TOTALS as SUMMED
from ._sql.text import check_text, stored_error
from ._sql.wakeups import channel_for, notify, payload_for
from .errors import InvalidArgumentError
from .events import Event, Events, Listener
from .models import (
    CLOSED_BY_LEASE,
    CLOSED_BY_MISSED,
    DEFAULT_GRACE_SECONDS,
    DEFAULT_MAX_ATTEMPTS,
    WorkStatus,
    actions_named,
    as_utc,
    checked_moment,
    pauses_named,
    table_named,
)
from .rows import (
    Adoption,
    BatchRow,
    ClaimedRow,
    NewRow,
    PauseState,
    QueuedRow,
    Recovered,
    Surplus,
    TickCount,
    TickRow,
    TickState,
    claimed_row,
)
from .sequences import LAYOUT
from .work import LONGEST_POLICY

__all__ = [
    "Adoption",
    "BatchRow",
    "ClaimRepository",
    "ClaimedRow",
    "MaintenanceRepository",
    "NewRow",
    "QueryRepository",
    "QueuedRow",
    "Recovered",
    "ScheduleRepository",
    "Surplus",
    "TickCount",
    "TickState",
    "claimed_row",
]
"""What a host imports from here: the repositories and their row types (defined in ``rows``).

Not ``LedgerRepository``, which trusts the checks ``Ledger`` makes."""

_S = TypeVar("_S")

FOREIGN_LABEL_SLACK = timedelta(hours=12)
"""How far after a label read as UTC its instant can be: the wall time of UTC-12."""


def _claim_params(name: object, token: object, worker: object) -> dict[str, Any]:
    """A claim's bound values, checked: they go into a guarded UPDATE verbatim.

    A missing token or worker id is made as the services make them: 128
    random bits, and ``host:pid``.
    """
    worker = default_worker_id() if worker is None else worker
    token = new_token() if token is None else token
    params = {"work_name": check_text(name, "name"), "worker": check_text(worker, "worker")}
    if not isinstance(token, str) or not 1 <= len(token) <= 32:
        raise InvalidArgumentError("token must be a string of 1 to 32 characters")
    params["claim_token"] = token
    return params


def _fence(claim: object, token: object) -> tuple[int, str]:
    """The id and token a later write of a claim is fenced by."""
    if isinstance(claim, ClaimedRow):
        return claim.id, claim.token
    if not isinstance(claim, int) or isinstance(claim, bool):
        raise InvalidArgumentError(
            f"claim must be a ClaimedRow or a row id, not {type(claim).__name__}"
        )
    if not isinstance(token, str) or not token:
        raise InvalidArgumentError("token is needed with a row id: the claim's token")
    return claim, token


def _checked_table(table: object) -> sa.Table:
    """A Table, or a table's name as the services take it (checked, then its Table)."""
    if isinstance(table, str):
        return table_named(table)
    if not isinstance(table, sa.Table):
        raise InvalidArgumentError(
            "table must be a table name or a sqlalchemy Table (worksync_sa.work_table(name)), "
            f"not {type(table).__name__}"
        )
    return table


class _StatementCache:
    """Builds each statement once per (kind, database family) and reuses it."""

    def __init__(self, table: sa.Table | str) -> None:
        self.table = _checked_table(table)
        self._built: dict[tuple[str, Family], Any] = {}

    def get(self, kind: str, family: Family, build: Callable[[sa.Table, Family], _S]) -> _S:
        key = (kind, family)
        statement = self._built.get(key)
        if statement is None:
            statement = self._built[key] = build(self.table, family)
        return statement


EARLIEST_TICK = datetime(1970, 1, 1, tzinfo=timezone.utc)
LATEST_TICK = datetime(9000, 1, 1, tzinfo=timezone.utc)
"""A range holding every tick, for reads that find ticks by key rather than by range."""

LONGEST_GRACE_SECONDS = int(LONGEST_POLICY.total_seconds())
"""The longest grace a row can have (``Work.grace``), the default floor of a due claim."""


def floor_seconds(grace: object) -> int:
    """How far back a due claim looks, in whole seconds (rounded up: never tighter)."""
    if grace is None:
        return LONGEST_GRACE_SECONDS
    if not isinstance(grace, timedelta) or grace <= timedelta(0):
        raise InvalidArgumentError(f"grace must be a positive timedelta, not {grace!r}")
    return min(math.ceil(grace.total_seconds()), LONGEST_GRACE_SECONDS)


def now_params(now: datetime | None) -> dict[str, Any]:
    return {} if now is None else {"now": checked_moment(now, "now")}


_CLAIMS: dict[str, Callable[[sa.Table, Family], Any]] = {
    "claim": lambda t, f: claim_statement(t, f, due=False),
    "claim_due": lambda t, f: claim_statement(t, f, due=True),
    "claim_at": lambda t, f: claim_statement(t, f, due=True, explicit_now=True),
}


class ScheduleRepository:
    """Create-ahead: insert the QUEUED rows of upcoming ticks.

    ``listeners`` receive a "created" event per call that inserted rows, as
    the scheduler's do. Inside your own transaction it reports what the
    statement did; a rollback undoes it.
    """

    def __init__(
        self, table: sa.Table | str, *, listeners: Iterable[Listener] | None = None
    ) -> None:
        self._statements = _StatementCache(table)
        self.table = self._statements.table
        self._events = Events(listeners)

    def insert_queued(self, conn: Connection, rows: Iterable[NewRow]) -> int:
        """Insert ``rows`` in one batched statement; return how many were new.

        Rows go in sorted (name, sequence, slot) order, so two schedulers
        inserting the same ticks take row locks in the same order. Rows that
        already exist are skipped by the unique keys: losing that race is the
        normal path, not an error. A row with a ``max_run`` is also skipped
        while rows without a slot (another program's) fill its tick's budget.
        """
        ordered = sorted(rows, key=lambda r: (r.name, r.sequence, r.slot))
        created = self._insert_rows(conn, [row.fields() for row in ordered])
        if created and self._events:
            self._events.emit(Event("created", count=created))
        return created

    def _insert_rows(self, conn: Connection, rows: Sequence[BatchRow]) -> int:
        """Like :meth:`insert_queued`, for tuples already checked and sorted.

        Each tuple holds a row's values and its tick's ``max_run`` in
        ``BATCH_FIELDS`` order (name, sequence, slot, tick_at, lease_seconds,
        grace_seconds, max_attempts, spec, max_run).

        The scheduler's own path: its values were validated when the works
        were built and its rows come out in order, so it skips both steps.
        A batch is one statement with one parameter per field (PostgreSQL's
        arrays) or one in all (JSON, on MySQL/MariaDB and SQLite). On a MySQL
        lane the statement runs under REPEATABLE READ whatever the server's
        default, so its count of other programs' rows is a locking read (see
        ``_sql.schedule.insert_batch``).
        """
        if not rows:
            return 0
        family = family_of(conn.dialect)
        statement = self._statements.get("insert_batch", family, insert_batch)
        if family == "postgresql":
            columns = zip(*rows, strict=True)
            arrays = {
                f"{name}_list": list(values)
                for name, values in zip(BATCH_FIELDS, columns, strict=True)
            }
            return max(execute(conn, statement, arrays).rowcount, 0)
        return max(execute(conn, statement, {"batch": json_batch(rows)}).rowcount, 0)


class ClaimRepository:
    """Claim, heartbeat and finish rows; every write is one guarded statement.

    ``token`` and ``worker`` may be left out: they are made as the services
    make them. ``listeners`` receive "claimed" and "finished" events as the
    services' do (inside your own transaction, a rollback undoes what they
    reported). ``WorkSync.claim_from_row`` turns a row claimed here into a
    :class:`~worksync_sa.Claim`, with heartbeats and ``with claim:``, once
    your transaction has committed.
    """

    def __init__(
        self, table: sa.Table | str, *, listeners: Iterable[Listener] | None = None
    ) -> None:
        self._statements = _StatementCache(table)
        self.table = self._statements.table
        self._events = Events(listeners)

    def claim(
        self,
        conn: Connection,
        name: str,
        sequence: str,
        token: str | None = None,
        worker: str | None = None,
    ) -> ClaimedRow | None:
        """Claim one QUEUED row of the tick (name, sequence), or return None if none is left."""
        params = _claim_params(name, token, worker)
        params["tick_sequence"] = check_text(sequence, "sequence")
        return self._told(self._claim_checked(conn, "claim", params))

    def claim_due(
        self,
        conn: Connection,
        name: str,
        token: str | None = None,
        worker: str | None = None,
        now: datetime | None = None,
        grace: timedelta | None = None,
    ) -> ClaimedRow | None:
        """Claim the earliest QUEUED row of ``name`` whose tick is due and within its grace.

        Due means ``tick_at`` is at or before the database clock, or ``now``
        when given. Rows without ``tick_at`` (written by another program) are
        never due; claim them by sequence. ``grace``, the work's grace, bounds
        how far back the claim looks (365 days without it).
        """
        params = {**_claim_params(name, token, worker), **now_params(now)}
        params["floor_seconds"] = floor_seconds(grace)
        return self._told(
            self._claim_checked(conn, "claim_due" if now is None else "claim_at", params)
        )

    def _told(self, row: ClaimedRow | None) -> ClaimedRow | None:
        if row is not None and self._events:
            self._events.emit(Event("claimed", row.name, row.sequence, lag=row.lag))
        return row

    def _claim_checked(
        self, conn: Connection, kind: str, params: dict[str, Any]
    ) -> ClaimedRow | None:
        """Run a claim whose parameters the caller has already checked (the services' path).

        ``kind`` is "claim" (by sequence), "claim_due" (database clock) or
        "claim_at" (an explicit ``now``).
        """
        statement = self._statements.get(kind, family_of(conn.dialect), _CLAIMS[kind])
        outcome = execute(conn, statement, params)
        name, token = params["work_name"], params["claim_token"]
        if outcome.rows:
            return claimed_row(name, token, outcome.rows[0])
        if outcome.lastrowid is None or outcome.rowcount != 1:
            return None  # nothing left (PostgreSQL and SQLite return the row; MySQL its id)
        claim_id = int(outcome.lastrowid)
        sequence = params.get("tick_sequence")
        if sequence is None:  # a due claim must learn its sequence: read the rest with it
            return claimed_row(name, token, self._details(conn, claim_id))
        return ClaimedRow(claim_id, name, sequence, token)

    def _details(self, conn: Connection, claim_id: int) -> Sequence[Any]:
        """The ``claim_details`` columns of one row, by id."""
        select = self._statements.get(
            "claimed_details", family_of(conn.dialect), lambda t, _: claimed_details(t)
        )
        return tuple(execute(conn, select, {"claim_id": claim_id}).one())

    def heartbeat(
        self, conn: Connection, claim: int | ClaimedRow, token: str | None = None
    ) -> bool:
        """Extend the claim's lease; False if the row is no longer this claim's.

        ``claim`` is the :class:`ClaimedRow`, or its id with its ``token``.
        """
        claim_id, token = _fence(claim, token)
        params = {"claim_id": claim_id, "claim_token": token}
        return (
            execute(
                conn,
                self._statements.get("heartbeat", family_of(conn.dialect), heartbeat),
                params,
            ).rowcount
            == 1
        )

    def finish(
        self,
        conn: Connection,
        claim: int | ClaimedRow,
        token: str | None = None,
        status: WorkStatus | None = None,
        error: str | None = None,
    ) -> bool:
        """Set SUCCESS or FAILED; False if the row is no longer this claim's (nothing written).

        ``claim`` is the :class:`ClaimedRow` (``finish(conn, row,
        status=WorkStatus.SUCCESS)``), or its id with its ``token``. ``error``
        is stored as :func:`~worksync_sa._sql.text.stored_error` keeps it: verbatim
        but for lone surrogates and NUL, which are escaped, and cut to
        ``ERROR_TEXT_MAX`` characters.
        """
        claim_id, token = _fence(claim, token)
        if status not in (WorkStatus.SUCCESS, WorkStatus.FAILED):
            raise InvalidArgumentError(f"a claim finishes as SUCCESS or FAILED, not {status!r}")
        text = None if error is None else stored_error(error)
        params = {
            "claim_id": claim_id,
            "claim_token": token,
            "final_status": status.value,
            "error_text": text,
        }
        done = (
            execute(
                conn,
                self._statements.get("finish", family_of(conn.dialect), finish),
                params,
            ).rowcount
            == 1
        )
        if done and self._events:
            name, sequence = (
                (claim.name, claim.sequence) if isinstance(claim, ClaimedRow) else (None, None)
            )
            self._events.emit(Event("finished", name, sequence, status=status.name))
        return done


class MaintenanceRepository:
    """Recovery and retention: set-based statements over many rows."""

    def __init__(self, table: sa.Table | str) -> None:
        self._statements = _StatementCache(table)
        self.table = self._statements.table

    def recover(self, conn: Connection, now: datetime | None = None) -> list[Recovered]:
        """Close or re-queue up to a batch of abandoned rows; returns what it did to each.

        Running rows whose lease ended before the database clock (or ``now``)
        become FAILED ("lease expired"), or QUEUED again if their work allows
        more attempts. Queued rows whose tick is older than its grace become
        FAILED ("missed"). One UPDATE, bounded to ``RECOVERY_BATCH`` rows (on
        MySQL/MariaDB, which cannot return updated rows, preceded by a read of
        the candidates). Then one read for queued rows of other programs that
        no scheduler of ours dated, closed as missed once surely late (see
        :meth:`_recover_foreign`).
        """
        recovered = self._recover_ours(conn, now)
        return recovered + self._recover_foreign(conn, now)

    def _recover_foreign(self, conn: Connection, now: datetime | None) -> list[Recovered]:
        """Close as missed the queued rows of other programs that no scheduler of ours dated.

        Their time comes from the label (``YYYY-MM-DD HH:MM:SS``), whose zone is
        unknown: it may be the wall time anywhere from UTC-12 to UTC+14. So the
        label is read as UTC plus ``FOREIGN_LABEL_SLACK``, the latest instant it
        can name, and a row is missed only once that plus its grace has passed.
        It is never closed early; a scheduler planning the tick dates it exactly.
        """
        family = family_of(conn.dialect)
        select = self._statements.get("foreign", family, foreign_waiting)
        late: list[tuple[int, str, str]] = []
        for row_id, name, sequence, grace, db_clock in execute(
            conn, select, {"batch": RECOVERY_BATCH}
        ).rows:
            try:
                label = datetime.strptime(sequence, LAYOUT).replace(tzinfo=timezone.utc)
            except ValueError:
                continue
            patience = FOREIGN_LABEL_SLACK + timedelta(seconds=grace or DEFAULT_GRACE_SECONDS)
            if label + patience < (db_clock if now is None else checked_moment(now, "now")):
                late.append((row_id, name, sequence))
        if not late:
            return []
        update = self._statements.get("foreign_missed", family, close_foreign_missed)
        execute(conn, update, {"ids": [row_id for row_id, _, _ in late]})
        return [Recovered(name, sequence, "missed") for _, name, sequence in late]

    def _recover_ours(self, conn: Connection, now: datetime | None) -> list[Recovered]:
        family = family_of(conn.dialect)
        explicit = now is not None
        params = now_params(now)
        update = self._statements.get(
            f"recover:{explicit}",
            family,
            lambda t, f: recovery_statement(t, f, explicit_now=explicit),
        )
        if family != "mysql":
            return [
                Recovered(name, sequence, _kind(status, closed_by))
                for name, sequence, status, closed_by in execute(conn, update, params).rows
            ]
        pick = self._statements.get(
            f"candidates:{explicit}",
            family,
            lambda t, _: recovery_candidates(t, explicit_now=explicit),
        )
        candidates = execute(conn, pick, params).rows
        if not candidates:
            return []
        ids = [row.id for row in candidates]
        changed = execute(conn, update, {**params, "ids": ids}).rowcount
        if changed == len(candidates):
            return [Recovered(r.name, r.sequence, _planned_kind(r)) for r in candidates]
        # A worker finished or heartbeated one of them meanwhile: ask what recovery took.
        before = {row.id: row.status for row in candidates}
        t = self.table
        now_rows = execute(
            conn,
            sa.select(t.c.id, t.c.name, t.c.sequence, t.c.status, t.c.closed_by).where(
                t.c.id.in_(ids)
            ),
        ).rows
        return [
            Recovered(row.name, row.sequence, _kind(row.status, row.closed_by))
            for row in now_rows
            if row.closed_by in (CLOSED_BY_LEASE, CLOSED_BY_MISSED)
            or (
                before[row.id] == WorkStatus.RUNNING.value and row.status == WorkStatus.QUEUED.value
            )
        ]

    def prune_batch(self, conn: Connection, cutoff: datetime, batch_size: int) -> int:
        """Delete up to ``batch_size`` finished rows that finished before ``cutoff``.

        Rows whose label a later tick could be given again are kept (see
        ``_sql.maintenance._prunable``): deleting them would reopen that label's
        budget. Two short statements: a non-locking read of the ids, lowest
        first, then a delete of exactly those rows by primary key (re-checked),
        so no lock is taken beyond the rows deleted.
        """
        cutoff = checked_moment(cutoff, "cutoff")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise InvalidArgumentError(f"batch_size must be an int >= 1, got {batch_size!r}")
        family = family_of(conn.dialect)
        select = self._statements.get("prunable", family, prunable_ids)
        ids = execute(conn, select, {"cutoff": cutoff, "batch": batch_size}).scalars()
        if not ids:
            return 0
        delete = self._statements.get("prune", family, delete_finished)
        return max(execute(conn, delete, {"ids": ids, "cutoff": cutoff}).rowcount, 0)


def _kind(status: int, closed_by: str | None) -> str:
    if closed_by == CLOSED_BY_MISSED:
        return "missed"
    return "requeued" if status == WorkStatus.QUEUED.value else "lease"


def _planned_kind(row: Any) -> str:
    if row.status == WorkStatus.QUEUED.value:
        return "missed"
    attempts, allowed = row.attempts or 0, row.max_attempts or DEFAULT_MAX_ATTEMPTS
    return "requeued" if attempts < allowed else "lease"


class QueryRepository:
    """Read-only views of the table for tests, demos and operators."""

    def __init__(self, table: sa.Table | str) -> None:
        self.table = _checked_table(table)

    def rows(self, conn: Connection, name: str, sequence: str | None = None) -> Sequence[Any]:
        """All rows of a work (or of one tick), oldest first."""
        return execute(conn, rows_of(self.table), {"name": name, "sequence": sequence}).rows

    def tick_counts(self, conn: Connection, name: str | None = None) -> list[TickCount]:
        """Per (name, sequence): rows in each status, ticks in time order."""
        result = execute(conn, tick_counts(self.table), {"name": name})
        return [TickCount(*row) for row in result.rows]


class LedgerRepository:
    """The ledger's reads and the status page's: every one a SELECT, on the connection given.

    ``Ledger`` and the page check what they were asked (a range, one work or
    all, a cursor) and pass the checked values as the statements bind them:
    ``since`` and ``until`` always, ``work_name`` for one work, ``after_tick``
    and ``after_name`` to resume a page, ``limit`` where a read has one.
    Which statement runs follows from the keys given, so a statement and its
    values cannot disagree. The same few statements serve every page and
    every refresh, so each is built once per table and shape.

    Not a host API (hence not in ``__all__``): it trusts its callers' checks.
    A host reads the ledger through :class:`~worksync_sa.Ledger`.
    """

    def __init__(self, table: sa.Table | str) -> None:
        self._statements = _StatementCache(table)
        self.table = self._statements.table

    def _read(
        self,
        conn: Connection,
        kind: str,
        build: Callable[[sa.Table], sa.Executable],
        params: Mapping[str, Any],
    ) -> Sequence[sa.Row[Any]]:
        statement = self._statements.get(kind, family_of(conn.dialect), lambda t, _: build(t))
        return execute(conn, statement, dict(params)).rows

    def page(
        self, conn: Connection, params: Mapping[str, Any], *, latest_first: bool = False
    ) -> Sequence[sa.Row[Any]]:
        """One page of dated ticks, one aggregate row each, in index order (``ledger_page``).

        ``latest_first`` reads the index backward (the cursor then resumes
        before ``after_tick``). Rows without a tick time are not among them:
        read those with :meth:`undated`, whose dates come from their labels.
        """
        one_work, resume = "work_name" in params, "after_tick" in params
        return self._read(
            conn,
            f"page:{one_work}:{resume}:{latest_first}",
            lambda t: ledger_page(t, one_work=one_work, resume=resume, latest_first=latest_first),
            params,
        )

    def clock(self, conn: Connection) -> datetime:
        """The database's clock: what decides that a tick's time has come, as claims decide it."""
        family = family_of(conn.dialect)
        statement = self._statements.get("clock", family, lambda _, f: sa.select(db_now(f)))
        return checked_moment(execute(conn, statement).scalars()[0], "clock")

    def work_counts(self, conn: Connection, params: Mapping[str, Any]) -> dict[str, dict[str, int]]:
        """Per work with rows in the range: the ledger's counts summed (``_sql.summary.TOTALS``).

        One row per work however long the range (``_sql.summary.work_counts``).
        Undated rows are not counted (see :meth:`undated`).
        """
        one_work = "work_name" in params
        rows = self._read(
            conn, f"counts:{one_work}", lambda t: work_counts(t, one_work=one_work), params
        )
        found = {}
        for row in rows:
            figures = row._mapping
            if figures["created"]:  # one work's sum of nothing is a row of zeros (or NULLs)
                name = params["work_name"] if one_work else figures["name"]
                found[name] = {key: int(figures[key]) for key in SUMMED}
        return found

    def lag_ranks(self, conn: Connection, params: Mapping[str, Any]) -> dict[str, int | None]:
        """``work_name``'s ticks in the range, those with a lag, and the lags its quantiles read.

        Keyed ``ticks``, ``n`` and ``QUANTILE_COLUMNS`` (microseconds, None
        where there is no such rank); one row (``_sql.summary.lag_ranks``).
        """
        (row,) = self._read(conn, "lag_ranks", lag_ranks, params)
        return {
            key: None if row._mapping[key] is None else int(row._mapping[key])
            for key in ("ticks", "n", *QUANTILE_COLUMNS)
        }

    def work_lags(self, conn: Connection, params: Mapping[str, Any]) -> list[int]:
        """Every claimed tick's start lag of ``work_name`` in the range, in microseconds."""
        return [int(row.lag_us) for row in self._read(conn, "work_lags", work_lags, params)]

    def undated(self, conn: Connection, params: Mapping[str, Any]) -> Sequence[sa.Row[Any]]:
        """The ledger's figures of rows other programs wrote without a tick time, per label.

        Neither the range nor the cursor applies in SQL, the tick being only
        in the label: the caller dates each from it and keeps those that fall
        on its page.
        """
        one_work = "work_name" in params
        return self._read(
            conn, f"undated:{one_work}", lambda t: unadopted_ledger(t, one_work=one_work), params
        )

    def latest_spec(self, conn: Connection, name: str) -> str | None:
        """The ``spec`` of ``name``'s latest dated row that has one, or None (``latest_spec``).

        What a scheduler of ours recorded planning the work: its sequence kind
        names the zone its labels are in, which dates the undated rows of the
        same work.
        """
        rows = self._read(conn, "latest_spec", latest_spec, {"work_name": name})
        return None if not rows else rows[0].spec

    def work_totals(self, conn: Connection, params: Mapping[str, Any]) -> dict[str, dict[str, int]]:
        """Per work: its ticks in the range and the ledger's counts, summed by the database.

        A few rows however long the range, where folding the ticks would read
        one row per tick. The counts are keyed ``ticks``, ``created``,
        ``queued``, ``running``, ``succeeded``, ``failed``, ``recovered``,
        ``missed`` and ``surplus``; undated rows are not counted (see :meth:`undated`).
        """
        one_work = "work_name" in params
        rows = self._read(
            conn, f"totals:{one_work}", lambda t: work_totals(t, one_work=one_work), params
        )
        keys = ("ticks", *TOTALS)
        return {row.name: {key: int(row._mapping[key]) for key in keys} for row in rows}

    def tick_figures(
        self, conn: Connection, params: Mapping[str, Any], *, latest_first: bool
    ) -> Sequence[sa.Row[Any]]:
        """Up to ``limit`` ticks' figures, no dates, in the ledger's order or latest first.

        Numbers parse fast where dates do not, and the page reads many ticks
        (see ``tick_figures``). ``latest_first`` keeps the latest ticks when
        the range holds more than ``limit``.
        """
        one_work = "work_name" in params
        return self._read(
            conn,
            f"figures:{one_work}:{latest_first}",
            lambda t: tick_figures(t, one_work=one_work, latest_first=latest_first),
            params,
        )

    def settings(self, conn: Connection, params: Mapping[str, Any]) -> Sequence[sa.Row[Any]]:
        """Per work and ``spec``: the latest tick in the range made with those settings."""
        one_work = "work_name" in params
        return self._read(
            conn,
            f"settings:{one_work}",
            lambda t: settings_in_range(t, one_work=one_work),
            params,
        )

    def names(self, conn: Connection, params: Mapping[str, Any]) -> list[str]:
        """The works with ticks in the range, in name order (at most ``NAMES_LIMIT``)."""
        return [row.name for row in self._read(conn, "names", names_in_range, params)]

    NAMES_LIMIT = NAMES_LIMIT
    """Most works one read lists."""

    def work_facts(self, conn: Connection, now: datetime, limit: int) -> Sequence[sa.Row[Any]]:
        """Every work the table knows (at most ``limit``), with its schedule's facts at ``now``.

        A few index probes per work, whatever its history (``work_facts``):
        what the page needs to show works that did not tick in its range.
        """
        statement = self._statements.get("work_facts", family_of(conn.dialect), work_facts)
        return execute(conn, statement, {"now": now, "limit": limit}).rows

    def ticks_figures(
        self, conn: Connection, ticks: Sequence[tuple[str, datetime]]
    ) -> Sequence[sa.Row[Any]]:
        """The ledger's figures of the given (work, tick) pairs, one row each that exists."""
        if not ticks:
            return []
        params = {"ticks": list(ticks), "since": EARLIEST_TICK, "until": LATEST_TICK}
        return self._read(conn, "ticks_figures", ticks_figures, params)

    def tick_rows(
        self, conn: Connection, name: str, tick: datetime, label: str
    ) -> Sequence[sa.Row[Any]]:
        """One tick's rows: those dated ``tick``, and undated ones labelled ``label``.

        The label too, because the ledger shows another program's undated rows
        at the time their label reads, and their details must be found there.
        """
        params = {"work_name": name, "tick": tick, "label": label}
        return self._read(conn, "tick_rows", tick_rows, params)


_NOTIFY = notify()


def wake_workers(conn: Connection, table: str, names: Iterable[str]) -> bool:
    """On PostgreSQL, notify listening workers that ``names`` have rows due now; elsewhere nothing.

    Run it in the transaction that writes the rows: the notify goes out when
    that commits, never before and never for a rollback (``_sql.wakeups``).
    Returns whether it was sent.
    """
    if family_of(conn.dialect) != "postgresql":
        return False
    execute(conn, _NOTIFY, {"channel": channel_for(table), "payload": payload_for(names)})
    return True


class ActionRepository:
    """The operators' statements: pauses, their ledger, run-now rows, retries.

    Like every repository it never commits: ``Operator`` runs each action and
    its ledger entry on one connection in one transaction, so neither is ever
    written without the other. Not a host API (hence not in ``__all__``): it
    trusts the checks ``Operator`` makes. The work table is ``table``; the
    pauses and the actions live in ``<table>_pauses`` and ``<table>_actions``.
    """

    def __init__(self, table: str) -> None:
        self._statements = _StatementCache(table)
        self.table = self._statements.table
        self.pauses_table = pauses_named(self.table.name)
        self.actions_table = actions_named(self.table.name)

    def clock(self, conn: Connection) -> datetime:
        """The database's clock: what every action is dated by."""
        return read_clock(conn)

    def has_pauses(self, conn: Connection) -> bool:
        """Whether the pauses table exists (a table made by ``create_all`` alone has none)."""
        return bool(sa.inspect(conn).has_table(self.pauses_table.name))

    def pauses(self, conn: Connection) -> list[PauseState]:
        """Every pause, ended or not (a scheduler pass reads this once)."""
        select = self._statements.get(
            "pauses", family_of(conn.dialect), lambda *_: pauses(self.pauses_table)
        )
        return [_pause(row) for row in execute(conn, select).rows]

    def pause_of(self, conn: Connection, name: str) -> PauseState | None:
        """One work's pause, ended or not, or None."""
        select = self._statements.get(
            "pause_of", family_of(conn.dialect), lambda *_: pause_of(self.pauses_table)
        )
        row = execute(conn, select, {"work_name": name}).first()
        return None if row is None else _pause(row)

    def set_pause(
        self, conn: Connection, name: str, until: datetime | None, reason: str, actor: str
    ) -> None:
        """Record ``name``'s pause, replacing any earlier one."""
        self.delete_pause(conn, name)
        family = family_of(conn.dialect)
        insert = self._statements.get(
            "insert_pause", family, lambda _, f: insert_pause(self.pauses_table, f)
        )
        params = {"work_name": name, "until": until, "reason": reason, "actor": actor}
        execute(conn, insert, params)

    def delete_pause(self, conn: Connection, name: str) -> int:
        """Forget ``name``'s pause; how many rows went (0 or 1)."""
        delete = self._statements.get(
            "delete_pause", family_of(conn.dialect), lambda *_: delete_pause(self.pauses_table)
        )
        return max(execute(conn, delete, {"work_name": name}).rowcount, 0)

    def close_paused(
        self,
        conn: Connection,
        paused: Sequence[tuple[str, datetime | None, str]],
        now: datetime | None = None,
    ) -> int:
        """Close the queued rows of ticks not yet due of each (name, until, reason)."""
        if not paused:
            return 0
        family = family_of(conn.dialect)
        explicit = now is not None
        update = self._statements.get(
            f"close_paused:{explicit}",
            family,
            lambda t, f: close_paused(t, f, explicit_now=explicit),
        )
        clock_now = now_params(now)
        params = [
            {
                "work_name": name,
                "until": FOREVER if until is None else until,
                "reason": reason,
                **clock_now,
            }
            for name, until, reason in paused
        ]
        return max(execute(conn, update, params[0] if len(params) == 1 else params).rowcount, 0)

    def record(
        self,
        conn: Connection,
        *,
        name: str,
        action: str,
        tick: str | None,
        actor: str,
        reason: str,
        detail: str,
    ) -> None:
        """Append one entry to the actions ledger (dated by the database clock)."""
        family = family_of(conn.dialect)
        insert = self._statements.get(
            "record_action", family, lambda _, f: record_action(self.actions_table, f)
        )
        params = {
            "work_name": name,
            "action": action,
            "tick": tick,
            "actor": actor,
            "reason": reason,
            "detail": detail,
        }
        execute(conn, insert, params)

    def actions(self, conn: Connection, name: str | None, limit: int) -> Sequence[Any]:
        """The latest ``limit`` actions, newest first, of one work or all."""
        one_work = name is not None
        select = self._statements.get(
            f"actions:{one_work}",
            family_of(conn.dialect),
            lambda *_: actions_page(self.actions_table, one_work=one_work),
        )
        params: dict[str, Any] = {"limit": limit}
        if one_work:
            params["work_name"] = name
        return execute(conn, select, params).rows

    def latest_policy(self, conn: Connection, name: str) -> Any | None:
        """The latest dated row of ``name`` (its policy columns and spec), or None."""
        select = self._statements.get(
            "latest_policy", family_of(conn.dialect), lambda t, _: latest_policy(t)
        )
        return execute(conn, select, {"work_name": name}).first()

    def slots_of_tick(self, conn: Connection, name: str, tick: datetime) -> int:
        """How many scheduler slots one tick holds (how many runs it was made with)."""
        select = self._statements.get(
            "slots_of_tick", family_of(conn.dialect), lambda t, _: slots_of_tick(t)
        )
        return int(execute(conn, select, {"work_name": name, "tick": tick}).rows[0][0])

    def insert_operator_rows(self, conn: Connection, rows: Sequence[dict[str, Any]]) -> int:
        """Insert an operator's QUEUED rows (one per slot), each checked by the unique keys."""
        insert = self._statements.get(
            "insert_operator_row", family_of(conn.dialect), insert_operator_row
        )
        for row in rows:
            execute(conn, insert, dict(row))
        return len(rows)

    def tick_rows(
        self, conn: Connection, name: str, *, label: str | None = None, tick: datetime | None = None
    ) -> list[TickRow]:
        """Every row of one tick of ``name``, by its label or else its instant."""
        by_label = label is not None
        select = self._statements.get(
            f"tick_rows:{by_label}",
            family_of(conn.dialect),
            lambda t, _: rows_of_tick(t, by_label=by_label),
        )
        params: dict[str, Any] = {"work_name": name}
        params["label" if by_label else "tick"] = label if by_label else tick
        return [
            TickRow(
                int(row.id),
                row.sequence,
                row.slot,
                None if row.tick_at is None else as_utc(row.tick_at),
                int(row.status),
                row.closed_by,
                row.attempts,
                row.max_attempts,
                row.grace_seconds,
            )
            for row in execute(conn, select, params).rows
        ]

    def wake(self, conn: Connection, name: str) -> bool:
        """Notify the workers listening on PostgreSQL that ``name`` has rows due now."""
        return wake_workers(conn, self.table.name, [name])

    def requeue(
        self, conn: Connection, row_id: int, redate: tuple[datetime, int] | None = None
    ) -> bool:
        """Offer a failed row again; with ``redate`` (tick, slot), also move it there."""
        moved = redate is not None
        update = self._statements.get(
            f"requeue:{moved}",
            family_of(conn.dialect),
            lambda t, f: requeue(t, f, redate=moved),
        )
        params: dict[str, Any] = {"row_id": row_id}
        if redate is not None:
            params["new_tick"], params["new_slot"] = redate
        return execute(conn, update, params).rowcount == 1


def _pause(row: Any) -> PauseState:
    return PauseState(
        row.name,
        None if row.paused_until is None else as_utc(row.paused_until),
        row.reason,
        row.paused_by,
        as_utc(row.paused_at),
    )
