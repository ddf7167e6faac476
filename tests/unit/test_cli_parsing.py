"""The ``worksync`` command line's parsing and checks, in-process and before any database.

Every case here fails (or is read) before a connection could be made: the
parser's own errors exit 2 through ``SystemExit``, a runner's usage errors
return 2 from :func:`~worksync_sa.cli.main.main`, and each says what to fix
in one ``worksync:`` line. The database URLs point at a SQLite file in the
test's folder that must still not exist afterwards: nothing was opened.
The process-level behaviour (real databases, signals) is ``tests/test_cli.py``'s.
"""

from __future__ import annotations

import argparse
import logging
import os.path
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from worksync_sa import SchedulerConfig, Work
from worksync_sa.cli import prune as prune_command
from worksync_sa.cli.main import build_parser, main, outcome
from worksync_sa.cli.options import (
    Failure,
    Secrets,
    UsageError,
    database_url,
    duration_arg,
    moment_arg,
    positive_int,
    resolve_moment,
)
from worksync_sa.cli.web import auth_token, is_loopback
from worksync_sa.cli.work import Handlers, concurrency_arg, select_works
from worksync_sa.errors import InvalidArgumentError, InvalidConfigError, SchemaNotReadyError

UTC = timezone.utc


@pytest.fixture(autouse=True)
def _quiet_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No deploy settings leak in, and the commands' logging set-up is undone after each test.

    ``setup_logging`` replaces the root logger's handlers (``force=True``), as
    a command should; the test run's own handlers are put back afterwards.
    """
    for name in ("WORKSYNC_DATABASE_URL", "WORKSYNC_TABLE", "WORKSYNC_WEB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "path", list(sys.path))  # `work --run` puts the cwd on it
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def db(tmp_path: Path) -> str:
    """A SQLite URL whose file does not exist: if a command opened it, it would."""
    return f"sqlite:///{tmp_path / 'never-opened.db'}"


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """The exit code ``worksync ARGS`` would have, and its stderr."""
    try:
        code = main(args)
    except SystemExit as exited:  # the parser's own errors
        code = exited.code if isinstance(exited.code, int) else 1
    return code, capsys.readouterr().err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("worksync: "), err
    return lines[0]


# -- the parser -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ([], ["required: COMMAND"]),
        (["frobnicate"], ["invalid choice: 'frobnicate'"]),
        (["schedule"], ["--config"]),
        (["prune", "--db", "DB"], ["--older-than"]),
        (["prune", "--older-than", "a week", "--db", "DB"], ["--older-than"]),
        (
            ["prune", "--older-than", "7d", "--batch-size", "0", "--db", "DB"],
            ["0 is not at least 1"],
        ),
        (["prune", "--older-than", "7d", "--batch-size", "ten", "--db", "DB"], ["'ten'"]),
        (["work", "--name", "a", "--db", "DB"], ["--run"]),
        (["work", "--run", "m:f", "--concurrency", "0", "--db", "DB"], ["1 to 1024"]),
        (["work", "--run", "m:f", "--concurrency", "1025", "--db", "DB"], ["1 to 1024"]),
        (["work", "--run", "m:f", "--poll", "soon", "--db", "DB"], ["--poll"]),
        (["status", "--since", "last tuesday", "--db", "DB"], ["neither a duration ago"]),
        (["status", "--last", "-1", "--db", "DB"], ["--last"]),
        (["status", "--log-level", "loud", "--db", "DB"], ["--log-level", "'loud'"]),
        (["web", "--port", "65536", "--db", "DB"], ["not a port number (0 to 65535)"]),
        (["web", "--port", "http", "--db", "DB"], ["'http' is not a port number"]),
        (["web", "--auth-token", "x" * 20, "--no-auth", "--db", "DB"], ["not allowed with"]),
        (["demo", "--seconds", "soon"], ["--seconds"]),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else None,
)
def test_the_parser_refuses_misuse_with_exit_2_and_one_line(
    args: list[str], words: list[str], db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run([db if arg == "DB" else arg for arg in args], capsys)
    assert code == 2
    line = one_line(err)
    assert line.endswith(" --help`)")  # the command's own help, named
    for word in words:
        assert word in line, line
    assert not Path(db.removeprefix("sqlite:///")).exists()


def test_help_names_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for command in ("migrate", "check", "schedule", "work", "status", "web", "prune", "demo"):
        assert command in out
    assert "Exit codes: 0 ok, 1 runtime failure, 2 usage or bad input, 3 work stopped" in " ".join(
        out.split()
    )


def test_the_parser_reads_options_as_their_types() -> None:
    args = build_parser().parse_args(
        ["work", "--run", "a=m:f", "--run", "m:g", "--concurrency", "8", "--poll", "1m30s", "-v"]
    )
    assert args.run == ["a=m:f", "m:g"]
    assert args.concurrency == 8
    assert args.poll == timedelta(seconds=90)
    assert args.log_level == "debug"
    assert args.db is None
    assert args.config is None


def test_defaults_of_the_commands() -> None:
    parser = build_parser()
    prune = parser.parse_args(["prune", "--older-than", "7d"])
    assert (prune.older_than, prune.batch_size, prune.log_level) == (
        timedelta(days=7),
        1000,
        "warning",
    )
    status = parser.parse_args(["status"])
    assert (status.since, status.until, status.every) == (
        timedelta(hours=1),
        None,
        timedelta(seconds=2),
    )
    web = parser.parse_args(["web"])
    assert (web.host, web.port, web.refresh) == ("127.0.0.1", 8080, timedelta(seconds=5))
    assert (
        parser.parse_args(["schedule", "-c", "w.toml", "--log-level", "DEBUG"]).log_level == "debug"
    )


# -- checks the commands make before connecting ---------------------------------------------


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["prune", "--older-than", "1d", "--db", "DB"], ["--older-than", "at least 2 days"]),
        (
            ["prune", "--older-than", "7d", "--batch-size", "100001", "--db", "DB"],
            ["--batch-size", "1 to 100000"],
        ),
        (
            ["prune", "--older-than", "7d"],
            ["no database given", "--db URL", "WORKSYNC_DATABASE_URL"],
        ),
        (["prune", "--older-than", "7d", "--db", " "], ["--db is empty"]),
        (["prune", "--older-than", "7d", "--db", "not a url"], ["--db is not a SQLAlchemy URL"]),
        (["prune", "--older-than", "7d", "--db", "DB", "--table", "works; drop"], ["--table"]),
        (
            ["status", "--since", "1h", "--until", "2h", "--db", "DB"],
            ["--until", "is not after --since"],
        ),
        (
            ["schedule", "-c", "missing.toml", "--db", "DB"],
            ["missing.toml", "cannot read the config file"],
        ),
        (["work", "--run", "m:f", "--db", "DB"], ["no works to run", "--name"]),
        (["work", "--name", "a", "--run", "not-a-spec", "--db", "DB"], ["is not module:function"]),
        (
            ["work", "--name", "a", "--run", "m:f", "--run", "m:g", "--db", "DB"],
            ["give one function for every work"],
        ),
        (["work", "--run", "=m:f", "--db", "DB"], ["the work name before '=' is empty"]),
        (
            ["work", "--run", "a=m:f", "--run", "a=m:g", "--db", "DB"],
            ["'a' already has a function"],
        ),
        (
            ["work", "--name", "a", "--run", "b=m:f", "--db", "DB"],
            ["'b' is not among the works to run"],
        ),
        (
            ["work", "--name", "a", "--name", "b", "--run", "a=os.path:join", "--db", "DB"],
            ["no function for work 'b'"],
        ),
        (
            ["work", "--run", "a=no_such_module_for_worksync:f", "--db", "DB"],
            ["no module named 'no_such_module_for_worksync'"],
        ),
        (["work", "--run", "a=os.path:nope", "--db", "DB"], ["'os.path' has no attribute 'nope'"]),
        (["work", "--run", "a=os:sep", "--db", "DB"], ["is str, not a function taking a claim"]),
        (["work", "--run", "a=os.path:join", "--db", " "], ["--db is empty"]),
        (["demo", "--seconds", "0"], ["--seconds must be positive"]),
        (["demo", "--workers", "0"], ["--workers at least 1"]),
        (["demo", "--db", "not a url"], ["--db is not a SQLAlchemy URL"]),
        (["demo", "--table", "works; drop"], ["--table"]),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else None,
)
def test_usage_errors_found_before_connecting_are_exit_2(
    args: list[str],
    words: list[str],
    db: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    code, err = run([db if arg == "DB" else arg for arg in args], capsys)
    line = one_line(err)
    assert code == 2, line
    for word in words:
        assert word in line, line
    assert not Path(db.removeprefix("sqlite:///")).exists()
    assert not (tmp_path / "worksync-demo.db").exists()


def test_a_bad_table_in_the_environment_names_the_variable(
    db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WORKSYNC_TABLE", "1works")
    code, err = run(["prune", "--older-than", "7d", "--db", db], capsys)
    assert code == 2
    assert "WORKSYNC_TABLE:" in one_line(err)


def test_a_missing_sqlite_file_is_a_failure_and_is_not_created(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only ``migrate`` may create a database; ``check`` says where it looked (exit 1)."""
    code, err = run(["check", "--db", db], capsys)
    assert code == 1
    assert "does not exist; create it with `worksync migrate`" in one_line(err)
    assert not Path(db.removeprefix("sqlite:///")).exists()


