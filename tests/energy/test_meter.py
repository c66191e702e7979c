from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from karkhana.core.errors import InvalidPayload
from karkhana.energy.meter import (
    counter_energy,
    imbalance,
    integrate_power,
    power_factor,
    reactive_from_power_factor,
    unmetered,
)
from karkhana.energy.model import Gap

Q = 15 * 60_000  # a quarter hour in ms
T0 = 1_790_000_000_000


def test_counter_increments_between_readings() -> None:
    got = counter_energy([T0, T0 + Q, T0 + 2 * Q], [1000.0, 1012.5, 1020.0])
    assert got.series.values.tolist() == [12.5, 7.5]
    assert got.series.start_ms.tolist() == [T0, T0 + Q]
    assert got.series.end_ms.tolist() == [T0 + Q, T0 + 2 * Q]
    assert got.gaps == ()


def test_counter_rollover_of_a_six_digit_display() -> None:
    # display 999,999.9 at most: wraps to 0 at 1,000,000
    # 999,990.0 -> 5.0 is (1,000,000 - 999,990) + 5 = 10 + 5 = 15 kWh
    got = counter_energy(
        [T0, T0 + Q, T0 + 2 * Q], [999_980.0, 999_990.0, 5.0], rollover=1_000_000.0
    )
    assert got.series.values.tolist() == [10.0, 15.0]
    assert got.gaps == ()


def test_counter_rollover_of_a_scaled_32_bit_register() -> None:
    # a 32-bit register in 0.01 kWh wraps at 2**32 x 0.01 = 42,949,672.96 kWh
    # 42,949,670.00 -> 3.04 is 2.96 + 3.04 = 6.00 kWh
    wrap = 2**32 * 0.01
    got = counter_energy([T0, T0 + Q], [42_949_670.00, 3.04], rollover=wrap)
    assert got.series.values[0] == pytest.approx(6.0)


def test_a_reset_starts_a_new_baseline_and_leaves_a_gap() -> None:
    # 5000 -> 12: reset (not in the top tenth -> bottom tenth of the range), then 12 -> 20 = 8
    got = counter_energy(
        [T0, T0 + Q, T0 + 2 * Q, T0 + 3 * Q],
        [4990.0, 5000.0, 12.0, 20.0],
        rollover=1_000_000.0,
    )
    assert got.series.values.tolist() == [10.0, 8.0]
    assert got.gaps == (Gap(T0 + Q, T0 + 2 * Q, "reset"),)
    assert got.missing_ms == Q
    assert (got.series.values >= 0).all()


def test_a_replaced_meter_with_another_reading_is_a_reset_not_a_rollover() -> None:
    # old meter at 80,000, the new one starts at 350: 80,000 is not in the top tenth of 1,000,000
    got = counter_energy(
        [T0, T0 + Q, T0 + 2 * Q, T0 + 3 * Q],
        [79_990.0, 80_000.0, 350.0, 362.0],
        rollover=1_000_000.0,
    )
    assert got.series.values.tolist() == [10.0, 12.0]
    assert [g.reason for g in got.gaps] == ["reset"]


def test_a_drop_without_a_known_rollover_is_a_reset() -> None:
    got = counter_energy([T0, T0 + Q, T0 + 2 * Q], [999_990.0, 5.0, 9.0])
    assert got.series.values.tolist() == [4.0]
    assert got.gaps[0].reason == "reset"


def test_an_implausible_jump_is_dropped_not_billed() -> None:
    # a 100 kW connection draws at most 25 kWh in a quarter hour; 101 -> 5000 is a bad reading,
    # and 5000 -> 102 is then a drop (a new baseline): only 100 -> 101 and 102 -> 104 count
    got = counter_energy(
        [T0 + i * Q for i in range(5)],
        [100.0, 101.0, 5000.0, 102.0, 104.0],
        max_kw=100.0,
    )
    assert got.series.values.tolist() == [1.0, 2.0]
    assert got.gaps == (
        Gap(T0 + Q, T0 + 2 * Q, "implausible"),
        Gap(T0 + 2 * Q, T0 + 3 * Q, "reset"),
    )
    assert got.series.values.max() <= 25.0


def test_readings_too_far_apart_are_a_gap() -> None:
    got = counter_energy([T0, T0 + Q, T0 + 9 * Q], [0.0, 5.0, 45.0], max_gap_ms=Q)
    assert got.series.values.tolist() == [5.0]
    assert got.gaps == (Gap(T0 + Q, T0 + 9 * Q, "no data"),)


def test_counter_skips_missing_readings_and_refuses_unsorted_times() -> None:
    got = counter_energy([T0, T0 + Q, T0 + 2 * Q], [1.0, float("nan"), 4.0])
    assert got.series.values.tolist() == [3.0]
    with pytest.raises(InvalidPayload, match="increasing"):
        counter_energy([T0, T0], [1.0, 2.0])


