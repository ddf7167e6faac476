"""PostgreSQL failover: the primary crashes, the standby is promoted, the fleet carries on.

A primary and a streaming standby (``topology_postgres``) on loopback; two
scheduler processes and six worker processes reach them through one libpq
multi-host URL with ``target_session_attrs=read-write``. After a while the
primary crashes (every one of its processes SIGKILLed), and two seconds later
the standby is promoted, as an operator or a failover manager would. The fleet
runs on, then the workers stop, the schedulers settle what is left, and the
new primary's table is held against what the workers journalled.

Three runs. Synchronous replication: nothing acknowledged can be lost, so no
tick may get more than ``max_run`` runs. Asynchronous replication as it is.
Asynchronous replication with the standby held three seconds behind (the
primary's walsender stopped) when the primary dies, so commits really are
lost: a claim the old primary acknowledged but never sent is gone, its row is
QUEUED again on the new primary and may be claimed a second time within its
grace; or the claim arrived but its finish did not, and the row stays RUNNING
until its lease runs out and recovery closes it. The bound checked is the one
docs/guides/topologies.md states: runs above ``max_run`` never outnumber the claims lost so.

WORKSYNC_TOPOLOGY_SECONDS (default 8, at least 5) is how long the fleet runs
before the crash, and again after the promotion.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from worksync_sa import WorkStatus, default_sequence, upgrade
from worksync_sa.models import table_named

from . import topology_postgres
from .racers import blueprints
from .topology import wait_until
from .topology_postgres import postgres_pair, server_port

pytestmark = [pytest.mark.topology, pytest.mark.slow]
SPAWN = multiprocessing.get_context("spawn")

RUN_SECONDS = max(5.0, float(os.environ.get("WORKSYNC_TOPOLOGY_SECONDS", "8")))
TABLE = "works"
MAX_RUN = 3
LEASE = 3
GRACE = 6
WORKS: list[dict[str, Any]] = [
    {"name": "every-second", "cron": "* * * * * *", "max_run": MAX_RUN, "lease": LEASE,
     "grace": GRACE},
]  # fmt: skip
# A lookahead longer than the lag plus the outage: docs/guides/topologies.md says what a
# shorter one costs.
CONFIG = {"lookahead": "10s", "interval": "1s", "catchup": "10s", "max_backoff": "2s"}
SCHEDULERS = 2
QUICK_WORKERS, QUICK_HOLD = 4, 0.2
SLOW_WORKERS, SLOW_HOLD = 2, 4.0  # longer than the lease: only heartbeats keep these claims
KILL_TO_PROMOTE = 2.0
LAG = 3.0
RESUME_SLACK = 3.0
"""After the promotion every service is back within its longest backoff (2 s) and a poll."""

MODES = {  # (synchronous replication, standby held behind when the primary dies)
    "sync": (True, False),
    "async": (False, False),
    "async-lagged": (False, True),
}


def _utc(at: float) -> datetime:
    return datetime.fromtimestamp(at, timezone.utc)


def _hold(worker: int) -> float:
    return QUICK_HOLD if worker < QUICK_WORKERS else SLOW_HOLD


@dataclass
class JournalClaim:
    """One claim as a worker process saw it, and what became of it there."""

    worker: int
    name: str
    sequence: str
    id: int
    token: str
    at: float
    outcomes: list[str] = field(default_factory=list)
    """``finished SUCCESS``, ``lost heartbeat``, ``lost finish``, ``failed <error>``."""

    @property
    def seen(self) -> list[str]:
        """The outcomes, errors cut to their kind."""
        return [
            f"failed {o.split(':', 2)[1].strip()}" if o.startswith("failed") else o
            for o in self.outcomes
        ]


def read_journals(folder: Path) -> list[JournalClaim]:
    """Every worker's claims, in order, each with what its worker saw become of it."""
    claims: list[JournalClaim] = []
    for journal in sorted(folder.glob("journal-*.log")):
        worker = int(journal.stem.split("-")[1])
        by_token: dict[str, JournalClaim] = {}
        last_by_id: dict[int, JournalClaim] = {}
        for line in journal.read_text().splitlines():
            kind, *parts = line.split("\t")
            if kind == "claim" and len(parts) == 5:
                name, sequence, row_id, token, at = parts
                claim = JournalClaim(worker, name, sequence, int(row_id), token, float(at))
                claims.append(claim)
                by_token[token] = last_by_id[claim.id] = claim
            elif kind == "finished" and len(parts) == 2 and int(parts[0]) in last_by_id:
                last_by_id[int(parts[0])].outcomes.append(f"finished {parts[1]}")
            elif kind in ("lost", "failed") and len(parts) == 3 and parts[1] in by_token:
                by_token[parts[1]].outcomes.append(f"{kind} {parts[2]}")
    return claims


