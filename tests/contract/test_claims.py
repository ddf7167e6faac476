"""Claiming and finishing on every backend."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from worksync_sa import (
    ClaimLostError,
    InvalidArgumentError,
    InvalidWorkError,
    SchedulerConfig,
    SchemaNotReadyError,
    Work,
    WorkStatus,
    WorkSync,
    default_sequence,
)
from worksync_sa.models import table_named

from ..conftest import Db
from ..twins import second_claim_object

UTC = timezone.utc
T0 = datetime(2026, 1, 1, tzinfo=UTC)
CONFIG = SchedulerConfig(lookahead=timedelta(minutes=1), interval="10s")
TICK = default_sequence(T0 + timedelta(seconds=30))


def schedule(db: Db, *works: Work, now: datetime = T0) -> None:
    db.Scheduler(db.engine, list(works), CONFIG, table=db.table).run_pass(now)


def sync(db: Db, worker_id: str | None = None) -> WorkSync:
    return db.WorkSync(db.engine, table=db.table, worker_id=worker_id)


def test_at_most_max_run_claims_per_tick_each_on_its_own_row(db: Db) -> None:
    schedule(db, Work("w", "@every 30s", max_run=3))
    ws = sync(db)
    claims = [ws.acquire("w", TICK) for _ in range(5)]
    won = [c for c in claims if c is not None]
    assert len(won) == 3
    assert claims[3:] == [None, None]
    assert len({c.id for c in won}) == 3
    for claim in won:
        assert (claim.name, claim.sequence) == ("w", TICK)
        assert len(claim.token) == 32
    running = db.rows(status=WorkStatus.RUNNING)
    assert sorted(r.id for r in running) == sorted(c.id for c in won)
    # The other tick of the same work is untouched.
    assert len(db.rows(status=WorkStatus.QUEUED)) == 3


def test_a_claim_records_who_and_when_by_the_database_clock(db: Db) -> None:
    schedule(db, Work("w", "@every 30s"))
    before = db.db_now()
    claim = sync(db, worker_id="host-a:42").acquire("w", TICK)
    after = db.db_now()
    assert claim is not None
    (row,) = db.rows(id=claim.id)
    assert row.claimed_by == "host-a:42"
    assert row.token == claim.token
    assert before - timedelta(seconds=1) <= row.started_at <= after + timedelta(seconds=1)
    assert row.started_at.tzinfo is not None


def test_default_worker_id_is_host_and_pid(db: Db) -> None:
    import os
    import socket

    assert sync(db).worker_id == f"{socket.gethostname()}:{os.getpid()}"


def test_success_and_fail_record_the_outcome(db: Db) -> None:
    schedule(db, Work("w", "@every 30s", max_run=2))
    ws = sync(db)
    good, bad = ws.acquire("w", TICK), ws.acquire("w", TICK)
    assert good is not None
    assert bad is not None
    good.success()
    bad.fail("disk full")
    (g,) = db.rows(id=good.id)
    (b,) = db.rows(id=bad.id)
    assert (g.status, g.error) == (WorkStatus.SUCCESS, None)
    assert (b.status, b.error) == (WorkStatus.FAILED, "disk full")
    assert g.finished_at >= g.started_at
    assert b.finished_at >= b.started_at
    assert good.finished
    assert bad.finished


def test_context_manager_records_success_or_failure_and_reraises(db: Db) -> None:
    schedule(db, Work("w", "@every 30s", max_run=3))
    ws = sync(db)
    with ws.acquire("w", TICK) as ok:  # type: ignore[union-attr]
        pass
    with pytest.raises(KeyError, match="missing"), ws.acquire("w", TICK) as broken:  # type: ignore[union-attr]
        raise KeyError("missing")
    with ws.acquire("w", TICK) as explicit:  # type: ignore[union-attr]
        explicit.fail("gave up early")  # exit must not finish it a second time
    assert db.rows(id=ok.id)[0].status == WorkStatus.SUCCESS
    row = db.rows(id=broken.id)[0]
    assert (row.status, row.error) == (WorkStatus.FAILED, "KeyError: 'missing'")
    row = db.rows(id=explicit.id)[0]
    assert (row.status, row.error) == (WorkStatus.FAILED, "gave up early")


def test_finishing_twice_raises_and_writes_nothing(db: Db) -> None:
    schedule(db, Work("w", "@every 30s"))
    claim = sync(db).acquire("w", TICK)
    assert claim is not None
    claim.success()
    (before,) = db.rows(id=claim.id)
    with pytest.raises(ClaimLostError, match="already finished"):
        claim.fail("late")
    with pytest.raises(ClaimLostError):
        claim.success()
    assert db.rows(id=claim.id) == [before]


def test_a_copy_of_a_finished_claim_cannot_write(db: Db) -> None:
    """A second Claim object for the same row (another process, say) is fenced by status."""
    schedule(db, Work("w", "@every 30s"))
    ws = sync(db)
    claim = ws.acquire("w", TICK)
    assert claim is not None
    copy = second_claim_object(claim)
    claim.success()
    with pytest.raises(ClaimLostError, match="no longer holds"):
        copy.fail("too late")
    assert db.rows(id=claim.id)[0].status == WorkStatus.SUCCESS


def test_a_row_that_is_no_longer_ours_raises_and_is_left_alone(db: Db) -> None:
    schedule(db, Work("w", "@every 30s"))
    claim = sync(db).acquire("w", TICK)
    assert claim is not None
    table = table_named(db.table)
    with db.engine.begin() as conn:  # someone else takes the row over
        conn.execute(sa.update(table).where(table.c.id == claim.id).values(token="f" * 32))
    with pytest.raises(ClaimLostError):
        claim.success()
    (row,) = db.rows(id=claim.id)
    assert (row.status, row.finished_at) == (WorkStatus.RUNNING, None)


def test_nothing_to_claim_is_none(db: Db) -> None:
    schedule(db, Work("w", "@every 30s"))
    ws = sync(db)
    assert ws.acquire("w", "1999-01-01 00:00:00") is None
    assert ws.acquire("other", TICK) is None


def test_rows_written_by_another_program_are_claimable(db: Db) -> None:
    """Only the original's columns: created_at, name, status=1, sequence."""
    table = table_named(db.table)
    with db.engine.begin() as conn:
        conn.execute(
            table.insert(),
            [{"created_at": T0, "name": "legacy", "status": 1, "sequence": "2026-01-01 00:00:00"}]
            * 2,
        )
    ws = sync(db)
    first, second = (
        ws.acquire("legacy", "2026-01-01 00:00:00"),
        ws.acquire("legacy", "2026-01-01 00:00:00"),
    )
    assert first is not None
    assert second is not None
    assert ws.acquire("legacy", "2026-01-01 00:00:00") is None
    first.success()
    second.fail("nope")
    assert sorted(r.status for r in db.rows(name="legacy")) == [
        WorkStatus.SUCCESS,
        WorkStatus.FAILED,
    ]


