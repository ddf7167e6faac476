"""What the commands share: the parser, the database options, errors and masking.

Every command but ``demo`` finds its database the same way (``--db``, then
``WORKSYNC_DATABASE_URL``, then the config file's ``[database] url``) and its
table the same way (``--table``, ``WORKSYNC_TABLE``, ``[database] table``,
``works``), so a deploy sets them once for all of them.

Nothing here prints a password: URLs are shown with
``engine.shown_url`` (the password, and any query value whose key mentions
"pass"), and every message, and every log line of a command that sets up
logging here (all but ``demo``), goes through :class:`Secrets`, which masks
the passwords this run was given wherever a driver's error text might echo them.
"""

from __future__ import annotations

import argparse
import codecs
import logging
import os
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import NoReturn, TypeAlias
from urllib.parse import quote, quote_plus

import sqlalchemy as sa

from .._core.outage import Outage
from .._sql.driver_errors import is_disconnect
from .._sql.text import printable
from ..config_file import URL_FORM, ConfigFile, load_config, parse_url
from ..durations import parse_duration
from ..engine import create_engine, is_secret_key, shown_url
from ..errors import InvalidConfigError
from ..models import DEFAULT_TABLE, as_utc, validate_table_name
from ..schema import SchemaState, schema_status
from .stopping import StopSignals

ENV_URL = "WORKSYNC_DATABASE_URL"
ENV_TABLE = "WORKSYNC_TABLE"
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


# A string: argparse._SubParsersAction is generic only to type checkers.
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


class UsageError(Exception):
    """Bad input the user can fix (exit 2); the message names the option or file."""


class Failure(Exception):
    """A runtime failure we can explain in our own words (exit 1)."""


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line, ``worksync: ...``, exit 2, with no usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"worksync: {message} (see `{self.prog} --help`)\n")


class Secrets:
    """The passwords this run was given, and the masking of any text that may echo them.

    A driver's error text could quote the URL it was given; masking the
    password itself (and its URL-encoded forms) wherever it appears is the
    one rule that holds whatever the driver writes.
    """

    MASK = "***"

    def __init__(self) -> None:
        self._words: set[str] = set()

    def add_url(self, url: sa.URL) -> None:
        """Remember ``url``'s passwords: before the ``@``, and in the query string."""
        passwords = [str(url.password)] if url.password else []
        for key, value in url.query.items():
            if is_secret_key(key):
                passwords += [value] if isinstance(value, str) else list(value)
        for password in filter(None, passwords):
            self._words.update({password, quote(password, safe=""), quote_plus(password)})

    def mask(self, text: str) -> str:
        """``text`` with every known password replaced by ``***``."""
        for word in sorted(self._words, key=len, reverse=True):
            text = text.replace(word, self.MASK)
        return text


class MaskingFormatter(logging.Formatter):
    """Formats log records, then masks passwords: the library logs driver messages.

    The message itself has its control characters escaped (a work name holding
    a newline must not forge a second log line); a traceback keeps its lines.
    """

    def __init__(self, secrets: Secrets, fmt: str) -> None:
        super().__init__(fmt)
        self.secrets = secrets
        # Escaping loads this codec's module on first use: a line logged while the process
        # is out of file descriptors (an accept storm) could not open it.
        codecs.lookup("unicode_escape")

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = printable(record.message)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        return self.secrets.mask(super().format(record))


