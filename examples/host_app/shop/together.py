"""Schedule and claim inside the shop's own ORM transactions (the README's host-app example).

A customer's first order asks for a welcome mail an hour later. The order and
the mail's tick are committed together, or not at all: the tick's row is
written by ``ScheduleRepository`` on the Session's own connection. Later a
worker claims the row in a transaction that also marks the customer, and once
that has committed, ``WorkSync.claim_from_row`` gives it a heartbeat and a
fenced finish for the work itself.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session
from worksync_sa import ClaimRepository, NewRow, ScheduleRepository, WorkSync, work_table

from shop.models import Customer, Invoice

WORKS = work_table()  # worksync_sa's table, "works"
SCHEDULE = ScheduleRepository(WORKS)
CLAIMS = ClaimRepository(WORKS)


def first_order(engine: sa.Engine, email: str, at: datetime) -> int:
    """The order, and its welcome mail's tick an hour later, in one transaction."""
    with Session(engine) as session, session.begin():
        customer = Customer(email=email)
        session.add(customer)
        session.flush()  # the customer's id names the tick
        session.add(Invoice(customer_id=customer.id, amount_cents=1999))
        welcome = NewRow("welcome-mail", f"customer-{customer.id}", 0, at + timedelta(hours=1))
        SCHEDULE.insert_queued(session.connection(), [welcome])
        return customer.id


def send_welcome(engine: sa.Engine, sync: WorkSync, customer_id: int) -> bool:
    """Claim the mail's row with the shop's own write, then send it as a fenced claim."""
    with Session(engine) as session, session.begin():
        row = CLAIMS.claim(session.connection(), "welcome-mail", f"customer-{customer_id}")
        if row is None:
            return False  # another copy of the shop has it
        session.execute(  # the shop's own write, in the same transaction as the claim
            sa.update(Invoice)
            .where(Invoice.customer_id == customer_id, Invoice.sent_in_tick.is_(None))
            .values(sent_in_tick=row.sequence)
        )
    with sync.claim_from_row(row):  # heartbeats; SUCCESS on return, FAILED if it raises
        pass  # send the mail here
    return True
