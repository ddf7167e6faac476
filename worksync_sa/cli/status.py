"""``worksync status``: the per-tick ledger as a table, once or live.

Two blocks of tick lines (see :mod:`worksync_sa.ledger` for what each figure
means), each starting nearest now, then one line per work:

* **last**: the ticks whose time has come, by the *database's* clock (the
  clock due claims go by): tick time at or before it, whatever became of
  them: queued still (within grace, or not recovered yet), running,
  succeeded, failed, recovered or missed. The latest first. ``--last N``
  keeps the latest N of them: what just happened.
* **next**: the ticks planned in the range whose time has not come, the
  soonest first; :data:`NEXT_LINES` of them at most (``--last N``: at most N).
  A tick another program's worker claimed early, by a clock ahead of the
  database's, is still shown here until its time comes.
* **summary**, per work, computed by the database over every tick of the
  range whose time has come (not only the lines shown): ``due`` counts those
  ticks, ``ahead`` the planned ticks not due yet, and the other figures
  (claims, outcomes, success rate, start lag p50 and p95, missed) cover the
  due ticks alone, so they add up over the "last" block's lines when it
  shows them all. A few rows however long the range (see
  :meth:`~worksync_sa.Ledger.summary`).

The range is ``[--since, --until)`` in UTC, each a duration ago (``1h``) or an
ISO date-time. It defaults to the last hour and everything after it, which
includes the upcoming ticks whose rows already exist. With ``--watch``,
relative bounds move with the clock on every refresh, and each refresh reads
the database's clock again.

With ``--config``, its ``[scheduler] sequence_zone`` dates the Go original's
undated rows (their labels are wall times in that zone, see
:class:`~worksync_sa.Ledger`), and when it lists works the summary gains a
``cron`` column: the cron the work's rows in the range record, else the
config's (the original's rows record none).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from .._core.reconcile import spec_fields, spec_of
from .._sql.text import printable
from ..config_file import ConfigFile
from ..durations import format_duration
from ..ledger import PAGE_LIMIT, Ledger, TickEntry, WorkSummary
from ..models import table_named
from ..repository import LedgerRepository
from ..sequences import default_sequence, kind_zone, sequence_kind
from ..work import Work
from .options import (
    Commands,
    Moment,
    Secrets,
    UsageError,
    add_database_options,
    add_logging_options,
    database_url,
    describe_error,
    duration_arg,
    moment_arg,
    open_engine,
    positive_int,
    read_config,
    require_table,
    resolve_moment,
    setup_logging,
    shown,
    table_name,
)
from .stopping import StopSignals
from .text import format_moment, format_table, plural

DEFAULT_SINCE = timedelta(hours=1)
DEFAULT_EVERY = timedelta(seconds=2)
CLEAR_SCREEN = "\x1b[H\x1b[2J"
NEXT_LINES = 5
"""Most upcoming ticks shown (fewer with a smaller ``--last``): the next runs, not the plan."""
JUST_AFTER = timedelta(microseconds=1)
"""A tick at the database's clock has come (as a due claim takes it): the range ends after it."""
ERROR_WIDTH = 60
"""Longest error text shown in a tick line; the table keeps the whole text."""

TICK_HEADERS = (
    "tick (UTC)",
    "work",
    "max_run",
    "created",
    "queued",
    "running",
    "succeeded",
    "failed",
    "recovered",
    "missed",
    "lag",
)
SUMMARY_HEADERS = (
    "work",
    "due",
    "ahead",
    "claimed",
    "succeeded",
    "failed",
    "recovered",
    "missed",
    "success",
    "lag p50",
    "lag p95",
)


def register(commands: Commands) -> None:
    """Add ``status``."""
    parser = commands.add_parser(
        "status",
        help="print the per-tick ledger and a per-work summary (--watch to refresh)",
        description="Print one line per tick (created, queued, running, succeeded, failed, "
        "recovered, missed, start lag): the ticks whose time has come by the database's "
        "clock, latest first, then the next few planned; and a per-work summary of the due "
        "ticks (due, ahead, success rate, lag p50 and p95, missed). Times are UTC.",
    )
    add_database_options(
        parser,
        config="config file whose [database] section names the table; its [scheduler] "
        "sequence_zone dates the Go original's labels, its works give the summary a cron column",
    )
    parser.add_argument("--name", metavar="NAME", help="only this work")
    parser.add_argument(
        "--since",
        metavar="WHEN",
        type=moment_arg,
        default=DEFAULT_SINCE,
        help="first tick: a duration ago (30m, 1h, 7d) or an ISO date-time, UTC unless it "
        "has an offset (default 1h)",
    )
    parser.add_argument(
        "--until",
        metavar="WHEN",
        type=moment_arg,
        help="ticks before this (default: no end, upcoming ticks included)",
    )
    parser.add_argument(
        "--last",
        metavar="N",
        type=positive_int,
        help="show only the last N ticks whose time has come (database clock), latest "
        "first, and at most N of the next ones (the summary still covers the whole range)",
    )
    parser.add_argument(
        "--watch", action="store_true", help="clear the screen and refresh until Ctrl-C"
    )
    parser.add_argument(
        "--every",
        metavar="DURATION",
        type=duration_arg,
        default=DEFAULT_EVERY,
        help="refresh period with --watch (default 2s)",
    )
    add_logging_options(parser, default="warning")
    parser.set_defaults(runner=run)


