from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from karkhana.alarms.engine import (
    AlarmEvent,
    BoundRule,
    RuleSet,
    RuleState,
    Source,
    Tick,
    alarm_id,
    bind,
    evaluate,
    event_from_json,
    event_to_json,
)
from karkhana.alarms.model import parse_rule
from karkhana.core.model import Sample

T0 = 1_764_000_000_000  # a Monday, 16:00 UTC (21:00 in Karachi)
SIGNALS = {
    "bearing_temp_c": Source("loom-3", "bearing_temp_c", "°C"),
    "motor_current_a": Source("loom-3", "motor_current_a", "A"),
    "state": Source("loom-3", "state"),
}


def rule(condition: dict[str, Any], **extra: Any) -> BoundRule:
    body = {"id": "r1", "name": "test", "machine_id": "L3", "condition": condition, **extra}
    bound = bind(parse_rule(body), "L3", SIGNALS, timezone="Asia/Karachi")
    assert bound is not None
    return bound


def hot(value: float = 70, deadband: float = 0) -> dict[str, Any]:
    return {
        "type": "threshold",
        "signal": "bearing_temp_c",
        "op": ">",
        "value": value,
        "deadband": deadband,
    }


def run(
    r: BoundRule, points: list[tuple[int, Any]], key: str = "bearing_temp_c"
) -> list[AlarmEvent]:
    state: RuleState | None = None
    events: list[AlarmEvent] = []
    for ts, value in points:
        item = Tick(ts) if value is None else Sample("loom-3", key, ts, value)
        state, found = evaluate(r, state, item)
        events.extend(found)
    return events


def test_threshold_raises_once_and_clears_below_the_deadband() -> None:
    r = rule(hot(70, 2))
    events = run(r, [(T0, 60.0), (T0 + 1000, 72.0), (T0 + 2000, 75.0), (T0 + 3000, 69.0),
                     (T0 + 4000, 67.9)])  # fmt: skip
    assert [(e.kind, e.ts) for e in events] == [("raised", T0 + 1000), ("cleared", T0 + 4000)]
    raised = events[0]
    assert (raised.value, raised.limit, raised.unit, raised.message) == (72.0, 70.0, "°C", "above")
    assert raised.id == alarm_id("r1", "L3", T0 + 1000) == events[1].id


def test_other_devices_and_keys_are_ignored() -> None:
    r = rule(hot())
    state, events = evaluate(r, None, Sample("loom-4", "bearing_temp_c", T0, 99.0))
    assert events == () and not state.leaves[0].active
    state, events = evaluate(r, state, Sample("loom-3", "picks_per_min", T0, 99.0))
    assert events == ()


def test_duration_needs_the_condition_for_the_whole_time() -> None:
    r = rule(hot(), for_s=10)
    events = run(r, [(T0, 71.0), (T0 + 5000, 72.0), (T0 + 6000, 60.0), (T0 + 7000, 71.0),
                     (T0 + 16_000, 71.0), (T0 + 17_000, 71.5)])  # fmt: skip
    assert [(e.kind, e.ts) for e in events] == [("raised", T0 + 17_000)]
    # time alone (a tick) raises it too
    events = run(r, [(T0, 71.0), (T0 + 10_000, None)])
    assert [e.kind for e in events] == ["raised"]


def test_rate_of_change_per_minute() -> None:
    r = rule({"type": "rate", "signal": "bearing_temp_c", "op": ">", "value": 2, "window_s": 60})
    events = run(r, [(T0, 50.0), (T0 + 30_000, 60.0), (T0 + 60_000, 51.0), (T0 + 120_000, 55.0)])
    assert [(e.kind, e.ts) for e in events] == [("raised", T0 + 120_000)]
    assert events[0].value == 4.0 and events[0].unit == "°C/min"


def test_deviation_from_a_rolling_baseline() -> None:
    r = rule({"type": "deviation", "signal": "bearing_temp_c", "window_s": 600, "max_dev": 5,
              "min_samples": 5})  # fmt: skip
    steady = [(T0 + i * 10_000, 60.0 + (i % 2) * 0.5) for i in range(30)]
    assert run(r, steady) == []
    events = run(r, [*steady, (T0 + 400_000, 70.0), (T0 + 410_000, 60.2)])
    assert [e.kind for e in events] == ["raised", "cleared"]
    assert events[0].message == "deviation" and 65 < (events[0].limit or 0) < 66


