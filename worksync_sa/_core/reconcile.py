"""A scheduler's window reconciled: what its works want against what the table holds.

Every pass plans each work's ticks up to the lookahead and compares them
with the rows the table holds for the ticks not yet due, whoever made them:

* a planned tick with fewer slots than its ``max_run`` gets the missing ones
  (``max_run`` was raised, or nobody made the tick yet);
* queued slots at or above ``max_run`` are closed as surplus (it was lowered,
  or another scheduler wants more);
* a tick of the work that the plan does not have (another cron or time zone),
  or a planned tick under another label (another sequence function), has its
  queued slots closed;
* rows another program wrote for a planned tick (the Go original's, with no
  slot and no tick time) are dated and given the work's policy, and count
  against the tick's budget;
* beside the Go original's scheduler (``leave_to_original``), a tick further
  away than that gets all its slots but the last: the original must find one
  row missing, or its create leaves its transaction open.

Settings thus take effect on the next pass for every tick not yet due.
Rows that differ from the plan and carry another scheduler's settings are
reported, naming both: from before this scheduler started, a settings change;
made or changed since, a live disagreement. Due ticks are never touched.
Nothing here reads the database or the clock: ``_core.passes`` does, and writes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ..models import TEXT_MAX
from ..rows import Adoption, Surplus, TickState
from ..work import Work

Plan = list[tuple[Work, list[tuple[str, datetime]]]]
"""Per work (sorted by name), its (sequence, tick) pairs, sorted."""


def spec_of(work: Work, sequence_kind: str) -> str:
    """The settings a scheduler records in each row it makes for ``work``.

    The sequence kind comes first, so retention can match it by prefix; the
    cron's whitespace is normalised, so one expression always reads the same.
    """
    cron = " ".join(work.cron.split())
    if work.cron_syntax != "standard":
        cron = f"{cron} ({work.cron_syntax} syntax)"
    text = (
        f"sequence={sequence_kind}; max_run={work.max_run}; cron={cron}; timezone={work.timezone}"
    )
    return text[:TEXT_MAX]


def spec_fields(spec: str) -> dict[str, str]:
    """A spec's fields by name (``max_run`` -> ``"3"``)."""
    fields = {}
    for part in spec.split("; "):
        key, _, value = part.partition("=")
        fields[key] = value
    return fields


def difference(ours: str, theirs: str | None) -> str:
    """How another spec differs from ours, field by field, for a log line."""
    if theirs is None:
        return "their rows record no settings (made by another program, or before 0.2)"
    mine, other = spec_fields(ours), spec_fields(theirs)
    changed = [
        f"{key} {other.get(key, '?')!r} there, {mine.get(key, '?')!r} here"
        for key in dict.fromkeys([*mine, *other])
        if mine.get(key) != other.get(key)
    ]
    return "; ".join(changed) if changed else "the same settings, but other labels or ticks"


@dataclass(slots=True)
class _Seen:
    """One (name, tick, label) in the table, merged over the specs of its rows."""

    slotted: int = 0
    top_queued: int | None = None
    foreign: int = 0
    specs: dict[str | None, datetime | None] = field(default_factory=dict)

    def add(self, state: TickState) -> None:
        self.slotted += state.slotted
        self.foreign += state.foreign
        if state.top_queued is not None:
            self.top_queued = max(state.top_queued, self.top_queued or 0)
        touched = self.specs.get(state.spec)
        if touched is None or (state.touched is not None and state.touched > touched):
            self.specs[state.spec] = state.touched


@dataclass(frozen=True, slots=True)
class Sighting:
    """Rows of a work, made or changed under other settings, that did not match the plan."""

    name: str
    spec: str | None
    touched: datetime | None


@dataclass
class Reconciliation:
    """What a pass must write to bring its window in line with its works."""

    create: list[tuple[Work, str, datetime]] = field(default_factory=list)
    """Ticks that get their missing slots, in (name, sequence) order."""
    held_back: set[tuple[str, str]] = field(default_factory=set)
    """(name, sequence) of the ticks in ``create`` whose last slot is left to the original."""
    close: list[Surplus] = field(default_factory=list)
    adopt: list[Adoption] = field(default_factory=list)
    sightings: list[Sighting] = field(default_factory=list)


