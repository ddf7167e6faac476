"""Galera: three MariaDB primaries, schedulers and workers on all of them, one node killed
with SIGKILL mid-run and restarted; then HAProxy in front, and the node it routes to killed.

One cluster serves the module (about 10 s to start); each test gets a table of its
own and a cluster healed to three synced nodes. WORKSYNC_TOPOLOGY_SECONDS sets the
length of the cluster run (default 60 s); the proxy run is half of it (at least 20 s).
The servers run with ``wsrep_retry_autocommit = 0``: a certification conflict comes
back to the client as a deadlock (1213) at once, so what these tests see retried is
the library's retry, not the server's own retry of an autocommit statement.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import worksync_sa
from worksync_sa import Scheduler, SchedulerConfig, Worker, WorkStatus, default_sequence
from worksync_sa.events import Event
from worksync_sa.models import as_utc, table_named

from .racers import blueprints
from .topology import daemons, free_ports, need, wait_until
from .topology_galera import (
    PROGRAMS,
    Cluster,
    JournalLine,
    Node,
    Probe,
    counting_logs,
    galera_cluster,
    galera_scheduler,
    galera_worker,
    haproxy,
    query,
    read_journals,
    status,
    utc,
)

pytestmark = [pytest.mark.topology, pytest.mark.slow]
SPAWN = multiprocessing.get_context("spawn")
SECONDS = float(os.environ.get("WORKSYNC_TOPOLOGY_SECONDS", "60"))
RESULTS_TIMEOUT = 180.0

# -- the cluster run ------------------------------------------------------------------------
LEASE, GRACE = 5, 20
"""A lease longer than the survivors' write stall while the dead node is evicted (about
2.5 s): a live worker's heartbeat or finish held up by it must still beat its lease."""
WORKS: list[dict[str, Any]] = [
    # A lost claim goes back to the queue (max_attempts 2): every slot must end up taken.
    {
        "name": "shard",
        "cron": "* * * * * *",
        "max_run": 3,
        "lease": LEASE,
        "grace": GRACE,
        "max_attempts": 2,
    },
    # A lost claim stays lost (max_attempts 1): FAILED by lease recovery, at most once.
    {"name": "report", "cron": "*/2 * * * * *", "max_run": 1, "lease": LEASE, "grace": GRACE},
]
CONFIG: dict[str, Any] = {
    "lookahead": "5s",
    "interval": "1s",
    "catchup": "10s",
    "max_backoff": "1s",
}
WORKERS_PER_NODE = 5
HANDLE_SECONDS = 0.3
"""Each claim's work: long enough that workers on the killed node hold claims when it dies."""
DOWN_SECONDS = 8.0
"""How long the killed node stays down: past the lease (5 s) plus a scheduler pass, so the
survivors recover the claims it held before it can come back."""

# -- the proxy run --------------------------------------------------------------------------
PROXY_GRACE = 3
PROXY_WORKS: list[dict[str, Any]] = [
    {"name": "proxied", "cron": "* * * * * *", "max_run": 2, "lease": 5, "grace": PROXY_GRACE},
]
PROXY_CONFIG: dict[str, Any] = {
    "lookahead": "5s",
    "interval": "1s",
    "catchup": "10s",
    "max_backoff": "1s",
}
CLAIM_SLACK = 1.0
"""Seconds a worker that is back may take to reach a tick: it claims the backlog one row at
a time, earliest first."""


@pytest.fixture(scope="module")
def galera() -> Iterator[Cluster]:
    need(*PROGRAMS)
    with galera_cluster() as cluster:
        yield cluster


@pytest.fixture
def cluster(galera: Cluster) -> Cluster:
    """The module's cluster with every node running and synced (a failed test may leave one
    down)."""
    galera.heal()
    return galera


def migrate(url: str, table: str) -> None:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        worksync_sa.upgrade(engine, table=table)
    finally:
        engine.dispose()


def read_rows(node: Node, table: str) -> list[Any]:
    """Every row of ``table`` as ``node`` has it, once it has applied all the cluster
    committed before the read (``wsrep_sync_wait``)."""
    engine = sa.create_engine(
        node.url,
        poolclass=sa.pool.NullPool,
        connect_args={"init_command": "SET SESSION wsrep_sync_wait = 1"},
    )
    try:
        with engine.connect() as conn:
            t = table_named(table)
            return list(conn.execute(sa.select(t).order_by(t.c.id)).all())
    finally:
        engine.dispose()


def same_everywhere(cluster: Cluster, table: str) -> bool:
    sums = {query(n.port, f"CHECKSUM TABLE test.{table}")[0][1] for n in cluster.nodes}
    return len(sums) == 1