def test_an_unknown_dialect_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(["prune", "--older-than", "7d", "--db", "frobdb://host/db"], capsys)
    assert code == 2
    assert "unknown database dialect or driver 'frobdb'" in one_line(err)


def test_a_password_given_on_the_command_line_is_masked_in_any_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A driver's error may quote the URL it was given; what main prints never does."""

    def echoing(args: argparse.Namespace, secrets: Secrets) -> int:
        database_url(args, None, secrets)  # what every command does first
        raise ConnectionError(f"could not reach {args.db}\n(second line)")

    monkeypatch.setattr(prune_command, "run", echoing)
    url = "postgresql://app:Hunter2-Secret@db.internal/app"
    code, err = run(["prune", "--older-than", "7d", "--db", url], capsys)
    assert code == 1
    line = one_line(err)
    assert "Hunter2-Secret" not in line
    assert "postgresql://app:***@db.internal/app" in line


# -- the option types and helpers -----------------------------------------------------------


def test_durations_read_as_typed() -> None:
    assert duration_arg("90s") == timedelta(seconds=90)
    assert duration_arg("1h30m") == timedelta(hours=1, minutes=30)
    assert duration_arg("7d") == timedelta(days=7)
    with pytest.raises(argparse.ArgumentTypeError):
        duration_arg("ninety seconds")


