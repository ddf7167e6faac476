"""The config file: every key read, every mistake named with its file and place."""

from __future__ import annotations

import sys
import types
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from worksync_sa import InvalidConfigError, SchedulerConfig, Work, config_file, local_sequence
from worksync_sa.config_file import ConfigFileError, load_config, parse_config, toml_loads

S = timedelta(seconds=1)


def documented_example() -> str:
    """The example in the module's docstring: the documentation must stay valid."""
    doc = config_file.__doc__ or ""
    block = doc.split("::", 1)[1].split("\nDurations are", 1)[0]
    return "\n".join(line.removeprefix("    ") for line in block.splitlines())


def test_the_documented_example_reads_as_documented() -> None:
    config = parse_config(documented_example(), source="example.toml")
    assert config.source == "example.toml"
    assert config.database.url is not None
    assert config.database.url.render_as_string() == "mysql+mysqldb://app@db.internal/app"
    assert config.database.table == "works"
    assert config.scheduler == SchedulerConfig(
        lookahead=10 * 60 * S,
        interval=60 * S,
        catchup=90 * S,
        retention=timedelta(days=7),
        max_backoff=30 * S,
        sequence=local_sequence("Europe/Berlin"),
        leave_to_original=5 * 60 * S,
    )
    assert config.scheduler.sequence(datetime(2026, 1, 1, 5, tzinfo=timezone.utc)) == (
        "2026-01-01 06:00:00"  # Berlin's wall time, as the Go original labels it there
    )
    assert config.worker.poll == S
    assert config.worker.max_backoff == 30 * S
    assert config.worker.concurrency == 4
    assert config.worker.drain == 30 * S
    assert config.worker.timeout == 600 * S
    assert config.worker.max_stuck == 4
    assert config.worker.isolation == "thread"
    assert config.works == (
        Work(
            "report",
            "0 6 * * *",
            max_run=1,
            timezone="Europe/Berlin",
            lease=300 * S,
            grace=60 * S,
            max_attempts=1,
            timeout=30 * S,
        ),
    )


def test_every_section_is_optional_and_defaults_are_the_librarys() -> None:
    empty = parse_config("")
    assert empty.works == ()
    assert empty.scheduler == SchedulerConfig()
    assert (empty.database.url, empty.database.table) == (None, None)
    assert (empty.worker.poll, empty.worker.max_backoff) == (None, None)
    assert empty.worker.isolation is None
    one = parse_config('[[works]]\nname = "a"\ncron = "@every 5s"\n')
    assert one.works == (Work("a", "@every 5s"),)


def test_works_keep_their_order_and_take_6_field_crons_and_days() -> None:
    config = parse_config(
        """
        [scheduler]
        interval = "@every 2s"
        lookahead = "1h30m"
        retention = "2d"

        [[works]]
        name = "b"
        cron = "0,30 * * * * *"
        max_run = 3

        [[works]]
        name = "a"
        cron = "@hourly"
        lease = "1h"
        max_attempts = 2
        """
    )
    assert [w.name for w in config.works] == ["b", "a"]
    assert config.works[0].max_run == 3
    assert config.works[1].lease == timedelta(hours=1)
    assert config.works[1].max_attempts == 2
    assert config.scheduler.interval == 2 * S
    assert config.scheduler.retention == timedelta(days=2)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[shceduler]\n", ["unknown section 'shceduler'", "did you mean 'scheduler'"]),
        ('url = "sqlite://"\n', ["unknown section 'url'", "[database]"]),
        ('[database]\nuri = "sqlite://"\n', ["unknown key 'uri'", "[database]"]),
        ('[scheduler]\nlookahed = "5m"\n', ["unknown key 'lookahed'", "[scheduler]"]),
        ('[scheduler]\nsequence = "x"\n', ["unknown key 'sequence'", "[scheduler]"]),
        ('[worker]\npol = "1s"\n', ["unknown key 'pol'", "[worker]"]),
        (
            '[[works]]\nname = "a"\ncron = "@every 1s"\nleese = "1h"\n',
            ["unknown key 'leese'", "[[works]] #1 ('a')", "did you mean 'lease'"],
        ),
    ],
)
def test_unknown_keys_are_errors_naming_key_and_section(text: str, words: list[str]) -> None:
    with pytest.raises(ConfigFileError) as caught:
        parse_config(text, source="works.toml")
    message = str(caught.value)
    assert message.startswith("works.toml: ")
    for word in words:
        assert word in message


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("scheduler = 5\n", ["[scheduler] must be a table", "an integer"]),
        ("[scheduler]\ninterval = 60\n", ["[scheduler] interval", "duration string", "integer"]),
        ('[scheduler]\ninterval = "soon"\n', ["[scheduler] interval", "'soon'"]),
        ('[scheduler]\ninterval = "0s"\n', ["[scheduler] interval", "positive"]),
        ('[scheduler]\ninterval = "5m"\nlookahead = "1m"\n', ["[scheduler]", "shorter"]),
        ('[scheduler]\nretention = "1d"\n', ["[scheduler] retention (1d)", "under 2d"]),
        ("[scheduler]\nsequence_zone = 1\n", ["[scheduler] sequence_zone", "integer"]),
        ('[scheduler]\nsequence_zone = "Mars/Base"\n', ["sequence_zone", "not a known IANA"]),
        ('[worker]\npoll = "fast"\n', ["[worker] poll", "'fast'"]),
        ('[worker]\ntimeout = "0s"\n', ["[worker] timeout", "positive"]),
        ("[worker]\nmax_stuck = 0\n", ["[worker] max_stuck", "from 1 to 1024", "0"]),
        ('[worker]\nisolation = "fork"\n', ["[worker] isolation", "'thread' or 'process'", "fork"]),
        ('[[works]]\nname = "a"\ncron = "@every 1s"\ntimeout = 30\n', ["timeout", "integer"]),
        ('[[works]]\nname = "a"\ncron = "@every 1s"\ntimeout = "x"\n', ["'a'", "timeout"]),
        ("[database]\nurl = 5\n", ["[database] url must be a non-empty string"]),
        ('[database]\nurl = ""\n', ["[database] url must be a non-empty string"]),
        ('[database]\ntable = "x;y"\n', ["[database]", "table name 'x;y'"]),
        ('[works]\nname = "a"\n', ["array of tables", "[[works]]"]),
        ('[[works]]\ncron = "@every 1s"\n', ["[[works]] #1", "missing 'name'"]),
        ('[[works]]\nname = "a"\n', ["[[works]] #1 ('a')", "missing 'cron'"]),
        ('[[works]]\nname = "a"\ncron = "61 * * * *"\n', ["[[works]] #1", "'a'", "cron"]),
        ('[[works]]\nname = "a"\ncron = "@every 1s"\nmax_run = 0\n', ["'a'", "max_run"]),
        ('[[works]]\nname = "a"\ncron = "@every 1s"\nmax_run = "2"\n', ["'a'", "max_run"]),
        ('[[works]]\nname = "a"\ncron = "@every 1s"\ntimezone = "Mars/Base"\n', ["timezone"]),
        ('[[works]]\nname = "a"\ncron = "@every 1s"\nlease = 30\n', ["lease", "integer"]),
        ('[[works]]\nname = "a"\ncron = "@every 1s"\ngrace = "1.5s"\n', ["grace", "whole"]),
        ('[[works]]\nname = 7\ncron = "@every 1s"\n', ["[[works]] #1", "name"]),
        (
            '[[works]]\nname = "a"\ncron = "@every 1s"\n[[works]]\nname = "a"\ncron = "@daily"\n',
            ["[[works]] #2", "'a' is already used by [[works]] #1"],
        ),
        ("x = = 1\n", ["not valid TOML", "line 1"]),
    ],
)
def test_bad_values_name_the_file_and_the_place(text: str, words: list[str]) -> None:
    with pytest.raises(ConfigFileError) as caught:
        parse_config(text, source="works.toml")
    message = str(caught.value)
    assert message.startswith("works.toml: ")
    assert "\n" not in message
    for word in words:
        assert word in message, message


