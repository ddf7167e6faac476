"""Issue 22's fleet: one scheduler, M per-second works, W workers; what it costs the server.

Each case runs one ``Scheduler`` (lookahead 5 s, a pass every second) in
this process and W workers in others: W <= 8 as blocking ``Worker``s, one
per process; W > 8 as ``AsyncWorker``s spread over 4 processes. Every work
ticks every second with ``max_run`` 1 and a 10 ms handler. After a warm-up,
a window (45 s; 15 s with ``--quick``) is measured by the server's own
counters:

- **statements**: on MariaDB the fleet connects as a user of its own
  (``wsfleet``) and the figure is that user's SELECT + UPDATE + OTHER commands
  in ``information_schema.USER_STATISTICS`` (``userstat`` is switched on for
  the run and put back as found; the benchmark reads as root, so its own reads
  are not counted); where ``userstat`` cannot be set, the server-wide
  ``Questions`` less the benchmark's own readings. On PostgreSQL the fleet runs
  in a database of its own (``worksync_fleet``) and the figure is that
  database's ``xact_commit + xact_rollback`` in ``pg_stat_database``, read from
  another database: autocommit statements (every claim, every finish) are one
  transaction each, while an explicit transaction of several statements (a
  scheduler pass's batch) counts once. Backends report these counts up to a
  second or so late (more when idle); a steady window mostly cancels it.
- **database CPU**: utime + stime from ``/proc`` over the window: of
  ``mariadbd`` whole, or of the PostgreSQL postmaster (children reaped
  included) and every live child of it; everything the server did, whoever
  asked. Beside it, the fleet's own: the PostgreSQL backends connected to its
  database, or the MariaDB threads (``PROCESSLIST.TID``) of its connections.
- **from the table**, for the ticks due in the window: claims, lag (first
  claim's start minus tick time) p50/p99, missed ticks (no claim within the
  work's grace, 60 s, by the time the fleet stops 3 s after the window), and
  ticks claimed more than ``max_run`` times (must be 0).

An **idle fleet** (works whose next tick is an hour away) at two sizes gives
the cost per worker per poll. **procrastinate**'s fleet, the anchor, runs on
PostgreSQL with the same works (``@app.periodic(cron="* * * * * *")``, a
10 ms handler, deferred by one of its worker processes) when
``WORKSYNC_BENCH_PROCRASTINATE`` names a Python that has
procrastinate 3 installed (never a dependency of this project).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from worksync_sa import Scheduler, SchedulerConfig, Work, Worker
from worksync_sa.engine import create_async_engine
from worksync_sa.models import table_named, validate_table_name

from . import bouncer
from .harness import Report, bench_engine, drop_table, fresh_table, percentile

SPAWN = multiprocessing.get_context("spawn")
FLEET_DB = "worksync_fleet"
ANCHOR_DB = "worksync_fleet_procrastinate"
FLEET_USER = "wsfleet"
"""MariaDB: the fleet's own user, so that ``USER_STATISTICS`` counts its statements alone."""
TABLE = "bench_fleet"
ASYNC_PROCESSES = 4
HANDLER_S = 0.01
TAIL_S = 3.0
POLL_S = 1.0
"""The workers' default ``poll``: an idle worker looks once a second."""
ANCHOR_ENV = "WORKSYNC_BENCH_PROCRASTINATE"
ANCHOR_SCRIPT = Path(__file__).resolve().parent / "procrastinate_fleet.py"

FULL = {
    "loaded": ((10, 4), (10, 32), (20, 32), (100, 32), (100, 128)),
    "idle": ((10, 4), (10, 32), (100, 32)),
    "anchor": ((10, 4), (20, 32), (100, 32), (100, 128)),
    "window": 45.0,
    "idle_window": 20.0,
    "warmup": 10.0,
}
QUICK = {
    "loaded": ((10, 4), (20, 32)),
    "idle": ((10, 4), (10, 16)),
    "anchor": ((20, 32),),
    "window": 15.0,
    "idle_window": 8.0,
    "warmup": 5.0,
}


def _fleet_works(count: int, idle: bool) -> list[Work]:
    """M per-second works, or M works whose next tick is at least half an hour away."""
    if not idle:
        return [Work(f"f{n:03d}", "@every 1s", max_run=1) for n in range(count)]
    minute = (datetime.now(timezone.utc).minute + 45) % 60
    return [Work(f"f{n:03d}", f"{minute} * * * *", max_run=1) for n in range(count)]


