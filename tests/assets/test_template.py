from __future__ import annotations

from pathlib import Path

import pytest

from karkhana.assets.template import (
    BUILTIN_DIR,
    Condition,
    load_template,
    load_templates,
)
from karkhana.core.errors import ConfigError
from karkhana.core.model import is_valid_key

EXPECTED_KEYS = {
    "power_loom": {
        "state",
        "picks_per_min",
        "pick_count",
        "warp_breaks",
        "weft_breaks",
        "motor_current_a",
        "vibration_rms_mm_s",
        "bearing_temp_c",
        "fault",
    },
    "ring_spinning_frame": {
        "state",
        "spindle_speed_rpm",
        "delivery_m_min",
        "ends_down",
        "doff_count",
        "power_kw",
    },
    "air_compressor": {
        "running",
        "pressure_bar",
        "power_kw",
        "flow_m3_min",
        "run_hours",
        "discharge_temp_c",
    },
    "energy_meter_3ph": {
        "power_kw",
        "energy_kwh",
        "power_factor",
        "voltage_l1_v",
        "voltage_l2_v",
        "voltage_l3_v",
        "current_l1_a",
        "current_l2_a",
        "current_l3_a",
        "frequency_hz",
    },
    "power_source": {"source", "grid_ok", "generator_running", "generator_fuel_pct"},
    "humidity_sensor": {"humidity_pct", "temperature_c"},
    "injection_moulding_machine": {
        "state",
        "cycle_time_s",
        "shot_count",
        "barrel_temp_c",
        "mould_temp_c",
        "hydraulic_pressure_bar",
        "power_kw",
    },
    "cnc_machine": {
        "state",
        "spindle_speed_rpm",
        "spindle_load_pct",
        "part_count",
        "cycle_time_s",
        "power_kw",
    },
    "mechanical_press": {"state", "stroke_count", "strokes_per_min", "tonnage_t", "cycle_time_s"},
    "cold_room": {
        "temperature_c",
        "setpoint_c",
        "door_open",
        "compressor_running",
        "humidity_pct",
        "power_kw",
    },
    "filling_machine": {"state", "bottle_count", "reject_count"},
}

COUNTERS = {
    "power_loom": {"pick_count", "warp_breaks", "weft_breaks"},
    "ring_spinning_frame": {"doff_count"},
    "air_compressor": {"run_hours"},
    "energy_meter_3ph": {"energy_kwh"},
    "injection_moulding_machine": {"shot_count"},
    "cnc_machine": {"part_count"},
    "mechanical_press": {"stroke_count"},
    "filling_machine": {"bottle_count", "reject_count"},
}

VALID = """\
id = "{id}"
name = "Test machine"
category = "test"
description = "A machine for tests."
ideal_cycle_time_s = 2.0
count_key = "parts"
warm_up_min = 45

[[signals]]
key = "state"
name = "State"
kind = "string"
values = ["running", "stopped"]

[[signals]]
key = "parts"
name = "Parts"
kind = "counter"

[[signals]]
key = "speed"
name = "Speed"
unit = "1/min"
kind = "number"
min = 0
max = 100

[[state_rules]]
state = "running"
when = [{{ signal = "state", op = "==", value = "running" }}, {{ signal = "speed", op = ">", value = 5 }}]

[[state_rules]]
state = "stopped"
when = {{ signal = "state", op = "==", value = "stopped" }}
"""


def write(directory: Path, text: str, name: str = "test_machine") -> Path:
    path = directory / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_every_shipped_template_loads_with_the_expected_keys() -> None:
    templates = load_templates()
    assert set(templates) == set(EXPECTED_KEYS)
    for template_id, keys in EXPECTED_KEYS.items():
        template = templates[template_id]
        assert keys <= set(template.keys), template_id
        assert template.name and template.category and template.description
        for key in COUNTERS.get(template_id, ()):
            assert template.signal(key).kind == "counter", (template_id, key)


def test_shipped_keys_are_valid_and_unique_and_rules_refer_to_signals() -> None:
    for path in sorted(BUILTIN_DIR.glob("*.toml")):
        template = load_template(path)
        assert template.id == path.stem
        assert len(set(template.keys)) == len(template.keys)
        assert all(is_valid_key(k) for k in template.keys)
        for rule in template.state_rules:
            assert all(c.signal in template.keys for c in rule.when)
        if template.count_key is not None:
            assert template.signal(template.count_key).kind == "counter"


