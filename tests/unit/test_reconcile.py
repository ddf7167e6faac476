"""What a pass changes in ticks not yet due (``_core.reconcile``), from plan and table alone.

Each test states what the table holds for a tick (as ``TickState`` rows: how
many slots, the highest still queued, other programs' rows) and what the
works now want, and checks the writes decided against the module's rules:
missing slots created, queued surplus closed (never a running slot: only
slots still queued at or above the budget), ticks under another label or
outside the cron closed, other programs' rows adopted and counted, due
ticks never touched.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from worksync_sa._core.reconcile import (
    Plan,
    difference,
    late_adoptions,
    reconcile,
    spec_fields,
    spec_of,
)
from worksync_sa.repository import Adoption, TickState
from worksync_sa.work import Work

UTC = timezone.utc
NOW = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
T1, T2, T3 = (NOW + timedelta(minutes=m) for m in (1, 2, 3))
PAST = NOW - timedelta(minutes=1)


def label(tick: datetime) -> str:
    return tick.strftime("%Y-%m-%d %H:%M:%S")


def job(max_run: int = 2, name: str = "report") -> Work:
    return Work(name, "* * * * *", max_run, lease="2m", grace="30s", max_attempts=3)


def planned(work: Work, *ticks: datetime) -> Plan:
    return [(work, [(label(tick), tick) for tick in ticks])]


def held(
    tick: datetime,
    *,
    slotted: int,
    top_queued: int | None,
    foreign: int = 0,
    name: str = "report",
    sequence: str | None = None,
    spec: str | None = "SPEC",
    touched: datetime | None = None,
) -> TickState:
    return TickState(
        name, tick, sequence or label(tick), spec, slotted, top_queued, foreign, touched
    )


def specs_for(*works: Work) -> dict[str, str]:
    return {work.name: "SPEC" for work in works}


def test_ticks_nobody_made_yet_get_created() -> None:
    work = job()
    result = reconcile(planned(work, T1, T2), specs_for(work), NOW, [], {})
    assert result.create == [(work, label(T1), T1), (work, label(T2), T2)]
    assert result.close == []
    assert result.adopt == []


def test_a_tick_holding_all_its_slots_is_left_alone() -> None:
    work = job(max_run=2)
    result = reconcile(
        planned(work, T1), specs_for(work), NOW, [held(T1, slotted=2, top_queued=1)], {}
    )
    assert result.create == []
    assert result.close == []
    assert result.sightings == []


def test_max_run_raised_gives_the_tick_its_missing_slots() -> None:
    work = job(max_run=3)
    result = reconcile(
        planned(work, T1), specs_for(work), NOW, [held(T1, slotted=1, top_queued=0)], {}
    )
    assert result.create == [(work, label(T1), T1)]
    assert result.close == []


def test_max_run_lowered_closes_the_queued_surplus_slots_from_the_budget_up() -> None:
    work = job(max_run=1)
    result = reconcile(
        planned(work, T1), specs_for(work), NOW, [held(T1, slotted=3, top_queued=2)], {}
    )
    assert result.create == []
    (surplus,) = result.close
    assert (surplus.name, surplus.tick_at, surplus.sequence, surplus.keep) == (
        "report",
        T1,
        label(T1),
        1,  # slot 0 stays; queued slots 1 and up are closed
    )
    assert "max_run is 1" in surplus.reason
    assert surplus.closer == "SPEC"


def test_max_run_lowered_never_closes_a_running_slot() -> None:
    """Slots 1 and 2 run already, and nothing above the budget is still queued."""
    work = job(max_run=1)
    result = reconcile(
        planned(work, T1), specs_for(work), NOW, [held(T1, slotted=3, top_queued=0)], {}
    )
    assert result.close == []
    assert result.create == []


def test_a_tick_whose_slots_all_run_or_finished_is_never_closed() -> None:
    work = job(max_run=1)
    result = reconcile(
        planned(work, T1), specs_for(work), NOW, [held(T1, slotted=2, top_queued=None)], {}
    )
    assert result.close == []


def test_a_tick_under_another_label_has_its_queued_rows_closed_and_is_made_anew() -> None:
    """Another sequence function named the tick otherwise: its rows share no budget."""
    work = job()
    other = held(T1, slotted=2, top_queued=1, sequence="week 9", spec="OTHER")
    result = reconcile(planned(work, T1), specs_for(work), NOW, [other], {})
    (surplus,) = result.close
    assert (surplus.sequence, surplus.keep) == ("week 9", 0)
    assert result.create == [(work, label(T1), T1)]
    assert [s.spec for s in result.sightings] == ["OTHER"]


def test_a_tick_the_cron_no_longer_has_is_closed() -> None:
    work = job()
    stray = T2 + timedelta(seconds=30)  # not on a minute: another cron made it
    result = reconcile(
        planned(work, T1, T2),
        specs_for(work),
        NOW,
        [
            held(T1, slotted=2, top_queued=1),
            held(T2, slotted=2, top_queued=1),
            held(stray, slotted=1, top_queued=0),
        ],
        {},
    )
    (surplus,) = result.close
    assert (surplus.tick_at, surplus.keep) == (stray, 0)
    assert "not a tick of cron '* * * * *'" in surplus.reason


def test_a_stray_tick_already_running_is_not_closed() -> None:
    work = job()
    running = held(T2 + timedelta(seconds=30), slotted=1, top_queued=None)
    result = reconcile(planned(work, T1), specs_for(work), NOW, [running], {})
    assert result.close == []


def test_another_schedulers_works_are_not_ours_to_judge() -> None:
    work = job()
    theirs = held(T1, slotted=5, top_queued=4, name="billing")
    result = reconcile(planned(work, T1), specs_for(work), NOW, [theirs], {})
    assert result.close == []
    assert result.sightings == []
    assert result.create == [(work, label(T1), T1)]


def test_due_ticks_in_the_plan_are_always_created_and_never_looked_up() -> None:
    """Catch-up ticks at or before ``after`` are due: the window holds only later ticks
    (``held`` is read for ``(after, until]``), and the due ones go to the insert, whose
    unique keys keep what exists."""
    work = job(max_run=1)
    result = reconcile(
        planned(work, PAST, NOW, T1),
        specs_for(work),
        NOW,
        [held(T1, slotted=1, top_queued=0)],
        {("report", label(PAST)): 1},  # foreign rows of a due tick are not adopted
    )
    assert result.create == [(work, label(PAST), PAST), (work, label(NOW), NOW)]
    assert result.close == []
    assert result.adopt == []


def test_other_programs_rows_are_adopted_with_the_works_policy_and_use_its_budget() -> None:
    work = job(max_run=2)
    result = reconcile(
        planned(work, T1),
        specs_for(work),
        NOW,
        [held(T1, slotted=1, top_queued=0)],
        {("report", label(T1)): 1},
    )
    assert result.adopt == [Adoption("report", label(T1), T1, 120, 30, 3)]
    assert result.create == []  # one slot plus one foreign row: the budget of 2 is used
    assert result.close == []


def test_beside_the_original_a_far_tick_keeps_its_last_slot_free_for_it() -> None:
    """The original's create leaves its transaction open when it finds a tick complete."""
    work = job(max_run=3)
    leave = timedelta(seconds=90)  # T1 is within it, T2 and T3 beyond
    result = reconcile(planned(work, T1, T2, T3), specs_for(work), NOW, [], {}, leave)
    assert result.create == [(work, label(T1), T1), (work, label(T2), T2), (work, label(T3), T3)]
    assert result.held_back == {("report", label(T2)), ("report", label(T3))}