def _sleep(claim: object) -> None:
    time.sleep(HANDLER_S)


async def _async_sleep(claim: object) -> None:
    await asyncio.sleep(HANDLER_S)


def blocking_worker(url: str, works: int, idle: bool, ready: Any, go: Any, deadline: Any) -> None:
    """One blocking ``Worker`` in this process, from ``go`` until the deadline."""
    engine = bench_engine(url)
    worker = Worker(engine, _fleet_works(works, idle), _sleep, table=TABLE)
    ready.put(os.getpid())
    go.wait()
    try:
        worker.run(until=deadline.value)
    finally:
        worker.close()
        engine.dispose()


def async_workers(
    url: str, works: int, idle: bool, count: int, pool: int, ready: Any, go: Any, deadline: Any
) -> None:
    """``count`` ``AsyncWorker``s on one event loop and one engine of ``pool`` connections.

    A worker holds a connection only for a statement, never while its
    handler runs, so a fleet needs far fewer connections than workers: the
    pool is what the server has room for, shared by the processes.
    """

    async def run() -> None:
        engine = create_async_engine(url, pool_size=pool, max_overflow=0, pool_timeout=60)
        from worksync_sa import AsyncWorker  # the asyncio twin: loaded only where it runs

        workers = [
            AsyncWorker(engine, _fleet_works(works, idle), _async_sleep, table=TABLE)
            for _ in range(count)
        ]
        ready.put(os.getpid())
        await asyncio.get_running_loop().run_in_executor(None, go.wait)
        try:
            await asyncio.gather(*(w.run(until=deadline.value) for w in workers))
        finally:
            for worker in workers:
                await worker.close()
            await engine.dispose()

    asyncio.run(run())


# -- the server's counters ------------------------------------------------------------


def _proc_times(pid: int) -> tuple[float, float]:
    """(utime + stime, cutime + cstime) of a process, in seconds."""
    return _stat_times(Path(f"/proc/{pid}/stat"))


def _stat_times(path: Path) -> tuple[float, float]:
    """(utime + stime, cutime + cstime) of a process's or a thread's ``stat`` file, in seconds."""
    fields = path.read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick, (int(fields[13]) + int(fields[14])) / tick


def _processes() -> list[tuple[int, int, str]]:
    """(pid, parent pid, command name) of every process we can see."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        found.append((int(entry.name), ppid, name))
    return found


def server_cpu(engine: sa.Engine) -> Callable[[], float]:
    """A reader of the server's CPU seconds so far (see the module docstring)."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            data = str(conn.exec_driver_sql("SHOW data_directory").scalar())
        postmasters = [
            pid
            for pid, _, name in _processes()
            if name == "postgres"
            and data in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        ]
        if not postmasters:
            return lambda: float("nan")
        root = postmasters[0]

        def postgres() -> float:
            own, reaped = _proc_times(root)
            total = own + reaped
            for pid, ppid, _ in _processes():
                if ppid == root:
                    # one that ends between the listing and the read is in ``reaped`` next time
                    with contextlib.suppress(OSError):
                        total += _proc_times(pid)[0]
            return total

        return postgres
    server = _mariadbd()
    if server is None:
        return lambda: float("nan")
    return lambda: _proc_times(server)[0]


def _mariadbd() -> int | None:
    pids = [pid for pid, _, name in _processes() if name in ("mariadbd", "mysqld")]
    return pids[0] if len(pids) == 1 else None


def backend_cpu(engine: sa.Engine, database: str) -> Callable[[], float]:
    """CPU seconds so far of the server's backends (or threads) serving ``database``.

    PostgreSQL: the backends of ``pg_stat_activity`` on it; MariaDB: the
    threads (``information_schema.PROCESSLIST.TID``) of its connections. Each
    one's last reading is kept once it is gone, so the figure only grows; one
    that ends inside a window loses its last moments.
    """
    conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    if engine.dialect.name == "postgresql":
        query = sa.text("SELECT pid FROM pg_stat_activity WHERE datname = :db")
        where = "/proc/{}/stat"
    else:
        query = sa.text("SELECT TID FROM information_schema.PROCESSLIST WHERE DB = :db")
        server = _mariadbd()
        if server is None:
            return lambda: float("nan")
        where = f"/proc/{server}/task/{{}}/stat"
    seen: dict[int, float] = {}

    def read() -> float:
        for pid in conn.execute(query, {"db": database}).scalars():
            with contextlib.suppress(OSError, ValueError, TypeError):
                seen[int(pid)] = _stat_times(Path(where.format(int(pid))))[0]
        return sum(seen.values())

    return read


