"""The Go original (worksync v0.0.3), as its database sees it: its statements, its loops.

Written from the original's documented behaviour (its ``db.go`` and README),
to run beside ours in the tests. Every statement, transaction and isolation
level is the original's, sent over a raw MySQLdb connection as its Go driver
would send it:

* create, in a SERIALIZABLE transaction: ``select count(*) from <table>
  where name = ? and sequence = ?``, then, if fewer than MaxRun rows exist,
  one multi-row ``insert into <table> (created_at, name, status, sequence)
  values (now(), name, 1, sequence), ...`` for the missing count, commit. If
  the tick already has its rows, neither commit nor rollback: the transaction
  stays open on its connection, holding its shared locks, until the process
  ends (Go's ``database/sql`` opens another connection for what follows);
* claim, in a READ UNCOMMITTED transaction: ``set @update_id := 0``, ``update
  <table> set status = 2, started_at = now(), id = (select @update_id := id)
  where status = 1 and name = ? and sequence = ? limit 1``, ``select
  @update_id``, commit;
* finish: ``update workers set status = ?, finished_at = now() where id = ?``
  (the table name ``workers`` is fixed, whatever table the rest uses);
* sequences: the tick as ``2006-01-02 15:04:05`` in the process's local zone.

The original formats the name and sequence into its INSERT; here they are
bound instead (the same statement to the server, without the injection).
Process bodies report through a queue, like ``racers``.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from .extras import skip_module

try:  # the mysql extra: without it, the modules importing this one are skipped
    import MySQLdb
except ModuleNotFoundError as missing:
    skip_module(missing)

LAYOUT = "%Y-%m-%d %H:%M:%S"
SUCCESS, FAILED = 3, 4


def _identifier(name: str) -> str:
    if not (name.isascii() and name.isidentifier()):  # test-made names only
        raise ValueError(name)
    return name


@contextlib.contextmanager
def own_database(server: sa.Engine, prefix: str) -> Iterator[tuple[sa.URL, dict[str, Any]]]:
    """A database of its own on ``server`` for one test: its URL, and the original's connect args.

    Dropped on the way out, whatever the test left in it.
    """
    name = f"{_identifier(prefix)}_{uuid.uuid4().hex[:10]}"
    admin = server.execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")  # a generated identifier
    url = server.url.set(database=name)
    connect = {
        "host": url.host or "127.0.0.1",
        "port": url.port or 3306,
        "user": url.username or "root",
        "password": url.password or "",
        "database": name,
    }
    try:
        yield url, connect
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE {name}")


class OriginalDB:
    """One connection of the original, to one database and table."""

    def __init__(self, connect: dict[str, Any], table: str, *, leaks: bool = True) -> None:
        self.connect = connect
        self.leaks = leaks
        """False: commit a create that finds its tick complete (a patched original)."""
        self.conn = self._connect()
        self.table = _identifier(table)
        self.leaked: list[Any] = []
        """Connections left in an open transaction by ``create``, as the original leaves them."""

    def _connect(self) -> Any:
        return MySQLdb.connect(**self.connect, charset="utf8mb4", autocommit=True)

    def close(self) -> None:
        """Close every connection, the leaked ones too: the process is ending."""
        for conn in [self.conn, *self.leaked]:
            with contextlib.suppress(MySQLdb.Error):
                conn.close()

    def create(self, name: str, sequence: str, max_run: int) -> int:
        """The original's CreateWork: count, then insert the missing rows; returns inserted.

        When the tick already has its rows, the original returns without Commit or
        Rollback (``worksync/db.go`` ``createWork``): its SERIALIZABLE transaction stays
        open, holding shared locks on the index range its count read, and the
        connection is never reused. Here too: the connection is set aside, open, until
        ``close``, and the next statements go to a new one.
        """
        cursor = self.conn.cursor()
        cursor.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
        cursor.execute("START TRANSACTION")
        try:
            cursor.execute(
                f"select count(*) from {self.table} where name = %s and sequence = %s",
                (name, sequence),
            )
            (count,) = cursor.fetchone()
            missing = max_run - int(count)
            if missing <= 0 and self.leaks:
                self.leaked.append(self.conn)  # the transaction is left open: the leak
                self.conn = self._connect()
                return 0
            if missing <= 0:
                cursor.execute("COMMIT")
                return 0
            values = ", ".join(["(now(), %s, 1, %s)"] * missing)
            cursor.execute(
                f"insert into {self.table} (created_at, name, status, sequence) values {values}",
                [value for _ in range(missing) for value in (name, sequence)],
            )
            cursor.execute("COMMIT")
        except BaseException:
            cursor.execute("ROLLBACK")
            raise
        return missing

    def acquire(self, name: str, sequence: str) -> int | None:
        """The original's AcquireWork: the claimed row's id, or None if no row was queued."""
        cursor = self.conn.cursor()
        cursor.execute("SET TRANSACTION ISOLATION LEVEL READ UNCOMMITTED")
        cursor.execute("START TRANSACTION")
        try:
            cursor.execute("set @update_id := 0")
            cursor.execute(
                f"update {self.table} set status = 2, started_at = now(), "
                "id = (select @update_id := id) "
                "where status = 1 and name = %s and sequence = %s limit 1",
                (name, sequence),
            )
            cursor.execute("select @update_id")
            (claimed,) = cursor.fetchone()
            cursor.execute("COMMIT")
        except BaseException:
            cursor.execute("ROLLBACK")
            raise
        return int(claimed) if claimed else None

    def finish(self, row_id: int, status: int) -> None:
        """The original's success()/fail(): always on the table named ``workers``.

        Like the original, it ignores a failure (no such table, say): the row
        then stays RUNNING.
        """
        with contextlib.suppress(MySQLdb.Error):
            self.conn.cursor().execute(
                "update workers set status = %s, finished_at = now() where id = %s",
                (status, row_id),
            )


def label(tick: datetime, zone: str) -> str:
    """The original's default sequence: the tick in the process's local zone."""
    return tick.astimezone(ZoneInfo(zone)).strftime(LAYOUT)


def every_second_after(moment: datetime) -> datetime:
    """The next tick of ``* * * * * *`` (robfig v1, seconds first) after ``moment``."""
    return moment.replace(microsecond=0) + timedelta(seconds=1)


def _for(seconds: float, loop: Callable[[float], None]) -> BaseException | None:
    """Run ``loop(deadline)`` for ``seconds`` and return, as the original's program does.

    Its programs sleep for their run, then exit, whatever their goroutines are doing:
    a create or a claim waiting on a lock (the leaked transactions' locks included)
    does not keep the process alive. So the loop runs in a daemon thread, and the
    process reports when the time is up; the connections close as the process ends.
    """
    failed: list[BaseException] = []

    def body() -> None:
        try:
            loop(time.monotonic() + seconds)
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    thread.join(timeout=seconds + 1)
    return failed[0] if failed else None


def run_scheduler(
    connect: dict[str, Any],
    table: str,
    works: list[tuple[str, int]],
    zone: str,
    ahead: float,
    seconds: float,
    results: Any,
    leaks: bool = True,
) -> None:
    """The original's scheduler for per-second works: create each tick ``ahead`` s before it."""
    db = OriginalDB(connect, table, leaks=leaks)
    done = {"created": 0, "errors": 0}

    def loop(deadline: float) -> None:
        last = {name: datetime.now(timezone.utc) for name, _ in works}
        while time.monotonic() < deadline:
            now = datetime.now(timezone.utc)
            for name, max_run in works:
                tick = every_second_after(last[name])
                while tick - now <= timedelta(seconds=ahead):
                    try:
                        done["created"] += db.create(name, label(tick, zone), max_run)
                    except MySQLdb.OperationalError:
                        done["errors"] += 1  # a deadlock or a lock wait: logged, and on
                    last[name] = tick
                    tick = every_second_after(tick)
            time.sleep(0.1)

    failed = _for(seconds, loop)
    results.put(("error", repr(failed)) if failed else ("ok", dict(done)))


def run_worker(
    connect: dict[str, Any],
    table: str,
    names: list[str],
    zone: str,
    seconds: float,
    results: Any,
) -> None:
    """The original's worker: at every tick of its local clock, try to acquire each work."""
    db = OriginalDB(connect, table)
    claims: list[tuple[str, str, int]] = []
    errors = 0
    deadline = time.monotonic() + seconds
    try:
        tick = every_second_after(datetime.now(timezone.utc))
        while time.monotonic() < deadline:
            time.sleep(max(0.0, (tick - datetime.now(timezone.utc)).total_seconds()))
            for name in names:
                sequence = label(tick, zone)
                try:
                    row_id = db.acquire(name, sequence)
                except MySQLdb.OperationalError:
                    errors += 1
                    continue
                if row_id is not None:
                    claims.append((name, sequence, row_id))
                    time.sleep(0.02)  # the work
                    db.finish(row_id, SUCCESS)
            tick = every_second_after(tick)
        results.put(("ok", {"claims": claims, "errors": errors}))
    except BaseException as exc:
        results.put(("error", repr(exc)))
        raise
    finally:
        db.close()


run_patched_scheduler = functools.partial(run_scheduler, leaks=False)
"""``run_scheduler`` of an original whose create commits when it finds its tick complete.

For races that judge the budget alone, at ticks a second apart: finer than the
lock-wait bound that lets our side get past the real one's leftovers, which the tests
with the real original (``test_go_original``) and the left-open ones in
``test_original_fleet`` judge instead.
"""