def _now() -> datetime:
    return datetime.now(timezone.utc)


_NO_END = datetime(9000, 1, 1, tzinfo=timezone.utc)


def sequence_zone(config: ConfigFile | None) -> str | None:
    """The zone of the config's ``[scheduler] sequence_zone``, or None (UTC labels)."""
    if config is None:
        return None
    return kind_zone(sequence_kind(config.scheduler.sequence))


def cron_text(spec: str | None) -> str | None:
    """A ``spec``'s cron, with its zone when that is not UTC; None if it records none."""
    fields = spec_fields(spec) if spec else {}
    cron = fields.get("cron") or None
    zone = fields.get("timezone") or "UTC"
    if cron is None:
        return None
    return cron if zone == "UTC" else f"{cron} ({zone})"


class Crons:
    """Each work's cron for the summary: what its rows record, else what the config says."""

    def __init__(self, engine: sa.Engine, table: str, works: Iterable[Work]) -> None:
        self._engine = engine
        self._reads = LedgerRepository(table_named(table))
        self._known = {work.name: cron_text(spec_of(work, "utc")) for work in works}

    def __bool__(self) -> bool:
        return bool(self._known)

    def read(self, name: str | None, since: datetime, until: datetime | None) -> dict[str, str]:
        """Work name -> cron text, for the works whose rows in the range, or config, name one."""
        params: dict[str, object] = {"since": since, "until": until or _NO_END}
        if name is not None:
            params["work_name"] = name
        latest: dict[str, tuple[datetime, str]] = {}
        with self._engine.connect() as conn:
            for row in self._reads.settings(conn, params):
                seen = latest.get(row.name)
                if seen is None or (row.latest, row.spec) > seen:
                    latest[row.name] = (row.latest, row.spec)
        crons = {work: cron_text(spec) for work, (_, spec) in latest.items()}
        for work, cron in self._known.items():
            if crons.get(work) is None:
                crons[work] = cron
        return {work: cron for work, cron in crons.items() if cron is not None}


class View:
    """What to show, resolved against the clock at each refresh."""

    def __init__(self, args: argparse.Namespace, table: str, where: str) -> None:
        self.name: str | None = args.name
        self.since: Moment = args.since
        self.until: Moment | None = args.until
        self.last: int | None = args.last
        self.table = table
        self.where = where
        self.bounds(_now().replace(microsecond=0))  # an empty range by construction: exit 2

    def bounds(self, now: datetime) -> tuple[datetime, datetime | None]:
        since = resolve_moment(self.since, now)
        until = None if self.until is None else resolve_moment(self.until, now)
        if until is not None and until <= since:
            raise UsageError(
                f"--until ({format_moment(until)} UTC) is not after --since "
                f"({format_moment(since)} UTC)"
            )
        return since, until

    def render(self, ledger: Ledger, now: datetime, crons: Crons | None = None) -> list[str]:
        since, until = self.bounds(now.replace(microsecond=0))  # whole seconds read better
        clock = ledger.clock()
        come = min(max(clock + JUST_AFTER, since), until or _NO_END)
        summaries = ledger.summary(name=self.name, since=since, until=come)
        latest = self._latest(ledger, since, come)
        next_lines = NEXT_LINES if self.last is None else min(self.last, NEXT_LINES)
        planned: list[WorkSummary] = []
        upcoming: list[TickEntry] = []
        if until is None or come < until:
            planned = ledger.summary(name=self.name, since=come, until=until)
            upcoming = ledger.page(
                name=self.name, since=come, until=until, limit=next_lines
            ).entries
        works = f"work {printable(repr(self.name))}" if self.name is not None else "every work"
        span = f"from {format_moment(since)} to {format_moment(until) if until else 'the end'}"
        if not latest and not upcoming:
            return [f"no ticks of {works} in table {self.table!r} on {self.where} {span} (UTC)"]
        due = sum(summary.ticks for summary in summaries)
        ahead = {summary.name: summary.ticks for summary in planned}
        at = format_moment(clock.replace(microsecond=0))
        lines = [f"ticks of {works} in table {self.table!r} on {self.where}, {span} (UTC)", ""]
        if latest:
            shown_last = "" if len(latest) == due else f"the last {len(latest)} of "
            lines.append(
                f"{shown_last}{plural(due, 'tick')} whose time has come by the database clock "
                f"({at} UTC), latest first:"
            )
            lines += tick_table(latest)
        else:
            lines.append(f"no tick whose time has come by the database clock ({at} UTC)")
        if upcoming:
            lines += [
                "",
                f"next {len(upcoming)} of {plural(sum(ahead.values()), 'tick')} planned ahead, "
                "soonest first:",
                *tick_table(upcoming),
            ]
        lines.append("")
        by_work = {s.name: s for s in summaries}
        for work in ahead.keys() - by_work.keys():  # only planned ticks yet
            by_work[work] = WorkSummary(work, 0, 0, 0, 0, 0, 0, None, None)
        rows = {work: _summary_row(by_work[work], ahead.get(work, 0)) for work in sorted(by_work)}
        if not crons:
            return lines + format_table(SUMMARY_HEADERS, list(rows.values()), right=range(1, 11))
        known = crons.read(self.name, since, until)
        with_cron = [
            [row[0], printable(known.get(work, "-")), *row[1:]] for work, row in rows.items()
        ]
        headers = (SUMMARY_HEADERS[0], "cron", *SUMMARY_HEADERS[1:])
        return lines + format_table(headers, with_cron, right=range(2, 12))

    def _latest(self, ledger: Ledger, since: datetime, come: datetime) -> list[TickEntry]:
        """The ticks in [since, come) latest first: all of them, or the last ``--last``."""
        if come <= since:
            return []
        size = PAGE_LIMIT if self.last is None else min(self.last, PAGE_LIMIT)
        entries = ledger.entries(
            name=self.name, since=since, until=come, page_size=size, latest_first=True
        )
        return list(entries if self.last is None else itertools.islice(entries, self.last))