def setup_logging(level: str, secrets: Secrets) -> None:
    """Log to stderr at ``level``, every line masked."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(MaskingFormatter(secrets, LOG_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # Alembic loads on first use (schema.py), after this: its start-up notes are not ours.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


def add_logging_options(parser: argparse.ArgumentParser, default: str) -> None:
    """``--log-level`` and its ``-v`` shortcut."""
    group = parser.add_argument_group("logging (to stderr)")
    group.add_argument(
        "--log-level",
        type=str.lower,
        choices=LOG_LEVELS,
        default=default,
        help=f"least severe level logged (default {default})",
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="store_const",
        const="debug",
        dest="log_level",
        help="same as --log-level debug",
    )


def add_database_options(
    parser: argparse.ArgumentParser, *, config: str | None, config_required: bool = False
) -> None:
    """``--db``, ``--table`` and, if ``config`` (its help text) is given, ``--config``."""
    group = parser.add_argument_group("database")
    group.add_argument(
        "--db",
        metavar="URL",
        help=f"SQLAlchemy URL ({URL_FORM}); default: ${ENV_URL}"
        + (", then [database] url of --config" if config else ""),
    )
    group.add_argument(
        "--table",
        metavar="NAME",
        help=f"work table; default: ${ENV_TABLE}"
        + (", then [database] table of --config" if config else "")
        + f", then {DEFAULT_TABLE}",
    )
    if config is not None:
        group.add_argument(
            "-c", "--config", metavar="FILE", required=config_required, default=None, help=config
        )


def duration_arg(text: str) -> timedelta:
    """argparse type: a Go duration such as ``90s``, ``1h30m`` or ``7d``."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


Moment = timedelta | datetime
"""A point in time as given: that long ago (relative to each refresh), or an instant."""


def moment_arg(text: str) -> Moment:
    """argparse type: a duration ago (``1h``, ``7d``; ``0s`` is now) or an ISO 8601 date-time
    (naive is UTC)."""
    try:
        return parse_duration(text, zero=True)
    except ValueError:
        pass
    spec = text.strip()
    if spec.endswith(("Z", "z")):  # Python 3.10's fromisoformat does not read "Z"
        spec = f"{spec[:-1]}+00:00"
    try:
        return as_utc(datetime.fromisoformat(spec))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a duration ago ('30m', '1h', '7d') nor an ISO 8601 "
            "date-time ('2026-01-01T06:00:00Z')"
        ) from None


def resolve_moment(moment: Moment, now: datetime) -> datetime:
    """The instant a :data:`Moment` stands for at ``now``."""
    return now - moment if isinstance(moment, timedelta) else moment


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return value


def read_config(path: str | None) -> ConfigFile | None:
    """The config file named by ``--config``, or None (errors name the file: exit 2)."""
    return None if path is None else load_config(path)


def database_url(args: argparse.Namespace, config: ConfigFile | None, secrets: Secrets) -> sa.URL:
    """The database to use: ``--db``, then the environment, then the config file."""
    given: str | None = args.db
    if given is not None and not given.strip():
        raise UsageError("--db is empty; pass a SQLAlchemy URL such as sqlite:///works.db")
    for text, origin in ((given, "--db"), (os.environ.get(ENV_URL), ENV_URL)):
        if text and text.strip():
            try:
                url = parse_url(text, origin)
            except ValueError as exc:
                raise UsageError(str(exc)) from None
            secrets.add_url(url)
            return url
    if config is not None and config.database.url is not None:
        secrets.add_url(config.database.url)
        return config.database.url
    if "config" in args:
        raise UsageError(
            f"no database given: pass --db URL, set {ENV_URL}, or set url in the [database] "
            "section of the --config file"
        )
    raise UsageError(f"no database given: pass --db URL or set {ENV_URL}")


def table_name(args: argparse.Namespace, config: ConfigFile | None) -> str:
    """The work table: ``--table``, ``WORKSYNC_TABLE``, the config file, or ``works``."""
    candidates = (
        (args.table, "--table"),
        (os.environ.get(ENV_TABLE) or None, ENV_TABLE),
        (config.database.table if config is not None else None, "[database] table"),
    )
    for value, origin in candidates:
        if value is not None:
            try:
                return validate_table_name(value)
            except InvalidConfigError as exc:
                raise UsageError(f"{origin}: {exc}") from None
    return DEFAULT_TABLE


def shown(url: sa.URL) -> str:
    """The URL as it may be printed: every password masked (see ``engine.shown_url``)."""
    return shown_url(url)