def statement_counter(engine: sa.Engine) -> tuple[Callable[[], int], str]:
    """A reader of what the server counted of the fleet so far, and what it counts.

    PostgreSQL: the fleet's database's transactions. MariaDB: the fleet's user's
    statements (``USER_STATISTICS``: SELECT + UPDATE + OTHER commands; the
    benchmark reads as another user), when ``userstat`` is on; else every
    client's ``Questions``, less the benchmark's own readings.
    """
    conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    if engine.dialect.name == "postgresql":
        query = sa.text(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = :db"
        )
        return lambda: int(conn.execute(query, {"db": FLEET_DB}).scalar_one()), "transactions"
    if conn.exec_driver_sql("SELECT @@userstat").scalar_one():
        by_user = sa.text(
            "SELECT COALESCE(SUM(SELECT_COMMANDS + UPDATE_COMMANDS + OTHER_COMMANDS), 0) "
            "FROM information_schema.USER_STATISTICS WHERE USER = :user"
        )
        return lambda: int(conn.execute(by_user, {"user": FLEET_USER}).scalar_one()), "user"

    def questions() -> int:
        return int(conn.exec_driver_sql("SHOW GLOBAL STATUS LIKE 'Questions'").one()[1])

    first = questions()
    own = questions() - first  # what one reading costs: taken off every window
    return lambda: questions() - own, "questions"


def anchor_counter(engine: sa.Engine) -> Callable[[], int]:
    conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    query = sa.text("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = :db")
    return lambda: int(conn.execute(query, {"db": ANCHOR_DB}).scalar_one())


def fleet_url(engine: sa.Engine, database: str) -> str:
    """The server's URL on ``database``, created if missing."""
    # DDL takes no bound parameters: the names are this module's constants, held to plain
    # identifiers, then quoted by the dialect (an account's user and host as identifiers too).
    for name in (database, FLEET_USER):
        validate_table_name(name)
    admin = engine.execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        quote = conn.dialect.identifier_preparer.quote_identifier
        db = quote(database)
        if engine.dialect.name == "postgresql":
            exists = conn.execute(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :db"), {"db": database}
            ).first()
            if not exists:
                conn.exec_driver_sql("CREATE DATABASE " + db)
        else:
            statements = ["CREATE DATABASE IF NOT EXISTS " + db]
            for host in ("127.0.0.1", "localhost"):
                account = quote(FLEET_USER) + "@" + quote(host)
                statements += [
                    "CREATE USER IF NOT EXISTS " + account,
                    "GRANT ALL ON " + db + ".* TO " + account,
                    # as root has it: the scheduler looks for transactions left open on its table
                    "GRANT PROCESS ON *.* TO " + account,
                ]
            for statement in statements:
                conn.exec_driver_sql(statement)
            url = engine.url.set(database=database, username=FLEET_USER, password=None)
            return url.render_as_string(hide_password=False)
    return engine.url.set(database=database).render_as_string(hide_password=False)


# -- one case -------------------------------------------------------------------------


def _window(
    read_statements: Callable[[], int],
    read_cpu: Callable[[], float],
    read_backends: Callable[[], float] | None,
    seconds: float,
) -> tuple[datetime, datetime, int, float, float | None]:
    started_at = datetime.now(timezone.utc)
    statements, cpu = read_statements(), read_cpu()
    backends = read_backends() if read_backends else None
    time.sleep(seconds)
    statements, cpu = read_statements() - statements, read_cpu() - cpu
    if read_backends and backends is not None:
        backends = read_backends() - backends
    return started_at, datetime.now(timezone.utc), statements, cpu, backends


def _ticks(engine: sa.Engine, begin: datetime, end: datetime) -> list[tuple[Any, ...]]:
    """(tick_at, first claim's start, claims) per tick due in the window."""
    t = table_named(TABLE)
    query = (
        sa.select(t.c.tick_at, sa.func.min(t.c.started_at), sa.func.count(t.c.started_at))
        .where(t.c.tick_at >= begin, t.c.tick_at < end)
        .group_by(t.c.name, t.c.sequence, t.c.tick_at)
    )
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(query)]