def tick_table(entries: list[TickEntry]) -> list[str]:
    """One line per tick. A ``sequence`` column appears when some tick's label is not its
    UTC time (a custom sequence, or rows of another program), an ``error`` column when some
    run failed. Text read from the table is escaped: a name could hold terminal controls."""
    labelled = any(entry.sequence != default_sequence(entry.tick_at) for entry in entries)
    failed = any(entry.error for entry in entries)
    headers = [*TICK_HEADERS[:2], *(["sequence"] if labelled else []), *TICK_HEADERS[2:]]
    figures_at = len(headers) - len(TICK_HEADERS) + 2
    if failed:
        headers.append("error")
    rows = []
    for entry in entries:
        row = [format_moment(entry.tick_at), printable(entry.name)]
        if labelled:
            row.append(printable(entry.sequence))
        row += map(str, (
            entry.max_run, entry.created, entry.queued, entry.running, entry.succeeded,
            entry.failed, entry.recovered, entry.missed,
        ))  # fmt: skip
        row.append(format_duration(entry.lag))
        if failed:
            row.append(_shortened(printable(entry.error or "")))
        rows.append(row)
    return format_table(headers, rows, right=range(figures_at, figures_at + 9))


def _shortened(text: str, width: int = ERROR_WIDTH) -> str:
    return text if len(text) <= width else f"{text[: width - 3]}..."


def _summary_row(summary: WorkSummary, ahead: int) -> list[str]:
    """A work's summary line: its due ticks' figures, and how many are planned ahead."""
    rate = summary.success_rate
    figures = (
        summary.ticks,
        ahead,
        summary.claimed,
        summary.succeeded,
        summary.failed,
        summary.recovered,
        summary.missed,
    )
    return [
        printable(summary.name),
        *map(str, figures),
        "-" if rate is None else f"{rate:.1%}",
        format_duration(summary.lag_p50),
        format_duration(summary.lag_p95),
    ]


def run(args: argparse.Namespace, secrets: Secrets) -> int:
    """Print the ledger once, or refresh it until SIGINT/SIGTERM with ``--watch``."""
    setup_logging(args.log_level, secrets)
    config = read_config(args.config)
    url = database_url(args, config, secrets)
    table = table_name(args, config)
    view = View(args, table, shown(url))
    engine = open_engine(url)
    ledger = Ledger(engine, table=table, sequence_zone=sequence_zone(config))
    crons = Crons(engine, table, config.works if config is not None else ())
    try:
        require_table(engine, table)
        if not args.watch:
            print("\n".join(view.render(ledger, _now(), crons)))
            return 0
        return _watch(view, ledger, args.every, secrets, crons)
    finally:
        ledger.close()
        engine.dispose()


def _watch(
    view: View, ledger: Ledger, every: timedelta, secrets: Secrets, crons: Crons | None = None
) -> int:
    """Refresh until a stop signal; a database error after the first frame is shown, not fatal."""
    tty = sys.stdout.isatty()
    first = True
    with StopSignals() as stop:
        while True:
            now = _now()
            try:
                lines = view.render(ledger, now, crons)
            except (sa.exc.SQLAlchemyError, OSError) as exc:
                if first:
                    raise
                lines = [f"worksync: {secrets.mask(describe_error(exc))} (retrying)"]
            first = False
            footer = (
                f"refreshed {format_moment(now.replace(microsecond=0))} UTC, every "
                f"{format_duration(every)}; Ctrl-C to stop"
            )
            frame = "\n".join([*lines, "", footer])
            sys.stdout.write(f"{CLEAR_SCREEN}{frame}\n" if tty else f"{frame}\n\n")
            sys.stdout.flush()
            if stop.wait(every.total_seconds()):
                return 0