def open_engine(url: sa.URL, *, must_exist: bool = True) -> sa.Engine:
    """An engine with worksync_sa's defaults.

    With ``must_exist``, a SQLite file that is not there is an error rather
    than a new empty database: only ``migrate`` should create one.
    """
    if must_exist and url.get_backend_name() == "sqlite":
        database = url.database or ""
        in_memory = database in ("", ":memory:") or database.startswith("file:")
        if not in_memory and not Path(database).exists():
            raise Failure(
                f"SQLite database {database} does not exist; create it with `worksync migrate`"
            )
    try:
        return create_engine(url)
    except sa.exc.NoSuchModuleError:
        raise UsageError(
            f"unknown database dialect or driver {url.drivername!r} in the URL"
        ) from None
    except ImportError as exc:
        raise Failure(
            f"the driver for {url.drivername!r} is not installed ({exc}); install "
            "worksync_sa[mysql] or worksync_sa[postgresql]"
        ) from None


def require_table(engine: sa.Engine, table: str) -> None:
    """Fail with the fix in the message when the work table does not exist.

    The readers (``status``, ``web``) need only the table; the schedulers and
    workers need it at the revision this release writes (:func:`require_ready_table`).
    """
    with engine.connect() as conn:
        exists = sa.inspect(conn).has_table(table)
    if not exists:
        raise Failure(
            f"table {table!r} not found on {shown(engine.url)}: create it with "
            "`worksync migrate` (same --db and --table)"
        )


def require_ready_table(engine: sa.Engine, table: str) -> None:
    """Fail with the fix in the message unless the work table is ready for this release.

    Long-running commands check once at start: their loops would otherwise
    treat a missing table, or one behind the revision this release needs, as
    an outage and retry it forever, while docs/upgrading.md promises exit 1. A
    table ahead of this release's head (a newer release of the same major
    version migrated it) is ready: migrations only add within a major version.
    """
    status = schema_status(engine, table=table)
    if status.ready:
        return
    where = f"table {table!r} on {shown(engine.url)}"
    if status.state is SchemaState.MISSING:
        raise Failure(
            f"table {table!r} not found on {shown(engine.url)}: create it with "
            "`worksync migrate` (same --db and --table)"
        )
    if status.state is SchemaState.BEHIND:
        raise Failure(
            f"{where} is at revision {', '.join(status.current)}, behind {status.head}, which "
            "this release needs: run `worksync migrate` (same --db and --table), then start again"
        )
    raise Failure(f"{status.problem()} (on {shown(engine.url)})")


def wait_for_table(
    engine: sa.Engine, table: str, stop: StopSignals, log: logging.Logger, max_backoff: float
) -> bool:
    """:func:`require_ready_table` for a long-running command: an unreachable database is an outage.

    While the server cannot be reached (down, restarting, not yet up in a
    deploy), log once, back off with jitter up to ``max_backoff`` seconds, and
    look again; a stop signal meanwhile returns False. A reachable database
    without the table, or with the table behind this release, or one that
    refuses us (a wrong password), fails at once: waiting would not fix it.
    """
    outage = Outage(log, f"database {shown(engine.url)}", cap=max_backoff)
    while True:
        try:
            require_ready_table(engine, table)
        except sa.exc.DBAPIError as exc:
            if not is_disconnect(exc):
                raise
            if stop.wait(outage.failed(exc)):
                return False
            continue
        outage.succeeded()
        return True


def describe_error(exc: BaseException) -> str:
    """One line about an unexpected error: the driver's own message, never a SQL dump."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None:
        cause: BaseException = exc.orig
        outer, inner = type(exc).__name__, type(cause).__name__
        prefix = outer if outer == inner else f"{outer} ({inner})"
    else:
        cause, prefix = exc, type(exc).__name__
    text = " ".join(str(cause).split("\n")[0].split())
    return f"{prefix}: {text}" if text else prefix
