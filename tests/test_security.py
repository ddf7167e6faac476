"""SQL is never built from values, and passwords never leak into logs, errors or reprs."""

from __future__ import annotations

import ast
import logging
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from worksync_sa import Scheduler, SchedulerConfig, Work, Worker, WorkSync, upgrade

from .conftest import Backend, Db, fresh_table_name, user_with_password
from .proxy import Proxy

ROOT = Path(__file__).resolve().parent.parent
SQL_CALLS = {"text", "exec_driver_sql", "execute", "literal_column", "executescript", "prefix_with"}
ALLOWED = {
    ("migrations/env.py", "literal_binds"),  # alembic's offline mode prints SQL by design
    # EXPLAIN prefixed to a compiled statement's text: placeholders only, the values are bound
    ("benchmarks/due_history.py", "execute() of a formatted string"),
    # EXPLAIN (PostgreSQL) and ANALYZE FORMAT=JSON (MariaDB) prefixed to a compiled
    # statement's text or to the raw read's (quoted table, placeholders): the values are bound
    ("benchmarks/empty_look.py", "execute() of a formatted string"),
    # the raw baselines' multi-row INSERT: a text of placeholders, the values are bound
    ("benchmarks/passes.py", "execute() of a formatted string"),
    # the fleet's own database and user: DDL binds nothing, so the module's constant names
    # are checked as identifiers and quoted by the dialect's identifier preparer
    ("benchmarks/fleet.py", "exec_driver_sql() of a formatted string"),
}


def formatted_sql(source: str, filename: str = "<source>") -> list[str]:
    """Every place that hands SQL-ish calls a string built at run time, or inlines binds."""
    problems = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.keyword) and node.arg == "literal_binds":
            problems.append(f"{filename}:{node.value.lineno}: literal_binds")
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name not in SQL_CALLS:
            continue
        first = node.args[0]
        built = (
            isinstance(first, ast.JoinedStr)
            or (
                isinstance(first, ast.BinOp)
                and isinstance(first.op, (ast.Mod, ast.Add))
                and not quoted_identifier(first)
            )
            or (
                isinstance(first, ast.Call)
                and isinstance(first.func, ast.Attribute)
                and first.func.attr == "format"
            )
        )
        if built:
            problems.append(f"{filename}:{node.lineno}: {name}() of a formatted string")
    return problems


def quoted_identifier(node: ast.expr) -> bool:
    """``"ANALYZE TABLE " + preparer.quote(name) + " ..."``: literals joined to quoted identifiers.

    Every piece is either a constant or a ``quote()`` call, so no value can
    reach the text; at least one piece must be a quoted identifier.
    """

    def pieces(part: ast.expr) -> list[ast.expr] | None:
        if isinstance(part, ast.BinOp) and isinstance(part.op, ast.Add):
            left, right = pieces(part.left), pieces(part.right)
            return None if left is None or right is None else left + right
        return [part]

    parts = pieces(node) or []
    quoted = [
        p
        for p in parts
        if isinstance(p, ast.Call) and isinstance(p.func, ast.Attribute) and p.func.attr == "quote"
    ]
    constants = [p for p in parts if isinstance(p, ast.Constant) and isinstance(p.value, str)]
    return bool(quoted) and len(quoted) + len(constants) == len(parts)


def test_no_sql_is_formatted_from_values_in_the_package() -> None:
    files = [
        path
        for folder in ("worksync_sa", "migrations", "benchmarks", "examples")
        for path in sorted((ROOT / folder).rglob("*.py"))
    ]
    assert len(files) > 10
    problems = []
    for path in files:
        relative = path.relative_to(ROOT).as_posix()
        for problem in formatted_sql(path.read_text(), relative):
            if not any(relative == f and what in problem for f, what in ALLOWED):
                problems.append(problem)
    assert problems == []


@pytest.mark.parametrize(
    "snippet",
    [
        "conn.execute(sa.text(f\"SELECT * FROM works WHERE name = '{name}'\"))",
        'conn.exec_driver_sql("DELETE FROM works WHERE id = %d" % row_id)',
        "conn.execute(text(\"UPDATE works SET error = '{}'\".format(error)))",
        "select(literal_column('x' + value))",
        "compile(literal_binds=True)",
        'conn.exec_driver_sql("ANALYZE TABLE " + table)',
        'conn.exec_driver_sql("ANALYZE TABLE %s" % preparer.quote(table))',
    ],
)
def test_the_check_catches_formatted_sql(snippet: str) -> None:
    assert formatted_sql(snippet)


def test_the_check_lets_a_quoted_identifier_through() -> None:
    assert formatted_sql('conn.exec_driver_sql("VACUUM ANALYZE " + preparer.quote(t))') == []


SECRET = f"pw-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def secret_url(server: Backend) -> Iterator[str]:
    """A URL carrying a real password (a MariaDB user made for it; PostgreSQL trusts anyway)."""
    with user_with_password(server, SECRET) as url:
        yield url.render_as_string(hide_password=False)


@pytest.fixture
def secret_db(server: Backend, secret_url: str) -> Iterator[Db]:
    from .conftest import create_table, drop_table, fresh_table_name

    name = fresh_table_name()
    create_table(server.engine, name)
    try:
        yield Db(server, name)
    finally:
        drop_table(server.engine, name)


