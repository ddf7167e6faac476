"""The real Go original beside worksync_sa on MariaDB: no tick stalls, in any order.

Issue 19. The original (worksync v0.0.3, compiled from ``../shared/go-original`` by
``go_original``) and worksync_sa share one table, ``workers``: two works at
``max_run`` 2 ticking every two seconds (``defaults``: every minute), two Go and two Python
worker processes, and the schedulers started in each order the issue names, for 60 s each:

* ``original-first``: the original's scheduler, ours joining 15 s later;
* ``ours-first``: ours, the original's joining 15 s later;
* ``at-once``: both from the start;
* ``original-restarts``: the original's killed at 25 s, a new one at 30 s;
* ``two-originals``: two of the original's schedulers beside ours;
* ``defaults``: both at once with every setting at its default but ``leave_to_original``
  (the guide's 5 minutes), and the original's own defaults (10 minutes ahead, a look a
  minute), for works ticking every minute, over 190 s.

Every process connects as a MariaDB user of its own, capped by
``MAX_USER_CONNECTIONS``: the original leaks an open SERIALIZABLE transaction per
tick it finds created, and uncapped it would take the shared server's every
connection. The users also let each process's connections be counted.

Judged on ticks from 5 s after the last scheduler joined (the restart is part of
what is judged) to 5 s before the end: no tick over ``max_run`` claims, every due
tick claimed ``max_run`` times (the workers are idle: 20 ms of work per claim), and
our scheduler and workers end without error. Each order prints one line: due
ticks, the most claims a tick got, over, missed and the most connections each
process held (``scripts/test --all`` shows them in its summary).
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from worksync_sa import local_sequence
from worksync_sa.models import work_table

from . import go_original, racers
from .conftest import Backend
from .test_web import Client

pytestmark = [pytest.mark.slow, pytest.mark.original]

TABLE = "workers"  # the original finishes on a table of this name, whatever it was given
CRON = "*/2 * * * * *"  # seconds first in both
MAX_RUN = 2
NAMES = ("alpha", "beta")
SECONDS = 60.0
MARGIN = 5.0
LAYOUT = "%Y-%m-%d %H:%M:%S"  # the original's time.DateTime
OUR_CONFIG = {"lookahead": "10m", "interval": "1s", "max_backoff": "2s", "leave_to_original": "3s"}
"""Our scheduler's settings for ticks 2 s apart; ``sequence`` is added per order's zone."""
DEFAULTS = {"leave_to_original": "5m"}
"""The guide's mixed-fleet setting, every other at its default (lookahead 10m, interval 1m)."""
SPAWN = multiprocessing.get_context("spawn")


@dataclass(frozen=True)
class Order:
    """When each scheduler runs, in seconds from the start of the fleet."""

    name: str
    zone: str
    ours_at: float = 0.0
    originals: tuple[tuple[float, float | None], ...] = ((0.0, None),)
    """Each original scheduler's start, and when it is killed (None: it runs to the end)."""

    judged_from: float = MARGIN
    """Where the judged ticks start: 5 s after the last scheduler joined (a restart is judged)."""

    cron: str = CRON
    period: int = 2
    """Seconds between two ticks of ``cron``."""
    seconds: float = SECONDS
    ours: dict[str, str] = field(default_factory=lambda: dict(OUR_CONFIG))
    before: str = "5s"
    """The original's ``DurationBeforeSequence``; ``0s`` is its default, 10 minutes."""
    check: str = "@every 1s"
    """The original's ``SchedulerCheckingInterval``; empty is its default, every minute."""


ORDERS = [
    Order("original-first", "Europe/Berlin", ours_at=15.0, judged_from=15.0 + MARGIN),
    Order("ours-first", "UTC", originals=((15.0, None),), judged_from=15.0 + MARGIN),
    Order("at-once", "Europe/Berlin"),
    Order("original-restarts", "UTC", originals=((0.0, 25.0), (30.0, None))),
    Order("two-originals", "UTC", originals=((0.0, None), (0.0, None))),
    # Both at their defaults (ours but for leave_to_original), works ticking every minute:
    # the original creates one tick per work per minute, each after ours completed it, and
    # leaves a transaction open every time; this order shows what that costs in connections.
    Order("defaults", "Europe/Berlin", cron="0 * * * * *", period=60, seconds=190.0,
          ours=DEFAULTS, before="0s", check=""),
]  # fmt: skip


