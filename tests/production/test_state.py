"""Machine state from signals: rules, stream to intervals, silence, planned stops."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from karkhana.assets.template import Condition, StateRule, load_templates
from karkhana.production.model import Interval
from karkhana.production.state import StateTracker, classify, derive, holds, overlay_plan

LOOM = load_templates()["power_loom"].state_rules
SPEED = (
    StateRule("fault", (Condition("fault", "==", True),)),
    StateRule("running", (Condition("picks_per_min", ">", 20),)),
    StateRule("idle", (Condition("picks_per_min", "<=", 20), Condition("powered", "==", True))),
)
S = 1000
TIMEOUT = 120 * S


def test_rules_in_order_first_match_wins() -> None:
    assert classify(LOOM, {"state": "running", "fault": False}) == "running"
    assert classify(LOOM, {"state": "running", "fault": True}) == "fault"
    assert classify(SPEED, {"picks_per_min": 450.0}) == "running"
    assert classify(SPEED, {"picks_per_min": 3.0, "powered": 1.0}) == "idle"
    # seen, but no rule matches: stopped
    assert classify(SPEED, {"picks_per_min": 3.0, "powered": 0.0}) == "stopped"
    assert classify(SPEED, {}) == "stopped"


def test_stored_booleans_compare_by_truth() -> None:
    fault = Condition("fault", "==", True)
    assert holds(fault, 1.0) and holds(fault, True) and not holds(fault, 0.0)
    assert not holds(fault, None)
    assert not holds(Condition("picks_per_min", ">", 20), "fast")


def test_stream_to_intervals() -> None:
    samples = [
        (0, "state", "running"),
        (5 * S, "state", "running"),
        (10 * S, "state", "stopped"),
        (70 * S, "state", "running"),
        (100 * S, "state", "running"),
    ]
    assert derive(LOOM, samples, TIMEOUT, 130 * S) == [
        Interval(0, 10 * S, "running"),
        Interval(10 * S, 70 * S, "stopped"),
        Interval(70 * S, 130 * S, "running"),
    ]


def test_fault_bit_and_state_in_one_message() -> None:
    samples = [
        (0, "state", "running"),
        (0, "fault", False),
        (10 * S, "fault", True),
        (10 * S, "state", "fault"),
        (40 * S, "fault", False),
        (40 * S, "state", "running"),
    ]
    assert derive(LOOM, samples, TIMEOUT, 60 * S) == [
        Interval(0, 10 * S, "running"),
        Interval(10 * S, 40 * S, "fault"),
        Interval(40 * S, 60 * S, "running"),
    ]


def test_same_instant_in_two_messages_leaves_no_zero_length_interval() -> None:
    t = StateTracker(LOOM, TIMEOUT)
    out = t.feed(0, {"state": "running"})
    out += t.feed(10 * S, {"state": "stopped"})
    out += t.feed(10 * S, {"state": "running"})  # corrected in a second message, same stamp
    out += t.feed(20 * S, {"state": "running"})
    assert out == []
    assert (t.state, t.since_ms) == ("running", 0)


def test_silence_is_no_data_from_the_last_sample() -> None:
    samples = [(0, "state", "running"), (30 * S, "state", "running"), (400 * S, "state", "running")]
    assert derive(LOOM, samples, TIMEOUT, 500 * S) == [
        Interval(0, 30 * S, "running"),
        Interval(30 * S, 400 * S, "no_data"),
        Interval(400 * S, 500 * S, "running"),
    ]
    t = StateTracker(LOOM, TIMEOUT)
    t.feed(0, {"state": "idle"})
    assert t.silence(100 * S) == []  # not yet past the timeout
    assert t.silence(121 * S) == []  # the idle reading lasted no time: no_data from it on
    assert (t.state, t.since_ms) == ("no_data", 0)
    assert t.feed(200 * S, {"state": "running"}) == []
    assert t.feed(205 * S, {"state": "running"}) == [Interval(0, 200 * S, "no_data")]


def test_out_of_order_samples_are_ignored_by_the_tracker() -> None:
    t = StateTracker(LOOM, TIMEOUT)
    t.feed(10 * S, {"state": "running"})
    assert t.feed(5 * S, {"state": "stopped"}) == []
    assert t.state == "running"


def test_seed_values_start_the_first_interval_at_the_range() -> None:
    assert derive(LOOM, [(10 * S, "fault", False)], TIMEOUT, 20 * S, {"state": "idle"}) == [
        Interval(10 * S, 20 * S, "idle")
    ]


def test_planned_stops_overlay_everything_but_running() -> None:
    intervals = [
        Interval(0, 100, "stopped", "mechanical.warp_break"),
        Interval(100, 200, "running"),
        Interval(200, 300, "no_data"),
    ]
    planned = [(50, 150), (250, 400)]
    assert overlay_plan(intervals, planned) == [
        Interval(0, 50, "planned_stop"),
        Interval(50, 100, "stopped", "mechanical.warp_break"),
        Interval(100, 200, "running"),  # ran outside the plan: still running
        Interval(200, 250, "planned_stop"),
        Interval(250, 300, "no_data"),
    ]


@given(
    st.lists(
        st.tuples(
            st.integers(0, 400),  # seconds since the previous sample (0: same instant)
            st.sampled_from(["running", "idle", "stopped", "fault"]),
            st.booleans(),
        ),
        min_size=1,
        max_size=60,
    )
)
def test_intervals_tile_time_without_gaps_or_repeats(
    steps: list[tuple[int, str, bool]],
) -> None:
    samples = []
    t = 0
    for gap, state, fault in steps:
        t += gap * S
        samples += [(t, "state", state), (t, "fault", fault)]
    end = t + 1
    out = derive(LOOM, samples, TIMEOUT, end)
    assert out[0].start_ms == samples[0][0] and out[-1].end_ms == end
    for a, b in pairwise(out):
        assert a.end_ms == b.start_ms and a.state != b.state
    assert all(iv.end_ms > iv.start_ms for iv in out)
    # the last sample decides the last state
    last_state, last_fault = steps[-1][1], steps[-1][2]
    assert out[-1].state == ("fault" if last_fault else last_state)


@given(
    st.lists(
        st.tuples(st.integers(0, 400), st.sampled_from(["running", "idle", "stopped"])),
        min_size=1,
        max_size=40,
    )
)
def test_live_tracking_with_silence_checks_equals_deriving_afterwards(
    steps: list[tuple[int, str]],
) -> None:
    """The service ticks (silence) between samples; a rebuild derives at once: same result."""
    samples, t = [], 0
    for gap, state in steps:
        t += gap * S
        samples.append((t, "state", state))
    end = t + 1
    tracker = StateTracker(LOOM, TIMEOUT)
    live: list[Interval] = []
    for ts, _, state in samples:
        live += tracker.silence(ts - 1)
        live += tracker.feed(ts, {"state": state})
    live += tracker.silence(end) + tracker.flush()
    assert tracker.state is not None
    live.append(Interval(tracker.since_ms, end, tracker.state))
    assert [iv for iv in live if iv.end_ms > iv.start_ms] == derive(LOOM, samples, TIMEOUT, end)
