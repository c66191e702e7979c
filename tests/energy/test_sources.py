"""Power source timelines, outages and generator diesel, from hand-made series and the simulator."""

from __future__ import annotations

import numpy as np
import pytest

from karkhana.core.errors import ConfigError, InvalidPayload
from karkhana.core.model import Value
from karkhana.energy.sources import (
    FuelCurve,
    SourceParams,
    classify_meter,
    fuel_from_tank,
    generator_use,
    meter_timeline,
    outage_intervals,
    parse_source,
    source_timeline,
)
from karkhana.sim.device import Environment, Weather
from karkhana.sim.power import PowerSchedule, PowerSourceDevice
from karkhana.sim.utility import EnergyMeter

T0 = 1_704_067_200_000  # 2024-01-01T00:00Z
S = 1_000
MIN = 60_000
H = 3_600_000


def every(start: int, end: int, step: int, value: Value) -> list[tuple[int, Value]]:
    return [(t, value) for t in range(start, end, step)]


def grid_series() -> list[tuple[int, Value]]:
    """Six hours of grid_ok every 10 s with known events:
    outage 1h-2h; a 20 s flicker at 3h; a 20-minute silence at 4h with the grid on both sides;
    an outage from 5h with a 10-minute silence inside it, still out when the data ends at 6h."""
    out: list[tuple[int, Value]] = []
    for t in range(T0, T0 + 6 * H + 1, 10 * S):
        rel = t - T0
        if 4 * H < rel < 4 * H + 20 * MIN or 5 * H + 10 * MIN < rel < 5 * H + 20 * MIN:
            continue
        down = H <= rel < 2 * H or 3 * H <= rel < 3 * H + 20 * S or rel >= 5 * H
        out.append((t, not down))
    return out


def test_outages_from_grid_ok_with_flicker_gap_and_open_outage() -> None:
    tl = source_timeline(grid_ok=grid_series())
    assert [(o.start_ms - T0, o.end_ms - T0, o.open) for o in tl.outages] == [
        (H, 2 * H, False),
        (5 * H, 6 * H, True),
    ]
    # the 20-minute silence with the grid on both sides is unknown, not an outage
    unknown = [(s.start_ms - T0, s.end_ms - T0) for s in tl.spans if s.source == "unknown"]
    assert (4 * H, 4 * H + 20 * MIN) in unknown
    assert tl.outage_ms == 2 * H
    assert outage_intervals(tl) == [(T0 + H, T0 + 2 * H), (T0 + 5 * H, T0 + 6 * H)]


def test_debounce_and_bridge_are_parameters() -> None:
    series = grid_series()
    no_debounce = source_timeline(grid_ok=series, params=SourceParams(min_duration_ms=0))
    assert (T0 + 3 * H, T0 + 3 * H + 20 * S) in outage_intervals(no_debounce)
    no_bridge = source_timeline(grid_ok=series, params=SourceParams(bridge_ms=5 * MIN))
    late = [
        (o.start_ms - T0, o.end_ms - T0, o.open)
        for o in no_bridge.outages
        if o.start_ms >= T0 + 5 * H
    ]
    # without bridging, the silence cuts the outage: the first part's end is not seen
    assert late == [(5 * H, 5 * H + 10 * MIN, True), (5 * H + 20 * MIN, 6 * H, True)]


def test_a_long_silence_between_outage_readings_is_not_bridged() -> None:
    series = [(T0, True), (T0 + MIN, False), (T0 + 2 * MIN, False), (T0 + 62 * MIN, False)]
    series += [(T0 + 63 * MIN, True), (T0 + 64 * MIN, True)]
    tl = source_timeline(grid_ok=series)
    assert [(o.start_ms - T0, o.end_ms - T0, o.open) for o in tl.outages] == [
        (MIN, 2 * MIN, True),
        (62 * MIN, 63 * MIN, False),
    ]


def test_until_ms_extends_the_last_reading_within_the_gap_limit() -> None:
    series = [(T0, True), (T0 + MIN, False)]
    tl = source_timeline(grid_ok=series, until_ms=T0 + 4 * MIN)
    assert [(o.start_ms, o.end_ms, o.open) for o in tl.outages] == [(T0 + MIN, T0 + 4 * MIN, True)]
    far = source_timeline(grid_ok=series, until_ms=T0 + 60 * MIN)
    assert far.spans[-1].source == "unknown"
    with pytest.raises(InvalidPayload):
        source_timeline(grid_ok=series, until_ms=T0)