@dataclass
class Fleet:
    """The scheduler and worker processes, and the events that stop them."""

    url: str
    folder: Path
    results: Any = field(default_factory=SPAWN.Queue)
    stop_workers: Any = field(default_factory=SPAWN.Event)
    stop_schedulers: Any = field(default_factory=SPAWN.Event)
    workers: list[Any] = field(default_factory=list)
    schedulers: list[Any] = field(default_factory=list)

    def start(self) -> None:
        for _ in range(SCHEDULERS):
            self.schedulers.append(
                SPAWN.Process(
                    target=topology_postgres.fleet_scheduler,
                    args=(self.url, TABLE, WORKS, CONFIG, self.stop_schedulers, self.results),
                )
            )
        for number in range(QUICK_WORKERS + SLOW_WORKERS):
            journal = str(self.folder / f"journal-{number}.log")
            args = (self.url, TABLE, WORKS, _hold(number), journal, self.stop_workers)
            self.workers.append(
                SPAWN.Process(target=topology_postgres.fleet_worker, args=(*args, self.results))
            )
        for proc in self.schedulers + self.workers:
            proc.start()

    def collect(self, procs: list[Any]) -> list[tuple[str, Any]]:
        """Each process's report (it sends one as it ends), then its exit."""
        reports = [self.results.get(timeout=120) for _ in procs]
        for proc in procs:
            proc.join(30)
        return reports

    def kill(self) -> None:
        """Whatever still runs (a test that failed half way) ends here."""
        self.stop_workers.set()
        self.stop_schedulers.set()
        for proc in self.workers + self.schedulers:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(10)


@dataclass
class Timeline:
    """Wall-clock moments of the run (the database clock is this machine's clock too)."""

    paused: float | None
    killed: float
    promoted: float
    stopping: float

    @property
    def kill(self) -> datetime:
        return _utc(self.killed)

    @property
    def promote(self) -> datetime:
        return _utc(self.promoted)

    @property
    def stop(self) -> datetime:
        return _utc(self.stopping)


@dataclass
class Run:
    """What the run left: the new primary's rows, the journals, the processes' reports."""

    rows: list[Any]
    journal: list[JournalClaim]
    reports: list[tuple[str, Any]]
    when: Timeline
    figures: dict[str, Any]


def run_failover(mode: str, folder: Path) -> Run:
    """Start the pair and the fleet, crash the primary, promote the standby, run on, stop."""
    synchronous, lagged = MODES[mode]
    figures: dict[str, Any] = {"mode": mode}
    with postgres_pair(synchronous=synchronous) as pair:
        engine = sa.create_engine(pair.url, poolclass=NullPool)
        assert server_port(engine) == (pair.primary.port, False)
        upgrade(engine, table=TABLE)  # through the multi-host URL
        table = table_named(TABLE)
        fleet = Fleet(pair.url, folder)

        def claimed_rows() -> int:
            with engine.connect() as conn:
                query = sa.select(sa.func.count()).where(table.c.started_at.is_not(None))
                return int(conn.execute(query).scalar_one())

        try:
            fleet.start()
            wait_until(lambda: claimed_rows() >= 2 * MAX_RUN, 120, "the fleet's first claims")
            time.sleep(RUN_SECONDS)
            paused = None
            if lagged:
                pair.pause_replication()
                paused = time.time()
                time.sleep(LAG)
                figures["lag_bytes"] = pair.standby_lag()
            killed = pair.kill_primary()
            time.sleep(KILL_TO_PROMOTE)
            figures["promote_s"] = round(pair.promote(), 2)
            promoted = time.time()
            time.sleep(RUN_SECONDS)
            stopping = time.time()
            fleet.stop_workers.set()
            reports = fleet.collect(fleet.workers)
            time.sleep(GRACE + 2)  # the schedulers close what nobody may claim any more
            fleet.stop_schedulers.set()
            reports += fleet.collect(fleet.schedulers)
        finally:
            fleet.kill()
        assert server_port(engine) == (pair.standby.port, False)  # the promoted standby
        with engine.connect() as conn:
            rows = list(conn.execute(sa.select(table).order_by(table.c.id)).all())
        engine.dispose()
    when = Timeline(paused, killed, promoted, stopping)
    if paused is not None:
        figures["lagged_s"] = round(killed - paused, 2)
    return Run(rows, read_journals(folder), reports, when, figures)