@pytest.fixture
def fleet_sandbox(mariadb: Backend) -> Iterator[go_original.Sandbox]:
    with go_original.sandbox(mariadb.engine) as made:
        engine = sa.create_engine(made.url)
        try:
            work_table(TABLE).create(engine)
        finally:
            engine.dispose()
        yield made


@dataclass
class Sampler:
    """The most connections each process's user held, sampled every second."""

    box: go_original.Sandbox
    most: Counter[str] = field(default_factory=Counter)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            for role, count in self.box.connections().items():
                self.most[role] = max(self.most[role], count)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


@dataclass
class Python:
    """One of our processes, held at a barrier until its start."""

    role: str
    process: Any
    results: Any
    barrier: Any

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=10)

    def release(self, timeout: float = 120) -> None:
        """Wait until it is ready at its barrier, and let it start; fail at once if it died."""
        deadline = time.monotonic() + timeout
        while self.barrier.n_waiting < 1:
            if not self.process.is_alive():
                status, value = self.report(timeout=5)
                pytest.fail(f"{self.role} ended before its start: {status} {value}", pytrace=False)
            if time.monotonic() > deadline:
                pytest.fail(f"{self.role} was not ready after {timeout} s", pytrace=False)
            time.sleep(0.05)
        self.barrier.wait(timeout=10)

    def report(self, timeout: float = 60) -> tuple[str, Any]:
        try:
            status, value = self.results.get(timeout=timeout)
        except Exception as exc:  # queue.Empty: it died without a word
            return "error", f"no report ({exc!r}), exit code {self.process.exitcode}"
        return str(status), value


def spawn(role: str, target: Any, *args: Any) -> Python:
    results = SPAWN.Queue()
    barrier = SPAWN.Barrier(2)
    process = SPAWN.Process(target=target, args=(*args, barrier, results), name=role)
    process.start()
    return Python(role, process, results, barrier)


def at(t0: float, seconds: float) -> None:
    time.sleep(max(0.0, t0 + seconds - time.monotonic()))