def test_a_moment_is_a_duration_ago_or_an_instant_naive_meaning_utc() -> None:
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert resolve_moment(moment_arg("2h"), now) == datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    assert moment_arg("2026-01-01T06:00:00Z") == datetime(2026, 1, 1, 6, 0, tzinfo=UTC)
    assert moment_arg("2026-01-01T06:00:00") == datetime(2026, 1, 1, 6, 0, tzinfo=UTC)
    assert moment_arg("2026-01-01T07:00:00+01:00") == datetime(2026, 1, 1, 6, 0, tzinfo=UTC)
    assert resolve_moment(datetime(2026, 1, 1, tzinfo=UTC), now) == datetime(2026, 1, 1, tzinfo=UTC)
    assert resolve_moment(moment_arg("0s"), now) == now  # no time ago: now
    for bad in ("-1s", "soon"):
        with pytest.raises(argparse.ArgumentTypeError):
            moment_arg(bad)
    with pytest.raises(argparse.ArgumentTypeError):
        duration_arg("0s")  # a duration setting (a poll, a drain) must still be positive


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda: SchedulerConfig(lookahead="25h"), "lookahead (1d1h) is over one day"),
        (
            lambda: SchedulerConfig(lookahead="1m", interval="2m"),
            "(1m) is shorter than interval (2m)",
        ),
        (lambda: SchedulerConfig(retention="1d"), "retention (1d) is under 2d"),
        (lambda: Work("w", "@daily", lease="400d"), "got 400d"),
        (lambda: Work("w", "@daily", timeout="400d"), "got 400d"),
        (lambda: SchedulerConfig(interval=timedelta(0)), "interval must be positive, got 0s"),
    ],
)
def test_errors_show_durations_as_they_are_typed(make: Callable[[], object], says: str) -> None:
    """Never as Python writes them: ``datetime.timedelta(seconds=36000)``, ``1 day, 0:00:00``."""
    with pytest.raises(InvalidArgumentError) as caught:
        make()
    message = str(caught.value)
    assert says in message
    assert "timedelta(" not in message
    assert "day," not in message