@pytest.mark.parametrize("mode", list(MODES))
def test_failover_to_the_promoted_standby(mode: str, tmp_path: Path) -> None:
    run = run_failover(mode, tmp_path)
    synchronous, lagged = MODES[mode]
    rows, journal, figures = run.rows, run.journal, run.figures
    try:
        check_services(run)
        check_ticks(run)
        check_interruption(run)
        lost_claims, over_runs = check_journals(run)
    finally:
        print(f"\nfailover figures: {figures}")
    if synchronous:  # nothing acknowledged was lost: not one run above max_run
        assert lost_claims == 0
        assert figures["lost_finishes"] == 0
        assert over_runs == 0
        by_id = {r.id: r for r in rows}
        per_row = Counter(c.id for c in journal)
        assert all(n <= (by_id[i].attempts or 0) for i, n in per_row.items()), per_row
        per_tick = Counter((c.name, c.sequence) for c in journal)
        assert max(per_tick.values()) <= MAX_RUN
    if lagged:  # the standby was behind: the claims of those seconds were lost
        assert lost_claims > 0


def check_services(run: Run) -> None:
    """No process died (a process body reports ("error", ...) if it does, and whether its
    loop's thread was still running); every scheduler lost its passes and came back."""
    assert all(status == "ok" for status, _ in run.reports), run.reports
    assert all(report["alive"] for _, report in run.reports), run.reports
    actions: Counter[str] = Counter()
    for _, report in run.reports:
        actions.update(report["actions"])
        if report["role"] == "scheduler":
            assert report["actions"].get("outage", 0) >= 1, report
            assert report["actions"].get("resumed", 0) >= 1, report
    run.figures["log_actions"] = {k: actions[k] for k in sorted(actions) if k != "claimed"}
    # Which worker wins a slot is a race, so some may claim nothing after the promotion;
    # the ticks' checks make sure the fleet as a whole claimed every one.
    after = Counter(c.worker for c in run.journal if c.at > run.when.promoted)
    run.figures["claims_after_promotion_per_worker"] = [
        after[n] for n in range(QUICK_WORKERS + SLOW_WORKERS)
    ]
    assert sum(after.values()) > 0


def check_ticks(run: Run) -> None:
    """Every tick has its rows; none over-claimed; all settled, within grace; after the
    services resumed, every slot of every tick claimed and run."""
    rows, when, figures = run.rows, run.when, run.figures
    work = blueprints(WORKS)[0]
    claimed = [r for r in rows if r.started_at is not None]
    began = min(r.tick_at for r in claimed)
    per_tick = Counter(r.sequence for r in rows)
    assert set(per_tick.values()) == {MAX_RUN}, per_tick  # every tick made once, never doubled
    expected = {default_sequence(t) for t in work.ticks(began, when.stop)}
    assert expected <= set(per_tick), sorted(expected - set(per_tick))  # no tick went rowless
    assert max(Counter(r.sequence for r in claimed).values()) <= MAX_RUN

    settled = [r for r in rows if began < r.tick_at <= when.stop - timedelta(seconds=1)]
    for row in settled:  # nothing stays QUEUED or RUNNING: claimed within grace, or closed
        assert row.status in (WorkStatus.SUCCESS, WorkStatus.FAILED), row
        assert row.closed_by in ("worker", "lease", "missed"), row
        if row.started_at is not None:
            assert row.started_at - row.tick_at <= timedelta(seconds=GRACE), row
    resumed = [r for r in settled if r.tick_at > when.promote + timedelta(seconds=RESUME_SLACK)]
    assert len({r.sequence for r in resumed}) >= RUN_SECONDS - RESUME_SLACK - 2
    assert [r for r in resumed if r.status != WorkStatus.SUCCESS] == []

    outage = [r for r in settled if when.kill - timedelta(seconds=1) < r.tick_at <= when.promote]
    figures.update(
        ticks=len({r.sequence for r in settled}),
        slots=len(settled),
        closed_by=dict(Counter(str(r.closed_by) for r in settled)),
        outage_ticks=len({r.sequence for r in outage}),
        outage_slots_run_late=sum(1 for r in outage if r.started_at is not None),
        outage_slots_missed=sum(1 for r in outage if r.closed_by == "missed"),
    )


