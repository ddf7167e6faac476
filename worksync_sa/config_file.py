"""The TOML config file of the ``worksync`` command: the fleet's master config.

The original worksync is configured in code by its master: where the table
is, how often the scheduler looks and how far ahead, and the works. This
module reads the same facts from one file, so the scheduler and every worker
can share it::

    [database]              # optional; --db and WORKSYNC_DATABASE_URL win over url
    url = "mysql+mysqldb://app@db.internal/app"
    table = "works"         # --table and WORKSYNC_TABLE win

    [scheduler]             # optional, and so is every key (SchedulerConfig)
    lookahead = "10m"       # create a tick's rows once it is at most this far away
    interval = "1m"         # one pass every interval (at most lookahead)
    catchup = "90s"         # after downtime, still create ticks missed by at most this
    retention = "7d"        # also prune rows finished longer ago (at least 2d); unset: never
    max_backoff = "30s"     # longest wait between attempts while the database is away
    sequence_zone = "Europe/Berlin"  # label ticks in this zone's wall time (local_sequence);
                            # unset: UTC labels, the default sequence
    leave_to_original = "5m"  # beside the Go original's scheduler only: leave each tick's
                            # last row to it until the tick is this close

    [worker]                # optional; defaults for `worksync work`, whose options win
    poll = "1s"             # longest wait between looks for due ticks
    max_backoff = "30s"
    concurrency = 4         # claims run at once, each on a thread of its own (default 1)
    drain = "30s"           # on a stop, wait this long for running claims, then record
                            # them FAILED ("shut down")
    timeout = "10m"         # the works' timeout where theirs is not set (default: none)
    max_stuck = 4           # timed-out handlers' threads that may run on; one more and
                            # the worker stops, exit code 4 (default: concurrency)
    isolation = "thread"    # "process": each claim's handler in a child process that a
                            # timeout kills; a process start per claim (default "thread")

    [[works]]               # one table per work; names are unique
    name = "report"         # required
    cron = "0 6 * * *"      # required: 5 fields, 6 (seconds first), @hourly..., @every 5m
    max_run = 1             # claims per tick, fleet-wide
    timezone = "Europe/Berlin"
    lease = "5m"            # how long a claim holds its row without a heartbeat
    grace = "1m"            # how late a tick may still be claimed
    max_attempts = 1        # above 1, a row whose lease ran out is queued again
    cron_syntax = "standard"  # "original": read cron as the Go original does (5 fields:
                            # second minute hour day-of-month month)
    timeout = "30s"         # past it a claim is recorded FAILED ("timed out"); unset: none

Durations are strings in Go's syntax plus days (``90s``, ``1h30m``, ``7d``),
never bare numbers, so a unit is always written down. A relative SQLite path
in ``url`` is relative to the current directory, as everywhere in SQLAlchemy.

Why strict: unknown sections and keys are errors, because a misspelt
``leese = "1h"`` silently leaving the 5-minute default in place is the kind
of mistake nobody finds until a job runs twice. Every error names the file
and the place in it, and nothing here ever echoes the URL: it may hold a
password (better kept out of the file, in ``WORKSYNC_DATABASE_URL``).

Python 3.11+ reads TOML with ``tomllib``; 3.10 needs ``tomli``
(``pip install "worksync_sa[toml]"``).
"""

from __future__ import annotations

import difflib
import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, time, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from ._core.worker import MAX_CONCURRENCY_LIMIT
from .config import SchedulerConfig
from .durations import as_timedelta
from .errors import InvalidConfigError, InvalidWorkError
from .isolation import ISOLATIONS
from .models import validate_table_name
from .sequences import local_sequence
from .work import Work

SECTIONS = ("database", "scheduler", "worker", "works")
DATABASE_KEYS = ("url", "table")
SCHEDULER_DURATIONS = (
    "lookahead",
    "interval",
    "catchup",
    "retention",
    "max_backoff",
    "leave_to_original",
)
SCHEDULER_KEYS = (*SCHEDULER_DURATIONS, "sequence_zone")
WORKER_KEYS = (
    "poll",
    "max_backoff",
    "concurrency",
    "drain",
    "timeout",
    "max_stuck",
    "isolation",
)
WORK_KEYS = (
    "name",
    "cron",
    "max_run",
    "timezone",
    "lease",
    "grace",
    "max_attempts",
    "cron_syntax",
    "timeout",
)
_WORK_DURATIONS = ("lease", "grace", "timeout")
_WORK_FIELDS = tuple(key for key in WORK_KEYS if key not in _WORK_DURATIONS)
URL_FORM = "dialect+driver://user:password@host/database"

TomlLoads = Callable[[str], dict[str, Any]]