def test_acquire_due_takes_the_earliest_due_tick(db: Db) -> None:
    schedule(db, Work("w", "@every 10s", max_run=2))
    ws = sync(db)
    at = T0 + timedelta(seconds=25)  # ticks :10 and :20 are due, :30 is not
    got = [ws.acquire_due("w", now=at) for _ in range(5)]
    sequences = [c.sequence if c else None for c in got]
    assert sequences == [
        default_sequence(T0 + timedelta(seconds=10)),
        default_sequence(T0 + timedelta(seconds=10)),
        default_sequence(T0 + timedelta(seconds=20)),
        default_sequence(T0 + timedelta(seconds=20)),
        None,
    ]
    assert all(c is None or c.name == "w" for c in got)


def test_acquire_due_judges_by_the_database_clock(db: Db) -> None:
    now = db.db_now()
    schedule(db, Work("w", "@every 10s"), now=now - timedelta(seconds=30))  # ticks to now+30s
    ws = sync(db)
    claimed = []
    while (claim := ws.acquire_due("w")) is not None:
        claimed.append(claim)
    end = db.db_now()
    assert 2 <= len(claimed) <= 4
    for claim in claimed:
        (row,) = db.rows(id=claim.id)
        assert row.tick_at <= row.started_at  # due by the server's clock when claimed
    waiting = db.rows(status=WorkStatus.QUEUED)
    assert waiting  # the ticks still ahead of the database clock were left alone
    assert all(row.tick_at > end - timedelta(seconds=1) for row in waiting)