def test_deviation_in_standard_deviations() -> None:
    r = rule({"type": "deviation", "signal": "bearing_temp_c", "window_s": 600, "sigma": 4})
    noisy = [(T0 + i * 10_000, 60.0 + (-1) ** i) for i in range(40)]
    assert run(r, noisy) == []
    assert [e.kind for e in run(r, [*noisy, (T0 + 500_000, 75.0)])] == ["raised"]


def test_stale_signal_raises_on_a_tick_and_clears_with_data() -> None:
    r = rule({"type": "stale", "signal": "bearing_temp_c", "after_s": 60})
    events = run(r, [(T0, 60.0), (T0 + 30_000, None), (T0 + 61_000, None), (T0 + 70_000, 61.0)])
    assert [(e.kind, e.ts) for e in events] == [("raised", T0 + 61_000), ("cleared", T0 + 70_000)]
    assert events[0].message == "stale" and events[0].unit == "s"
    # a signal that never reported is stale from the rule's first evaluation
    assert [e.kind for e in run(r, [(T0, None), (T0 + 60_000, None)])] == ["raised"]


def test_machine_in_fault_for_more_than_n_minutes() -> None:
    r = rule({"type": "state", "in": ["fault"]}, for_s=600)
    events = run(
        r,
        [
            (T0, "running"),
            (T0 + 1000, "fault"),
            (T0 + 300_000, "fault"),
            (T0 + 601_000, None),
            (T0 + 700_000, "running"),
        ],
        key="state",
    )
    assert [(e.kind, e.ts) for e in events] == [("raised", T0 + 601_000), ("cleared", T0 + 700_000)]
    assert events[0].value == "fault" and events[0].limit == 10 and events[0].unit == "min"


def test_and_or_combinations() -> None:
    both = rule({"type": "all", "conditions": [hot(), {"type": "threshold",
                 "signal": "motor_current_a", "op": ">", "value": 10}]})  # fmt: skip
    state, ev = evaluate(both, None, Sample("loom-3", "bearing_temp_c", T0, 75.0))
    assert ev == ()
    state, ev = evaluate(both, state, Sample("loom-3", "motor_current_a", T0 + 1, 12.0))
    assert [e.kind for e in ev] == ["raised"] and ev[0].signal == "bearing_temp_c"
    either = rule({"type": "any", "conditions": [hot(), {"type": "state", "in": ["fault"]}]})
    state, ev = evaluate(either, None, Sample("loom-3", "state", T0, "fault"))
    assert [(e.kind, e.signal) for e in ev] == [("raised", "state")]
    state, ev = evaluate(either, state, Sample("loom-3", "bearing_temp_c", T0 + 1, 80.0))
    assert ev == ()
    state, ev = evaluate(either, state, Sample("loom-3", "state", T0 + 2, "running"))
    assert ev == ()  # still hot
    state, ev = evaluate(either, state, Sample("loom-3", "bearing_temp_c", T0 + 3, 60.0))
    assert [e.kind for e in ev] == ["cleared"]


def test_active_time_windows_follow_the_site_clock() -> None:
    # T0 is Monday 21:00 in Karachi: outside a day-shift window, inside a night window
    day = rule(hot(), windows=[{"days": ["mon", "tue"], "start": "06:00", "end": "18:00"}])
    assert run(day, [(T0, 80.0)]) == []
    night = rule(hot(), windows=[{"days": ["mon"], "start": "20:00", "end": "02:00"}])
    assert [e.kind for e in run(night, [(T0, 80.0)])] == ["raised"]
    # 01:00 on Tuesday still belongs to Monday's night window; 03:00 does not
    assert [e.kind for e in run(night, [(T0 + 4 * 3_600_000, 80.0)])] == ["raised"]
    assert run(night, [(T0 + 6 * 3_600_000, 80.0)]) == []


def test_out_of_order_samples_do_not_move_a_signal_back() -> None:
    r = rule(hot())
    events = run(r, [(T0 + 5000, 80.0), (T0 + 1000, 20.0)])
    assert [e.kind for e in events] == ["raised"]


def test_rule_set_indexes_by_key_and_keeps_state_of_unchanged_rules() -> None:
    rules = [rule(hot(70)), rule({"type": "state", "in": ["fault"]})]
    rs = RuleSet(rules)
    events = rs.feed([Sample("loom-3", "bearing_temp_c", T0, 75.0), Sample("x", "y", T0, 1.0)])
    assert [e.kind for e in events] == ["raised"]
    rs.replace(rules)
    assert rs.feed([Sample("loom-3", "bearing_temp_c", T0 + 1, 76.0)]) == []
    assert rs.open_alarms() == {("r1", "L3"): alarm_id("r1", "L3", T0)}