def test_a_held_back_tick_is_complete_once_the_original_made_its_row() -> None:
    work = job(max_run=3)
    leave = timedelta(seconds=90)
    table = [held(T2, slotted=2, top_queued=1), held(T3, slotted=2, top_queued=1, foreign=1)]
    result = reconcile(planned(work, T2, T3), specs_for(work), NOW, table, {}, leave)
    assert result.create == []  # T2 waits for the original; T3 has its row from it
    assert result.close == []


def test_a_held_back_tick_gets_its_last_slot_once_within_the_lead() -> None:
    work = job(max_run=3)
    table = [held(T1, slotted=2, top_queued=1)]
    result = reconcile(planned(work, T1), specs_for(work), NOW, table, {}, timedelta(seconds=90))
    assert result.create == [(work, label(T1), T1)]
    assert result.held_back == set()


def test_a_single_slot_tick_is_left_wholly_to_the_original_until_the_lead() -> None:
    work = job(max_run=1)
    result = reconcile(planned(work, T2), specs_for(work), NOW, [], {}, timedelta(seconds=90))
    assert result.create == []


def test_foreign_rows_shrink_the_budget_and_the_surplus_reason_says_so() -> None:
    work = job(max_run=2)
    result = reconcile(
        planned(work, T1),
        specs_for(work),
        NOW,
        [held(T1, slotted=2, top_queued=1, foreign=1)],
        {},
    )
    (surplus,) = result.close
    assert surplus.keep == 1
    assert "1 run(s) of it belong to another program's rows" in surplus.reason


