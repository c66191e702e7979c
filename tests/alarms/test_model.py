from __future__ import annotations

from typing import Any

import pytest

from karkhana.alarms.model import Threshold, parse_rule, rule_to_json
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
