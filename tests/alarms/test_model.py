from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from karkhana.alarms.engine import event_from_json
from karkhana.alarms.model import RULE_FIELDS, Threshold, parse_rule, rule_to_json
from karkhana.alarms.notify import parse_channel, parse_recipient
from karkhana.core.errors import InvalidPayload

SIMPLE = {
    "name": "Bearing too hot",
    "machine_id": "L03",
    "severity": "warning",
    "condition": {
        "type": "threshold",
        "signal": "bearing_temp_c",
        "op": ">",
        "value": 70,
        "deadband": 2,
    },
    "for_s": 30,
}


def test_the_dashboard_form_parses_and_round_trips() -> None:
    rule = parse_rule(SIMPLE, "r1")
    assert rule.condition == Threshold("bearing_temp_c", ">", 70.0, 2.0)
    assert rule.for_s == 30 and rule.notify.roles == ("operator",)
    assert parse_rule(rule_to_json(rule)) == rule


def test_every_condition_type_round_trips() -> None:
    body = {
        "id": "all-kinds",
        "name": "everything",
        "template": "power_loom",
        "site_id": "mill",
        "severity": "critical",
        "condition": {
            "type": "any",
            "conditions": [
                {"type": "rate", "signal": "bearing_temp_c", "op": ">", "value": 2, "window_s": 30},
                {"type": "deviation", "signal": "motor_current_a", "window_s": 600, "sigma": 3},
                {"type": "stale", "signal": "picks_per_min", "after_s": 120},
                {
                    "type": "all",
                    "conditions": [
                        {"type": "state", "in": ["fault", "stopped"]},
                        {
                            "type": "threshold",
                            "signal": "vibration_rms_mm_s",
                            "op": ">=",
                            "value": 4.5,
                        },
                    ],
                },
            ],
        },
        "windows": [{"days": ["mon", "sat"], "start": "22:00", "end": "06:00"}],
        "notify": {"roles": ["operator"], "escalate": [{"after_min": 10, "roles": ["engineer"]}]},
        "repeat_window_s": 60,
    }
    rule = parse_rule(body)
    assert parse_rule(rule_to_json(rule)) == rule


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"severity": "loud"}, "severity"),
        ({"condition": {"type": "threshold", "signal": "x", "op": "=>", "value": 1}}, "condition.op"),
        ({"condition": {"type": "threshold", "signal": "x", "op": ">", "value": "hot"}}, "condition.value"),
        ({"condition": {"type": "threshold", "signal": "x", "op": ">", "value": 1, "deadband": -1}}, "condition.deadband"),
        ({"condition": {"type": "wobble"}}, "condition.type"),
        ({"condition": {"type": "deviation", "signal": "x", "window_s": 60}}, "condition"),
        ({"condition": {"type": "all", "conditions": []}}, "condition.conditions"),
        ({"template": "power_loom"}, "rule"),
        ({"for_s": -5}, "rule.for_s"),
        ({"windows": [{"start": "25:00", "end": "06:00"}]}, "windows[0].start"),
        ({"notify": {"roles": ["boss"]}}, "notify.roles"),
        ({"notify": {"escalate": [{"after_min": 5, "roles": ["engineer"]}, {"after_min": 5, "roles": ["manager"]}]}}, "notify.escalate[1].after_min"),
        ({"colour": "red"}, "rule"),
    ],
)  # fmt: skip
def test_bad_rules_name_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidPayload) as info:
        parse_rule({**SIMPLE, **change}, "r1")
    assert info.value.message.startswith(field + ":"), info.value.message


def test_deep_nesting_is_refused() -> None:
    condition: dict[str, Any] = {"type": "state", "in": ["fault"]}
    for _ in range(6):
        condition = {"type": "all", "conditions": [condition]}
    with pytest.raises(InvalidPayload):
        parse_rule({**SIMPLE, "condition": condition}, "r1")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=30,
)
known_keys = st.sampled_from(
    sorted(RULE_FIELDS | {"type", "signal", "op", "value", "deadband", "conditions", "in", "window_s",
                          "sigma", "max_dev", "after_s", "roles", "escalate", "days", "start", "end"})
)  # fmt: skip
rule_like = st.recursive(
    st.dictionaries(known_keys, json_values, max_size=8),
    lambda children: st.dictionaries(
        known_keys, children | st.lists(children, max_size=3), max_size=8
    ),
    max_leaves=40,
)


@settings(max_examples=150, deadline=None)
@given(st.one_of(json_values, rule_like))
def test_any_json_is_a_rule_or_a_clear_error(data: Any) -> None:
    try:
        rule = parse_rule(data, "r1")
    except InvalidPayload:
        return
    assert parse_rule(rule_to_json(rule)) == rule


@settings(max_examples=100, deadline=None)
@given(st.one_of(json_values, st.dictionaries(st.sampled_from(
    ["kind", "host", "port", "sender", "url", "template", "headers", "timeout_s", "security", "name",
     "role", "channels", "sites", "language", "email", "phone", "quiet", "password"]), json_values,
    max_size=10)))  # fmt: skip
def test_any_json_is_a_channel_or_recipient_or_a_clear_error(data: Any) -> None:
    for parse in (parse_channel, parse_recipient):
        with contextlib.suppress(InvalidPayload):
            parse(data, "c1")
    with contextlib.suppress(InvalidPayload):
        event_from_json(data)


def test_huge_numbers_are_refused_not_crashed() -> None:
    with pytest.raises(InvalidPayload):
        parse_rule({**SIMPLE, "condition": {**SIMPLE["condition"], "value": 10**400}}, "r1")
    with pytest.raises(InvalidPayload):
        parse_rule({**SIMPLE, "condition": {**SIMPLE["condition"], "value": float("nan")}}, "r1")