def reconcile(
    plan: Plan,
    specs: dict[str, str],
    after: datetime,
    held: Iterable[TickState],
    waiting: dict[tuple[str, str], int],
    leave: timedelta | None = None,
) -> Reconciliation:
    """Compare ``plan`` with the rows ``held`` for the ticks after ``after`` (not yet due).

    ``specs`` holds each work's own spec; ``waiting`` the undated rows of
    other programs per (name, sequence). Planned ticks at or before ``after``
    (catch-up) are only created, never reconciled. ``leave``: ticks further
    than this after ``after`` that no other program has rows of yet keep
    their last slot free for the Go original's scheduler.
    """
    seen: dict[tuple[str, datetime], dict[str, _Seen]] = {}
    for state in held:
        labels = seen.setdefault((state.name, state.tick_at), {})
        labels.setdefault(state.sequence, _Seen()).add(state)
    result = Reconciliation()
    for work, pairs in plan:
        spec = specs[work.name]
        for sequence, tick in pairs:
            if tick <= after:
                result.create.append((work, sequence, tick))
                continue
            labels = seen.pop((work.name, tick), {})
            here = labels.pop(sequence, None)
            for label, other in labels.items():  # the tick under another label
                if other.top_queued is not None:
                    why = f"surplus: this tick is labelled {sequence!r} now"
                    result.close.append(Surplus(work.name, tick, label, 0, why, spec))
                _sighted(result, work.name, spec, other)
            undated = waiting.pop((work.name, sequence), 0)
            if undated:
                result.adopt.append(_adoption(work, sequence, tick))
            hold = leave is not None and tick - after > leave
            _settle(result, work, spec, sequence, tick, here, undated, hold=hold)
    mine = {work.name: work for work, _ in plan}
    for (name, tick), labels in seen.items():  # ticks the works no longer have
        owner = mine.get(name)
        if owner is None:
            continue  # another scheduler's work: not ours to judge
        for label, other in labels.items():
            if other.top_queued is not None:
                why = f"surplus: not a tick of cron {owner.cron!r} in {owner.timezone} now"
                result.close.append(Surplus(name, tick, label, 0, why, specs[name]))
            _sighted(result, name, specs[name], other)
    return result


def _settle(
    result: Reconciliation,
    work: Work,
    spec: str,
    sequence: str,
    tick: datetime,
    here: _Seen | None,
    undated: int,
    *,
    hold: bool = False,
) -> None:
    """One planned tick: create its missing slots, close its surplus ones.

    ``hold``: leave the last slot to the original, unless it has made rows of
    the tick already (it creates each tick once, so it will not come back).
    """
    foreign = undated + (here.foreign if here is not None else 0)
    budget = max(work.max_run - foreign, 0)  # slots left once other programs' rows count
    target = budget - 1 if hold and not foreign else budget
    if here is None:
        if target > 0:
            result.create.append((work, sequence, tick))
            if target < budget:
                result.held_back.add((work.name, sequence))
        return
    deviates = False
    if here.slotted < target:
        result.create.append((work, sequence, tick))
        if target < budget:
            result.held_back.add((work.name, sequence))
        deviates = True
    if here.top_queued is not None and here.top_queued >= budget:
        why = f"surplus: max_run is {work.max_run} now"
        if foreign:
            why += f", and {foreign} run(s) of it belong to another program's rows"
        result.close.append(Surplus(work.name, tick, sequence, budget, why, spec))
        deviates = True
    if deviates:
        _sighted(result, work.name, spec, here)


def _sighted(result: Reconciliation, name: str, spec: str, seen: _Seen) -> None:
    for other, touched in seen.specs.items():
        if other != spec:
            result.sightings.append(Sighting(name, other, touched))


def late_adoptions(due: Plan, waiting: dict[tuple[str, str], int]) -> list[Adoption]:
    """Other programs' rows of ticks already due, still in their grace, to be dated now.

    ``due`` holds each work's recent ticks, ``waiting`` the undated queued rows
    that ``reconcile`` left (none of a tick not yet due). The Go original adds a
    tick's last row late whenever it falls behind: after a restart, or on every
    tick of a work that ticks as often as it looks. A pass dates only ticks not
    yet due, and our workers claim by tick time, so such a row would wait for
    the original's own workers alone, which may be held up by its own open
    transaction; dated, ours claim it while its grace lasts.
    """
    late: list[Adoption] = []
    for work, pairs in due:
        for sequence, tick in pairs:
            if waiting.pop((work.name, sequence), 0):
                late.append(_adoption(work, sequence, tick))
    return late


def _adoption(work: Work, sequence: str, tick: datetime) -> Adoption:
    """Another program's rows of a tick, to be dated and given the work's policy."""
    policy = (work.lease_seconds, work.grace_seconds, work.max_attempts)
    return Adoption(work.name, sequence, tick, *policy)