def test_passwords_never_reach_logs_errors_or_reprs(
    secret_db: Db, secret_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = sa.make_url(secret_url)
    proxy = Proxy(url.host or "127.0.0.1", url.port or 0)
    engine = sa.create_engine(proxy.url_for(secret_url), pool_pre_ping=True)
    seen: list[str] = []
    try:
        with caplog.at_level(logging.DEBUG, logger="worksync_sa"):
            config = SchedulerConfig(lookahead="2s", interval="200ms", max_backoff="300ms")
            scheduler = Scheduler(engine, [Work("w", "* * * * * *")], config, table=secret_db.table)
            worker = Worker(engine, ["w"], lambda c: None, table=secret_db.table, poll="100ms")
            sync = WorkSync(engine, table=secret_db.table)
            seen += [repr(scheduler), repr(worker), repr(sync)]
            scheduler.start()
            worker.start()
            time.sleep(1)
            proxy.cut()  # outage: every loop logs what went wrong
            try:
                sync.acquire_due("w")
            except Exception as exc:
                seen += [str(exc), repr(exc)]
            time.sleep(1.5)
            proxy.restore()
            time.sleep(1)
            scheduler.stop(timeout=10)
            worker.stop(timeout=10)
        if secret_db.name == "mysql":  # PostgreSQL here trusts local users: no wrong password
            bad = sa.create_engine(secret_url.replace(SECRET, SECRET + "-wrong"))
            with pytest.raises(sa.exc.DBAPIError) as caught:
                WorkSync(bad, table=secret_db.table).acquire("w", "s")
            seen += [str(caught.value), repr(WorkSync(bad))]
            bad.dispose()
    finally:
        engine.dispose()
        proxy.close()
    assert any(getattr(r, "action", None) == "outage" for r in caplog.records)
    assert not any("LogRecord" in r.getMessage() for r in caplog.records)  # logging itself works
    assert "***" in repr(scheduler)
    for text in [*seen, caplog.text]:
        assert SECRET not in text


QUERY_FORMS = ["passwd", "password"]
"""Where drivers take a password in the URL's query string: mysqlclient takes both, psycopg
only ``password`` (it refuses ``passwd`` as an unknown option, itself a refusal to check)."""
WRONG = f"wrong-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def refused_url(server: Backend, request: pytest.FixtureRequest) -> Iterator[str]:
    """A URL whose password, given in the query string, the server refuses.

    MariaDB: a user made with ``SECRET``, given ``WRONG`` instead. The local
    PostgreSQL trusts 127.0.0.1 and never checks a password, so there the
    user is one that does not exist: the connection is refused all the same,
    with ``WRONG`` handed to the driver.
    """
    key = request.param
    with user_with_password(server, SECRET) as given:
        user = given.username
        if server.name == "postgresql":
            user = f"ws_missing_{uuid.uuid4().hex[:8]}"
        url = sa.URL.create(  # no password before the '@': only the query string's
            given.drivername,
            username=user,
            host=given.host,
            port=given.port,
            database=given.database,
            query={**given.query, key: WRONG},
        )
        yield url.render_as_string(hide_password=False)


def texts_of(exc: BaseException) -> list[str]:
    """``str`` and ``repr`` of an exception and of every exception chained to it, and the
    traceback as printed: what a host's log or error page could show."""
    texts = ["".join(traceback.format_exception(exc))]
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        texts += [str(current), repr(current)]
        orig = getattr(current, "orig", None)  # SQLAlchemy's DBAPIError: the driver's error
        todo += [current.__cause__, current.__context__]
        todo += [orig] if isinstance(orig, BaseException) else []
    return texts


@pytest.mark.parametrize("refused_url", QUERY_FORMS, indirect=True)
def test_a_refused_password_in_the_query_string_never_reaches_errors_logs_or_reprs(
    refused_url: str, server: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    assert WRONG in refused_url  # in the query string, where hide_password does not look
    engine = sa.create_engine(refused_url, connect_args={"connect_timeout": 5})
    table = fresh_table_name()
    sync = WorkSync(engine, table=table)
    scheduler = Scheduler(engine, [Work("w", "* * * * * *")], table=table)
    worker = Worker(engine, ["w"], lambda claim: None, table=table, poll="100ms")
    seen = [repr(sync), repr(scheduler), repr(worker)]
    calls: list[Callable[[], object]] = [
        lambda: sync.acquire("w", "2026-01-01 00:00:00"),
        lambda: sync.acquire_due("w"),
        scheduler.run_pass,
        worker.run_once,
        lambda: upgrade(engine, table=table),
    ]
    try:
        with caplog.at_level(logging.DEBUG, logger="worksync_sa"):
            for call in calls:
                with pytest.raises(sa.exc.DBAPIError) as caught:
                    call()
                seen += texts_of(caught.value)
            scheduler.start()  # the background loop logs what goes wrong, and backs off
            time.sleep(1)
            scheduler.stop(timeout=10)
    finally:
        engine.dispose()
    refusal = "Access denied" if server.name == "mysql" else "does not exist"
    if server.name == "postgresql" and "passwd" in refused_url:
        refusal = 'invalid connection option "passwd"'
    assert refusal in seen[3]  # the first error is the refusal itself
    assert caplog.records  # the loop did log its failures
    for text in [*seen, caplog.text]:
        assert WRONG not in text
        assert SECRET not in text


def test_log_extras_never_collide_with_log_record_fields() -> None:
    """An ``extra`` key such as "created" makes logging raise, and then a pass fails."""
    reserved = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
    used = set()
    for path in (ROOT / "worksync_sa").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.keyword) and node.arg == "extra":
                assert isinstance(node.value, ast.Dict)
                used |= {k.value for k in node.value.keys if isinstance(k, ast.Constant)}
    assert "action" in used
    assert used.isdisjoint(reserved), used & reserved