def seconds(value: datetime) -> float:
    return as_utc(value).timestamp()


def cert_counters(cluster: Cluster) -> dict[str, int]:
    """Certification failures and brute-force aborts, summed over the nodes (a restarted
    node counts from its restart)."""
    names = ("wsrep_local_cert_failures", "wsrep_local_bf_aborts")
    totals = dict.fromkeys(names, 0)
    for node in cluster.nodes:
        for name, value in status(node.port, names).items():
            totals[name] += int(value)
    return totals


def report(record_property: Callable[[str, object], None], figures: dict[str, object]) -> None:
    for key, value in figures.items():
        record_property(key, value)
    print("\n" + "\n".join(f"  {k}: {v}" for k, v in figures.items()))


def sleep_until_second(offset: float, even: bool = False) -> None:
    """Sleep until ``offset`` seconds after the next whole (``even``: even) second."""
    now = time.time()
    target = int(now) + 1 + offset
    while target <= now or (even and int(target) % 2):
        target += 1
    time.sleep(target - now)


def collect(results: Any, count: int, kind: str) -> dict[str, tuple[str, Any]]:
    """``count`` reports of ``kind`` ("ready", or a final "ok"/"error") by process tag."""
    got: dict[str, tuple[str, Any]] = {}
    deadline = time.monotonic() + RESULTS_TIMEOUT
    while len(got) < count:
        status_, tag, payload = results.get(timeout=max(1.0, deadline - time.monotonic()))
        if status_ == "error" and kind == "ready":
            pytest.fail(f"{tag} failed before it was ready: {payload}")
        if (status_ == "ready") == (kind == "ready"):
            got[tag] = (status_, payload)
    return got