def test_a_valid_template_is_read_in_full(tmp_path: Path) -> None:
    template = load_template(write(tmp_path, VALID.format(id="test_machine")))
    assert template.ideal_cycle_time_s == 2.0
    assert template.count_key == "parts"
    assert template.warm_up_min == 45.0
    speed = template.signal("speed")
    assert (speed.unit, speed.kind, speed.min, speed.max) == ("1/min", "number", 0.0, 100.0)
    assert template.signal("state").values == ("running", "stopped")
    assert template.signal("parts").unit is None
    running, stopped = template.state_rules
    assert running.when == (
        Condition("state", "==", "running"),
        Condition("speed", ">", 5),
    )
    assert stopped.state == "stopped"


def test_user_directory_adds_and_replaces_templates(tmp_path: Path) -> None:
    write(tmp_path, VALID.format(id="test_machine"))
    replaced = VALID.format(id="cold_room").replace("Test machine", "Our cold room")
    write(tmp_path, replaced, "cold_room")
    templates = load_templates(tmp_path)
    assert templates["test_machine"].name == "Test machine"
    assert templates["cold_room"].name == "Our cold room"
    assert "power_loom" in templates


def test_missing_user_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_templates(tmp_path / "nope")


BAD = [
    ('kind = "number"', 'kind = "numbr"', "signals[2].kind: unknown kind 'numbr'"),
    ('key = "speed"', 'key = "parts"', "signals[2].key: duplicate key 'parts'"),
    ('key = "speed"', 'key = "bad key!"', "signals[2].key: 'bad key!' is not a valid signal key"),
    ('name = "Test machine"\n', "", "name: missing"),
    ('category = "test"\n', 'category = "test"\ncolour = "red"\n', "colour: unknown field"),
    ('id = "test_machine"', 'id = "other_machine"', "id: 'other_machine' must match the file name"),
    ('id = "test_machine"', 'id = "Test Machine"', "id: 'Test Machine' must be lower-case"),
    (
        'value = "stopped"',
        'value = "paused"',
        "state_rules[1].when[0].value: 'paused' is not one of",
    ),
    (
        'signal = "speed", op = ">"',
        'signal = "rpm", op = ">"',
        "state_rules[0].when[1].signal: 'rpm'",
    ),
    ('op = ">"', 'op = "=>"', "state_rules[0].when[1].op: unknown operator '=>'"),
    ('op = ">", value = 5', 'op = ">", value = "fast"', "does not fit number signal 'speed'"),
    ('state = "stopped"', 'state = "halted"', "state_rules[1].state: unknown state 'halted'"),
    ('count_key = "parts"', 'count_key = "speed"', "count_key: 'speed' is not a counter"),
    ("ideal_cycle_time_s = 2.0", "ideal_cycle_time_s = -1", "ideal_cycle_time_s: must be positive"),
    ("warm_up_min = 45", "warm_up_min = 0", "warm_up_min: must be positive"),
    ("warm_up_min = 45", "warm_up_min = 300", "warm_up_min: at most 240 minutes"),
    ("warm_up_min = 45", 'warm_up_min = "long"', "warm_up_min: expected a number"),
    ("min = 0\nmax = 100", "min = 100\nmax = 0", "signals[2].min: min 100.0 is above max 0.0"),
    ('name = "Parts"\n', 'name = "Parts"\nvalues = ["a"]\n', "signals[1].values: only string"),
    (
        'name = "Parts"\nkind = "counter"',
        'name = 3\nkind = "counter"',
        "signals[1].name: expected text",
    ),
    ('description = "A machine for tests."', 'description = "unterminated', "not valid TOML"),
]


@pytest.mark.parametrize(("old", "new", "fragment"), BAD)
def test_bad_templates_are_rejected_naming_file_and_field(
    tmp_path: Path, old: str, new: str, fragment: str
) -> None:
    text = VALID.format(id="test_machine")
    assert old in text
    path = write(tmp_path, text.replace(old, new, 1))
    with pytest.raises(ConfigError) as err:
        load_template(path)
    assert str(path) in str(err.value)
    assert fragment in str(err.value)


def test_template_without_signals_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, 'id = "test_machine"\nname = "x"\ncategory = "y"\n')
    with pytest.raises(ConfigError, match=r"signals: missing"):
        load_template(path)


def test_bad_file_in_user_directory_stops_loading(tmp_path: Path) -> None:
    write(tmp_path, "not toml at all [", "broken")
    with pytest.raises(ConfigError, match=r"broken\.toml"):
        load_templates(tmp_path)
