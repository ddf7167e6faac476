"""``python -m shop [demo [--at ISO]]`` and ``python -m shop serve``.

``demo`` (the default) adds an invoice, then pretends it is the next 02:00 in Berlin:
a scheduler pass five minutes before creates the tick's row, a worker
claims it one second after and sends the invoices. Run it twice: the
second time the tick is already taken, and nothing is sent twice.

``serve`` is the production shape: scheduler thread plus worker loop.
The database is ``SHOP_DATABASE_URL``, or ``shop.db`` in the current folder.
"""

from __future__ import annotations

import argparse
import logging
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa
from sqlalchemy.orm import Session
from worksync_sa import WorkRecord, WorkStatus

from shop import jobs
from shop.db import make_engine
from shop.models import Customer, Invoice

TABLES = {"customers", "invoices", "works"}  # ours, and worksync_sa's


def add_invoice(engine: sa.Engine) -> None:
    """Business as usual: a customer buys something, an invoice waits for the night."""
    with Session(engine) as session, session.begin():
        customer = session.scalar(sa.select(Customer).where(Customer.email == "ada@example.com"))
        if customer is None:
            customer = Customer(email="ada@example.com")
            session.add(customer)
            session.flush()
        session.add(Invoice(customer_id=customer.id, amount_cents=1999))


def demo(engine: sa.Engine, at: datetime) -> None:
    add_invoice(engine)
    tick = jobs.SEND_INVOICES.next_tick(at)
    print(f"pretending the tick has come: {tick:%Y-%m-%d %H:%M} UTC (02:00 in Berlin)")
    created = jobs.schedule(engine, now=tick - timedelta(minutes=5))
    print(f"scheduler, 5 minutes before: {created} row(s) created")
    ran = jobs.run_due(engine, now=tick + timedelta(seconds=1))
    if ran is None:
        print("worker, at the tick: nothing to claim, this tick has already run")
    else:
        print(f"worker, at the tick: claimed {ran[0]!r} and sent {ran[1]} invoice(s)")
    with Session(engine) as session:
        query = sa.select(WorkRecord).where(WorkRecord.name == jobs.SEND_INVOICES.name)
        for row in session.scalars(query.order_by(WorkRecord.id)):
            print(f"  works: {row.sequence} {WorkStatus(row.status).name} by {row.claimed_by}")
        unsent = session.scalar(
            sa.select(sa.func.count()).select_from(Invoice).where(Invoice.sent_at.is_(None))
        )
        print(f"  invoices waiting for the next night: {unsent}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shop")
    commands = parser.add_subparsers(dest="command")
    demo_cmd = commands.add_parser("demo", help="schedule and run the next nightly tick (default)")
    demo_cmd.add_argument("--at", type=datetime.fromisoformat, help="pretend it is this time")
    commands.add_parser("serve", help="run a scheduler and a worker until Ctrl-C")
    args = parser.parse_args(argv)

    engine = make_engine()
    print(f"database: {engine.url.render_as_string(hide_password=True)}")
    missing = TABLES - set(sa.inspect(engine).get_table_names())
    if missing:
        print(f"tables missing: {', '.join(sorted(missing))}; run `alembic upgrade heads` first")
        return 1
    if args.command in (None, "demo"):
        demo(engine, getattr(args, "at", None) or datetime.now(timezone.utc))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        print("serving: scheduler and worker running; Ctrl-C stops", flush=True)
        jobs.serve(engine)
    except KeyboardInterrupt:  # a Ctrl-C before serve() blocked the signals
        pass
    print("stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