def test_a_deviating_tick_made_under_other_settings_is_sighted_once_per_spec() -> None:
    work = job(max_run=1)
    seen = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    state = held(T1, slotted=2, top_queued=1, spec="OLD", touched=seen)
    result = reconcile(planned(work, T1), specs_for(work), NOW, [state], {})
    assert [(s.name, s.spec, s.touched) for s in result.sightings] == [("report", "OLD", seen)]


def test_rows_under_our_own_spec_are_never_a_sighting() -> None:
    work = job(max_run=1)
    state = held(T1, slotted=2, top_queued=1, spec="SPEC")
    result = reconcile(planned(work, T1), specs_for(work), NOW, [state], {})
    assert result.sightings == []
    assert len(result.close) == 1


def test_rows_split_over_two_specs_count_together() -> None:
    work = job(max_run=3)
    states = [
        held(T1, slotted=1, top_queued=0, spec="SPEC"),
        held(T1, slotted=2, top_queued=2, spec="OLD"),
    ]
    result = reconcile(planned(work, T1), specs_for(work), NOW, states, {})
    assert result.create == []
    assert result.close == []


def test_a_spec_records_the_sequence_kind_first_and_the_cron_normalised() -> None:
    work = Work("report", "*/5   *  * * *", 3, "Europe/Berlin")
    assert spec_of(work, "utc") == (
        "sequence=utc; max_run=3; cron=*/5 * * * *; timezone=Europe/Berlin"
    )
    original = Work("report", "0 */5 * * *", cron_syntax="original")
    assert "cron=0 */5 * * * (original syntax)" in spec_of(original, "utc")
    assert len(spec_of(job(), "custom:" + "x" * 400)) == 255


def test_a_specs_fields_read_back_by_name() -> None:
    fields = spec_fields("sequence=utc; max_run=3; cron=* * * * *; timezone=UTC")
    assert fields == {"sequence": "utc", "max_run": "3", "cron": "* * * * *", "timezone": "UTC"}


def test_difference_names_each_changed_field_both_ways() -> None:
    ours = "sequence=utc; max_run=3; cron=* * * * *; timezone=UTC"
    theirs = "sequence=utc; max_run=5; cron=* * * * *; timezone=UTC"
    assert difference(ours, theirs) == "max_run '5' there, '3' here"
    assert "no settings" in difference(ours, None)
    assert difference(ours, ours) == "the same settings, but other labels or ticks"


def test_rows_the_original_added_to_ticks_already_due_are_adopted_late() -> None:
    """Only ticks in the plan of recent ticks, and each once: what is adopted leaves waiting."""
    work, other = job(max_run=2), job(name="other")
    waiting = {
        ("report", label(PAST)): 1,
        ("report", label(PAST - timedelta(hours=1))): 2,  # not among the recent ticks
        ("other", label(PAST)): 1,  # a work whose recent ticks were not planned
    }
    late = late_adoptions(planned(work, PAST - timedelta(minutes=1), PAST), waiting)
    assert late == [Adoption("report", label(PAST), PAST, 120, 30, 3)]
    assert waiting == {
        ("report", label(PAST - timedelta(hours=1))): 2,
        ("other", label(PAST)): 1,
    }
    assert late_adoptions(planned(other), {}) == []