def _claims_in(engine: sa.Engine, begin: datetime, end: datetime) -> int:
    t = table_named(TABLE)
    query = sa.select(sa.func.count()).where(t.c.started_at >= begin, t.c.started_at < end)
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def _outcome(ticks: list[tuple[Any, ...]], expected: int, grace: float) -> dict[str, float | int]:
    lags = [(first - tick).total_seconds() for tick, first, _ in ticks if first is not None]
    claimed = sum(1 for lag in lags if lag <= grace)
    return {
        "ticks": expected,
        "lag_p50_ms": percentile(lags, 0.5) * 1e3,
        "lag_p99_ms": percentile(lags, 0.99) * 1e3,
        "missed": max(0, expected - claimed),
        "over_max_run": sum(1 for _, _, runs in ticks if runs > 1),
    }


def _launch(
    url: str, works: int, workers: int, idle: bool, room: int
) -> tuple[list[Any], Any, Any]:
    ready, go, deadline = SPAWN.Queue(), SPAWN.Event(), SPAWN.Value("d", 0.0)
    if workers <= 8:
        procs = [
            SPAWN.Process(target=blocking_worker, args=(url, works, idle, ready, go, deadline))
            for _ in range(workers)
        ]
    else:
        shares = [workers // ASYNC_PROCESSES + (i < workers % ASYNC_PROCESSES) for i in range(4)]
        pool = min(max(shares) + 4, room // ASYNC_PROCESSES)
        procs = [
            SPAWN.Process(
                target=async_workers, args=(url, works, idle, share, pool, ready, go, deadline)
            )
            for share in shares
        ]
    for proc in procs:
        proc.start()
    for _ in procs:
        ready.get(timeout=300)
    return procs, go, deadline


def run_case(
    engine: sa.Engine,
    url: str,
    works: int,
    workers: int,
    *,
    idle: bool,
    warmup: float,
    window: float,
    room: int,
    workers_url: str | None = None,
) -> dict[str, Any]:
    """One fleet: scheduler here, workers in processes; the window's counts.

    ``room``: the connections the workers may open between them.
    ``workers_url``: where the workers connect, when not ``url`` (a pooler).
    """
    fleet_engine = bench_engine(url)
    fresh_table(fleet_engine, TABLE, companions=True)  # as migrated: a pass reads the pauses
    fleet = _fleet_works(works, idle)
    config = SchedulerConfig(lookahead=timedelta(seconds=5), interval=timedelta(seconds=1))
    scheduler = Scheduler(fleet_engine, fleet, config, table=TABLE)
    scheduler.start()
    (read_statements, counted), read_cpu = statement_counter(engine), server_cpu(engine)
    read_backends = backend_cpu(engine, FLEET_DB)
    try:
        procs, go, deadline = _launch(workers_url or url, works, workers, idle, room)
        deadline.value = time.time() + warmup + window + TAIL_S
        go.set()
        time.sleep(warmup)
        begin, end, statements, cpu, backends = _window(
            read_statements, read_cpu, read_backends, window
        )
        for proc in procs:
            proc.join(warmup + window + 120)
    finally:
        scheduler.close()
    seconds = (end - begin).total_seconds()
    first = begin.replace(microsecond=0) + timedelta(seconds=1)
    last = end.replace(microsecond=0)
    expected = 0 if idle else works * int((last - first).total_seconds())
    claims = _claims_in(fleet_engine, begin, end)
    result: dict[str, Any] = {
        "works": works,
        "workers": workers,
        "idle": idle,
        "window_s": round(seconds, 2),
        "statements": statements,
        "statements_per_s": statements / seconds,
        "counted": counted,
        "claims": claims,
        "claims_per_s": claims / seconds,
        "statements_per_claim": statements / claims if claims else None,
        "db_cpu_s": cpu,
        "db_cpu_cores": cpu / seconds,
        "backend_cpu_cores": None if backends is None else backends / seconds,
        "exit_codes": [proc.exitcode for proc in procs],
        "pooler": "pgbouncer (transaction)" if workers_url else None,
    }
    result.update(_outcome(_ticks(fleet_engine, first, last), expected, 60.0))
    drop_table(fleet_engine, TABLE)
    fleet_engine.dispose()
    return result


# -- procrastinate, the anchor -------------------------------------------------------


def _anchor_ticks(
    anchor: sa.Engine, begin: datetime, end: datetime
) -> tuple[list[tuple[Any, ...]], int]:
    """Per tick in the window, (tick, first start, starts); and the starts in the window."""
    with anchor.connect() as conn:
        rows = conn.execute(
            sa.text(
                # by the job's own tick: procrastinate keeps only each task's last periodic defer
                "SELECT to_timestamp((j.args->>'timestamp')::bigint) AS tick, min(e.at), "
                "count(e.id) FROM procrastinate_jobs j LEFT JOIN procrastinate_events e "
                "ON e.job_id = j.id AND e.type = 'started' "
                "WHERE (j.args->>'timestamp')::bigint >= :b "
                "AND (j.args->>'timestamp')::bigint < :e "
                "GROUP BY j.task_name, tick"
            ),
            {"b": int(begin.timestamp()), "e": int(end.timestamp())},
        ).all()
        started = conn.execute(
            sa.text(
                "SELECT count(*) FROM procrastinate_events "
                "WHERE type = 'started' AND at >= :b AND at < :e"
            ),
            {"b": begin, "e": end},
        ).scalar_one()
    return [tuple(row) for row in rows], int(started)


def run_anchor(
    engine: sa.Engine, python: str, works: int, workers: int, *, warmup: float, window: float
) -> dict[str, Any]:
    """procrastinate's fleet: min(4, W) worker processes sharing ``concurrency`` W.

    The first process alone runs the periodic deferrer (see ``procrastinate_fleet.py``).
    """
    url = fleet_url(engine, ANCHOR_DB)
    anchor = sa.create_engine(url)
    with anchor.connect() as conn:
        conn.exec_driver_sql("DROP SCHEMA public CASCADE")
        conn.exec_driver_sql("CREATE SCHEMA public")
        conn.commit()
    u = anchor.url
    conninfo = f"host={u.host} port={u.port or 5432} user={u.username} dbname={u.database}"
    if u.password:
        conninfo += f" password={u.password}"
    subprocess.run([python, str(ANCHOR_SCRIPT), "schema", conninfo], check=True)
    processes = min(ASYNC_PROCESSES, workers)
    shares = [workers // processes + (i < workers % processes) for i in range(processes)]
    until = time.time() + warmup + window + TAIL_S + 5
    procs = [
        subprocess.Popen(
            [
                python,
                *(str(ANCHOR_SCRIPT), "worker", conninfo, str(works), str(share), str(until)),
                "1" if n == 0 else "0",  # one periodic deferrer for the fleet
            ]
        )
        for n, share in enumerate(shares)
    ]
    read_statements, read_cpu = anchor_counter(engine), server_cpu(engine)
    time.sleep(warmup + 5)  # its start-up is slower: its own imports, then the schema check
    begin, end, statements, cpu, backends = _window(
        read_statements, read_cpu, backend_cpu(engine, ANCHOR_DB), window
    )
    for proc in procs:
        proc.wait(timeout=warmup + window + 120)
    seconds = (end - begin).total_seconds()
    first = begin.replace(microsecond=0) + timedelta(seconds=1)
    last = end.replace(microsecond=0)
    expected = works * int((last - first).total_seconds())
    ticks, _ = _anchor_ticks(anchor, first, last)
    _, claims = _anchor_ticks(anchor, begin, end)
    anchor.dispose()
    result: dict[str, Any] = {
        "works": works,
        "workers": workers,
        "processes": processes,
        "window_s": round(seconds, 2),
        "statements": statements,
        "statements_per_s": statements / seconds,
        "claims": claims,
        "claims_per_s": claims / seconds,
        "statements_per_claim": statements / claims if claims else None,
        "db_cpu_s": cpu,
        "db_cpu_cores": cpu / seconds,
        "backend_cpu_cores": None if backends is None else backends / seconds,
        "exit_codes": [proc.returncode for proc in procs],
    }
    result.update(_outcome(ticks, expected, 60.0))
    return result


# -- the benchmark --------------------------------------------------------------------


def _row(report: Report, who: str, result: dict[str, Any], counted: str) -> None:
    per_claim = result["statements_per_claim"]
    case = f"M {result['works']}, W {result['workers']}{' idle' if result.get('idle') else ''}"
    report.row(
        "10 fleet",
        f"{who}: {case}",
        f"{result['statements_per_s']:,.0f} {counted}/s, "
        + (f"{per_claim:.1f} per claim" if per_claim else "no claims"),
        "",
        "",
        f"claims {result['claims_per_s']:,.1f}/s; lag p50 {result['lag_p50_ms']:.0f} ms, "
        f"p99 {result['lag_p99_ms']:.0f} ms; missed {result['missed']}/{result['ticks']}; "
        f"over max_run {result['over_max_run']}; db CPU {result['db_cpu_cores']:.2f} cores",
    )


@contextlib.contextmanager
def _userstat(engine: sa.Engine) -> Iterator[None]:
    """MariaDB: ``userstat`` on for the run (statements counted per user), as it was after.

    A runtime setting of the server, not its configuration: nothing survives a
    restart, and it is put back as found. Left as it is where it cannot be set.
    """
    if engine.dialect.name == "postgresql":
        yield
        return
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        was = int(conn.exec_driver_sql("SELECT @@userstat").scalar_one())
        try:
            conn.exec_driver_sql("SET GLOBAL userstat = ON")
        except sa.exc.DBAPIError:
            was = 1  # not ours to change: counted by Questions instead
        try:
            yield
        finally:
            if not was:
                conn.exec_driver_sql("SET GLOBAL userstat = OFF")


def fleet(engine: sa.Engine, report: Report, *, quick: bool) -> None:
    """Every case of the issue's fleet on this server, and procrastinate's beside it."""
    if engine.dialect.name not in ("postgresql", "mysql", "mariadb"):
        print("  fleet: skipped (a server benchmark: MariaDB or PostgreSQL)", flush=True)
        return
    with _userstat(engine):
        _fleet(engine, report, quick=quick)


def _fleet(engine: sa.Engine, report: Report, *, quick: bool) -> None:
    sizes: dict[str, Any] = QUICK if quick else FULL
    url = fleet_url(engine, FLEET_DB)
    counted = "transactions" if engine.dialect.name == "postgresql" else "statements"
    limit = _connection_room(engine)
    results: dict[str, Any] = {"counted": counted, "poll_s": POLL_S, "worksync": [], "skipped": []}
    for idle, cases, window in (
        (True, sizes["idle"], sizes["idle_window"]),
        (False, sizes["loaded"], sizes["window"]),
    ):
        for works, workers in cases:
            # Each worker holds a connection (its lane); the scheduler and the counters too.
            pooled = workers + 10 > limit
            if pooled and not (engine.dialect.name == "postgresql" and bouncer.available()):
                note = f"M {works}, W {workers}: the server has room for {limit} connections"
                results["skipped"].append(note)
                print(f"  fleet: skipped {note}", flush=True)
                continue
            room = 4 * workers + 16
            with bouncer.bouncer(url) if pooled else contextlib.nullcontext(None) as through:
                result = run_case(
                    engine,
                    url,
                    works,
                    workers,
                    idle=idle,
                    warmup=sizes["warmup"],
                    window=window,
                    room=room,
                    workers_url=through,
                )
            results["worksync"].append(result)
            _row(report, "worksync", result, counted)
            print(f"  fleet M {works} W {workers}{' idle' if idle else ''} done", flush=True)
    python = os.environ.get(ANCHOR_ENV)
    if engine.dialect.name == "postgresql":
        if python and Path(python).exists():
            results["procrastinate"] = [
                run_anchor(
                    engine, python, works, workers, warmup=sizes["warmup"], window=sizes["window"]
                )
                for works, workers in sizes["anchor"]
            ]
            for result in results["procrastinate"]:
                _row(report, "procrastinate", result, counted)
        else:
            note = f"procrastinate skipped: set {ANCHOR_ENV} to a Python with procrastinate 3"
            results["skipped"].append(note)
            print(f"  fleet: {note}", flush=True)
    report.results["fleet"] = results


def _connection_room(engine: sa.Engine) -> int:
    """How many more connections the server takes now (its limit less those open)."""
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            limit = int(conn.exec_driver_sql("SHOW max_connections").scalar_one())
            reserved = int(conn.exec_driver_sql("SHOW superuser_reserved_connections").scalar_one())
            used = int(conn.exec_driver_sql("SELECT count(*) FROM pg_stat_activity").scalar_one())
            return limit - reserved - used
        limit = int(conn.exec_driver_sql("SELECT @@max_connections").scalar_one())
        used = int(
            conn.exec_driver_sql("SELECT count(*) FROM information_schema.processlist").scalar_one()
        )
        return limit - used