def check_interruption(run: Run) -> None:
    """Kill to the first claim, and to the first scheduler write, on the new primary."""
    rows, when = run.rows, run.when
    first_claim = min(r.started_at for r in rows if r.started_at and r.started_at > when.kill)
    first_write = min(r.created_at for r in rows if r.created_at > when.kill)
    run.figures["kill_to_first_claim_s"] = round((first_claim - when.kill).total_seconds(), 2)
    run.figures["kill_to_first_scheduler_write_s"] = round(
        (first_write - when.kill).total_seconds(), 2
    )
    assert first_claim >= when.promote - timedelta(seconds=1)  # the standby took no writes
    bound = timedelta(seconds=RESUME_SLACK + 3)
    assert first_claim - when.promote <= bound
    assert first_write - when.promote <= bound


def check_journals(run: Run) -> tuple[int, int]:
    """What the workers ran against what the new primary holds; returns (lost claims, over-runs).

    A claim is lost when its row on the new primary does not carry its token
    (QUEUED again, claimed by another, or never replicated at all). An
    over-run is a journalled run of a tick beyond its ``max_run``. A lost
    finish is a finish the worker saw written that the new primary lacks.
    """
    rows, journal, figures = run.rows, run.journal, run.figures
    assert journal
    assert all(c.outcomes for c in journal)  # every claim ended somehow in its worker
    by_id = {r.id: r for r in rows}

    def kept(claim: JournalClaim) -> bool:
        row = by_id.get(claim.id)
        return row is not None and (row.token, row.sequence) == (claim.token, claim.sequence)

    def now_there(claim: JournalClaim) -> str:
        row = by_id.get(claim.id)
        if row is None or row.sequence != claim.sequence:
            return "row gone"
        if row.token is None:
            return f"{WorkStatus(row.status).name} unclaimed ({row.closed_by})"
        return f"{WorkStatus(row.status).name}, claimed again"

    lost_claims = [c for c in journal if not kept(c)]
    lost_finishes = [
        c
        for c in journal
        if kept(c) and "finished SUCCESS" in c.outcomes and by_id[c.id].status != WorkStatus.SUCCESS
    ]
    runs = Counter((c.name, c.sequence) for c in journal)
    over_runs = sum(max(0, n - MAX_RUN) for n in runs.values())
    tokens = {c.token for c in journal}
    orphans = [r for r in rows if r.token is not None and r.token not in tokens]
    spanning = [c for c in journal if c.at < run.when.killed < c.at + _hold(c.worker) + 1]
    figures.update(
        journal_claims=len(journal),
        lost_claims=len(lost_claims),
        lost_finishes=len(lost_finishes),
        over_runs=over_runs,
        orphan_claims=len(orphans),
        worker_saw=dict(
            Counter("; ".join(c.seen) + ("" if kept(c) else " [claim lost]") for c in journal)
        ),
        in_flight_at_kill=[
            (f"hold {_hold(c.worker)}s", c.seen, by_id[c.id].closed_by if kept(c) else "lost")
            for c in spanning
        ],
        lost=[(c.sequence[-8:], c.seen, now_there(c)) for c in lost_claims],
        finish_lost=[(c.sequence[-8:], by_id[c.id].closed_by) for c in lost_finishes],
    )
    assert over_runs <= len(lost_claims)  # the guide's bound: only lost claims run twice
    return len(lost_claims), over_runs
