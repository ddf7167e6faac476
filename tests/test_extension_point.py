"""The repositories as a host's extension point: inside its own ORM transactions.

The host-app guide's example (examples/host_app/shop/together.py) runs here on
every database: a schedule committed or rolled back with the host's own rows, a
claim made in the host's transaction and then finished as a fenced ``Claim``.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from types import ModuleType

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

import worksync_sa
from worksync_sa import (
    ClaimedRow,
    ClaimNotCommittedError,
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
from worksync_sa.models import table_named, work_table

from .conftest import ROOT, Db
from .twins import second_claim_object

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


def test_a_row_claimed_in_a_host_transaction_becomes_a_claim(twin_db: Db) -> None:
    db = twin_db
    table = table_named(db.table)
    with db.engine.begin() as conn:
        ScheduleRepository(table).insert_queued(conn, [NewRow("w", "s1", 0, AT)])
        row = ClaimRepository(table).claim(conn, "w", "s1")
    assert row is not None
    with db.WorkSync(db.engine, table=db.table) as sync:
        claim = sync.claim_from_row(row)
        with claim:
            claim.heartbeat()
        assert claim.finished
        with pytest.raises(worksync_sa.ClaimLostError, match="already finished as SUCCESS"):
            sync.claim_from_row(row).success()  # the row is no longer RUNNING: fenced
        with pytest.raises(InvalidArgumentError, match="ClaimedRow"):
            sync.claim_from_row((row.id, row.token))  # type: ignore[arg-type]
    (stored,) = db.rows()
    assert stored.status == WorkStatus.SUCCESS
    assert stored.token == row.token


def _claimed_in_open_transaction(
    db: Db, conn: sa.Connection, *, inserted_before: bool
) -> ClaimedRow:
    table = table_named(db.table)
    if inserted_before:
        with db.engine.begin() as setup:
            ScheduleRepository(table).insert_queued(setup, [NewRow("w", "s1", 0, AT)])
    else:
        ScheduleRepository(table).insert_queued(conn, [NewRow("w", "s1", 0, AT)])
    row = ClaimRepository(table).claim(conn, "w", "s1")
    assert row is not None
    return row


def _misused(sync: WorkSync, row: ClaimedRow, match: str) -> None:
    """``with sync.claim_from_row(row):`` inside the claiming transaction: refused at once."""
    started = time.monotonic()
    with pytest.raises(ClaimNotCommittedError, match=match) as raised, sync.claim_from_row(row):
        pytest.fail("the body ran")
    # Generous: the point is that it does not wait on the host's row lock (past the lease).
    assert time.monotonic() - started < 5
    assert "after the transaction that claimed the row has committed" in str(raised.value)


@pytest.mark.parametrize("end", ["commit", "rollback"])
def test_claim_from_row_inside_the_claiming_transaction_is_refused_and_leaves_it_be(
    twin_db: Db, end: str
) -> None:
    db = twin_db
    with db.WorkSync(db.engine, table=db.table) as sync, db.engine.connect() as conn:
        host = conn.begin()
        row = _claimed_in_open_transaction(db, conn, inserted_before=True)
        _misused(sync, row, f"row {row.id} of table '{db.table}' is still QUEUED as committed")
        # The host's transaction is untouched and still usable: its claim is still its own.
        assert ClaimRepository(table_named(db.table)).heartbeat(conn, row)
        (host.commit if end == "commit" else host.rollback)()
        (stored,) = db.rows()
        if end == "rollback":
            assert (stored.status, stored.token) == (WorkStatus.QUEUED, None)
            with pytest.raises(ClaimNotCommittedError, match="rolled back"):
                sync.claim_from_row(row).success()
            return
        assert (stored.status, stored.token) == (WorkStatus.RUNNING, row.token)
        claim = sync.claim_from_row(row)  # now committed: the documented use
        with claim:
            claim.heartbeat()
        with pytest.raises(worksync_sa.ClaimLostError):
            second_claim_object(claim).success()  # fenced: already finished
    (stored,) = db.rows()
    assert (stored.status, stored.token) == (WorkStatus.SUCCESS, row.token)


def test_claim_from_row_of_a_row_created_in_the_open_transaction_is_refused(twin_db: Db) -> None:
    db = twin_db
    with db.WorkSync(db.engine, table=db.table) as sync, db.engine.connect() as conn:
        host = conn.begin()
        row = _claimed_in_open_transaction(db, conn, inserted_before=False)
        _misused(sync, row, f"row {row.id} of table '{db.table}' is not there as committed")
        host.commit()
        with sync.claim_from_row(row):
            pass
    (stored,) = db.rows()
    assert (stored.status, stored.token) == (WorkStatus.SUCCESS, row.token)


def test_claim_from_row_in_a_host_orm_session_before_commit_is_refused(twin_db: Db) -> None:
    """As the issue met it: ``with sync.claim_from_row(row):`` inside ``session.begin()``."""
    db = twin_db
    table = table_named(db.table)
    with db.engine.begin() as setup:
        ScheduleRepository(table).insert_queued(setup, [NewRow("w", "s1", 0, AT)])
    with db.WorkSync(db.engine, table=db.table) as sync, Session(db.engine) as session:
        with session.begin():
            row = ClaimRepository(table).claim(session.connection(), "w", "s1")
            assert row is not None
            _misused(sync, row, "still QUEUED")
        with sync.claim_from_row(row):  # after the commit
            pass
    (stored,) = db.rows()
    assert (stored.status, stored.token) == (WorkStatus.SUCCESS, row.token)


def test_claim_from_row_on_a_pool_sharing_the_hosts_connection_is_refused() -> None:
    """``sqlite://`` hands the service the host's own connection: no read could tell.

    Its transaction is still open there, so the claim is refused without a
    statement, and the host's transaction goes on as it was.
    """
    engine = sa.create_engine("sqlite://")
    table = work_table("works")
    table.create(engine)
    with engine.begin() as setup:
        ScheduleRepository(table).insert_queued(setup, [NewRow("w", "s1", 0, AT)])
    with WorkSync(engine) as sync, engine.connect() as conn:
        host = conn.begin()
        row = ClaimRepository(table).claim(conn, "w", "s1")
        assert row is not None
        _misused(sync, row, "shares one connection")
        assert ClaimRepository(table).heartbeat(conn, row)
        host.commit()
        with sync.claim_from_row(row):
            pass
    with engine.connect() as conn:
        assert conn.execute(sa.select(table.c.status)).scalar_one() == WorkStatus.SUCCESS
    engine.dispose()


@pytest.mark.parametrize(
    ("field", "value", "said"),
    [
        ("id", "1", "row.id must be an int, got str '1'"),
        ("id", True, "row.id must be an int, got bool True"),
        ("id", 0, "row.id must be a row's id"),
        ("token", 7, "row.token must be a string, got int 7"),
        ("token", "", "row.token must be the claim's token"),
        ("name", None, "row.name must be a string, got NoneType None"),
        ("lease_seconds", "30", "row.lease_seconds must be an int or None, got str"),
        ("tick_at", "2030-01-15", "row.tick_at must be a datetime or None, got str"),
    ],
)
def test_claim_from_row_refuses_wrong_field_types_at_once(
    twin_db: Db, field: str, value: object, said: str
) -> None:
    db = twin_db
    table = table_named(db.table)
    with db.engine.begin() as conn:
        ScheduleRepository(table).insert_queued(conn, [NewRow("w", "s1", 0, AT)])
        row = ClaimRepository(table).claim(conn, "w", "s1")
    assert row is not None
    refused = pytest.raises(InvalidArgumentError, match=re.escape(said))
    with db.WorkSync(db.engine, table=db.table) as sync, refused:
        sync.claim_from_row(row._replace(**{field: value}))  # type: ignore[arg-type]
    (stored,) = db.rows()
    assert (stored.status, stored.token) == (WorkStatus.RUNNING, row.token)


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
