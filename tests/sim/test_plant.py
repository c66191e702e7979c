from __future__ import annotations

import json
from statistics import mean

import pytest

from karkhana.assets.template import load_templates
from karkhana.core.errors import ConfigError
from karkhana.sim.faults import FaultRecord, from_json, to_json
from karkhana.sim.profiles import PROFILES, build_plant
from karkhana.sim.shifts import ShiftCalendar
from tests.sim.support import DAY_MS, HOUR_MS, MONDAY_MS

MINUTE_MS = 60_000


def series(profile: str, seed: int, steps: int, every_ms: int, **kw: int) -> list[object]:
    plant = build_plant(profile, kw.get("devices"), seed, MONDAY_MS)
    return [plant.step(MONDAY_MS + i * every_ms) for i in range(steps)]


def test_same_seed_same_readings_and_truth_other_seed_differs() -> None:
    for profile in PROFILES:
        a = series(profile, 7, 120, 30_000)
        assert a == series(profile, 7, 120, 30_000)
        assert a != series(profile, 8, 120, 30_000)
    truth = [
        build_plant("textile", None, s, MONDAY_MS).ground_truth(MONDAY_MS + 8 * DAY_MS)
        for s in (7, 7, 8)
    ]
    assert truth[0] == truth[1]
    assert truth[0] != truth[2]


def test_readings_match_templates_and_counters_never_fall() -> None:
    templates = load_templates()
    for profile in PROFILES:
        plant = build_plant(profile, None, 3, MONDAY_MS)
        last: dict[tuple[str, str], float] = {}
        for i in range(0, DAY_MS, 10 * MINUTE_MS):
            for device_id, values in plant.step(MONDAY_MS + i).items():
                template = templates[plant.device(device_id).template]
                assert set(values) == set(template.keys), device_id
                for spec in template.signals:
                    value = values[spec.key]
                    if spec.kind == "bool":
                        assert isinstance(value, bool)
                    elif spec.kind == "string":
                        assert isinstance(value, str)
                        assert not spec.values or value in spec.values
                    else:
                        assert isinstance(value, int | float) and not isinstance(value, bool)
                    if spec.kind == "counter":
                        assert isinstance(value, int | float)
                        key = (device_id, spec.key)
                        assert value >= last.get(key, value), key
                        last[key] = value


def test_devices_scale_main_machines() -> None:
    looms = [
        d for d in build_plant("textile", 30, 1, MONDAY_MS).devices if d.template == "power_loom"
    ]
    assert len(looms) == 30
    default = build_plant("textile", None, 1, MONDAY_MS).devices
    assert sum(d.template == "power_loom" for d in default) == 12
    auto = build_plant("auto", 6, 1, MONDAY_MS).devices
    kinds = [d.template for d in auto]
    assert kinds.count("mechanical_press") == kinds.count("cnc_machine") == 2
    food = [d.template for d in build_plant("food", 5, 1, MONDAY_MS).devices]
    assert (food.count("cold_room"), food.count("filling_machine")) == (3, 2)
    with pytest.raises(ConfigError):
        build_plant("brewery", None, 1, MONDAY_MS)
    with pytest.raises(ConfigError):
        build_plant("textile", 0, 1, MONDAY_MS)


def test_bearing_degradation_shows_in_vibration_and_temperature_before_failure() -> None:
    plant = build_plant("textile", 3, 11, MONDAY_MS)
    (fault,) = [
        f for f in plant.ground_truth(MONDAY_MS + 10 * DAY_MS) if f.kind == "bearing_degradation"
    ]
    assert fault.failure_ms is not None and fault.end_ms is not None
    assert MONDAY_MS + DAY_MS < fault.start_ms < fault.failure_ms - 3 * DAY_MS
    first_day: list[float] = []
    last_day: list[float] = []
    temps_first: list[float] = []
    temps_last: list[float] = []
    states_after_failure: list[object] = []
    for i in range(0, fault.end_ms - MONDAY_MS + HOUR_MS, 5 * MINUTE_MS):
        t = MONDAY_MS + i
        loom = plant.step(t)[fault.device_id]
        if t >= fault.failure_ms and t < fault.end_ms:
            states_after_failure.append((loom["state"], loom["fault"]))
        if loom["state"] != "running":
            continue
        vibration, temp = float(loom["vibration_rms_mm_s"]), float(loom["bearing_temp_c"])
        if t < MONDAY_MS + DAY_MS:
            first_day.append(vibration)
            temps_first.append(temp)
        elif fault.failure_ms - DAY_MS <= t < fault.failure_ms:
            last_day.append(vibration)
            temps_last.append(temp)
    assert mean(last_day) > 2 * mean(first_day)
    assert mean(last_day) > 4.5
    assert mean(temps_last) > mean(temps_first) + 8
    assert states_after_failure and all(s == ("fault", True) for s in states_after_failure)
    after = plant.step(fault.end_ms + 2 * HOUR_MS)[fault.device_id]
    assert after["fault"] is False