@given(
    st.lists(st.floats(0, 50, allow_nan=False), min_size=1, max_size=60),
    st.floats(0, 999_999),
)
def test_a_wrapping_counter_loses_nothing(steps: list[float], start: float) -> None:
    wrap = 1_000_000.0
    readings = np.concatenate(([start], start + np.cumsum(steps))) % wrap
    got = counter_energy(T0 + Q * np.arange(len(readings)), readings, rollover=wrap)
    assert got.gaps == ()
    assert got.series.total == pytest.approx(sum(steps), abs=1e-6)


def test_power_integration_by_trapezoids() -> None:
    # 0 -> 60 kW over one minute: mean 30 kW x 1/60 h = 0.5 kWh; 60 -> 60: 1 kWh
    got = integrate_power([T0, T0 + 60_000, T0 + 120_000], [0.0, 60.0, 60.0], max_gap_ms=120_000)
    assert got.series.values.tolist() == [0.5, 1.0]


def test_power_integration_does_not_cross_a_gap() -> None:
    # 60 kW sampled each minute for 10 minutes, silence for 20, then 10 more minutes
    ts = [T0 + i * 60_000 for i in range(11)] + [T0 + (30 + i) * 60_000 for i in range(11)]
    got = integrate_power(ts, [60.0] * 22, max_gap_ms=5 * 60_000)
    # 20 minutes of 60 kW = 20 kWh measured; the 20 silent minutes are missing, not 0, not 20
    assert got.series.total == pytest.approx(20.0)
    assert got.gaps == (Gap(T0 + 10 * 60_000, T0 + 30 * 60_000, "no data"),)
    assert got.missing_ms == 20 * 60_000


def test_a_missing_power_sample_leaves_a_gap_on_both_sides() -> None:
    ts = [T0 + i * 60_000 for i in range(4)]
    got = integrate_power(ts, [60.0, float("nan"), 60.0, 60.0], max_gap_ms=120_000)
    assert got.series.values.tolist() == [1.0]
    assert got.gaps == (Gap(T0, T0 + 120_000, "no data"),)


def test_reactive_power_integrates_into_kvarh() -> None:
    got = integrate_power([T0, T0 + 3_600_000], [30.0, 30.0], max_gap_ms=3_600_000, unit="kVArh")
    assert got.series.unit == "kVArh"
    assert got.series.total == 30.0


def test_power_factor_from_active_and_reactive() -> None:
    # 4 kW and 3 kVAr: 5 kVA, PF 4/5 = 0.8; a leading (negative) kVAr gives the same PF
    pf = power_factor([4.0, 4.0, 0.0, 10.0], [3.0, -3.0, 0.0, 0.0])
    assert pf[:2].tolist() == [0.8, 0.8]
    assert math.isnan(pf[2])
    assert pf[3] == 1.0


def test_reactive_energy_from_the_meters_power_factor() -> None:
    # PF 0.8 -> tan(acos 0.8) = 0.6/0.8 = 0.75: 100 kWh come with 75 kVArh
    got = reactive_from_power_factor([100.0, 100.0, 100.0], [0.8, 1.0, 0.0])
    assert got[0] == pytest.approx(75.0)
    assert got[1] == 0.0
    assert math.isnan(got[2])


def test_nema_imbalance() -> None:
    # 230, 232, 225 V: mean 229, largest deviation |225 - 229| = 4: 4 / 229 = 1.747 %
    assert imbalance([230.0, 232.0, 225.0]) == pytest.approx(400 / 229)
    rows = imbalance([[100.0, 100.0, 100.0], [90.0, 100.0, 110.0], [0.0, 0.0, 0.0]])
    assert rows[:2].tolist() == [0.0, 10.0]
    assert math.isnan(rows[2])
    with pytest.raises(InvalidPayload):
        imbalance([1.0, 2.0])


def test_unmetered_remainder_and_suspect_wiring() -> None:
    parent = [100.0, 100.0, 100.0, 100.0]
    children = [
        [50.0, 60.0, 70.0, 50.0],
        [30.0, 45.0, 31.0, float("nan")],
    ]
    got = unmetered(parent, children, tolerance=0.02)
    # 100 - 80 = 20; 100 - 105 = -5 (beyond 2 kWh: suspect); 100 - 101 = -1 (within 2 kWh)
    assert got.kwh[:3].tolist() == [20.0, -5.0, -1.0]
    assert math.isnan(got.kwh[3])
    assert got.suspect.tolist() == [False, True, False, False]
    assert got.any_suspect
    assert got.total == 14.0
    with pytest.raises(InvalidPayload):
        unmetered(parent, [[1.0, 2.0]])