def due_ticks(start: datetime, end: datetime, zone: str, period: int) -> list[tuple[str, str]]:
    """(name, label) of every tick in [start, end] of a cron ticking every ``period`` seconds.

    Its ticks are the UTC instants whose seconds since the epoch ``period`` divides
    (``*/2 * * * * *`` and ``0 * * * * *`` alike, as zones are whole minutes from UTC).
    """
    first = -(-int(start.timestamp()) // period) * period
    tick = datetime.fromtimestamp(first, timezone.utc)
    labels = []
    while tick <= end:
        labels.append(tick.astimezone(ZoneInfo(zone)).strftime(LAYOUT))
        tick += timedelta(seconds=period)
    return [(name, label) for name in NAMES for label in labels]


OUR_CONNECTIONS = 2
"""The most connections one of our processes may hold here (one lane per call at once; the
scheduler's second is its watch for the original's leaks)."""
ORIGINAL_CONNECTIONS = 15
"""The most one of the original's may hold beside ours: leaks live a second or two."""


def check_ledger_of_the_originals_rows(
    box: go_original.Sandbox, zone: str, began: datetime
) -> None:
    """The ledger dates the real original's undated rows from their labels, in its zone.

    The original's scheduler ran 15 s before ours: the rows it made then carry no tick
    time. Each entry must sit at its label's instant in ``zone``, in order, with no
    negative lag, and the page must never show one that ran as upcoming.
    """
    from zoneinfo import ZoneInfo

    from worksync_sa import Ledger
    from worksync_sa.web import app

    engine = sa.create_engine(box.url)
    try:
        with engine.connect() as conn:
            undated = conn.exec_driver_sql(
                f"SELECT count(*) FROM {TABLE} WHERE tick_at IS NULL AND slot IS NULL"
            ).scalar()
        assert undated, "the original made no undated rows before ours joined"
        ledger = Ledger(engine, table=TABLE, sequence_zone=zone)
        try:
            entries = ledger.page(since=began - timedelta(minutes=1), limit=1000).entries
        finally:
            ledger.close()
        assert entries
        for entry in entries:
            wall = datetime.strptime(entry.sequence, LAYOUT).replace(tzinfo=ZoneInfo(zone))
            assert entry.tick_at == wall.astimezone(timezone.utc), entry
            assert entry.lag is None or entry.lag >= timedelta(0), entry
        per_work: dict[str, list[datetime]] = {}
        for entry in entries:
            per_work.setdefault(entry.name, []).append(entry.tick_at)
        assert all(ticks == sorted(ticks) for ticks in per_work.values())
        status_page = app(engine, TABLE, sequence_zone=zone)
        try:
            state = Client(status_page).json("/api/state")
        finally:
            status_page.close()
        for work in state["works"]:
            assert work["lag_p50"] is None or work["lag_p50"] >= 0, work
            for cell in work["timeline"]:
                assert not (cell["outcome"] == "succeeded" and cell["upcoming"]), cell
    finally:
        engine.dispose()


def table_counts(box: go_original.Sandbox) -> tuple[Counter[tuple[str, str]], ...]:
    """Rows per tick, and claimed rows per tick (started, whoever claimed them)."""
    engine = sa.create_engine(box.url)
    try:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(f"SELECT name, sequence, started_at FROM {TABLE}").all()
    finally:
        engine.dispose()
    made = Counter((row[0], row[1]) for row in rows)
    started = Counter((row[0], row[1]) for row in rows if row[2] is not None)
    return made, started


def our_claims(log: Path) -> list[tuple[str, str]]:
    if not log.exists():
        return []
    lines = log.read_text().splitlines()
    return [(parts[0], parts[1]) for parts in (line.split("\t") for line in lines)]


@dataclass
class Run:
    """What one order left: its start, our processes' reports, the original's processes."""

    began: datetime
    reports: dict[str, tuple[str, Any]]
    go: list[go_original.GoProcess]
    go_workers: list[go_original.GoProcess]
    connections: Counter[str]


def run_order(order: Order, binary: Path, box: go_original.Sandbox, folder: Path, log: Path) -> Run:
    """Start every process of the order at its time, let them run its seconds, collect them."""
    seconds = order.seconds
    works = [{"name": name, "cron": order.cron, "max_run": MAX_RUN} for name in NAMES]
    go_works = [go_original.GoWork(name, order.cron, MAX_RUN) for name in NAMES]
    config = {**order.ours, "sequence": local_sequence(order.zone)}
    ours_account = box.account("pysched")
    box.grant_connection_admin(ours_account)  # to see and end the original's leaked transactions
    ours = [
        spawn("pysched", racers.run_scheduler, ours_account.url(box.url), TABLE, works, config,
              seconds - order.ours_at),
        *(spawn(f"pywork{i}", racers.run_worker, box.account(f"pywork{i}").url(box.url), TABLE,
                works, seconds, str(log)) for i in (1, 2)),
    ]  # fmt: skip
    go_workers = [box.account(f"gowork{i}") for i in (1, 2)]
    go_schedulers = [box.account(f"gosched{i}") for i in range(1, len(order.originals) + 1)]
    events: list[tuple[float, str, int]] = [(order.ours_at, "ours", 0)] if order.ours_at else []
    for index, (start, kill) in enumerate(order.originals):
        events.append((start, "start", index))
        if kill is not None:
            events.append((kill, "kill", index))
    sampler = Sampler(box)
    with go_original.launcher(binary, folder) as fleet:
        try:
            for python in ours[1:] if order.ours_at else ours:
                python.release()  # imported and connected: the start is now
            t0 = time.monotonic()
            began = datetime.now(timezone.utc)
            sampler.start()
            theirs = [
                fleet.start("worker", account, table=TABLE, works=go_works, zone=order.zone,
                            seconds=seconds, name=account.user)
                for account in go_workers
            ]  # fmt: skip
            schedulers: dict[int, go_original.GoProcess] = {}
            for when, what, index in sorted(events):
                at(t0, when)
                if what == "ours":
                    ours[0].release()
                elif what == "start":
                    schedulers[index] = fleet.start(
                        "scheduler", go_schedulers[index], table=TABLE, works=go_works,
                        zone=order.zone, seconds=seconds - when, before=order.before,
                        check=order.check, name=go_schedulers[index].user,
                    )  # fmt: skip
                else:
                    schedulers[index].kill()
            at(t0, seconds + 1)
            reports = {python.role: python.report() for python in ours}
            for process in fleet.started:
                if process.popen.poll() is None:
                    process.wait(timeout=20)
        finally:
            sampler.stop()
            for python in ours:
                python.kill()
    return Run(began, reports, list(fleet.started), theirs, sampler.most)


@pytest.mark.parametrize("order", ORDERS, ids=[order.name for order in ORDERS])
def test_beside_the_real_original_no_tick_stalls(
    order: Order,
    go_original_binary: Path,
    fleet_sandbox: go_original.Sandbox,
    tmp_path: Path,
    record_property: Any,
) -> None:
    log = tmp_path / "our-claims.log"
    run = run_order(order, go_original_binary, fleet_sandbox, tmp_path, log)
    begin = run.began + timedelta(seconds=order.judged_from)
    end = run.began + timedelta(seconds=order.seconds - MARGIN)
    due = due_ticks(begin, end, order.zone, order.period)
    claimed = Counter(our_claims(log))
    for process in run.go_workers:
        claimed.update(process.claims())
    made, started = table_counts(fleet_sandbox)
    ticks = set(claimed) | set(made)
    most = max((max(claimed[tick], started[tick]) for tick in ticks), default=0)
    over = sorted(tick for tick in ticks if max(claimed[tick], started[tick], made[tick]) > MAX_RUN)
    missed = sorted(tick for tick in due if min(claimed[tick], started[tick]) != MAX_RUN)
    conns = ", ".join(f"{role}: {count}" for role, count in sorted(run.connections.items()))
    status, actions = run.reports["pysched"]
    held = actions.get("lock-holder", 0) if status == "ok" else "?"  # each one ended or reported
    line = (
        f"order={order.name} zone={order.zone} due={len(due)} max_claims={most} "
        f"over={len(over)} missed={len(missed)} max_conns={{{conns}}} lock_holders={held}"
    )
    record_property("go_original_report", line)
    print(line)
    failed = {role: value for role, (status, value) in run.reports.items() if status != "ok"}
    said = [f"{p.account.user}: {error}" for p in run.go for error in p.errors()]
    ours_said = {role: value for role, (_, value) in run.reports.items()}  # events by action
    assert not over, f"{line}\nover max_run: {over}"
    # The stated bounds (the guide's "Connections"): each of our processes holds one lane per
    # call running at once (1 here; our scheduler 2 with its watch), the original's at most
    # its leaks not yet ended and its claims in flight.
    ours_conns = {role: n for role, n in run.connections.items() if role.startswith("py")}
    theirs_conns = {role: n for role, n in run.connections.items() if role.startswith("go")}
    assert all(n <= OUR_CONNECTIONS for n in ours_conns.values()), line
    assert all(n <= ORIGINAL_CONNECTIONS for n in theirs_conns.values()), line
    if order.name == "original-first":  # its first 15 s of ticks are undated: the ledger reads them
        check_ledger_of_the_originals_rows(fleet_sandbox, order.zone, run.began)
    assert not missed, (
        f"{line}\nmissed (tick, rows, started, claims logged): "
        f"{[(t, made[t], started[t], claimed[t]) for t in missed[:10]]}\n"
        f"the original said: {said[:5]}\nours said: {ours_said}"
    )
    assert not failed, f"{line}\nour processes failed: {failed}"
