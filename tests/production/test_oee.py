"""OEE and the six big losses: hand-computed examples and properties."""

from __future__ import annotations

from datetime import date
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from karkhana.assets.template import MachineState
from karkhana.production.calendar import planned_windows, shift_on
from karkhana.production.datafiles import load_calendars
from karkhana.production.model import CountBucket, Interval, Losses
from karkhana.production.oee import OeeParams, combine, compute

M = 60_000
PARAMS = OeeParams(micro_stop_ms=2 * M, startup_ms=10 * M)


def test_a_shift_with_a_break_inside_a_stop() -> None:
    planned = [(0, 60 * M), (90 * M, 120 * M)]  # a break from minute 60 to 90
    intervals = [
        Interval(0, 30 * M, "running"),
        Interval(30 * M, 31 * M, "stopped"),  # 1 min: a small stop
        Interval(31 * M, 50 * M, "running"),
        Interval(50 * M, 70 * M, "fault"),  # 10 min of it fall in planned time
        Interval(70 * M, 95 * M, "idle", "changeover", "setup"),  # 5 min planned
        Interval(95 * M, 120 * M, "running"),
    ]
    counts = [
        CountBucket(5 * M, 1000, 10),  # startup after the shift began
        CountBucket(40 * M, 1000, 30),
        CountBucket(75 * M, 500, 0),  # produced in the break: not counted
        CountBucket(96 * M, 1000, 20),  # startup after the changeover
    ]
    r = compute(intervals, planned, counts, 1.0, 0, 120 * M, quality_measured=True, params=PARAMS)
    assert r.planned_ms == 90 * M
    assert r.run_ms == 75 * M  # 74 min running + 1 min small stop
    assert r.total_count == 3000 and r.good_count == 2940
    assert r.losses == Losses(
        breakdowns_ms=10 * M,
        setup_ms=5 * M,
        small_stops_ms=1 * M,
        reduced_speed_ms=24 * M,  # 74 min running, 50 min ideal for 3000 units of 1 s
        startup_rejects=30,
        production_rejects=30,
    )
    assert r.availability == pytest.approx(75 / 90)
    assert r.performance == pytest.approx(50 / 75)
    assert r.quality == pytest.approx(0.98)
    assert r.oee == pytest.approx(75 / 90 * 50 / 75 * 0.98)


def test_a_partial_shift_counts_only_its_own_time() -> None:
    intervals = [Interval(0, 8 * 60 * M, "running")]
    r = compute(intervals, [(0, 8 * 60 * M)], [], 1.0, 0, 60 * M, quality_measured=False)
    assert (r.planned_ms, r.run_ms, r.availability) == (60 * M, 60 * M, 1.0)
    assert r.performance == 0.0 and r.quality == 1.0 and not r.quality_measured