def test_load_shedding_without_generator_stops_every_loom() -> None:
    for seed in range(50):
        plant = build_plant("textile", 6, seed, MONDAY_MS)
        blocks = [
            f for f in plant.ground_truth(MONDAY_MS + 3 * DAY_MS) if f.kind == "load_shedding"
        ]
        dark = [b for b in blocks if not b.details["generator"] and b.start_ms > MONDAY_MS]
        backed = [b for b in blocks if b.details["generator"] and b.start_ms > MONDAY_MS]
        if dark and backed:
            break
    else:
        pytest.fail("no seed with both kinds of load shedding")
    looms = [d.device_id for d in plant.devices if d.template == "power_loom"]
    t = MONDAY_MS
    seen_dark = seen_generator = False
    while t < MONDAY_MS + 3 * DAY_MS:
        readings = plant.step(t)
        source = readings["tx-power"]["source"]
        states = [readings[d]["state"] for d in looms]
        if any(b.active(t) for b in dark):
            assert source == "none"
            assert readings["tx-power"]["grid_ok"] is False
            assert states == ["stopped"] * len(looms)
            assert readings["tx-meter-main"]["power_kw"] == 0
            assert readings["tx-compressor-1"]["running"] is False
            seen_dark = True
        if source == "generator":
            assert readings["tx-power"]["generator_running"] is True
            assert "stopped" in states
            seen_generator = True
        if source == "grid":
            assert float(readings["tx-meter-main"]["power_kw"]) > 0
        t += 5 * MINUTE_MS
    assert seen_dark and seen_generator


def test_energy_counter_is_monotonic_and_integrates_power() -> None:
    plant = build_plant("textile", 4, 5, MONDAY_MS)
    previous = None
    integral = 0.0
    first = None
    for i in range(0, 12 * HOUR_MS + 1, MINUTE_MS):
        meter = plant.step(MONDAY_MS + i)["tx-meter-main"]
        energy = float(meter["energy_kwh"])
        if previous is not None:
            assert energy >= previous
            integral += float(meter["power_kw"]) / 60.0
        else:
            first = energy
        previous = energy
    assert first is not None and previous is not None
    assert previous - first == pytest.approx(integral, rel=0.01)
    assert previous - first > 100


def compressor_duty(faults: bool, leak_ms: int) -> tuple[float, float]:
    plant = build_plant("textile", 4, 9, MONDAY_MS, faults=faults)
    for t in range(MONDAY_MS, leak_ms + HOUR_MS, 10 * MINUTE_MS):
        plant.step(t)
    loaded: list[bool] = []
    power: list[float] = []
    for t in range(plant.now_ms + 30_000, leak_ms + 9 * HOUR_MS, 30_000):
        readings = plant.step(t)["tx-compressor-1"]
        if readings["running"]:
            loaded.append(bool(readings["loaded"]))
            power.append(plant.device("tx-compressor-1").load_kw())
    return mean(loaded), mean(power)


def test_air_leak_raises_compressor_duty_and_power() -> None:
    truth = build_plant("textile", 4, 9, MONDAY_MS).ground_truth(MONDAY_MS + 3 * DAY_MS)
    (leak,) = [f for f in truth if f.kind == "air_leak"]
    assert leak.end_ms is None and float(leak.details["leak_m3_min"] or 0) > 0.5
    duty_leak, kw_leak = compressor_duty(True, leak.start_ms)
    duty_tight, kw_tight = compressor_duty(False, leak.start_ms)
    assert duty_leak > duty_tight + 0.08
    assert kw_leak > kw_tight + 2


