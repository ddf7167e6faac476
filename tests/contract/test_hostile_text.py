"""Text from the outside world: file names that are not UTF-8, NULs, emoji, escapes, secrets.

A name or sequence the database would store differently from what was given
is refused where it enters, before anything is written. An error text is
never refused: a failure must be recorded, so it is escaped instead. A MySQL
connection that would squash characters is refused at its first use. And no
password reaches a repr, a log line or the command's output, whichever way
the URL carries it.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from worksync_sa import (
    InvalidConfigError,
    InvalidWorkError,
    Scheduler,
    SchedulerConfig,
    UnsupportedDatabaseError,
    Work,
    Worker,
    WorkStatus,
    WorkSync,
    default_sequence,
)
from worksync_sa.models import ERROR_TEXT_MAX

from ..conftest import Backend, Db, user_with_password
from ..test_cli import environment
from ..test_cli import worksync as cli

UTC = timezone.utc
T0 = datetime(2026, 1, 1, tzinfo=UTC)
CONFIG = SchedulerConfig(lookahead=timedelta(minutes=1), interval="10s")
TICK = default_sequence(T0 + timedelta(seconds=30))
# What os.listdir() returns for the file name b"report-\xff.csv" on a UTF-8 system.
NOT_UTF8 = os.fsdecode(b"report-\xff.csv")


def scheduled(db: Db, work: Work) -> WorkSync:
    db.Scheduler(db.engine, [work], CONFIG, table=db.table).run_pass(T0)
    return db.WorkSync(db.engine, table=db.table, keep_alive=False)


def test_an_error_naming_a_file_that_is_not_utf8_is_recorded(db: Db) -> None:
    assert "\udcff" in NOT_UTF8  # a lone surrogate, as Python hands such names over
    sync = scheduled(db, Work("w", "@every 30s"))
    claim = sync.acquire("w", TICK)
    assert claim is not None
    with pytest.raises(OSError, match="cannot open"), claim:
        raise OSError(f"cannot open {NOT_UTF8}")
    (row,) = db.rows(id=claim.id)
    assert row.status == WorkStatus.FAILED
    assert row.error == "OSError: cannot open report-\\udcff.csv"


def test_nul_and_overlong_error_texts_are_escaped_and_cut(db: Db) -> None:
    sync = scheduled(db, Work("w", "@every 30s", max_run=3))
    first, second, third = (sync.acquire("w", TICK) for _ in range(3))
    assert first is not None
    assert second is not None
    assert third is not None
    first.fail("before\x00after")
    second.fail("é" * (ERROR_TEXT_MAX + 500))
    third.fail("emoji 😀 stays, and so does \\ a backslash")
    rows = {row.id: row for row in db.rows(sequence=TICK)}
    assert rows[first.id].error == "before\\x00after"
    assert rows[second.id].error == "é" * ERROR_TEXT_MAX
    assert rows[third.id].error == "emoji 😀 stays, and so does \\ a backslash"
    assert {row.status for row in rows.values()} == {WorkStatus.FAILED}


def test_an_exception_whose_message_cannot_be_read_is_still_recorded(db: Db) -> None:
    class Broken(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no message for you")

    sync = scheduled(db, Work("w", "@every 30s"))
    claim = sync.acquire("w", TICK)
    assert claim is not None
    with pytest.raises(Broken), claim:
        raise Broken
    (row,) = db.rows(id=claim.id)
    assert row.status == WorkStatus.FAILED
    assert row.error == "Broken: (its message could not be read)"


@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_a_lone_surrogate_never_enters_a_name_or_sequence(db: Db, where: str) -> None:
    bad = {"start": "\udc80report", "middle": NOT_UTF8, "end": "report\ud800"}[where]
    with pytest.raises(InvalidWorkError, match="lone surrogate"):
        Work(bad, "* * * * *")
    sync = scheduled(db, Work("w", "@every 30s"))
    before = db.count()
    with pytest.raises(InvalidWorkError, match="lone surrogate"):
        sync.acquire(bad, TICK)
    with pytest.raises(InvalidWorkError, match="lone surrogate"):
        sync.acquire("w", bad)
    with pytest.raises(InvalidWorkError, match="lone surrogate"):
        sync.acquire_due(bad)
    assert db.count() == before
    assert {row.status for row in db.rows()} == {WorkStatus.QUEUED}


def test_a_sequence_function_giving_a_lone_surrogate_writes_nothing(db: Db) -> None:
    def bad_sequence(tick: datetime) -> str:
        return f"{default_sequence(tick)} {NOT_UTF8}"

    config = SchedulerConfig(lookahead="1m", interval="10s", sequence=bad_sequence)
    works = [Work("a", "@every 10s"), Work("z", "@every 10s")]
    scheduler = db.Scheduler(db.engine, works, config, table=db.table)
    with pytest.raises(InvalidConfigError, match="lone surrogate"):
        scheduler.run_pass(T0)
    assert db.count() == 0


# -- MySQL's character sets -----------------------------------------------------------


@pytest.mark.parametrize("charset", ["utf8", "utf8mb3", "latin1"])
def test_a_mysql_connection_that_is_not_utf8mb4_is_refused_at_first_use(
    maria_db: Db, charset: str
) -> None:
    url = sa.make_url(maria_db.url).update_query_dict({"charset": charset})
    engine = sa.create_engine(url)
    works = [Work("report-💩", "@every 10s"), Work("report-😀", "@every 10s")]
    try:
        scheduler = Scheduler(engine, works, CONFIG, table=maria_db.table)
        with pytest.raises(UnsupportedDatabaseError, match=r"charset=utf8mb4") as caught:
            scheduler.run_pass(T0)
        assert "not utf8mb4" in str(caught.value)
        with pytest.raises(UnsupportedDatabaseError):
            WorkSync(engine, table=maria_db.table).acquire("report-😀", TICK)
        scheduler.close()
    finally:
        engine.dispose()
    assert maria_db.count() == 0
    # The same works through a utf8mb4 connection stay two works.
    Scheduler(maria_db.engine, works, CONFIG, table=maria_db.table).run_pass(T0)
    assert {row.name for row in maria_db.rows()} == {"report-💩", "report-😀"}


# -- passwords in the query string ----------------------------------------------------

SECRET = f"qs-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def query_password_urls(server: Backend) -> Iterator[list[str]]:
    """URLs that really connect, each carrying the password in its query string."""
    keys = ("passwd", "password") if server.name == "mysql" else ("password",)
    with user_with_password(server, SECRET) as url:
        # (url.set(password=None) would keep the password: None there means "unchanged".)
        bare = sa.URL.create(
            url.drivername,
            username=url.username,
            host=url.host,
            port=url.port,
            database=url.database,
            query=url.query,
        )
        assert SECRET not in bare.render_as_string(hide_password=False)
        yield [
            bare.update_query_dict({key: SECRET}).render_as_string(hide_password=False)
            for key in keys
        ]


def test_query_string_passwords_stay_out_of_reprs_and_logs(
    server_db: Db, query_password_urls: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []
    for index, url in enumerate(query_password_urls):
        name = f"w{index}"
        engine = sa.create_engine(url)
        try:
            with caplog.at_level(logging.DEBUG, logger="worksync_sa"):
                scheduler = Scheduler(
                    engine, [Work(name, "@every 10s")], CONFIG, table=server_db.table
                )
                scheduler.run_pass(T0)
                sync = WorkSync(engine, table=server_db.table)
                claim = sync.acquire(name, TICK)
                assert claim is not None  # the URL really connects
                claim.success()
                worker = Worker(engine, [name], lambda c: None, table=server_db.table)
                seen += [repr(scheduler), repr(sync), repr(worker)]
                assert "***" in repr(sync)
                for closable in (scheduler, sync, worker):
                    closable.close()
        finally:
            engine.dispose()
    for text in [*seen, caplog.text]:
        assert SECRET not in text


def test_the_url_shown_masks_every_key_that_holds_a_password() -> None:
    from worksync_sa.engine import shown_url

    url = "mysql+mysqldb://app:pw1@db/app?passwd=pw2&sslpassword=pw3&PASSWORD=pw4&charset=utf8mb4"
    shown = shown_url(url)
    assert not re.search(r"pw\d", shown), shown
    assert "charset=utf8mb4" in shown
    assert shown.count("***") == 4


@pytest.mark.slow
def test_query_string_passwords_stay_out_of_the_commands_output(
    server: Backend, query_password_urls: list[str], tmp_path: Path
) -> None:
    from ..conftest import fresh_table_name

    table = fresh_table_name()
    (tmp_path / "jobs.py").write_text("def run(claim):\n    pass\n")
    (tmp_path / "works.toml").write_text('[[works]]\nname = "w"\ncron = "@every 1s"\n')
    outputs = []
    try:
        for url in query_password_urls:
            args = ["--db", url, "--table", table]
            for command in (["migrate"], ["check"], ["status"], ["prune", "--older-than", "7d"]):
                result = cli(*command, *args, cwd=tmp_path)
                assert result.returncode == 0, result.stderr
                outputs.append(result.stdout + result.stderr)
            for command in (
                ["schedule", "-c", "works.toml"],
                ["work", "--run", "jobs:run", "--name", "w"],
            ):
                process = subprocess.Popen(
                    [sys.executable, "-m", "worksync_sa", *command, *args],
                    cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                    env=environment(),
                )  # fmt: skip
                try:
                    out, err = _stop_after_start(process)
                finally:
                    process.kill()
                assert "started on" in err, err
                outputs.append(out + err)
    finally:
        with server.engine.begin() as conn:
            for name in (table, f"{table}_alembic_version"):
                sa.Table(name, sa.MetaData()).drop(conn, checkfirst=True)
    assert all("***" in output for output in outputs)
    for output in outputs:
        assert SECRET not in output


def _stop_after_start(process: subprocess.Popen[str]) -> tuple[str, str]:
    """Stop the command once it says it started (a signal before that finds no handler)."""
    import threading

    assert process.stderr is not None
    lines: list[str] = []
    started = threading.Event()

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            if "started on" in line:
                started.set()
        started.set()  # the command ended without starting

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    started.wait(60)
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=30)
    reader.join(10)
    return out, "".join(lines)


# -- what the terminal shows ----------------------------------------------------------


def test_status_escapes_control_characters_in_names_sequences_and_errors(
    backend: Backend, tmp_path: Path
) -> None:
    from ..conftest import _table_on

    for tdb in _table_on(backend):
        evil = "evil\x1b[2J\rname\nforged line"
        works = [Work(evil, "@every 10s", grace=timedelta(days=1))]

        def sequence(tick: datetime) -> str:
            return f"{default_sequence(tick)}\x1b[31m"

        config = SchedulerConfig(lookahead="1m", interval="10s", sequence=sequence)
        now = tdb.db_now()
        Scheduler(tdb.engine, works, config, table=tdb.table).run_pass(now - timedelta(seconds=30))
        sync = WorkSync(tdb.engine, table=tdb.table, keep_alive=False)
        claim = sync.acquire_due(evil)
        assert claim is not None
        claim.fail("line one\nline two\x07\u202eevil")
        sync.close()
        url = tdb.engine.url.render_as_string(hide_password=False)
        result = cli("status", "--db", url, "--table", tdb.table, "--since", "1h", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        out = result.stdout
        assert "\x1b" not in out
        assert "\r" not in out
        assert "\x07" not in out
        assert "\u202e" not in out
        assert "evil\\x1b[2J\\rname\\nforged line" in out
        assert "\\x1b[31m" in out  # the sequence, shown because it is not the tick's label
        assert "line one\\nline two\\x07\\u202eevil" in out
        assert not any(line.startswith("forged line") for line in out.splitlines())


def test_printable_leaves_ordinary_text_alone() -> None:
    from worksync_sa._sql.text import printable

    assert printable("report-😀 über naïve ∑") == "report-😀 über naïve ∑"
    assert printable("family 👨\u200d👩\u200d👧") == "family 👨\u200d👩\u200d👧"  # ZWJ kept
    assert printable("a\tb") == "a\\tb"


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("rtl-\u202etxt.exe", "rtl-\\u202etxt.exe"),  # would read "rtl-exe.txt"
        ("two\nwords", "two\\nwords"),
        ("zero\u200bwidth", "zero\\u200bwidth"),
        ("ad\u200dmin", "ad\\u200dmin"),  # a joiner between letters hides, so it shows
        ("soft\u00adhyphen", "soft\\xadhyphen"),
        ("filler\u3164", "filler\\u3164"),
        ("isolate\u2067x\u2069", "isolate\\u2067x\\u2069"),
        ("arabic mark\u061c", "arabic mark\\u061c"),
        ("line\u2028separator", "line\\u2028separator"),
        ("tag\U000e0041", "tag\\U000e0041"),
        ("bom\ufeff", "bom\\ufeff"),
    ],
)
def test_printable_escapes_what_cannot_be_seen(raw: str, shown: str) -> None:
    """The one definition the command line and the status page share."""
    from worksync_sa._sql.text import printable

    assert printable(raw) == shown
    assert printable(shown) == shown  # shown text is plain: escaping it again changes nothing


def test_printable_lines_keeps_only_the_line_breaks() -> None:
    from worksync_sa._sql.text import printable_lines

    assert printable_lines("Traceback:\r\n  x\u202e\n\x1b[2Jend") == [
        "Traceback:",
        "  x\\u202e",
        "\\x1b[2Jend",
    ]


@pytest.mark.parametrize(("is_mariadb", "version"), [(True, (10, 5, 9)), (False, (8, 0, 3))])
def test_a_server_without_json_table_is_refused_at_first_use(
    maria_db: Db, is_mariadb: bool, version: tuple[int, ...]
) -> None:
    """The version gate, read from what the dialect learnt at connect (set back here)."""
    engine = sa.create_engine(maria_db.url)
    with engine.connect():
        pass  # the dialect reads the server's version on the first connection
    engine.dialect.server_version_info = version
    engine.dialect.is_mariadb = is_mariadb  # type: ignore[attr-defined]
    try:
        with pytest.raises(
            UnsupportedDatabaseError, match=r"needs MariaDB 10\.6\+ or MySQL 8\.0\.4\+"
        ):
            WorkSync(engine, table=maria_db.table).acquire("w", TICK)
    finally:
        engine.dispose()
