"""The nightly invoice run, at most once per night however many copies of the shop run.

Everything worksync_sa needs from the shop is in this module:

* the works (name, cron, how many runs per tick);
* a scheduler pass, which writes each tick's rows into the ``works`` table
  ahead of the tick (every copy may run one: the table keeps one set);
* a worker claim: at the tick, every copy tries to claim a row, and only
  ``max_run`` of them (here one) get one and run the job.

The shop's own engine is passed in; worksync_sa opens its few connections
through it and commits its own short transactions. The job itself runs in
the shop's own transaction, separate from the claim: if the process dies
half way, the claim's lease runs out and the row is marked FAILED, and the
tick is not run again (at most once, never twice).
"""

from __future__ import annotations

import signal
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa
from sqlalchemy.orm import Session
from worksync_sa import Scheduler, Work, Worker, WorkSync

from shop.models import Invoice

SEND_INVOICES = Work(
    "send_invoices",
    "0 2 * * *",  # 02:00 every night ...
    timezone="Europe/Berlin",  # ... on Berlin's wall clock, daylight saving included
    max_run=1,  # one copy of the shop sends them; the others skip the tick
    grace=timedelta(minutes=30),  # a tick nobody claimed within 30 min is closed as missed
)
WORKS = [SEND_INVOICES]


def send_invoices(engine: sa.Engine, tick: str) -> int:
    """The shop's own work: mark every unsent invoice as sent in this tick; returns how many."""
    with Session(engine) as session, session.begin():
        unsent = session.scalars(sa.select(Invoice).where(Invoice.sent_at.is_(None))).all()
        for invoice in unsent:
            invoice.sent_at = datetime.now(timezone.utc)  # (really: e-mail it here)
            invoice.sent_in_tick = tick
        return len(unsent)


def schedule(engine: sa.Engine, *, now: datetime | None = None) -> int:
    """One scheduler pass: create the rows of the ticks due in the next 10 minutes.

    Returns how many rows it created (0 when another copy already did).
    ``now`` defaults to the database clock; pass one to pretend (demo, tests).
    """
    scheduler = Scheduler(engine, WORKS)
    try:
        return scheduler.run_pass(now)
    finally:
        scheduler.close()


def run_due(engine: sa.Engine, *, now: datetime | None = None) -> tuple[str, int] | None:
    """One worker's try at the due tick: ``(sequence, invoices sent)``, or None.

    None means nothing is due, or another copy already has this tick.
    """
    with WorkSync(engine) as sync:
        claim = sync.acquire_due(SEND_INVOICES.name, now=now)
        if claim is None:
            return None
        # SUCCESS when the block returns, FAILED (with the error) if it raises;
        # a background heartbeat keeps the claim's lease alive meanwhile.
        with claim:
            sent = send_invoices(engine, claim.sequence)
        return claim.sequence, sent


def serve(engine: sa.Engine) -> None:
    """What each copy of the shop runs in production, until Ctrl-C or SIGTERM.

    A scheduler thread (a pass every minute) and a worker thread that claims
    every due tick by the database clock and runs the job for it. The main
    thread only waits for the signal: blocked, a signal is taken when asked
    for, never raised as ``KeyboardInterrupt`` in the middle of a claim.
    """
    stop = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)  # before the threads start: they inherit it
    handler = lambda claim: send_invoices(engine, claim.sequence)  # noqa: E731
    with Scheduler(engine, WORKS), Worker(engine, WORKS, handler):
        signal.sigwait(stop)
    # Leaving the block: no new claims, the running one ends (30 s at most), threads stop.