def test_rows_without_a_tick_time_are_never_due(db: Db) -> None:
    table = table_named(db.table)
    with db.engine.begin() as conn:
        conn.execute(table.insert().values(name="legacy", status=1, sequence="s"))
    assert sync(db).acquire_due("legacy", now=T0 + timedelta(days=9999)) is None


QUIRKY = [
    'it\'s "quoted"',
    "x'); DROP TABLE works; --",
    "back\\slash %s %(name)s ?",
    "ünïcödé ✓ 😀",
]


@pytest.mark.parametrize("text", QUIRKY)
def test_quotes_and_sql_are_stored_verbatim(db: Db, text: str) -> None:
    schedule(db, Work(text, "@every 30s"))
    ws = sync(db)
    claim = ws.acquire(text, TICK)
    assert claim is not None
    claim.fail(text)
    (row,) = db.rows(id=claim.id)
    assert (row.name, row.error) == (text, text)
    # A custom sequence with the same text is stored and matched verbatim too.
    table = table_named(db.table)
    with db.engine.begin() as conn:
        conn.execute(table.insert().values(name="seq", status=1, sequence=text))
    claim = ws.acquire("seq", text)
    assert claim is not None
    assert claim.sequence == text


def test_names_are_exact_not_case_or_accent_insensitive(db: Db) -> None:
    schedule(
        db, Work("Report", "@every 30s"), Work("report", "@every 30s"), Work("résumé", "@every 30s")
    )
    ws = sync(db)
    assert ws.acquire("REPORT", TICK) is None
    assert ws.acquire("resume", TICK) is None
    claim = ws.acquire("report", TICK)
    assert claim is not None
    assert claim.name == "report"
    assert {r.name for r in db.rows(status=WorkStatus.RUNNING)} == {"report"}


def test_long_error_text_is_cut_to_the_limit(db: Db) -> None:
    schedule(db, Work("w", "@every 30s"))
    claim = sync(db).acquire("w", TICK)
    assert claim is not None
    claim.fail("e" * 20_000)
    assert len(db.rows(id=claim.id)[0].error) == 16_000


@pytest.mark.parametrize(
    ("name", "sequence", "message"),
    [
        ("", TICK, "name is empty"),
        ("x" * 256, TICK, "256 characters"),
        ("w", "", "sequence is empty"),
        ("w", "s" * 256, "256 characters"),
        ("w ", TICK, "whitespace"),
        (None, TICK, "name must be a string"),
        ("w", 5, "sequence must be a string"),
    ],
)
def test_bad_acquire_arguments_raise_and_write_nothing(
    db: Db, name: object, sequence: object, message: str
) -> None:
    schedule(db, Work("w", "@every 30s"))
    before = db.rows()
    with pytest.raises(InvalidWorkError, match=message):
        sync(db).acquire(name, sequence)  # type: ignore[arg-type]
    assert db.rows() == before


def test_bad_acquire_due_arguments_raise(db: Db) -> None:
    with pytest.raises(InvalidArgumentError, match="now must be a datetime"):
        sync(db).acquire_due("w", now="soon")  # type: ignore[arg-type]


def test_fail_rejects_non_text_errors(db: Db) -> None:
    schedule(db, Work("w", "@every 30s"))
    claim = sync(db).acquire("w", TICK)
    assert claim is not None
    with pytest.raises(InvalidArgumentError, match="error must be a string"):
        claim.fail(42)  # type: ignore[arg-type]
    assert db.rows(id=claim.id)[0].status == WorkStatus.RUNNING


def test_missing_table_says_to_run_the_migrations(db: Db) -> None:
    ws = db.WorkSync(db.engine, table="no_such_table")
    with pytest.raises(SchemaNotReadyError, match="alembic upgrade head"):
        ws.acquire("w", TICK)
    with pytest.raises(SchemaNotReadyError, match="no_such_table"):
        ws.acquire_due("w")