def parse_url(text: str, origin: str) -> sa.URL:
    """``text`` as a URL; the ValueError names ``origin`` but never the text, which may
    hold a password."""
    try:
        return sa.make_url(text.strip())
    except (sa.exc.ArgumentError, ValueError):
        raise ValueError(f"{origin} is not a SQLAlchemy URL ({URL_FORM})") from None


class ConfigFileError(InvalidConfigError):
    """The config file cannot be read, or says something unusable.

    The message starts with the file's name and names the section and key.
    """


@dataclass(frozen=True, kw_only=True)
class DatabaseSettings:
    """``[database]``: where the work table is. ``url`` prints with its password masked."""

    url: sa.URL | None = None
    table: str | None = None


@dataclass(frozen=True, kw_only=True)
class WorkerSettings:
    """``[worker]``: defaults for ``worksync work``."""

    poll: timedelta | None = None
    max_backoff: timedelta | None = None
    concurrency: int | None = None
    drain: timedelta | None = None
    timeout: timedelta | None = None
    max_stuck: int | None = None
    isolation: str | None = None


@dataclass(frozen=True, kw_only=True)
class ConfigFile:
    """A parsed config file; every value already validated."""

    source: str
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    works: tuple[Work, ...] = ()


def toml_loads(version: Sequence[int] = sys.version_info[:2]) -> TomlLoads:
    """The TOML parser: ``tomllib`` from 3.11, else ``tomli`` if installed.

    Imported by name at run time so the package needs ``tomli`` only where it
    is used, and type checking does not depend on which one is installed.
    """
    name = "tomllib" if tuple(version) >= (3, 11) else "tomli"
    try:
        module = importlib.import_module(name)
    except ImportError:
        raise ConfigFileError(
            "reading a TOML config file on Python 3.10 needs tomli: "
            "pip install 'worksync_sa[toml]' (or pip install tomli)"
        ) from None
    loads: TomlLoads = module.loads
    return loads


def load_config(path: str | Path) -> ConfigFile:
    """Read and validate a config file; raises :class:`ConfigFileError` naming what is wrong."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigFileError(
            f"{path}: cannot read the config file: {exc.strerror or type(exc).__name__}"
        ) from None
    try:
        text = data.decode("utf-8-sig")  # a byte-order mark, as Windows editors write, is no key
    except UnicodeDecodeError:
        raise ConfigFileError(f"{path}: not UTF-8 text; TOML files are UTF-8") from None
    return parse_config(text, source=str(path))


def parse_config(text: str, *, source: str = "<config>") -> ConfigFile:
    """Parse and validate config text; ``source`` names it in error messages."""
    try:
        loads = toml_loads()
    except ConfigFileError as exc:
        raise ConfigFileError(f"{source}: {exc}") from None
    try:
        document = loads(text)
    except ValueError as exc:  # tomllib.TOMLDecodeError and tomli's are ValueErrors
        raise ConfigFileError(f"{source}: not valid TOML: {exc}") from None
    return _Reader(source).read(document)


def _toml_type(value: object) -> str:
    """What TOML calls a value's type, for messages a config author understands."""
    kinds: tuple[tuple[type | tuple[type, ...], str], ...] = (
        (bool, "a boolean"),
        (int, "an integer"),
        (float, "a float"),
        (str, "a string"),
        (list, "an array"),
        (dict, "a table"),
        ((date, time), "a date or time"),
    )
    for kind, text in kinds:
        if isinstance(value, kind):
            return text
    return type(value).__name__