def test_door_left_open_warms_the_cold_room() -> None:
    plant = build_plant("food", None, 4, MONDAY_MS)
    (door,) = [f for f in plant.ground_truth(MONDAY_MS + DAY_MS) if f.kind == "door_left_open"]
    assert door.end_ms is not None
    before = plant.step(door.start_ms - MINUTE_MS)[door.device_id]
    during = [plant.step(door.start_ms + i * MINUTE_MS)[door.device_id] for i in range(1, 40)]
    assert before["door_open"] is False
    assert all(r["door_open"] is True for r in during)
    assert float(during[-1]["temperature_c"]) > float(before["temperature_c"]) + 4
    assert during[-1]["compressor_running"] is True
    later = plant.step(door.end_ms + 4 * HOUR_MS)[door.device_id]
    assert float(later["temperature_c"]) < float(during[-1]["temperature_c"]) - 3


def test_auto_plant_follows_its_shifts() -> None:
    plant = build_plant("auto", 3, 2, MONDAY_MS)
    calendar = ShiftCalendar()
    templates = {"mechanical_press", "cnc_machine", "injection_moulding_machine"}
    machines = [d.device_id for d in plant.devices if d.template in templates]
    assert len(machines) == 3
    night = MONDAY_MS + 20 * HOUR_MS
    assert calendar.forced_at(night) == "stopped"
    readings = plant.step(night)
    assert all(readings[m]["state"] == "stopped" for m in machines)
    sunday = MONDAY_MS + 6 * DAY_MS + 8 * HOUR_MS
    assert calendar.forced_at(sunday) == "stopped"
    assert calendar.forced_at(MONDAY_MS + 5 * HOUR_MS) is None


def test_ground_truth_round_trips_through_json() -> None:
    plant = build_plant("auto", None, 6, MONDAY_MS)
    records = plant.ground_truth(MONDAY_MS + 7 * DAY_MS)
    kinds = {r.kind for r in records}
    assert {"bearing_degradation", "air_leak", "load_shedding", "sensor_dropout"} <= kinds
    assert {"duplicate_messages", "out_of_order_messages"} <= kinds
    text = to_json(records, profile="auto", seed=6)
    doc = json.loads(text)
    assert doc["format"] == "karkhana-ground-truth/1" and doc["seed"] == 6
    assert from_json(text) == records
    assert [r.start_ms for r in records] == sorted(r.start_ms for r in records)
    assert build_plant("auto", None, 6, MONDAY_MS, faults=False).ground_truth(
        MONDAY_MS + 7 * DAY_MS
    ) == [r for r in records if r.kind == "load_shedding"]


def test_ground_truth_defaults_to_the_simulated_span() -> None:
    plant = build_plant("textile", 2, 1, MONDAY_MS)
    assert all(r.kind == "load_shedding" for r in plant.ground_truth())
    plant.step(MONDAY_MS + 3 * DAY_MS)
    assert plant.ground_truth() == plant.ground_truth(MONDAY_MS + 3 * DAY_MS)
    assert isinstance(plant.ground_truth()[0], FaultRecord)
    with pytest.raises(ValueError):
        plant.step(MONDAY_MS)


def test_machine_states_do_not_depend_on_the_sampling_rate() -> None:
    def machines(every_ms: int) -> list[object]:
        plant = build_plant("auto", 6, 13, MONDAY_MS)
        out: list[object] = []
        for t in range(MONDAY_MS, MONDAY_MS + DAY_MS, every_ms):
            readings = plant.step(t)
            if (t - MONDAY_MS) % (21 * MINUTE_MS) == 0:
                out.append(
                    [
                        (
                            r["state"],
                            r.get("stroke_count"),
                            r.get("part_count"),
                            r.get("shot_count"),
                        )
                        for r in readings.values()
                        if "state" in r
                    ]
                )
        return out

    assert machines(MINUTE_MS) == machines(7 * MINUTE_MS)