def test_source_signal_with_generator_and_none() -> None:
    series = every(T0, T0 + H, 10 * S, "grid")
    series += every(T0 + H, T0 + H + 40 * S, 10 * S, "none")  # changeover delay
    series += every(T0 + H + 40 * S, T0 + 2 * H, 10 * S, "generator")
    series += every(T0 + 2 * H, T0 + 3 * H + 10 * S, 10 * S, "GRID")
    tl = source_timeline(source=series)
    assert len(tl.outages) == 1
    o = tl.outages[0]
    assert (o.start_ms, o.end_ms, o.open) == (T0 + H, T0 + 2 * H, False)
    assert o.generator_ms == H - 40 * S
    assert o.unpowered_ms == 40 * S
    assert tl.generator_runs == ((T0 + H + 40 * S, T0 + 2 * H),)
    assert tl.time_on("grid") == 2 * H


def test_generator_status_alone_gives_the_outages_it_covered() -> None:
    series = every(T0, T0 + H, MIN, False) + every(T0 + H, T0 + 2 * H, MIN, True)
    series += every(T0 + 2 * H, T0 + 3 * H + MIN, MIN, False)
    tl = source_timeline(generator_running=series)
    assert [(o.start_ms, o.end_ms, o.open) for o in tl.outages] == [(T0 + H, T0 + 2 * H, False)]
    assert tl.generator_ms == H


def test_generator_test_run_with_grid_present_is_no_outage() -> None:
    grid = every(T0, T0 + 2 * H + MIN, MIN, True)
    gen = every(T0, T0 + H, MIN, False) + every(T0 + H, T0 + H + 15 * MIN, MIN, True)
    gen += every(T0 + H + 15 * MIN, T0 + 2 * H + MIN, MIN, False)
    tl = source_timeline(grid_ok=grid, generator_running=gen)
    assert tl.outages == ()
    assert tl.generator_ms == 15 * MIN


def test_bad_input_is_refused() -> None:
    with pytest.raises(InvalidPayload):
        source_timeline()
    with pytest.raises(InvalidPayload):
        source_timeline(source=[(T0, "moonlight")])
    assert parse_source("WAPDA") == "grid"
    assert parse_source("Genset") == "generator"
    with pytest.raises(ConfigError):
        SourceParams(max_gap_ms=0)


def _simulate_panel(
    seed: int, days: int, step_ms: int
) -> tuple[PowerSchedule, dict[str, list[tuple[int, Value]]]]:
    schedule = PowerSchedule(seed)
    panel = PowerSourceDevice("p", "Panel", seed, T0, schedule)
    env = Environment(schedule, Weather(seed))
    out: dict[str, list[tuple[int, Value]]] = {}
    for t in range(T0, T0 + days * 24 * H + 1, step_ms):
        env.begin(t)
        for key, value in panel.advance(t, env).items():
            out.setdefault(key, []).append((t, value))
    return schedule, out


def _truth(schedule: PowerSchedule, days: int) -> list[tuple[int, int, int | None]]:
    day0 = (T0 + 5 * H) // (24 * H)
    out = []
    for day in range(day0, day0 + days + 1):
        for o in schedule.outages(day):
            if o.start_ms >= T0 and o.end_ms <= T0 + days * 24 * H:
                out.append((o.start_ms, o.end_ms, o.generator_ms))
    return out


def test_simulated_panel_outages_match_the_load_shedding_schedule() -> None:
    days, step = 3, 10 * S
    schedule, signals = _simulate_panel(7, days, step)
    truth = _truth(schedule, days)
    assert len(truth) >= 6
    for key in ("source", "grid_ok"):
        if key == "source":
            tl = source_timeline(source=signals[key])
        else:
            tl = source_timeline(grid_ok=signals[key])
        found = [(o.start_ms, o.end_ms) for o in tl.outages]
        assert len(found) == len(truth), key
        for (s, e), (ts, te, _) in zip(found, truth, strict=True):
            assert ts <= s < ts + step and te <= e < te + step
    tl = source_timeline(source=signals["source"])
    covered = [t for t in truth if t[2] is not None]
    expected_gen = sum(te - tg for _, te, tg in covered if tg is not None)
    assert abs(tl.generator_ms - expected_gen) <= 2 * step * len(covered)
    gen_only = source_timeline(generator_running=signals["generator_running"])
    assert len(gen_only.outages) == len(covered)


def test_diesel_from_the_simulated_tank_matches_its_burn_rate() -> None:
    days, step = 2, 10 * S
    _, signals = _simulate_panel(11, days, step)
    tl = source_timeline(source=signals["source"])
    tank = 400.0
    litres = fuel_from_tank(signals["generator_fuel_pct"], tank, deadband_pct=0.05)
    expected = PowerSourceDevice.BURN_PCT_PER_H / 100.0 * tank * tl.generator_ms / H
    assert tl.generator_ms > H
    assert litres == pytest.approx(expected, rel=0.02, abs=0.5)