class _Reader:
    """Validates one document; holds the file's name for every message."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, message: str) -> ConfigFileError:
        return ConfigFileError(f"{self.source}: {message}")

    def read(self, document: Mapping[str, object]) -> ConfigFile:
        unknown = sorted(set(document) - set(SECTIONS))
        if unknown:
            raise self.error(
                f"unknown section {unknown[0]!r}{_hint(unknown[0], SECTIONS)}; the sections "
                "are [database], [scheduler], [worker] and [[works]]"
            )
        return ConfigFile(
            source=self.source,
            database=self.database(self.section(document, "database", DATABASE_KEYS)),
            scheduler=self.scheduler(self.section(document, "scheduler", SCHEDULER_KEYS)),
            worker=self.worker(self.section(document, "worker", WORKER_KEYS)),
            works=self.works(document.get("works", [])),
        )

    def section(
        self, document: Mapping[str, object], name: str, known: Sequence[str]
    ) -> Mapping[str, object]:
        value = document.get(name, {})
        if not isinstance(value, dict):
            raise self.error(f"[{name}] must be a table, not {_toml_type(value)}")
        self.known_keys(value, known, f"[{name}]")
        return value

    def known_keys(self, table: Mapping[str, object], known: Sequence[str], where: str) -> None:
        unknown = sorted(set(table) - set(known))
        if unknown:
            raise self.error(
                f"unknown key {unknown[0]!r} in {where}{_hint(unknown[0], known)}; "
                f"known keys: {', '.join(known)}"
            )

    def duration(self, value: object, key: str, where: str) -> timedelta:
        if not isinstance(value, str):
            raise self.error(
                f"{where} {key} must be a duration string such as '90s', '5m' or '1h30m', "
                f"not {_toml_type(value)}"
            )
        try:
            return as_timedelta(value, key)
        except ValueError as exc:
            raise self.error(f"{where} {exc}") from None

    def durations(
        self, table: Mapping[str, object], keys: Sequence[str], where: str
    ) -> dict[str, timedelta]:
        return {key: self.duration(table[key], key, where) for key in keys if key in table}

    def database(self, table: Mapping[str, object]) -> DatabaseSettings:
        url = table.get("url")
        if url is not None:
            # Never put the value in a message: it may hold a password.
            if not isinstance(url, str) or not url.strip():
                raise self.error("[database] url must be a non-empty string")
            try:
                url = parse_url(url, "[database] url")
            except ValueError as exc:
                raise self.error(str(exc)) from None
        name = table.get("table")
        if name is not None:
            try:
                name = validate_table_name(name)
            except InvalidConfigError as exc:
                raise self.error(f"[database] {exc}") from None
        return DatabaseSettings(url=url, table=name)

    def scheduler(self, table: Mapping[str, object]) -> SchedulerConfig:
        settings: dict[str, Any] = self.durations(table, SCHEDULER_DURATIONS, "[scheduler]")
        zone = table.get("sequence_zone")
        if zone is not None:  # the one sequence function a file can name
            if not isinstance(zone, str):
                raise self.error(
                    f"[scheduler] sequence_zone must be an IANA zone name such as "
                    f"'Europe/Berlin', not {_toml_type(zone)}"
                )
            try:
                settings["sequence"] = local_sequence(zone)
            except InvalidConfigError as exc:
                raise self.error(f"[scheduler] sequence_zone: {exc}") from None
        try:
            return SchedulerConfig(**settings)
        except InvalidConfigError as exc:
            raise self.error(f"[scheduler] {str(exc).removeprefix('SchedulerConfig: ')}") from None

    def worker(self, table: Mapping[str, object]) -> WorkerSettings:
        durations = ("poll", "max_backoff", "drain", "timeout")
        counts: dict[str, Any] = {}
        for key in ("concurrency", "max_stuck"):
            value = table.get(key)
            if value is not None and (
                not isinstance(value, int)
                or isinstance(value, bool)
                or not 1 <= value <= MAX_CONCURRENCY_LIMIT
            ):
                raise self.error(
                    f"[worker] {key} must be an integer from 1 to {MAX_CONCURRENCY_LIMIT}, "
                    f"not {value!r}"
                )
            counts[key] = value
        isolation = table.get("isolation")
        if isolation is not None and isolation not in ISOLATIONS:
            raise self.error(
                f"[worker] isolation must be {' or '.join(map(repr, ISOLATIONS))}, "
                f"not {isolation!r}"
            )
        given: dict[str, Any] = self.durations(table, durations, "[worker]")
        return WorkerSettings(**given, **counts, isolation=isolation)

    def works(self, value: object) -> tuple[Work, ...]:
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            raise self.error("works must be an array of tables: write each work as [[works]]")
        works: list[Work] = []
        seen: dict[str, int] = {}
        for number, item in enumerate(value, start=1):
            work = self.work(item, number)
            if work.name in seen:
                raise self.error(
                    f"[[works]] #{number}: name {work.name!r} is already used by "
                    f"[[works]] #{seen[work.name]}"
                )
            seen[work.name] = number
            works.append(work)
        return tuple(works)

    def work(self, item: Mapping[str, object], number: int) -> Work:
        where = f"[[works]] #{number}"
        name = item.get("name")
        if isinstance(name, str):
            where = f"{where} ({name!r})"
        self.known_keys(item, WORK_KEYS, where)
        for required in ("name", "cron"):
            if required not in item:
                raise self.error(f"{where} is missing {required!r}")
        # Work checks every value's type itself, with messages naming the work and field.
        options: dict[str, Any] = {key: item[key] for key in _WORK_FIELDS if key in item}
        options.update(self.durations(item, _WORK_DURATIONS, where))
        try:
            return Work(**options)
        except InvalidWorkError as exc:  # it already names the work
            raise self.error(f"[[works]] #{number}: {exc}") from None


def _hint(word: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
