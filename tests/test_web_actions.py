"""The page's actions over HTTP, on every database: who may act, from where, and what it writes.

Requests go through the ASGI app in-process (as ``tests/test_web.py``'s
``Client``); every expected value is read back from the tables with plain
SQL. The read token, another site's page, a missing origin and a form body
are each refused with nothing written; the write token's pause, resume,
run-now and retry change the same rows the command line's would.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from worksync_sa import InvalidArgumentError, NewRow, ScheduleRepository, Work, WorkStatus
from worksync_sa.models import as_utc, table_named

from .conftest import Db
from .extras import skip_module

try:
    import anyio
    import httpx

    from worksync_sa.web import StatusPage, app
except ModuleNotFoundError as exc:  # the plain install: no web extra
    skip_module(exc)

READ = "read-token-0123456789"
WRITE = "write-token-0123456789"
ORIGIN = "http://127.0.0.1"
NEVER_SOON = "0 0 1 1 *"
ACTIONS = ("pause", "resume", "run-now", "retry")


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def post(
    page: StatusPage, action: str, document: Any, *, token: str | None = WRITE, **headers: str
) -> httpx.Response:
    sent = {"Origin": ORIGIN, "Content-Type": "application/json"}
    if token is not None:
        sent["Authorization"] = basic("ann", token)
    sent.update(headers)
    body = document if isinstance(document, bytes) else json.dumps(document).encode()

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=page)
        async with httpx.AsyncClient(transport=transport, base_url=ORIGIN) as client:
            return await client.post(f"/api/actions/{action}", content=body, headers=sent)

    return anyio.run(send)


def get(page: StatusPage, path: str, token: str) -> httpx.Response:
    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=page)
        async with httpx.AsyncClient(transport=transport, base_url=ORIGIN) as client:
            return await client.get(path, headers={"Authorization": f"Bearer {token}"})

    return anyio.run(send)


def spec(max_run: int) -> str:
    return f"sequence=utc; max_run={max_run}; cron={NEVER_SOON}; timezone=UTC"


def now_of(db: Db) -> datetime:
    return as_utc(db.db_now())


def failed_tick(db: Db) -> str:
    """A tick of work ``w`` (max_run 2) whose two rows a worker ran and failed: its label."""
    tick = now_of(db).replace(microsecond=0) - timedelta(seconds=2)
    label = tick.strftime("%Y-%m-%d %H:%M:%S")
    rows = [NewRow("w", label, slot, tick, 300, 60, 1, spec(2), max_run=2) for slot in (0, 1)]
    with db.engine.begin() as conn:
        ScheduleRepository(table_named(db.table)).insert_queued(conn, rows)

    def handler(claim: Any) -> None:
        raise RuntimeError("boom")

    worker = db.Worker(db.engine, [Work("w", NEVER_SOON, max_run=2)], handler, table=db.table)
    try:
        assert worker.run_due() == 2
    finally:
        worker.close()
    return label


def snapshot(db: Db) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Every row of the work table, the pauses and the actions ledger, by plain SQL."""
    meta = sa.MetaData()
    with db.engine.connect() as conn:
        works = [tuple(r) for r in conn.execute(sa.text(f"SELECT * FROM {db.table} ORDER BY id"))]
        pauses = sa.Table(f"{db.table}_pauses", meta, autoload_with=conn)
        actions = sa.Table(f"{db.table}_actions", meta, autoload_with=conn)
        paused = [tuple(r) for r in conn.execute(sa.select(pauses))]
        acted = [tuple(r) for r in conn.execute(sa.select(actions).order_by(actions.c.id))]
    return works, paused, acted


def actions_of(db: Db) -> list[dict[str, Any]]:
    meta = sa.MetaData()
    with db.engine.connect() as conn:
        actions = sa.Table(f"{db.table}_actions", meta, autoload_with=conn)
        return [dict(r._mapping) for r in conn.execute(sa.select(actions).order_by(actions.c.id))]


@pytest.fixture
def page(db: Db) -> Iterator[StatusPage]:
    status_page = app(db.engine, db.table, auth_token=READ, write_token=WRITE)
    yield status_page
    status_page.close()


def test_each_action_is_refused_without_the_write_token_and_writes_nothing(
    db: Db, page: StatusPage
) -> None:
    label = failed_tick(db)
    before = snapshot(db)
    bodies = {
        "pause": {"name": "w", "reason": "x"},
        "resume": {"name": "w"},
        "run-now": {"name": "w"},
        "retry": {"name": "w", "tick": label},
    }
    for action, body in bodies.items():
        read_only = post(page, action, body, token=READ)
        assert read_only.status_code == 403, read_only.text
        assert "write token" in read_only.text
        bearer = post(page, action, body, token=None, Authorization=f"Bearer {READ}")
        assert bearer.status_code == 403
        assert post(page, action, body, token=None).status_code == 401
        assert post(page, action, body, token="not-the-token-at-all").status_code == 401
    assert snapshot(db) == before
    assert get(page, "/api/state", READ).status_code == 200
    assert get(page, "/api/state", WRITE).status_code == 200  # the write token reads too