def test_meter_voltage_and_frequency_show_the_source() -> None:
    seed, step = 5, 10 * S
    schedule = PowerSchedule(seed)
    meter = EnergyMeter("m", "Meter", seed, T0, members=[], base_kw=20.0, rated_kw=100.0)
    env = Environment(schedule, Weather(seed))
    volts, freq = [], []
    for t in range(T0, T0 + 2 * 24 * H + 1, step):
        env.begin(t)
        r = meter.advance(t, env)
        volts.append((t, r["voltage_l1_v"]))
        freq.append((t, r["frequency_hz"]))
    tl = meter_timeline(volts, freq)
    truth = _truth(schedule, 2)
    found = [(o.start_ms, o.end_ms) for o in tl.outages]
    assert len(found) == len(truth)
    for (s, e), (ts, te, _) in zip(found, truth, strict=True):
        assert (
            abs(s - ts) <= step and abs(e - te) <= 2 * MIN
        )  # the return of the grid is seen within the window
    for _, te, tg in truth:
        if tg is not None:
            on_gen = [sp for sp in tl.spans if sp.source == "generator" and sp.start_ms < te]
            assert any(abs(sp.start_ms - tg) <= 2 * MIN for sp in on_gen)
    assert tl.time_on("grid") > 40 * H


def test_meter_classification_by_hand() -> None:
    ts = [T0 + i * 10 * S for i in range(40)]
    steady = [50.0 + (0.02 if i % 2 else -0.02) for i in range(10)]
    hunting = [50.0 + (0.3 if i % 2 else -0.3) for i in range(10)]
    hz = steady + [0.0] * 10 + hunting + [49.0] * 10
    v = [230.0] * 10 + [0.0] * 10 + [228.0] * 20
    kinds = [
        k for _, k in classify_meter(list(zip(ts, v, strict=True)), list(zip(ts, hz, strict=True)))
    ]
    assert kinds[:10] == ["grid"] * 10
    assert kinds[10:20] == ["none"] * 10
    assert kinds[20:30] == ["generator"] * 10  # hunting governor
    assert kinds[-1] == "generator"  # steady but 1 Hz off


def test_fuel_and_cost_by_hand() -> None:
    curve = FuelCurve(100.0, (4.0, 8.0, 12.0, 16.0, 20.0))  # 80 kW rated
    load = [(T0, 40.0), (T0 + H, 60.0), (T0 + 90 * MIN, 10.0), (T0 + 2 * H, 10.0)]
    # runs: 0-2h with load (40 kW 1 h = 12 L; 60 kW 0.5 h = 8 L; 10 kW 0.5 h = 6 L/h x 0.5 = 3 L),
    # and 5h-6h with no load reading, at the assumed 50 % (12 L/h)
    use = generator_use(
        [(T0, T0 + 2 * H), (T0 + 5 * H, T0 + 6 * H)], curve, 280.0, load_kw=load, max_gap_ms=H
    )
    assert use.run_hours == 3.0
    assert use.assumed_ms == H
    assert use.litres == pytest.approx(12 + 8 + 3 + 12)
    assert use.cost_pkr == pytest.approx(35 * 280.0)
    assert use.energy_kwh == pytest.approx(40 + 30 + 5)
    assert use.pkr_per_kwh == pytest.approx(35 * 280.0 / 75)
    over = generator_use([(T0, T0 + H)], curve, 1.0, load_kw=[(T0, 200.0)], max_gap_ms=H)
    assert over.litres == pytest.approx(20.0)  # beyond full load stays at the full-load figure


def test_typical_curve_is_the_documented_chart() -> None:
    curve = FuelCurve.typical(125.0)
    assert curve.litres_per_hour == pytest.approx((4.1, 9.8, 15.5, 22.0, 28.0))
    assert float(curve.litres_per_hour_at(50.0)) == pytest.approx(15.5)  # 50 % of 100 kW
    with pytest.raises(ConfigError):
        FuelCurve(100.0, (5.0, 4.0, 6.0, 7.0, 8.0))


def test_fuel_from_tank_by_hand() -> None:
    levels = [(T0 + i * MIN, v) for i, v in enumerate([80.0, 79.8, 70.0, 100.0, 93.0])]
    # 80 -> 70 is 10 %, refill to 100, 100 -> 93 is 7 %: 17 % of 200 L
    assert fuel_from_tank(levels, 200.0) == pytest.approx(34.0)
    arr = np.array([[T0, 50.0], [T0 + MIN, 40.0]])
    assert fuel_from_tank(arr, 100.0) == pytest.approx(10.0)


def test_the_shorter_of_two_short_runs_is_the_flicker() -> None:
    # grid, cut for 40 s, back for 30 s, cut for good: the 30 s return is the flicker
    series: list[tuple[int, Value]] = []
    for t in range(T0, T0 + 3 * H + 1, 10 * S):
        rel = t - T0
        series.append((t, not (H <= rel < H + 40 * S or H + 70 * S <= rel < 2 * H)))
    tl = source_timeline(grid_ok=series)
    assert [(o.start_ms - T0, o.end_ms - T0) for o in tl.outages] == [(H, 2 * H)]