def test_whole_number_options() -> None:
    assert positive_int("3") == 3
    assert concurrency_arg("1024") == 1024
    for bad in ("0", "-2", "1.5"):
        with pytest.raises(argparse.ArgumentTypeError):
            positive_int(bad)
    for bad in ("0", "1025", "many"):
        with pytest.raises(argparse.ArgumentTypeError):
            concurrency_arg(bad)


def test_run_options_split_into_a_default_and_per_work_functions() -> None:
    runs = Handlers.parse(["a=jobs:one", "jobs:other", "b=c=jobs:two"])
    assert runs.default == "jobs:other"
    assert runs.by_work == {"a": "jobs:one", "b=c": "jobs:two"}  # a name may hold '='
    assert runs.describe() == "a=jobs:one, b=c=jobs:two, others=jobs:other"


def test_one_function_loaded_once_serves_every_work() -> None:
    handlers = Handlers.parse(["os.path:join"]).load(["a", "b"])
    join: object = os.path.join
    assert handlers["a"] is join
    assert handlers["b"] is join


def test_without_a_config_the_works_are_the_names_then_the_run_pairs() -> None:
    assert select_works(None, ["b", "a", "b"]) == ["b", "a"]
    assert select_works(None, None, ["x", "y"]) == ["x", "y"]
    with pytest.raises(UsageError, match="no works to run"):
        select_works(None, None)


def test_the_secrets_mask_every_form_of_a_password() -> None:
    secrets = Secrets()
    secrets.add_url(sa.make_url("postgresql://app:p%40ss%20word@db/app?sslpassword=k3y-s3cret"))
    text = "p@ss word / p%40ss%20word / p%40ss+word / k3y-s3cret"
    assert secrets.mask(text) == "*** / *** / *** / ***"
    assert Secrets().mask("nothing to hide") == "nothing to hide"


def test_only_loopback_hosts_may_serve_without_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    for host in ("127.0.0.1", "localhost", "::1", "[::1]", "127.8.0.1"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "192.168.1.2", "example.com", "localhost.example.com"):
        assert not is_loopback(host), host
    parsed = build_parser().parse_args(["web", "--no-auth"])
    monkeypatch.setenv("WORKSYNC_WEB_TOKEN", "t" * 20)
    with pytest.raises(UsageError, match="contradict"):
        auth_token(parsed)
    assert auth_token(build_parser().parse_args(["web"])) == "t" * 20
    given = build_parser().parse_args(["web", "--auth-token", "g" * 20])
    assert auth_token(given) == "g" * 20  # the option wins over the environment


@pytest.mark.parametrize(
    ("error", "code", "message"),
    [
        (UsageError("bad --poll"), 2, "bad --poll"),
        (InvalidConfigError("w.toml: [worker] poll"), 2, "w.toml: [worker] poll"),
        (sa.exc.ArgumentError("bad engine option"), 2, "bad engine option"),
        (Failure("table 'works' not found"), 1, "table 'works' not found"),
        (SchemaNotReadyError("run the migrations"), 1, "run the migrations"),
        (KeyboardInterrupt(), 1, "interrupted"),
        (SystemExit(4), 1, "stopped by sys.exit(4) in imported code"),
        (ConnectionRefusedError("refused"), 1, "ConnectionRefusedError: refused"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else None,
)
def test_every_failure_maps_to_exit_1_or_2(error: BaseException, code: int, message: str) -> None:
    assert outcome(error) == (code, message)
