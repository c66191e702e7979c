"""Idle energy, base load, compressed-air leaks and peak demand: hand arithmetic and the simulator."""

from __future__ import annotations

import numpy as np
import pytest

from karkhana.core.errors import ConfigError, InvalidPayload
from karkhana.core.model import Value
from karkhana.energy.waste import (
    air_leak,
    base_load,
    daily_windows,
    demand_blocks,
    energy_in_windows,
    idle_energy,
    peak_demand,
    quiet_windows,
)
from karkhana.production.model import Interval
from karkhana.sim.device import Environment, Weather, local_hour
from karkhana.sim.power import PowerSchedule
from karkhana.sim.utility import AirCompressor, AirLeak

T0 = 1_704_067_200_000  # 2024-01-01T00:00Z, 05:00 in Pakistan
MIN = 60_000
H = 3_600_000

STATES = [
    Interval(T0, T0 + H, "running"),
    Interval(T0 + H, T0 + 90 * MIN, "idle"),
    Interval(T0 + 90 * MIN, T0 + 3 * H, "stopped"),
    Interval(T0 + 3 * H, T0 + 4 * H, "planned_stop"),
    Interval(T0 + 4 * H, T0 + 5 * H, "fault"),
]
POWER: list[tuple[int, Value]] = [
    (T0, 10.0),
    (T0 + H, 2.0),
    (T0 + 90 * MIN, 1.0),
    (T0 + 3 * H, 0.5),
    (T0 + 4 * H, 8.0),
    (T0 + 5 * H, 0.0),
]


def test_idle_energy_from_power_by_hand() -> None:
    # idle 0.5 h x 2 kW = 1 kWh; stopped 1.5 h x 1 kW = 1.5 kWh; planned 1 h x 0.5 kW = 0.5 kWh
    got = idle_energy(STATES, power_kw=POWER, rate_pkr_per_kwh=40.0, max_gap_ms=2 * H)
    assert got.kwh == pytest.approx(3.0)
    assert got.hours == pytest.approx(3.0)
    assert got.cost_pkr == pytest.approx(120.0)
    assert {s.state: s.kwh for s in got.by_state} == pytest.approx(
        {"idle": 1.0, "stopped": 1.5, "planned_stop": 0.5}
    )
    assert got.mean_kw == pytest.approx(1.0)
    only_stopped = idle_energy(STATES, power_kw=POWER, idle_states={"stopped"}, max_gap_ms=2 * H)
    assert only_stopped.kwh == pytest.approx(1.5)
    assert only_stopped.cost_pkr is None


def test_idle_energy_from_a_counter_with_a_reset() -> None:
    counter: list[tuple[int, Value]] = [
        (T0, 500.0),
        (T0 + H, 510.0),
        (T0 + 90 * MIN, 511.0),
        (T0 + 2 * H, 0.5),  # reset: the half hour before it is lost, not negative
        (T0 + 3 * H, 1.5),
        (T0 + 4 * H, 2.0),
        (T0 + 5 * H, 10.0),
    ]
    tuples = [(s.start_ms, s.end_ms, s.state) for s in STATES]
    got = idle_energy(tuples, energy_kwh=counter, rate_pkr_per_kwh=50.0)
    # idle 510 -> 511 = 1; stopped 1.5h-2h lost, 2h-3h 1.0; planned 1.5 -> 2.0 = 0.5
    assert got.kwh == pytest.approx(2.5)
    assert got.cost_pkr == pytest.approx(125.0)


def test_idle_time_without_power_data_is_counted_apart() -> None:
    power: list[tuple[int, Value]] = [(T0 + H, 2.0), (T0 + 70 * MIN, 2.0), (T0 + 80 * MIN, 2.0)]
    got = idle_energy([(T0 + H, T0 + 2 * H, "idle")], power_kw=power, max_gap_ms=15 * MIN)
    # data holds to 80 min plus nothing after the last sample: 20 minutes known
    assert got.hours == pytest.approx(20 / 60)
    assert got.uncovered_hours == pytest.approx(40 / 60)
    assert got.kwh == pytest.approx(2.0 * 20 / 60)


