"""Every work the table knows, and whether its schedule is still kept: pure, no I/O, no clock.

The page's range shows what ticked lately; a daily work, or one whose
scheduler stopped, has no tick there and would vanish from view exactly
when someone needs to see it. So the page also lists every work the table
knows (``_sql.page.work_facts``), with its last tick and its next, and
flags a work **stale** by one rule, :func:`stale_reason`, which takes the
facts and nothing else: a state that should exempt a work (a pause) is one
more fact, checked first.

The rule, in words (the page's tooltip and ``docs/guides/monitoring.md``
say the same, from :data:`STALE_RULE`):

* a tick of the work is still queued past its due time plus its grace: no
  worker claimed it, and no recovery closed it as missed, so nothing that
  runs the work's rows is running; or
* its cron had a tick after the latest one the table holds, and that tick
  is past its due time plus grace without a row: no scheduler created it,
  though a scheduler creates each tick ahead of time (``lookahead``), so
  the work has no upcoming tick while its cron says it should.

Both wait out the work's grace (``grace_seconds`` of its latest row, 60 s
when the row records none) so a scheduler or worker a moment late is not
flagged. A work whose rows record no cron (the Go original's) is judged by
the first rule alone, unless the page was given its ``Work``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..cron import Schedule, schedule_of
from ..models import DEFAULT_GRACE_SECONDS
from . import texts

STALE_RULE = (
    "Stale: a tick is still queued past its due time plus the work's grace (no worker "
    "claimed it), or the cron had a tick after the latest one the table holds and no "
    "scheduler created it by its due time plus grace (no upcoming tick where the cron "
    "says there should be one)."
)
"""The rule as the page's tooltip states it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkFacts:
    """What the table says about one work's schedule at one instant."""

    name: str
    cron: str | None
    """The cron its latest row records (or the page's ``Work`` of that name), None if neither."""
    timezone: str | None
    grace: timedelta
    latest_tick: datetime | None
    """Its latest dated tick, upcoming ones included: how far its scheduler has reached."""
    oldest_queued: datetime | None
    """Its earliest tick at or before now that still has a queued row."""
    paused: bool = False
    """Exempt from the rule (a pause, when the table can say so); nothing sets it yet."""

    @classmethod
    def grace_of(cls, seconds: int | None) -> timedelta:
        """A row's ``grace_seconds``; NULL (another program's row) is the default 60 s."""
        return timedelta(seconds=DEFAULT_GRACE_SECONDS if seconds is None else seconds)


def expected_tick(facts: WorkFacts) -> datetime | None:
    """The first tick the cron has after the latest one the table holds, if the cron is known."""
    if facts.cron is None or facts.latest_tick is None:
        return None
    schedule = _schedule(facts.cron, facts.timezone)
    if schedule is None:
        return None
    return next(schedule.ticks(facts.latest_tick, facts.latest_tick + timedelta(days=400)), None)


def stale_reason(facts: WorkFacts, now: datetime) -> str | None:
    """Why the work's schedule is not being kept at ``now``, or None if it is (or is exempt)."""
    if facts.paused:
        return None
    grace = facts.grace
    if facts.oldest_queued is not None and facts.oldest_queued + grace < now:
        return (
            f"its tick of {texts.moment(facts.oldest_queued)} UTC is still queued, past its grace "
            f"({texts.duration(grace)}): no worker claimed it"
        )
    expected = expected_tick(facts)
    if expected is not None and expected + grace < now:
        return (
            f"its cron had a tick at {texts.moment(expected)} UTC and no scheduler created it: "
            "no upcoming tick"
        )
    return None


def cron_syntax(spec_cron: str | None) -> tuple[str | None, str]:
    """A spec's ``cron`` field as (expression, syntax): ``*/5 * * * * (quartz syntax)``."""
    if spec_cron is None:
        return None, "standard"
    text = spec_cron.strip()
    if text.endswith(" syntax)") and " (" in text:
        expression, _, syntax = text[: -len(" syntax)")].rpartition(" (")
        return expression, syntax
    return text, "standard"


def _schedule(cron: str, zone_name: str | None) -> Schedule | None:
    expression, syntax = cron_syntax(cron)
    if expression is None:
        return None
    try:
        zone = ZoneInfo(zone_name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return None
    found = schedule_of(expression, zone, syntax)
    return None if isinstance(found, str) else found