def test_errors_are_the_librarys_kinds() -> None:
    with pytest.raises(ValueError, match="unknown"):
        parse_config("[nope]\n")
    assert issubclass(ConfigFileError, InvalidConfigError)


def test_a_password_in_the_url_never_shows() -> None:
    config = parse_config('[database]\nurl = "mysql+mysqldb://app:hunter2@db/app"\n')
    assert config.database.url is not None
    assert config.database.url.password == "hunter2"
    assert "hunter2" not in repr(config)
    with pytest.raises(ConfigFileError) as caught:
        parse_config('[database]\nurl = "mysql//app:hunter2@db/app"\n')
    assert "hunter2" not in str(caught.value)
    assert "not a SQLAlchemy URL" in str(caught.value)


def test_files_are_read_as_utf8_and_missing_ones_are_named(tmp_path: Path) -> None:
    path = tmp_path / "works.toml"
    path.write_text('[[works]]\nname = "rapport-é"\ncron = "@daily"\n', encoding="utf-8")
    assert load_config(path).works[0].name == "rapport-é"
    assert load_config(path).source == str(path)
    with pytest.raises(ConfigFileError, match=r"nope\.toml: cannot read"):
        load_config(tmp_path / "nope.toml")
    path.write_bytes(b"\xff\xfe[scheduler]\n")
    with pytest.raises(ConfigFileError, match="not UTF-8"):
        load_config(path)


def test_a_byte_order_mark_is_not_part_of_the_first_key(tmp_path: Path) -> None:
    """Windows editors (Notepad) start UTF-8 files with one; tomllib read it as a key."""
    path = tmp_path / "works.toml"
    path.write_bytes('[[works]]\nname = "rapport-é"\ncron = "@daily"\n'.encode("utf-8-sig"))
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    assert load_config(path).works[0].name == "rapport-é"


def test_python_310_needs_tomli(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tomli", None)  # as if not installed
    with pytest.raises(ConfigFileError, match=r"tomli.*worksync_sa\[toml\]"):
        toml_loads((3, 10))
    fake = types.ModuleType("tomli")
    fake.loads = lambda text: {"from": "tomli"}  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tomli", fake)
    assert toml_loads((3, 10))("") == {"from": "tomli"}
    if sys.version_info >= (3, 11):
        import tomllib

        assert toml_loads((3, 11)) is tomllib.loads


def test_a_work_may_read_its_cron_as_the_go_original_does() -> None:
    config = parse_config(
        '[[works]]\nname = "carried"\ncron = "0 30 6 * *"\ncron_syntax = "original"\n'
    )
    (work,) = config.works
    assert work.cron_syntax == "original"
    tick = work.next_tick(datetime(2026, 1, 1, tzinfo=timezone.utc))
    assert tick == datetime(2026, 1, 1, 6, 30, tzinfo=timezone.utc)  # second 0, minute 30, hour 6
    with pytest.raises(ConfigFileError) as caught:
        parse_config('[[works]]\nname = "a"\ncron = "* * * * *"\ncron_syntax = "go"\n')
    assert "[[works]] #1" in str(caught.value)
    assert "cron_syntax" in str(caught.value)
