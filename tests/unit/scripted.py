"""Playing a runner by hand: a core's generator driven with scripted answers.

A runner (``_run.blocking``, ``_run.async_runner``) performs each step a core yields and sends
back what happened. :class:`Script` does the same with answers written in the
test, so a test reads as the conversation it expects: the steps yielded, in
order, and what the generator made of each answer. An answer that is a
:class:`Raise` is thrown into the generator where it yielded, as a runner
throws a failed step's error.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Generator
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import sqlalchemy as sa

from worksync_sa._run.steps import Call

T = TypeVar("T")


@dataclass(frozen=True)
class Raise:
    """An answer that fails: ``error`` is thrown into the generator."""

    error: BaseException


class Script:
    """Answers for a generator's steps, given in order or by a function of each step.

    ``steps`` keeps every step the generator yielded, including one it
    yielded just before it raised, so a test can check both.
    """

    def __init__(self, *answers: object, by: Callable[[Any], object] | None = None) -> None:
        self._answers = list(answers)
        self._by = by
        self.steps: list[Any] = []

    def run(self, steps: Generator[Any, Any, T]) -> T:
        """Drive ``steps`` to its end; every scripted answer must have been used."""
        try:
            step = next(steps)
            while True:
                self.steps.append(step)
                answer = self._answer(step)
                step = (
                    steps.throw(answer.error) if isinstance(answer, Raise) else steps.send(answer)
                )
        except StopIteration as done:
            assert not self._answers, f"unused answers {self._answers!r}; steps {self.steps!r}"
            result: T = done.value
            return result

    def _answer(self, step: object) -> object:
        if self._answers:
            return self._answers.pop(0)
        if self._by is not None:
            return self._by(step)
        raise AssertionError(f"no answer scripted for {step!r}; steps so far {self.steps!r}")


def whats(steps: list[Any]) -> list[str]:
    """The names of the database calls among ``steps`` (``Call.what``), in order."""
    return [step.what for step in steps if isinstance(step, Call)]


def keywords(call: Call[Any]) -> dict[str, Any]:
    """The arguments a call's function was bound to: the rows, surplus or params it carries.

    A core binds its decisions into the call (``partial(repo.insert_rows,
    rows=batch)``), and the repository runs them later on a connection; those
    bound values are what the core decided.
    """
    work = call.work
    assert isinstance(work, partial), work
    return dict(work.keywords)


# -- driver errors, shaped as the drivers raise them ---------------------------------------


class MySQLDriverError(Exception):
    """A MySQL driver's error: ``args`` is (error number, message), as mysqlclient's."""


class PostgresDriverError(Exception):
    """A PostgreSQL driver's error, carrying its SQLSTATE as psycopg's do."""

    def __init__(self, sqlstate: str, message: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


def mysql_error(code: int, message: str = "") -> sa.exc.OperationalError:
    """What SQLAlchemy raises when MySQL answers with error ``code``."""
    return sa.exc.OperationalError("UPDATE works SET ...", {}, MySQLDriverError(code, message))


def postgres_error(sqlstate: str, message: str = "") -> sa.exc.OperationalError:
    """What SQLAlchemy raises when PostgreSQL answers with ``sqlstate``."""
    return sa.exc.OperationalError(
        "UPDATE works SET ...", {}, PostgresDriverError(sqlstate, message)
    )


def sqlite_error(message: str) -> sa.exc.OperationalError:
    """What SQLAlchemy raises when SQLite's driver fails with ``message``."""
    return sa.exc.OperationalError("UPDATE works SET ...", {}, sqlite3.OperationalError(message))


DEADLOCK = 1213  # MySQL ER_LOCK_DEADLOCK
LOCK_WAIT_TIMEOUT = 1205  # MySQL ER_LOCK_WAIT_TIMEOUT
SERVER_GONE = 2006  # MySQL CR_SERVER_GONE_ERROR
LOST_DURING_QUERY = 2013  # MySQL CR_SERVER_LOST
CANT_CONNECT = 2003  # MySQL CR_CONN_HOST_ERROR
NO_SUCH_TABLE = 1146  # MySQL ER_NO_SUCH_TABLE
DUPLICATE_KEY = 1062  # MySQL ER_DUP_ENTRY: a real error, never retried