def test_a_stop_across_a_shift_boundary_is_split_but_classified_whole() -> None:
    planned = [(0, 120 * M)]
    intervals = [
        Interval(0, 55 * M, "running"),
        Interval(55 * M, 65 * M, "stopped"),  # 10 min across the boundary at 60
        Interval(65 * M, 119 * M, "running"),
        Interval(119 * M, 120 * M + M // 2, "stopped"),  # 1.5 min across the end at 120
    ]
    first = compute(intervals, planned, [], 1.0, 0, 60 * M, quality_measured=False, params=PARAMS)
    second = compute(
        intervals, planned, [], 1.0, 60 * M, 120 * M, quality_measured=False, params=PARAMS
    )
    assert first.losses.breakdowns_ms == second.losses.breakdowns_ms == 5 * M
    assert second.losses.small_stops_ms == 1 * M  # a small stop although cut short by the end
    whole = compute(intervals, planned, [], 1.0, 0, 120 * M, quality_measured=False, params=PARAMS)
    assert combine([first, second], 0, 120 * M).losses == whole.losses


def test_missing_data_is_downtime() -> None:
    planned = [(0, 60 * M)]
    intervals = [
        Interval(0, 20 * M, "running"),  # nothing stored from 20 to 40
        Interval(40 * M, 41 * M, "no_data"),  # short silences are not small stops
        Interval(41 * M, 60 * M, "running"),
    ]
    r = compute(intervals, planned, [], None, 0, 60 * M, quality_measured=False, params=PARAMS)
    assert r.run_ms == 39 * M and r.losses.breakdowns_ms == 21 * M
    assert r.performance is None and r.oee is None  # no ideal cycle time
    assert r.availability == pytest.approx(39 / 60)


def test_a_machine_with_no_plan() -> None:
    r = compute(
        [Interval(0, 60 * M, "running")],
        [],
        [CountBucket(0, 10)],
        1.0,
        0,
        60 * M,
        quality_measured=False,
    )
    assert r.planned_ms == 0 and r.availability is None and r.oee is None
    assert r.total_count == 0  # output outside planned time is not counted


def test_planned_maintenance_leaves_planned_time() -> None:
    intervals = [
        Interval(0, 20 * M, "running"),
        Interval(20 * M, 50 * M, "stopped", "planned_maintenance", "planned"),
        Interval(50 * M, 60 * M, "running"),
    ]
    r = compute(intervals, [(0, 60 * M)], [], 1.0, 0, 60 * M, quality_measured=False)
    assert r.planned_ms == 30 * M and r.availability == 1.0
    assert r.losses.breakdowns_ms == 0


def test_combining_machines_weights_by_time() -> None:
    a = compute(
        [Interval(0, 60 * M, "running")],
        [(0, 60 * M)],
        [CountBucket(0, 1800)],
        1.0,
        0,
        60 * M,
        quality_measured=False,
    )
    b = compute(
        [Interval(0, 30 * M, "running")],
        [(0, 60 * M)],
        [CountBucket(0, 1800)],
        1.0,
        0,
        60 * M,
        quality_measured=False,
    )
    line = combine([a, b], 0, 60 * M)
    assert line.availability == pytest.approx(90 / 120)
    assert line.performance == pytest.approx(60 / 90)
    assert line.total_count == 3600


# -- properties ------------------------------------------------------------------------------
STATES: list[MachineState] = ["running", "running", "idle", "stopped", "fault", "no_data"]
PKT = ZoneInfo("Asia/Karachi")
CAL = load_calendars()["default"]


@st.composite
def machine_day(draw: st.DrawFn) -> tuple[list[Interval], list[CountBucket], int, int]:
    """A day of a machine: minute-aligned states, output never faster than the ideal rate."""
    day = date(2026, 6, draw(st.sampled_from([3, 5, 6])))  # Wednesday, Friday, Saturday
    a, c = shift_on(CAL, PKT, day, "A"), shift_on(CAL, PKT, day, "C")
    assert a is not None and c is not None
    start, end = a.start_ms, c.end_ms
    t = start - draw(st.integers(0, 30)) * M
    intervals: list[Interval] = []
    counts: list[CountBucket] = []
    while t < end:
        length = draw(st.sampled_from([150, 60, 15, 5, 3, 2, 1, 1])) * M  # shrinks to long
        state = draw(st.sampled_from(STATES))
        loss = draw(st.sampled_from([None, None, "setup", "planned"]))
        intervals.append(Interval(t, t + length, state, None, loss if state != "running" else None))
        if state == "running":
            total = draw(st.integers(0, 120))  # ideal 0.5 s: at most 120 a minute
            rejects = draw(st.integers(0, total))
            counts += [CountBucket(minute, total, rejects) for minute in range(t, t + length, M)]
        t += length
    return intervals, counts, start, end


@settings(max_examples=50, deadline=None)
@given(machine_day())
def test_factors_stay_within_zero_and_one(
    case: tuple[list[Interval], list[CountBucket], int, int],
) -> None:
    intervals, counts, start, end = case
    r = compute(
        intervals,
        planned_windows(CAL, PKT, start, end),
        counts,
        0.5,
        start,
        end,
        quality_measured=True,
        params=PARAMS,
    )
    for factor in (r.availability, r.performance, r.quality, r.oee):
        assert factor is None or 0.0 <= factor <= 1.0
    assert r.run_ms + r.losses.breakdowns_ms + r.losses.setup_ms == r.planned_ms
    assert r.good_count <= r.total_count


@settings(max_examples=50, deadline=None)
@given(machine_day())
def test_shifts_add_up_to_the_day(case: tuple[list[Interval], list[CountBucket], int, int]) -> None:
    intervals, counts, start, end = case
    planned = planned_windows(CAL, PKT, start - 86_400_000, end + 86_400_000)
    whole = compute(
        intervals, planned, counts, 0.5, start, end, quality_measured=True, params=PARAMS
    )
    day = date.fromtimestamp(start / 1000 + 5 * 3600)
    parts = []
    for shift in "ABC":
        w = shift_on(CAL, PKT, day, shift)
        assert w is not None
        parts.append(
            compute(
                intervals,
                planned,
                counts,
                0.5,
                w.start_ms,
                w.end_ms,
                quality_measured=True,
                params=PARAMS,
            )
        )
    summed = combine(parts, start, end)
    assert summed.losses == whole.losses
    assert (summed.planned_ms, summed.run_ms) == (whole.planned_ms, whole.run_ms)
    assert summed.total_count == whole.total_count and summed.good_count == whole.good_count
