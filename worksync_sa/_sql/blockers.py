"""MySQL/MariaDB: transactions that sit idle while holding locks, and ending one.

The Go original's create runs ``select count(*)`` in a SERIALIZABLE
transaction and, when the tick is already complete, returns without COMMIT
or ROLLBACK: the transaction keeps its shared next-key locks on the work
table (and its connection) until the server's ``wait_timeout``, hours later.
Inserts into the locked ranges, and claims that lock the same index entries,
wait on it. These statements find such transactions from the server's own
tables (``information_schema``, which shows other users' transactions only
with the PROCESS privilege) and end one with ``KILL CONNECTION``.
"""

from __future__ import annotations

import functools
from typing import Any

import sqlalchemy as sa

_TRX = sa.table(
    "INNODB_TRX",
    sa.column("trx_mysql_thread_id", sa.BigInteger()),
    sa.column("trx_started", sa.DateTime()),
    sa.column("trx_isolation_level", sa.String()),
    sa.column("trx_rows_locked", sa.BigInteger()),
    sa.column("trx_lock_structs", sa.BigInteger()),
    schema="information_schema",
)
_PROCESSLIST = sa.table(
    "PROCESSLIST",
    sa.column("ID", sa.BigInteger()),
    sa.column("USER", sa.String()),
    sa.column("HOST", sa.String()),
    sa.column("DB", sa.String()),
    sa.column("COMMAND", sa.String()),
    sa.column("TIME", sa.BigInteger()),
    schema="information_schema",
)


@functools.cache
def idle_lock_holders() -> sa.Select[Any]:
    """Other connections to this database idle for ``:idle_seconds`` in a transaction with locks.

    ``TIME`` is how long the connection has been in its state (``Sleep``: idle);
    the transaction's age is read on the server's clock, in its own zone, as
    ``trx_started`` is.
    """
    t, p = _TRX.c, _PROCESSLIST.c
    age = sa.func.timestampdiff(sa.literal_column("SECOND"), t.trx_started, sa.func.now())
    return (
        sa.select(
            p.ID.label("connection"),
            p.USER.label("user"),
            p.HOST.label("host"),
            p.TIME.label("idle"),
            age.label("age"),
            t.trx_isolation_level.label("isolation"),
            t.trx_rows_locked.label("rows_locked"),
        )
        .select_from(_TRX.join(_PROCESSLIST, t.trx_mysql_thread_id == p.ID))
        .where(
            sa.func.database() == p.DB,
            sa.func.connection_id() != p.ID,
            p.COMMAND == "Sleep",
            sa.bindparam("idle_seconds", type_=sa.Integer()) <= p.TIME,
            t.trx_lock_structs > 0,
        )
        .order_by(p.ID)
    )


@functools.cache
def end_connection() -> sa.TextClause:
    """``KILL CONNECTION``: ends the connection, rolling its transaction back.

    The id is bound (mysqlclient and the async drivers send it as a literal,
    as KILL takes no placeholder on the server); it always comes from
    :func:`idle_lock_holders` as an integer.
    """
    return sa.text("KILL CONNECTION :connection").bindparams(
        sa.bindparam("connection", type_=sa.BigInteger())
    )
