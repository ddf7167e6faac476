"""What is retried and after how long (``_run.retry``), and what a driver's error means.

The error numbers and SQLSTATEs are the servers' documented ones (MySQL's
server and client error references, PostgreSQL's Appendix A), not read back
from ``_sql.driver_errors``: a deadlock is 1213 or 40P01 whatever the module says.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from worksync_sa._run.retry import Retry, backoff, first_line
from worksync_sa._sql.driver_errors import (
    is_database_away,
    is_disconnect,
    is_lock_wait,
    is_missing_schema,
    is_transient,
)
from worksync_sa.config import RetryPolicy
from worksync_sa.errors import InvalidConfigError, SchemaNotReadyError

from .scripted import mysql_error, postgres_error, sqlite_error

TRANSIENT = [
    mysql_error(1213, "Deadlock found when trying to get lock"),
    mysql_error(1205, "Lock wait timeout exceeded"),
    mysql_error(1467, "Failed to read auto-increment value from storage engine"),
    postgres_error("40001", "could not serialize access"),
    postgres_error("40P01", "deadlock detected"),
    postgres_error("55P03", "could not obtain lock"),
    sqlite_error("database is locked"),
]
DISCONNECTS = [
    mysql_error(2006, "MySQL server has gone away"),
    mysql_error(2013, "Lost connection to MySQL server during query"),
    mysql_error(2003, "Can't connect to MySQL server"),
    mysql_error(1053, "Server shutdown in progress"),
    mysql_error(1047, "WSREP has not yet prepared node for application use"),
    postgres_error("08006", "connection failure"),
    postgres_error("57P01", "terminating connection due to administrator command"),
]
MISSING = [
    mysql_error(1146, "Table 'test.works' doesn't exist"),
    mysql_error(1054, "Unknown column 'slot'"),
    postgres_error("42P01", 'relation "works" does not exist'),
    postgres_error("42703", 'column "slot" does not exist'),
    sqlite_error("no such table: works"),
]
PLAIN = [
    mysql_error(1062, "Duplicate entry"),
    postgres_error("23505", "duplicate key value violates unique constraint"),
    sqlite_error("UNIQUE constraint failed: works.name"),
    mysql_error(1047, "Unknown command"),  # 1047 without WSREP is not Galera's
]


@pytest.mark.parametrize("error", TRANSIENT, ids=str)
def test_transient_errors_are_transient_and_not_disconnects(error: Exception) -> None:
    assert is_transient(error)
    assert not is_missing_schema(error)
    assert is_database_away(error)


@pytest.mark.parametrize("error", DISCONNECTS, ids=str)
def test_lost_and_refused_connections_are_disconnects(error: Exception) -> None:
    assert is_disconnect(error)
    assert is_database_away(error)


@pytest.mark.parametrize("error", MISSING, ids=str)
def test_a_missing_table_or_column_is_missing_schema(error: Exception) -> None:
    assert is_missing_schema(error)
    assert not is_transient(error)
    assert not is_disconnect(error)


@pytest.mark.parametrize("error", PLAIN, ids=str)
def test_other_errors_are_none_of_them(error: Exception) -> None:
    assert not is_transient(error)
    assert not is_disconnect(error)
    assert not is_missing_schema(error)
    assert not is_database_away(error)


def test_a_timed_out_wait_for_a_row_or_the_auto_inc_lock_is_a_lock_wait() -> None:
    """Both send a scheduler pass's write to the lock watch (an insert stuck behind a
    transaction left open holds the table's AUTO-INC lock: the next insert gets 1467)."""
    assert is_lock_wait(mysql_error(1205, "Lock wait timeout exceeded"))
    assert is_lock_wait(mysql_error(1467, "Failed to read auto-increment value"))
    assert not is_lock_wait(mysql_error(1213, "Deadlock found when trying to get lock"))
    assert not is_lock_wait(postgres_error("55P03", "could not obtain lock"))


def test_the_sqlite_messages_only_count_from_the_sqlite_driver() -> None:
    """Another driver's text saying "database is locked" is not SQLite's busy file."""
    other = sa.exc.OperationalError("x", {}, RuntimeError("database is locked"))
    assert not is_transient(other)


def test_an_invalidated_connection_is_a_disconnect_whatever_its_code() -> None:
    error = sa.exc.OperationalError("x", {}, RuntimeError("?"), connection_invalidated=True)
    assert is_disconnect(error)


def test_delay_after_counts_attempts_and_raises_on_the_last() -> None:
    retry = Retry(RetryPolicy(attempts=3, base_delay=0.1, max_delay=10), "works", False, "claim")
    deadlock = mysql_error(1213)
    assert 0 <= retry.delay_after(deadlock, sent=True) <= 0.1
    assert 0 <= retry.delay_after(deadlock, sent=True) <= 0.2
    with pytest.raises(sa.exc.OperationalError):
        retry.delay_after(deadlock, sent=True)


def test_only_a_connection_lost_after_sending_leaves_the_outcome_unknown() -> None:
    policy = RetryPolicy(attempts=5)
    refused = Retry(policy, "works", False, "claim")
    refused.delay_after(mysql_error(2003), sent=False)
    assert not refused.unknown_outcome
    deadlocked = Retry(policy, "works", False, "claim")
    deadlocked.delay_after(mysql_error(1213), sent=True)  # rolled back: the outcome is known
    assert not deadlocked.unknown_outcome
    lost = Retry(policy, "works", False, "claim")
    lost.delay_after(mysql_error(2013), sent=True)
    assert lost.unknown_outcome
    lost.delay_after(mysql_error(1213), sent=True)
    assert lost.unknown_outcome  # once unknown, every later attempt resolves first


def test_schema_not_ready_names_the_table_and_every_way_to_migrate() -> None:
    retry = Retry(RetryPolicy(), "jobs", False, "claim")
    with pytest.raises(SchemaNotReadyError) as raised:
        retry.delay_after(postgres_error("42P01", 'relation "jobs" does not exist\nLINE 1'), True)
    message = str(raised.value)
    assert "'jobs'" in message
    assert "worksync migrate" in message
    assert "alembic upgrade heads" in message
    assert "LINE 1" not in message  # the driver's first line only


def test_backoff_is_full_jitter_under_a_doubling_cap() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=3.0)
    for attempt, cap in ((1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0), (9, 3.0)):
        delays = [backoff(policy, attempt) for _ in range(200)]
        assert all(0 <= delay <= cap for delay in delays)
        assert max(delays) > cap / 2  # spread out over the range, not one fixed delay


def test_first_line_keeps_the_drivers_message_and_drops_the_rest() -> None:
    wrapped = sa.exc.OperationalError("UPDATE works", {}, RuntimeError("server said no\nSQL: ..."))
    assert first_line(wrapped) == "server said no"
    assert (
        first_line(postgres_error("40P01", "deadlock detected\nDETAIL: x")) == "deadlock detected"
    )
    assert first_line(ValueError()) == "ValueError"


@pytest.mark.parametrize(
    "settings",
    [
        {"attempts": 0},
        {"attempts": True},
        {"attempts": 1.5},
        {"base_delay": -1},
        {"max_delay": "1"},
    ],
    ids=str,
)
def test_a_retry_policy_refuses_what_it_cannot_use(settings: dict[str, object]) -> None:
    with pytest.raises(InvalidConfigError, match="RetryPolicy"):
        RetryPolicy(**settings)  # type: ignore[arg-type]