def test_energy_in_windows_power_and_counter_agree() -> None:
    ts = np.arange(T0, T0 + 4 * H + 1, 10 * MIN)
    kw = np.where((ts - T0) < 2 * H, 30.0, 10.0)
    power = np.column_stack([ts, kw])
    kwh_counter = np.column_stack([ts, np.concatenate(([0.0], np.cumsum(kw[:-1] * 10 / 60)))])
    windows = [(T0 + H, T0 + 3 * H)]  # 1 h at 30 kW + 1 h at 10 kW
    by_power = energy_in_windows(windows, power_kw=power, max_gap_ms=15 * MIN)
    by_counter = energy_in_windows(windows, energy_kwh=kwh_counter)
    assert by_power.kwh == pytest.approx(40.0)
    assert by_counter.kwh == pytest.approx(40.0)
    assert by_power.covered_share == 1.0
    with pytest.raises(InvalidPayload):
        energy_in_windows(windows)


def test_daily_windows_in_local_time() -> None:
    nights = daily_windows(T0, T0 + 48 * H, 21, 6)
    # 05:00-06:00 PKT on the first morning, then 21:00-06:00 PKT (16:00Z-01:00Z)
    assert nights == [(T0, T0 + H), (T0 + 16 * H, T0 + 25 * H), (T0 + 40 * H, T0 + 48 * H)]
    peak = daily_windows(T0, T0 + 24 * H, 17, 21)
    assert peak == [(T0 + 12 * H, T0 + 16 * H)]
    with pytest.raises(ConfigError):
        daily_windows(T0, T0 + H, 5, 5)


def test_quiet_windows_are_when_no_machine_runs() -> None:
    machines = {
        "a": [(T0, T0 + 2 * H, "running"), (T0 + 2 * H, T0 + 6 * H, "stopped")],
        "b": [(T0 + H, T0 + 3 * H, "running"), (T0 + 3 * H, T0 + 4 * H, "idle")],
        "c": [(T0 + 5 * H, T0 + 5 * H + 10 * MIN, "running")],
    }
    assert quiet_windows(machines, T0, T0 + 8 * H) == [
        (T0 + 3 * H, T0 + 5 * H),
        (T0 + 5 * H + 10 * MIN, T0 + 8 * H),
    ]


def test_base_load_is_a_low_percentile_of_night_demand() -> None:
    night = [(T0 + i * MIN, 10.0 + i) for i in range(11)]  # 10..20 kW
    day = [(T0 + 2 * H + i * MIN, 200.0) for i in range(30)]
    got = base_load(night + day, [(T0, T0 + H)])
    assert got.kw == pytest.approx(11.0)
    assert got.samples == 11
    assert got.hours == 1.0
    assert base_load(night, [(T0, T0 + H)], percentile=50).kw == pytest.approx(15.0)
    with pytest.raises(InvalidPayload):
        base_load(day, [(T0, T0 + H)])


def _compressor_nights(
    leak: AirLeak | None, days: int = 3, step: int = 10_000
) -> dict[str, list[tuple[int, Value]]]:
    """The simulator's compressor: production uses 3 m³/min from 08:00 to 20:00, nothing at
    night; the compressor stays on (as it does in the mill)."""
    seed = 3
    env = Environment(PowerSchedule(seed, enabled=False), Weather(seed))
    compressor = AirCompressor("c", "Compressor", seed, T0, leak=leak)
    out: dict[str, list[tuple[int, Value]]] = {}
    for t in range(T0, T0 + days * 24 * H + 1, step):
        env.begin(t)
        if 8 <= local_hour(t) < 20:
            env.air_demand_m3_min = 3.0
        for key, value in compressor.advance(t, env).items():
            out.setdefault(key, []).append((t, value))
    return out


