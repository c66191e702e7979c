"""Idle energy, base load, compressed-air leaks and peak demand: hand arithmetic and the simulator."""

from __future__ import annotations

import random

import numpy as np
import pytest

from karkhana.core.errors import ConfigError, InvalidPayload
from karkhana.core.model import Value
from karkhana.energy.waste import (
    air_leak,
    air_leak_in_production,
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


LOOM_AIR = 0.25
"""m³/min a running loom of the simulator uses."""
KW_PER_M3_MIN = (0.98 - 0.32) * 37.0 / 6.0
"""The simulated compressor's power per m³/min delivered: loaded 98 % of 37 kW, unloaded 32 %,
6 m³/min when loaded."""


def _weaving_shed(
    leak: AirLeak | None, *, days: float = 2.0, fewest: int = 2, step: int = 10_000
) -> tuple[dict[str, list[tuple[int, Value]]], dict[str, list[tuple[int, int, str]]]]:
    """Twelve looms that never all stop: every 30 minutes between ``fewest`` and twelve run,
    each using 0.25 m³/min, and two ring frames that use no air switch on and off at random.
    Returns the compressor's signals and the machines' state intervals."""
    rng = random.Random(7)
    seed = 3
    env = Environment(PowerSchedule(seed, enabled=False), Weather(seed))
    compressor = AirCompressor("c", "Compressor", seed, T0, leak=leak)
    end = T0 + int(days * 24 * H)
    states: dict[str, list[tuple[int, int, str]]] = {f"L{i:02d}": [] for i in range(1, 13)}
    states |= {"R1": [], "R2": []}
    looms_running: dict[int, int] = {}
    for block in range(T0, end, 30 * MIN):
        count = rng.randint(fewest, 12)
        looms_running[block] = count
        for i, name in enumerate(sorted(n for n in states if n.startswith("L"))):
            states[name].append((block, block + 30 * MIN, "running" if i < count else "idle"))
        for name in ("R1", "R2"):
            states[name].append((block, block + 30 * MIN, rng.choice(["running", "stopped"])))
    signals: dict[str, list[tuple[int, Value]]] = {}
    for t in range(T0, end, step):
        env.begin(t)
        block = T0 + (t - T0) // (30 * MIN) * (30 * MIN)
        env.air_demand_m3_min = LOOM_AIR * looms_running[block]
        for key, value in compressor.advance(t, env).items():
            signals.setdefault(key, []).append((t, value))
    return signals, states


KINDS = {f"L{i:02d}": "power_loom" for i in range(1, 13)} | {"R1": "ring", "R2": "ring"}


@pytest.mark.parametrize("leak_m3_min", [0.6, 1.2])
def test_a_leak_is_found_while_the_looms_run(leak_m3_min: float) -> None:
    sig, states = _weaving_shed(AirLeak(T0, leak_m3_min))
    end = T0 + 48 * H
    got = air_leak_in_production(
        sig["flow_m3_min"],
        states,
        T0,
        end,
        kinds=KINDS,
        power_kw=sig["power_kw"],
        running=sig["running"],
        own_use=AirCompressor.BASE_DEMAND_M3_MIN,
    )
    assert got.flagged, got.reason
    assert got.points == 192  # two days of 15-minute buckets
    assert got.users == 14
    # with no loom running the compressor still delivers its own 0.3 m³/min and the leak
    assert got.intercept == pytest.approx(0.3 + leak_m3_min, abs=0.1)
    assert got.leak == pytest.approx(leak_m3_min, abs=0.1)
    assert got.leak_flow_m3_min == got.leak
    slopes = dict(got.slopes)
    assert slopes["power_loom"] == pytest.approx(LOOM_AIR, abs=0.02)
    assert slopes["ring"] == pytest.approx(0.0, abs=0.05)  # ring frames use no air
    assert got.r2 > 0.9
    assert got.users_min < 3 and got.users_max > 12
    assert got.kw_per_m3_min is not None
    assert got.kw_per_m3_min == pytest.approx(KW_PER_M3_MIN, rel=0.03)
    assert got.leak_kw == pytest.approx(got.leak * got.kw_per_m3_min)
    assert got.leak_kw == pytest.approx(leak_m3_min * KW_PER_M3_MIN, abs=0.1 * KW_PER_M3_MIN)


def test_no_leak_is_claimed_without_one() -> None:
    sig, states = _weaving_shed(None)
    got = air_leak_in_production(
        sig["flow_m3_min"],
        states,
        T0,
        T0 + 48 * H,
        kinds=KINDS,
        power_kw=sig["power_kw"],
        running=sig["running"],
        own_use=AirCompressor.BASE_DEMAND_M3_MIN,
    )
    assert not got.flagged
    assert got.intercept == pytest.approx(0.3, abs=0.1)
    assert "no leak" in got.reason
    # without the compressor's own use given, its 0.3 m³/min is air no machine uses
    plain = air_leak_in_production(
        sig["flow_m3_min"], states, T0, T0 + 48 * H, kinds=KINDS, power_kw=sig["power_kw"]
    )
    assert plain.flagged and plain.leak == pytest.approx(0.3, abs=0.1)


def test_a_leak_from_power_alone() -> None:
    sig, states = _weaving_shed(AirLeak(T0, 1.0))
    unloaded = 0.32 * 37.0
    got = air_leak_in_production(
        sig["power_kw"],
        states,
        T0,
        T0 + 48 * H,
        unit="kW",
        kinds=KINDS,
        running=sig["running"],
        own_use=unloaded + AirCompressor.BASE_DEMAND_M3_MIN * KW_PER_M3_MIN,
    )
    assert got.flagged, got.reason
    assert got.leak_flow_m3_min is None
    assert got.leak_kw == got.leak == pytest.approx(1.0 * KW_PER_M3_MIN, abs=0.5)
    assert dict(got.slopes)["power_loom"] == pytest.approx(LOOM_AIR * KW_PER_M3_MIN, rel=0.1)


def test_no_fit_without_enough_spread_or_data() -> None:
    sig, states = _weaving_shed(AirLeak(T0, 1.0), fewest=11)
    looms = {name: ivs for name, ivs in states.items() if name.startswith("L")}
    flat = air_leak_in_production(sig["flow_m3_min"], looms, T0, T0 + 48 * H)
    # eleven or twelve looms running: a spread of one machine, too little to draw a line
    assert not flat.flagged and "varied by 1.0" in flat.reason
    assert (flat.users_min, flat.users_max) == (11.0, 12.0)
    short = air_leak_in_production(
        sig["flow_m3_min"], states, T0, T0 + 6 * H, kinds=KINDS, power_kw=sig["power_kw"]
    )
    assert not short.flagged and short.points == 24 and "fewer than 48" in short.reason
    # a machine whose state is not known leaves its buckets out
    unknown = {**states, "L13": [(T0, T0 + 24 * H, "running")]}
    half = air_leak_in_production(
        sig["flow_m3_min"], unknown, T0, T0 + 48 * H, kinds=KINDS, power_kw=sig["power_kw"]
    )
    assert half.points == 96
    with pytest.raises(ConfigError):
        air_leak_in_production(sig["flow_m3_min"], states, T0, T0 + H, unit="bar")


def test_buckets_with_the_compressor_stopped_are_left_out() -> None:
    sig, states = _weaving_shed(AirLeak(T0, 1.0))
    # a four-hour outage: the compressor and every machine stop; flow 0 with 0 machines would
    # pull the line through the origin
    cut = (T0 + 10 * H, T0 + 14 * H)

    def off(series: list[tuple[int, Value]]) -> list[tuple[int, Value]]:
        return [(t, 0.0 if cut[0] <= t < cut[1] else v) for t, v in series]

    down = {
        name: [(a, b, "stopped" if cut[0] <= a < cut[1] else st) for a, b, st in ivs]
        for name, ivs in states.items()
    }
    own = AirCompressor.BASE_DEMAND_M3_MIN
    flow = off(sig["flow_m3_min"])
    got = air_leak_in_production(
        flow, down, T0, T0 + 48 * H, kinds=KINDS, running=off(sig["running"]), own_use=own
    )
    assert got.points == 192 - 16
    assert got.leak == pytest.approx(1.0, abs=0.1)
    blind = air_leak_in_production(flow, down, T0, T0 + 48 * H, kinds=KINDS, own_use=own)
    assert blind.points == 192 and blind.intercept < got.intercept


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