def test_latched_rule_clears_instead_of_raising_again() -> None:
    rs = RuleSet([rule(hot(70))])
    rs.latch("r1", "L3", T0 - 60_000, "old-alarm", T0)
    assert rs.feed([Sample("loom-3", "bearing_temp_c", T0, 75.0)]) == []
    events = rs.feed([Sample("loom-3", "bearing_temp_c", T0 + 1000, 60.0)])
    assert [(e.kind, e.id) for e in events] == [("cleared", "old-alarm")]


def test_events_round_trip_as_json() -> None:
    (event,) = run(rule(hot()), [(T0, 80.0)])
    assert event_from_json(event_to_json(event)) == event


def test_binding_needs_every_signal() -> None:
    body = {"id": "r", "name": "n", "template": "power_loom", "condition": hot()}
    assert bind(parse_rule(body), "L9", {}) is None


# -- properties ---------------------------------------------------------------------------

values = st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), min_size=1, max_size=60)


@settings(max_examples=300, deadline=None)
@given(values, st.floats(min_value=0, max_value=20), st.sampled_from([">", ">=", "<", "<="]))
def test_hysteresis_alternates_and_respects_the_deadband(
    xs: list[float], deadband: float, op: str
) -> None:
    limit = 50.0
    condition = {"type": "threshold", "signal": "bearing_temp_c", "op": op, "value": limit,
                 "deadband": deadband}  # fmt: skip
    r = rule(condition)
    above = op[0] == ">"
    release = limit - deadband if above else limit + deadband

    def trips(x: float) -> bool:
        return {">": x > limit, ">=": x >= limit, "<": x < limit, "<=": x <= limit}[op]

    def holds(x: float) -> bool:
        return {">": x > release, ">=": x >= release, "<": x < release, "<=": x <= release}[op]

    state: RuleState | None = None
    raised = False
    for i, x in enumerate(xs):
        state, events = evaluate(r, state, Sample("loom-3", "bearing_temp_c", T0 + i, x))
        for e in events:
            # raises and clears alternate, starting with a raise
            assert e.kind == ("cleared" if raised else "raised")
            raised = not raised
            assert trips(x) if e.kind == "raised" else not holds(x)
        # the alarm is up exactly when the hysteresis says so
        if trips(x):
            assert raised
        if not holds(x):
            assert not raised


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 5000), st.booleans()), min_size=1, max_size=40),
    st.integers(0, 20),
)
def test_duration_raises_only_after_the_condition_held_for_the_whole_time(
    steps: list[tuple[int, bool]], for_s: int
) -> None:
    r = rule(hot(50), for_s=for_s)
    state: RuleState | None = None
    ts = T0
    true_since: int | None = None
    raised = False
    for gap, high in steps:
        ts += gap
        state, events = evaluate(
            r, state, Sample("loom-3", "bearing_temp_c", ts, 80.0 if high else 10.0)
        )
        true_since = (true_since if true_since is not None else ts) if high else None
        for e in events:
            if e.kind == "raised":
                assert not raised and true_since is not None
                assert ts - true_since >= for_s * 1000
                raised = True
            else:
                assert raised and not high
                raised = False
        if true_since is not None and ts - true_since >= for_s * 1000:
            assert raised


def test_late_samples_do_not_make_a_stale_signal_fresh() -> None:
    r = rule({"type": "stale", "signal": "bearing_temp_c", "after_s": 60})
    # the server's clock ticks past the limit; then an hour-old backlog arrives, oldest first
    backlog = [(T0 + 120_000, None), (T0 + 10_000, 60.0), (T0 + 20_000, 61.0), (T0 + 100_000, 62.0)]
    events = run(r, [(T0, 60.0), *backlog])
    assert [(e.kind, e.ts) for e in events] == [("raised", T0 + 120_000), ("cleared", T0 + 100_000)]


def test_the_engine_runs_without_the_server() -> None:
    """The edge agent imports the engine, model and messages alone: none of them may pull in the
    server (FastAPI, the store, the HTTP client)."""
    import subprocess
    import sys

    code = (
        "import sys, karkhana.alarms.engine, karkhana.alarms.model, karkhana.alarms.messages;"
        "print(sorted({m.split('.')[0] if not m.startswith('karkhana') else '.'.join(m.split('.')[:2])"
        " for m in sys.modules}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = out.stdout
    for server_part in ("fastapi", "starlette", "httpx", "sqlite3", "karkhana.store", "karkhana.api",
                        "karkhana.security", "karkhana.runtime"):  # fmt: skip
        assert f"'{server_part}'" not in loaded, server_part
