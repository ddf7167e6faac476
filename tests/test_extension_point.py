"""The repositories as a host's extension point: inside its own ORM transactions.

The host-app guide's example (examples/host_app/shop/together.py) runs here on
every database: a schedule committed or rolled back with the host's own rows, a
claim made in the host's transaction and then finished as a fenced ``Claim``.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from types import ModuleType

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

import worksync_sa
from worksync_sa import (
    ClaimedRow,
    ClaimRepository,
    Event,
    InvalidArgumentError,
    NewRow,
    ScheduleRepository,
    TickCount,
    WorkStatus,
    WorkSync,
    upgrade,
)
from worksync_sa.models import table_named

from .conftest import ROOT, Db

AT = datetime(2030, 1, 15, 9, 30, tzinfo=timezone.utc)
EXAMPLE = ROOT / "examples" / "host_app"
GUIDE = ROOT / "docs" / "guides" / "host-app.md"  # the README's host-app section lives here


@pytest.fixture
def shop(host_database: str) -> Iterator[tuple[ModuleType, ModuleType, sa.Engine]]:
    sys.path.insert(0, str(EXAMPLE))
    try:
        from shop import models, together
    finally:
        sys.path.remove(str(EXAMPLE))
    engine = sa.create_engine(host_database)
    upgrade(engine)
    models.Base.metadata.create_all(engine)
    yield together, models, engine
    engine.dispose()


def works_rows(engine: sa.Engine) -> list[tuple[str, str, int]]:
    t = table_named("works")
    with engine.connect() as conn:
        query = sa.select(t.c.name, t.c.sequence, t.c.status).order_by(t.c.id)
        return [(name, sequence, status) for name, sequence, status in conn.execute(query)]


def test_the_host_app_example_on_every_database(
    shop: tuple[ModuleType, ModuleType, sa.Engine],
) -> None:
    together, models, engine = shop
    customer = together.first_order(engine, "ada@example.com", AT)
    assert works_rows(engine) == [("welcome-mail", f"customer-{customer}", 1)]

    # A second order with the same e-mail fails: its tick goes with it.
    with pytest.raises(sa.exc.IntegrityError):
        together.first_order(engine, "ada@example.com", AT)
    assert len(works_rows(engine)) == 1

    with WorkSync(engine) as sync:
        assert together.send_welcome(engine, sync, customer) is True
        assert together.send_welcome(engine, sync, customer) is False  # taken: once only
    ((name, sequence, status),) = works_rows(engine)
    assert (name, sequence, status) == ("welcome-mail", f"customer-{customer}", 3)
    with Session(engine) as session:
        invoice = session.scalars(sa.select(models.Invoice)).one()
        assert invoice.sent_in_tick == f"customer-{customer}"


def test_a_rolled_back_host_transaction_takes_its_schedule_and_claim_with_it(
    shop: tuple[ModuleType, ModuleType, sa.Engine],
) -> None:
    together, _, engine = shop
    customer = together.first_order(engine, "bob@example.com", AT)
    with Session(engine) as session, session.begin():
        extra = NewRow("welcome-mail", "customer-extra", 0, AT)
        together.SCHEDULE.insert_queued(session.connection(), [extra])
        row = together.CLAIMS.claim(session.connection(), "welcome-mail", f"customer-{customer}")
        assert row is not None
        session.rollback()
    assert works_rows(engine) == [("welcome-mail", f"customer-{customer}", 1)]


def test_the_host_app_guide_shows_the_example_as_it_is() -> None:
    guide = GUIDE.read_text()
    blocks = re.findall(r"<!-- shop/together.py -->\n```python\n(.*?)```", guide, re.S)
    assert blocks, "docs/guides/host-app.md quotes examples/host_app/shop/together.py"
    source = (EXAMPLE / "shop" / "together.py").read_text()
    for block in blocks:
        for part in block.split("\n\n\n"):  # each quoted function, verbatim
            assert part.strip() in source, part


def test_repository_calls_make_their_own_token_and_worker_id_and_tell_listeners(
    db: Db,
) -> None:
    heard: list[Event] = []
    table = table_named(db.table)
    schedule = ScheduleRepository(table, listeners=[heard.append])
    claims = ClaimRepository(table, listeners=[heard.append])
    with db.engine.begin() as conn:
        assert schedule.insert_queued(conn, [NewRow("w", "s1", 0, AT), NewRow("w", "s1", 1, AT)])
        first = claims.claim(conn, "w", "s1")
        second = claims.claim_due(conn, "w", now=AT)
        assert claims.claim(conn, "w", "s1") is None
    assert isinstance(first, ClaimedRow)
    assert isinstance(second, ClaimedRow)
    assert re.fullmatch(r"[0-9a-f]{32}", first.token)
    assert first.token != second.token
    with db.engine.begin() as conn:
        assert claims.heartbeat(conn, first)
        assert claims.finish(conn, first, status=WorkStatus.SUCCESS)
        assert claims.finish(conn, second.id, second.token, WorkStatus.FAILED, "boom")
        assert not claims.finish(conn, first, status=WorkStatus.SUCCESS)  # fenced
    rows = {row.id: row for row in db.rows()}
    assert rows[first.id].claimed_by == WorkSync(db.engine).worker_id  # host:pid
    assert [e.action for e in heard] == ["created", "claimed", "claimed", "finished", "finished"]
    assert heard[0].count == 2
    assert (heard[1].name, heard[1].sequence) == ("w", "s1")
    assert (heard[3].name, heard[3].status) == ("w", "SUCCESS")
    assert (heard[4].name, heard[4].status) == (None, "FAILED")  # only an id: no name to tell


def test_a_row_claimed_in_a_host_transaction_becomes_a_claim(db: Db) -> None:
    table = table_named(db.table)
    with db.engine.begin() as conn:
        ScheduleRepository(table).insert_queued(conn, [NewRow("w", "s1", 0, AT)])
        row = ClaimRepository(table).claim(conn, "w", "s1")
    assert row is not None
    with WorkSync(db.engine, table=db.table) as sync:
        claim = sync.claim_from_row(row)
        with claim:
            claim.heartbeat()
        assert claim.finished
        with pytest.raises(worksync_sa.ClaimLostError):
            sync.claim_from_row(row).success()  # the row is no longer RUNNING: fenced
        with pytest.raises(InvalidArgumentError, match="ClaimedRow"):
            sync.claim_from_row((row.id, row.token))  # type: ignore[arg-type]
    (stored,) = db.rows()
    assert stored.status == WorkStatus.SUCCESS


def test_the_row_types_are_exported() -> None:
    assert {"NewRow", "ClaimedRow", "TickCount"} <= set(worksync_sa.__all__)
    assert TickCount.__module__ == "worksync_sa.rows"


def test_finish_needs_an_outcome_and_a_token(db: Db) -> None:
    claims = ClaimRepository(table_named(db.table))
    with db.engine.begin() as conn:
        with pytest.raises(InvalidArgumentError, match="SUCCESS or FAILED"):
            claims.finish(conn, 1, "t" * 32)
        with pytest.raises(InvalidArgumentError, match="token"):
            claims.finish(conn, 1, status=WorkStatus.SUCCESS)