def test_an_action_from_another_site_or_not_json_is_refused_and_writes_nothing(
    db: Db, page: StatusPage
) -> None:
    failed_tick(db)
    before = snapshot(db)
    body = {"name": "w"}
    refusals = [
        (post(page, "pause", body, Origin="http://evil.example"), 403, "Origin"),
        (post(page, "pause", body, Origin="http://127.0.0.1.evil.example"), 403, "Origin"),
        (post(page, "pause", body, Origin="null"), 403, "Origin"),
        (post(page, "pause", body, Origin=""), 403, "Origin"),
        (post(page, "pause", body, **{"Sec-Fetch-Site": "cross-site"}), 403, "Sec-Fetch-Site"),
        (post(page, "pause", body, **{"Content-Type": "text/plain"}), 415, "application/json"),
        (
            post(page, "pause", b"name=w", **{"Content-Type": "application/x-www-form-urlencoded"}),
            415,
            "application/json",
        ),
    ]
    for answer, status, says in refusals:
        assert (answer.status_code, says in answer.text) == (status, True), answer.text
    assert snapshot(db) == before


def test_bad_bodies_are_refused_naming_what_is_wrong_and_write_nothing(
    db: Db, page: StatusPage
) -> None:
    failed_tick(db)
    before = snapshot(db)
    cases: list[tuple[str, Any, int, str]] = [
        ("stop", {"name": "w"}, 400, "unknown action"),
        ("pause", b"{not json", 400, "JSON object"),
        ("pause", [1, 2], 400, "JSON object"),
        ("pause", {}, 400, "name is required"),
        ("pause", {"name": 7}, 400, "name must be a string"),
        ("pause", {"name": "w", "until": "soonish"}, 400, "until"),
        ("pause", {"name": "w", "reason": "r" * 256}, 400, "reason is at most 255"),
        ("pause", {"name": "w", "force": True}, 400, "no field 'force'"),
        ("pause", {"name": "nobody"}, 400, "nobody"),
        ("retry", {"name": "w"}, 400, "tick is required"),
        ("retry", {"name": "w", "tick": "2001-01-01 00:00:00"}, 400, "2001-01-01"),
        ("retry", {"name": "w", "tick": "x", "past_grace": "yes"}, 400, "past_grace"),
        ("resume", {"name": "w"}, 400, "not paused"),
        ("run-now", {"name": "w", "pad": "x" * 5000}, 413, "4096 bytes"),
    ]
    for action, body, status, says in cases:
        answer = post(page, action, body)
        assert answer.status_code == status, (action, body, answer.text)
        assert says in answer.json()["error"], (action, answer.text)
    assert snapshot(db) == before


def test_the_write_token_pauses_resumes_runs_now_and_retries_with_who_in_the_ledger(
    db: Db, page: StatusPage
) -> None:
    label = failed_tick(db)
    t = table_named(db.table)

    paused = post(page, "pause", {"name": "w", "until": "1h", "reason": "deploy"})
    assert paused.status_code == 200, paused.text
    assert paused.json()["action"] == "pause"
    with db.engine.connect() as conn:
        pauses = conn.execute(sa.text(f"SELECT name FROM {db.table}_pauses")).scalars().all()
    assert pauses == ["w"]

    resumed = post(page, "resume", {"name": "w"})
    assert resumed.status_code == 200, resumed.text
    with db.engine.connect() as conn:
        assert conn.execute(sa.text(f"SELECT count(*) FROM {db.table}_pauses")).scalar() == 0

    made = post(page, "run-now", {"name": "w", "reason": "catch up"})
    assert made.status_code == 200, made.text
    with db.engine.connect() as conn:
        fresh = conn.execute(
            sa.select(t.c.sequence, t.c.status).where(t.c.sequence.like("run-now %"))
        ).all()
    assert len(fresh) == 2  # max_run rows, queued
    assert {status for _, status in fresh} == {WorkStatus.QUEUED}

    retried = post(page, "retry", {"name": "w", "tick": label, "reason": "flaky"})
    assert retried.status_code == 200, retried.text
    statuses = sorted(row.status for row in db.rows(sequence=label))
    assert statuses == [WorkStatus.QUEUED, WorkStatus.QUEUED]

    ledger = actions_of(db)
    assert [entry["action"] for entry in ledger] == ["pause", "resume", "run-now", "retry"]
    who = {entry["actor"] for entry in ledger}
    assert len(who) == 1
    assert next(iter(who)).startswith("ann (web")
    reasons = [entry["reason"] for entry in ledger]
    assert reasons == ["deploy", "", "catch up", "flaky"]


def test_a_page_without_a_write_token_has_no_actions(db: Db) -> None:
    failed_tick(db)
    read_only = app(db.engine, db.table, auth_token=READ)
    try:
        before = snapshot(db)
        for action in ACTIONS:
            answer = post(read_only, action, {"name": "w"}, token=READ)
            assert answer.status_code == 405
        assert snapshot(db) == before
    finally:
        read_only.close()


def test_a_write_token_equal_to_the_read_token_is_refused(db: Db) -> None:
    with pytest.raises(InvalidArgumentError, match="differ"):
        app(db.engine, db.table, auth_token=WRITE, write_token=WRITE)
    with pytest.raises(InvalidArgumentError, match="at least"):
        app(db.engine, db.table, write_token="short")