@pytest.mark.parametrize("leak_m3_min", [None, 0.6, 1.2])
def test_the_simulated_air_leak_is_flagged_only_with_a_leak(leak_m3_min: float | None) -> None:
    leak = None if leak_m3_min is None else AirLeak(T0, leak_m3_min)
    sig = _compressor_nights(leak)
    nights = daily_windows(T0, T0 + 3 * 24 * H, 21, 6)
    got = air_leak(
        nights,
        loaded=sig["loaded"],
        power_kw=sig["power_kw"],
        running=sig["running"],
        flow_m3_min=sig["flow_m3_min"],
        allowed_flow_m3_min=AirCompressor.BASE_DEMAND_M3_MIN,
    )
    assert got.flagged is (leak is not None)
    assert got.running_hours == pytest.approx(27.0, abs=0.01)
    assert len(got.windows) == 4
    # unloaded 32 % of 37 kW, loaded 98 %: the excess is what the loaded time costs
    assert got.unloaded_kw == pytest.approx(0.32 * 37.0, abs=0.2)
    expected_share = (AirCompressor.BASE_DEMAND_M3_MIN + (leak_m3_min or 0.0)) / 6.0
    assert got.loaded_share == pytest.approx(expected_share, abs=0.01)
    assert got.leak_kw == pytest.approx(expected_share * (0.98 - 0.32) * 37.0, rel=0.1)
    assert got.leak_flow_m3_min == pytest.approx(leak_m3_min or 0.0, abs=0.05)
    assert got.kwh > got.excess_kwh > 0


def test_air_leak_without_running_signal_or_flow() -> None:
    sig = _compressor_nights(AirLeak(T0, 1.0), days=2)
    nights = daily_windows(T0, T0 + 2 * 24 * H, 21, 6)
    got = air_leak(nights, loaded=sig["loaded"], power_kw=sig["power_kw"])
    assert got.flagged
    assert got.leak_flow_m3_min is None
    strict = air_leak(nights, loaded=sig["loaded"], power_kw=sig["power_kw"], threshold_share=0.5)
    assert not strict.flagged


def test_demand_blocks_by_hand() -> None:
    power: list[tuple[int, Value]] = [
        (T0, 100.0),
        (T0 + 10 * MIN, 400.0),
        (T0 + 20 * MIN, 100.0),
        (T0 + 30 * MIN, 100.0),
    ]
    blocks = demand_blocks(power, max_gap_ms=15 * MIN)
    assert [b.start_ms for b in blocks] == [T0]
    assert blocks[0].kw == pytest.approx(200.0)  # (100 + 400 + 100) / 3


def test_peak_events_with_the_machines_running_then() -> None:
    ts = range(T0, T0 + 48 * H, 10 * MIN)
    kw = {T0 + 10 * H: 300.0, T0 + 34 * H: 290.0, T0 + 20 * H: 260.0}
    power: list[tuple[int, Value]] = [(t, kw.get(t - t % (30 * MIN), 100.0)) for t in ts]
    machines = {
        "loom-1": [(T0, T0 + 10 * H, "stopped"), (T0 + 10 * H, T0 + 12 * H, "running")],
        "loom-2": [(T0 + 9 * H, T0 + 11 * H, "running")],
        "loom-3": [(T0 + 30 * H, T0 + 31 * H, "running")],
    }
    got = peak_demand(
        power, threshold_kw=280.0, near_max_share=0.9, machines=machines, max_gap_ms=15 * MIN
    )
    assert [(m.month, m.max_kw, m.max_start_ms) for m in got.months] == [
        ("2024-01", 300.0, T0 + 10 * H)
    ]
    assert got.months[0].blocks == 96
    events = [(e.start_ms - T0, e.demand_kw, e.above_threshold, e.near_max) for e in got.events]
    assert events == [
        (10 * H, 300.0, True, True),
        (34 * H, 290.0, True, True),
    ]
    first = got.events[0]
    assert first.running == ("loom-1", "loom-2")
    assert first.starting == ("loom-1",)
    assert got.events[1].running == ()
    low = peak_demand(power, threshold_kw=250.0, near_max_share=1.0, max_gap_ms=15 * MIN)
    assert [e.start_ms - T0 for e in low.events] == [10 * H, 20 * H, 34 * H]


def test_months_split_in_local_time() -> None:
    # 2024-01-31 19:00Z is 2024-02-01 00:00 in Pakistan
    feb = 1_706_727_600_000
    power: list[tuple[int, Value]] = [(feb - H + i * 10 * MIN, 50.0 + i) for i in range(13)]
    got = peak_demand(power, max_gap_ms=15 * MIN)
    assert [m.month for m in got.months] == ["2024-01", "2024-02"]