def test_three_primaries_one_killed_mid_run_and_restarted(
    cluster: Cluster, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    """Node 1 is killed: the node that bootstrapped the cluster and ran the migrations, so
    the survivors must carry on without either, and its restart must rejoin the running
    cluster (never bootstrap a second one). Node 2 is read for the verdict."""
    victim, reader = cluster.node(1), cluster.node(2)
    table = f"g_{uuid.uuid4().hex[:10]}"
    migrate(victim.url, table)  # migrations on one node only; DDL replicates (TOI)
    wait_until(
        lambda: all(query(n.port, f"SELECT COUNT(*) FROM test.{table}") for n in cluster.nodes),
        30,
        "the table on every node",
    )
    stop, results = SPAWN.Event(), SPAWN.Queue()
    procs: dict[str, Any] = {}
    for node in cluster.nodes:
        tag = f"{node.name}/scheduler"
        procs[tag] = SPAWN.Process(
            target=galera_scheduler, args=(node.url, table, WORKS, CONFIG, tag, stop, results)
        )
        for i in range(WORKERS_PER_NODE):
            tag = f"{node.name}/worker{i}"
            log = str(tmp_path / f"{tag.replace('/', '-')}.journal")
            procs[tag] = SPAWN.Process(
                target=galera_worker,
                args=(node.url, table, WORKS, log, tag, stop, results, HANDLE_SECONDS),
            )
    victims = {tag for tag in procs if tag.startswith(f"{victim.name}/")}
    try:
        for proc in procs.values():
            proc.start()
        collect(results, len(procs), "ready")
        started = time.time()
        with Probe(reader.port, f"probe_{table}") as probe:
            time.sleep(max(5.0, SECONDS * 0.3))
            # 0.1 s into an even second: the claims of both works' tick are being worked on.
            sleep_until_second(offset=0.1, even=True)
            killed_at = cluster.kill(victim)
            view_change = wait_until(
                lambda: status(reader.port, ["wsrep_cluster_size"])["wsrep_cluster_size"] == "2",
                60,
                "the survivors' view without node 1",
                step=0.05,
            )
            time.sleep(max(0.0, killed_at + DOWN_SECONDS - time.time()))
            restarted_at = time.time()
            rejoin = cluster.restart(victim)
            rejoined_at = time.time()
            time.sleep(max(10.0, started + SECONDS - time.time()))
        stopping = time.time()
        stop.set()
        finals = collect(results, len(procs), "final")
    finally:
        stop.set()
        for proc in procs.values():
            proc.join(60)
            if proc.is_alive():
                proc.kill()
                proc.join(10)
    wait_until(lambda: same_everywhere(cluster, table), 60, "the same table on every node")
    rows = read_rows(reader, table)
    journal = read_journals(tmp_path)
    counters = cert_counters(cluster)

    counts = check_processes(finals, victims)
    retried = Counter[str]()
    for seen in counts.values():
        retried.update({k: v for k, v in seen.items() if k.startswith("retry transient")})
    live_conflicts = sum(
        seen.get("retry transient 1213", 0) for tag, seen in counts.items() if tag not in victims
    )
    assert live_conflicts > 0  # certification conflicts happened, and were retried
    after_rejoin = [j for j in journal if j.worker.replace("-", "/", 1) in victims]
    assert any(j.at > rejoined_at for j in after_rejoin)  # the killed node's workers claim again

    window = check_ticks(rows, journal, started + 2, stopping - 3)
    lost, requeued = check_slots(window, journal, victims, killed_at)
    ticks = {(r.name, r.sequence) for r in window}
    claimed_slots = sum(1 for r in window if r.status == WorkStatus.SUCCESS)

    stall, stall_at = probe.longest_stall(killed_at - 1)
    assert stall < GRACE
    claim_times = sorted(j.at for j in journal if killed_at - 5 <= j.at <= killed_at + 15)
    claim_gap = max((b - a for a, b in itertools.pairwise(claim_times)), default=0.0)
    report(
        record_property,
        {
            "ticks": len(ticks),
            "slots": len(window),
            "slots_claimed": claimed_slots,
            "slots_lost_with_the_node": len(lost),
            "slots_requeued_and_taken_by_survivors": len(requeued),
            "over_claims": 0,
            "claims": len(journal),
            "transient_errors_retried_by_the_library": dict(retried),
            "conflicts_retried_on_live_nodes": live_conflicts,
            "server_cert_failures": counters["wsrep_local_cert_failures"],
            "server_bf_aborts": counters["wsrep_local_bf_aborts"],
            "view_change_s": round(view_change, 2),
            "write_stall_s": round(stall, 2),
            "write_stall_after_kill_s": round(stall_at - killed_at, 2),
            "longest_gap_between_claims_s": round(claim_gap, 2),
            "node_down_s": round(restarted_at - killed_at, 2),
            "rejoin_s": round(rejoin, 2),
            "rejoined_by": victim.joined_by,
            "killed_node_counts": {t: counts[t] for t in sorted(victims)},
        },
    )


def check_processes(
    finals: dict[str, tuple[str, Any]], victims: set[str]
) -> dict[str, dict[str, int]]:
    """Every process ended by the stop, none with an error. Those on live nodes never saw
    the database fail (no outage, no lost connection, no failed or lost claim); those on
    the killed node lost it and came back by themselves. Returns their log counts."""
    problems = {tag: final for tag, final in finals.items() if final[0] != "ok"}
    assert not problems, problems
    assert all(payload["stopped"] for _, payload in finals.values())
    counts: dict[str, dict[str, int]] = {
        tag: payload["counts"] for tag, (_, payload) in finals.items()
    }
    for tag, seen in counts.items():
        if tag in victims:
            assert seen.get("outage", 0) >= 1, (tag, seen)
            assert seen.get("resumed", 0) >= 1, (tag, seen)
            continue
        surfaced = {
            k: v
            for k, v in seen.items()
            if k in ("outage", "failed", "lost", "ended") or k.startswith("retry lost")
        }
        assert not surfaced, (tag, seen)
    return counts


def check_ticks(rows: list[Any], journal: list[JournalLine], start: float, end: float) -> list[Any]:
    """Exactly ``max_run`` rows per tick, however many schedulers on however many primaries,
    every tick in ``(start, end]`` with its rows; no over-claim. Returns the window's rows."""
    budget = {w["name"]: w["max_run"] for w in WORKS}
    max_attempts = {w["name"]: w.get("max_attempts", 1) for w in WORKS}
    per_tick = Counter((r.name, r.sequence) for r in rows)
    assert all(n == budget[name] for (name, _), n in per_tick.items()), per_tick
    expected = {
        (work.name, default_sequence(tick))
        for work in blueprints(WORKS)
        for tick in work.ticks(utc(start), utc(end))
    }
    assert expected <= set(per_tick)  # no tick of the run went without rows

    # A row is claimed at most once per attempt, each claim with a token of its own, and a
    # claim's tick is its row's: two primaries never both hand out the same row.
    by_id = {r.id: r for r in rows}
    assert len({j.token for j in journal}) == len(journal)
    for line in journal:
        row = by_id[line.row_id]
        assert (row.name, row.sequence) == (line.name, line.sequence), (line, row)
    for row_id, n in Counter(j.row_id for j in journal).items():
        row = by_id[row_id]
        assert n <= row.attempts <= max_attempts[row.name], (n, row)
    succeeded = Counter((r.name, r.sequence) for r in rows if r.status == WorkStatus.SUCCESS)
    assert all(n <= budget[name] for (name, _), n in succeeded.items())
    return [r for r in rows if (r.name, r.sequence) in expected]


def check_slots(
    window: list[Any], journal: list[JournalLine], victims: set[str], killed_at: float
) -> tuple[list[Any], list[Any]]:
    """Every slot of every tick in the window taken, by a claim its worker knew it had.

    The one exception: a claim held by a worker on the killed node when it died, on the
    work that does not re-queue (max_attempts 1), closed by lease recovery. On the other
    work such a row goes back to the queue and a survivor takes it. No tick may be missed:
    grace (20 s) is far longer than the survivors' stall while the view changes. Returns
    (the rows lost with the node, the rows re-queued and taken again).
    """
    max_attempts = {w["name"]: w.get("max_attempts", 1) for w in WORKS}
    journaled = {(j.row_id, j.token) for j in journal}
    lost, requeued = [], []
    for row in window:
        if row.status == WorkStatus.SUCCESS and row.closed_by == "worker":
            assert (row.id, row.token) in journaled, row
            if row.attempts > 1:
                requeued.append(row)
            continue
        assert row.status == WorkStatus.FAILED, row
        assert row.closed_by == "lease", row
        assert row.claimed_by in victims, row
        assert max_attempts[row.name] == 1, row
        assert seconds(row.started_at) <= killed_at + 0.5, row
        lost.append(row)
    assert len(lost) <= WORKERS_PER_NODE  # each held at most one claim
    return lost, requeued


def proxied_node(port: int) -> str:
    return str(query(port, "SELECT @@wsrep_node_name", timeout=2)[0][0])


def test_haproxy_the_node_it_routes_to_killed(
    cluster: Cluster, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    """A Worker and a Scheduler (threads of this process) reach the cluster only through
    HAProxy, which sends every connection to node 2 while it is up. Node 2 is killed: both
    must go on through the proxy (to node 3) by themselves."""
    routed, backup, last = cluster.node(2), cluster.node(3), cluster.node(1)
    seconds_run = max(20.0, SECONDS / 2)
    (port,) = free_ports(1)
    table = f"h_{uuid.uuid4().hex[:10]}"
    claims: list[tuple[float, int]] = []  # (when the worker had it, row id)
    passes: list[float] = []  # when a pass of the scheduler had written rows

    def handle(claim: worksync_sa.Claim) -> None:
        claims.append((time.time(), claim.id))
        time.sleep(0.02)

    def listen(event: Event) -> None:
        if event.action == "created":
            passes.append(time.time())

    with daemons() as running:
        running.append(haproxy(tmp_path, [routed, backup, last], port))
        wait_until(lambda: proxied_node(port) == routed.name, 30, "HAProxy routing to node 2")
        url = f"mysql+mysqldb://root@127.0.0.1:{port}/test?charset=utf8mb4"
        migrate(url, table)
        engine = worksync_sa.create_engine(url, connect_args={"connect_timeout": 2})
        works = blueprints(PROXY_WORKS)
        scheduler = Scheduler(
            engine, works, SchedulerConfig(**PROXY_CONFIG), table=table, listeners=[listen]
        )
        worker = Worker(engine, works, handle, table=table, poll="200ms", max_backoff="1s")
        try:
            with counting_logs() as logged, Probe(port, f"probe_{table}", fresh=True) as probe:
                scheduler.start()
                worker.start()
                wait_until(lambda: claims, 60, "a first claim through the proxy")
                started = time.time()
                time.sleep(max(5.0, seconds_run * 0.4))
                # Just before a tick: the worker is idle, and must claim that tick through
                # the proxy right after the kill.
                sleep_until_second(offset=-0.05)
                killed_at = cluster.kill(routed)
                wait_until(
                    lambda: any(at > killed_at for at, _ in list(claims)),
                    60,
                    "a claim through the proxy after the kill",
                )
                time.sleep(max(8.0, started + seconds_run - time.time()))
                still_running = (worker.running, scheduler.running)
                stopping = time.time()
        finally:
            worker.close()
            scheduler.close()
            engine.dispose()
    rows = read_rows(backup, table)
    rejoin = cluster.restart(routed)
    wait_until(lambda: same_everywhere(cluster, table), 60, "the same table on every node")

    assert still_running == (True, True)  # neither loop gave up
    assert probe.nodes(until=killed_at) == {routed.name}  # all traffic went through node 2
    assert probe.nodes(since=killed_at) == {backup.name}  # then through node 3

    # How long each was cut off, by the clock of this process: the worker, from the kill
    # until it held its first claim after it (the first tick after the kill came 0.05 s
    # after it); the scheduler, between the last pass that wrote rows before the kill and
    # the first after it (one a second otherwise). HAProxy: how soon a new connection
    # reached another node, and a write through it committed. A claim's started_at is
    # no measure: it is read when the UPDATE begins, and its commit may wait for the
    # cluster to evict the dead node.
    tick_of = {r.id: seconds(r.tick_at) for r in rows}
    first_tick = min(t for t in tick_of.values() if t >= killed_at)
    resumed_at = min(at for at, _ in claims if at > killed_at)
    usual = max(at - tick_of[i] for at, i in claims if started < tick_of[i] < killed_at - 1)
    before = max(at for at in passes if at < killed_at)
    after = min(at for at in passes if at > killed_at)
    rerouted = probe.first_reached(killed_at, other_than=routed.name)
    written = probe.first_written(killed_at)
    assert rerouted is not None
    assert written is not None
    assert resumed_at - killed_at < 15
    assert after - killed_at < 15

    # No over-claim, and no tick lost but those whose grace ran out before the worker was
    # back: every tick that was still claimable once it was back is fully claimed.
    (work,) = PROXY_WORKS
    per_tick = Counter(r.sequence for r in rows)
    assert set(per_tick.values()) == {work["max_run"]}
    ids = [row_id for _, row_id in claims]
    assert len(ids) == len(set(ids))  # no row claimed twice
    window_start, window_end = started + 1, stopping - 2
    expected = {default_sequence(t) for t in works[0].ticks(utc(window_start), utc(window_end))}
    assert expected <= set(per_tick)
    missed, late = [], []
    for row in rows:
        if row.sequence not in expected:
            continue
        tick = seconds(row.tick_at)
        if row.status == WorkStatus.SUCCESS:
            if seconds(row.started_at) > tick + 1:
                late.append(row)
            continue
        # Its grace ended while the worker was cut off (give or take the time to claim the
        # backlog one row after the other).
        assert tick + PROXY_GRACE < resumed_at + CLAIM_SLACK, row
        assert (row.status, row.closed_by) == (WorkStatus.FAILED, "missed"), row
        missed.append(row)

    report(
        record_property,
        {
            "ticks": len(expected),
            "slots": len(expected) * work["max_run"],
            "slots_claimed": sum(
                1 for r in rows if r.sequence in expected and r.status == WorkStatus.SUCCESS
            ),
            "slots_claimed_late": len(late),
            "slots_missed_beyond_grace": len(missed),
            "over_claims": 0,
            "proxy_reroute_s": round(rerouted - killed_at, 3),
            "proxy_first_write_s": round(written - killed_at, 2),
            "worker_interruption_s": round(resumed_at - killed_at, 2),
            "worker_first_tick_claimed_late_by_s": round(resumed_at - first_tick, 2),
            "worker_usual_claim_delay_s": round(usual, 2),
            "scheduler_interruption_s": round(after - killed_at, 2),
            "scheduler_gap_between_passes_across_kill_s": round(after - before, 2),
            "probe_failures": probe.failures(),
            "rejoin_s": round(rejoin, 2),
            "rejoined_by": routed.joined_by,
            "library_logs": dict(sorted(logged.counts.items())),
        },
    )


def test_pods_on_three_nodes_migrate_one_table_at_once(cluster: Cluster) -> None:
    """Every pod runs ``worksync migrate`` as it starts, on whichever node it reaches.

    The migration lock (GET_LOCK) is node-local on Galera, so two nodes can run the
    same DDL at once; the loser sees "already exists" or a certification deadlock, and
    the library waits for the winner's migration instead of failing the pod.
    """
    from alembic.migration import MigrationContext

    from worksync_sa.models import version_table_for, work_table

    from . import racers
    from .test_concurrency import run_processes
    from .test_migrations import drift, our_head

    table = f"mig_{uuid.uuid4().hex[:8]}"
    args = [(node.url, table) for node in cluster.nodes for _ in range(2)]
    reports = run_processes(racers.race_upgrade, args, timeout=150)
    assert reports == [True] * len(args)
    for node in cluster.nodes:
        engine = sa.create_engine(
            node.url,
            poolclass=sa.pool.NullPool,
            connect_args={"init_command": "SET SESSION wsrep_sync_wait = 1"},
        )
        try:
            with engine.connect() as conn:
                context = MigrationContext.configure(
                    conn, opts={"version_table": version_table_for(table)}
                )
                assert context.get_current_revision() == our_head(), node.name
            assert drift(engine, work_table(table).metadata, table) == [], node.name
        finally:
            engine.dispose()
    assert same_everywhere(cluster, table)
