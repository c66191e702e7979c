from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from karkhana.core.errors import InvalidPayload, NotFound
from karkhana.energy.billing import (
    billing_period,
    billing_periods,
    compare,
    day_edges,
    demand,
    demand_edges,
    estimate_bill,
    estimate_bills,
    maximum_demand,
    period_costs,
    power_factor_of,
)
from karkhana.energy.model import (
    Adjustment,
    ClockWindow,
    DemandCharge,
    FixedCharge,
    IntervalSeries,
    PowerFactorPenalty,
    Season,
    Tariff,
    Tax,
)
from karkhana.energy.tariff import load_tariffs

PKT = ZoneInfo("Asia/Karachi")
MIN = 60_000
Q = 15 * MIN
H = 60 * MIN


def ms(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> int:
    return int(datetime(y, mo, d, h, mi, tzinfo=PKT).timestamp() * 1000)


def hhmm(h: int, m: int = 0) -> int:
    return h * 60 + m


# Round figures so that every expected amount can be checked by hand.
SEASONS = (
    Season("winter", frozenset({12, 1, 2}), (ClockWindow(hhmm(17), hhmm(21)),)),
    Season("rest", frozenset(range(3, 12)), (ClockWindow(hhmm(18), hhmm(22)),)),
)
TOU = Tariff(
    id="test",
    name="Test",
    note="example",
    currency="PKR",
    peak_rate=50.0,
    off_peak_rate=40.0,
    seasons=SEASONS,
    fixed=(FixedCharge("meter_rent", "Meter rent", 100.0),),
    demand=DemandCharge(per_kw=1000.0, interval_min=30, minimum_fraction=0.5),
    power_factor=PowerFactorPenalty(0.90, 2.0, ("energy", "mdi"), whole_points=True),
    adjustments=(Adjustment("fpa", "Fuel price adjustment", 2.0),),
    taxes=(
        Tax("ed", "Electricity duty", 1.5, ("energy", "fixed", "mdi")),
        Tax("gst", "GST", 18.0, ("energy", "fixed", "mdi", "pf_penalty", "adjustments")),
    ),
)
ENERGY_ONLY = Tariff(
    "e", "E", "example", "PKR", peak_rate=50.0, off_peak_rate=40.0, seasons=SEASONS
)


def constant(start: int, end: int, step: int, kw: float) -> IntervalSeries:
    n = (end - start) // step
    return IntervalSeries.regular(start, step, [kw * step / H] * n)


def test_an_interval_straddling_the_peak_start_is_split_pro_rata() -> None:
    # hourly intervals at :30, 10 kWh each, from 9 November 23:30 to 10 November 23:30;
    # November's peak is 18:00-22:00, so [17:30, 18:30) puts 5 kWh off-peak and 5 kWh peak
    energy = constant(ms(2026, 11, 9, 23, 30), ms(2026, 11, 10, 23, 30), H, 10.0)
    (day,) = period_costs(ENERGY_ONLY, energy, [ms(2026, 11, 10), ms(2026, 11, 11)], PKT)
    # in the day: 00:00-23:30 = 23.5 h x 10 kW = 235 kWh; peak 18:00-22:00 = 4 h x 10 = 40 kWh
    assert day.kwh == pytest.approx(235.0)
    assert day.kwh_peak == pytest.approx(40.0)
    assert day.kwh_off_peak == pytest.approx(195.0)
    # 40 x 50 + 195 x 40 = 2,000 + 7,800 = 9,800
    assert day.energy_amount == pytest.approx(9800.0)
    assert day.coverage == pytest.approx(23.5 / 24)
    (hour,) = period_costs(
        ENERGY_ONLY, energy, [ms(2026, 11, 10, 17, 30), ms(2026, 11, 10, 18, 30)]
    )
    assert (hour.kwh_off_peak, hour.kwh_peak) == pytest.approx((5.0, 5.0))


def test_the_peak_window_moves_from_november_into_december() -> None:
    # 10 kWh in 17:00-18:00 each day: off-peak on 30 November (peak 18-22),
    # peak on 1 December (winter peak 17-21)
    energy = IntervalSeries.of(
        [
            (ms(2026, 11, 30, 17), ms(2026, 11, 30, 18), 10.0),
            (ms(2026, 12, 1, 17), ms(2026, 12, 1, 18), 10.0),
        ]
    )
    nov, dec = period_costs(ENERGY_ONLY, energy, day_edges(ms(2026, 11, 30), ms(2026, 12, 2), PKT))
    assert (nov.kwh_peak, nov.kwh_off_peak, nov.energy_amount) == (0.0, 10.0, 400.0)  # 10 x 40
    assert (dec.kwh_peak, dec.kwh_off_peak, dec.energy_amount) == (10.0, 0.0, 500.0)  # 10 x 50


def test_the_same_energy_at_any_resolution_gives_the_same_split() -> None:
    start, end = ms(2026, 11, 10), ms(2026, 11, 11)
    edges = [start, end]
    a = period_costs(TOU, constant(start, end, MIN, 12.0), edges)[0]
    b = period_costs(TOU, constant(start, end, Q, 12.0), edges)[0]
    c = period_costs(TOU, constant(start, end, H, 12.0), edges)[0]
    # 4 h x 12 kW = 48 kWh peak, 20 h x 12 = 240 kWh off-peak; fpa 288 x 2 = 576
    for cost in (a, b, c):
        assert (cost.kwh_peak, cost.kwh_off_peak) == pytest.approx((48.0, 240.0))
        assert cost.adjustments_amount == pytest.approx(576.0)
        assert cost.amount == pytest.approx(48 * 50 + 240 * 40 + 576)


def test_cost_per_shift_with_a_night_shift_across_midnight() -> None:
    # 10 kW all day, shifts A 06-14, B 14-22, C 22-06 (into 11 November)
    energy = constant(ms(2026, 11, 10), ms(2026, 11, 12), Q, 10.0)
    edges = [ms(2026, 11, 10, 6), ms(2026, 11, 10, 14), ms(2026, 11, 10, 22), ms(2026, 11, 11, 6)]
    a, b, c = period_costs(TOU, energy, edges, PKT)
    assert (a.kwh_peak, a.kwh_off_peak) == pytest.approx((0.0, 80.0))  # 8 h x 10
    # B holds 18:00-22:00: 40 kWh peak, 14:00-18:00: 40 kWh off-peak
    assert (b.kwh_peak, b.kwh_off_peak) == pytest.approx((40.0, 40.0))
    assert b.energy_amount == pytest.approx(40 * 50 + 40 * 40)
    assert (c.kwh_peak, c.kwh_off_peak) == pytest.approx((0.0, 80.0))


def test_billing_months_by_calendar_or_meter_reading_day() -> None:
    assert billing_period(ms(2026, 12, 1), PKT) == (ms(2026, 12, 1), ms(2027, 1, 1))
    assert billing_period(ms(2026, 11, 30, 23, 59), PKT) == (ms(2026, 11, 1), ms(2026, 12, 1))
    # read on the 15th: 10 December lies in 15 November - 15 December
    assert billing_period(ms(2026, 12, 10), PKT, 15) == (ms(2026, 11, 15), ms(2026, 12, 15))
    assert billing_period(ms(2026, 12, 20), PKT, 15) == (ms(2026, 12, 15), ms(2027, 1, 15))
    assert billing_periods(ms(2026, 11, 20), ms(2027, 1, 16), PKT, 15) == [
        (ms(2026, 11, 15), ms(2026, 12, 15)),
        (ms(2026, 12, 15), ms(2027, 1, 15)),
        (ms(2027, 1, 15), ms(2027, 2, 15)),
    ]
    with pytest.raises(InvalidPayload, match="reading day"):
        billing_period(ms(2026, 12, 1), PKT, 31)


def test_a_bill_counts_only_energy_inside_its_month() -> None:
    # 10 kWh in each of 30 Nov 23:00-24:00 and 1 Dec 00:00-01:00: December's bill has 10
    energy = constant(ms(2026, 11, 30, 23), ms(2026, 12, 1, 1), H, 10.0)
    start, end = billing_period(ms(2026, 12, 5), PKT)
    bill = estimate_bill(ENERGY_ONLY, energy, start, end, PKT)
    assert (bill.kwh_peak, bill.kwh_off_peak) == pytest.approx((0.0, 10.0))
    assert bill.total == pytest.approx(400.0)
    assert bill.coverage == pytest.approx(1 / (31 * 24))
    assert any("covers 0.1%" in n for n in bill.notes)


def two_days_with_a_demand_peak() -> IntervalSeries:
    """20 kW from 10 to 12 November in quarter hours; on 11 November 10:00-10:30 100 kW, and
    10:30-10:45 160 kW."""
    start = ms(2026, 11, 10)
    kw = np.full(2 * 96, 20.0)
    i = (ms(2026, 11, 11, 10) - start) // Q
    kw[i : i + 2] = 100.0
    kw[i + 2] = 160.0
    return IntervalSeries.regular(start, Q, kw * 0.25)


def test_the_half_hour_demand_sets_the_mdi_not_a_single_quarter() -> None:
    energy = two_days_with_a_demand_peak()
    start, end = ms(2026, 11, 10), ms(2026, 11, 12)
    kw = demand(energy, start, end, PKT)
    assert len(kw) == 96
    # [10:00, 10:30): (25 + 25) kWh x 2 = 100 kW; [10:30, 11:00): (40 + 5) x 2 = 90 kW
    kw_max, at = maximum_demand(energy, start, end, PKT)
    assert kw_max == pytest.approx(100.0)
    assert at == ms(2026, 11, 11, 10)
    peak = np.array([[ms(2026, 11, 10, 18), ms(2026, 11, 10, 22)]])
    kw_max, at = maximum_demand(energy, start, end, PKT, peak=peak)
    assert kw_max == pytest.approx(20.0)
    assert at == ms(2026, 11, 10, 18)


def test_a_hand_computed_bill() -> None:
    energy = two_days_with_a_demand_peak()
    bill = estimate_bill(
        TOU,
        energy,
        ms(2026, 11, 10),
        ms(2026, 11, 12),
        PKT,
        sanctioned_kw=150.0,
        power_factor=0.853,
    )
    # energy: 48 h x 20 kW = 960 kWh, + 80 kW x 0.5 h = 40, + 140 kW x 0.25 h = 35: 1,035 kWh
    # peak: 18:00-22:00 on two days at 20 kW = 2 x 4 x 20 = 160 kWh; off-peak 1,035 - 160 = 875
    assert (bill.kwh_peak, bill.kwh_off_peak) == pytest.approx((160.0, 875.0))
    amounts = {line.id: line.amount for line in bill.lines}
    expected = {
        "energy_peak": 8_000.0,  # 160 x 50
        "energy_off_peak": 35_000.0,  # 875 x 40
        "meter_rent": 100.0,
        "mdi": 100_000.0,  # max(100 kW, 0.5 x 150 kW = 75) x 1,000
        "fpa": 2_070.0,  # 1,035 x 2
        # PF 0.853: 4.7 points below 0.90, whole points: 4 x 2 % = 8 % of (43,000 + 100,000)
        "pf_penalty": 11_440.0,
        "ed": 2_146.5,  # 1.5 % of (43,000 + 100 + 100,000 = 143,100)
        # 18 % of (43,000 + 100 + 100,000 + 11,440 + 2,070 = 156,610)
        "gst": 28_189.8,
    }
    assert list(amounts) == list(expected)
    assert amounts == pytest.approx(expected)
    # 43,000 + 100 + 100,000 + 2,070 + 11,440 + 2,146.5 + 28,189.8 = 186,946.3
    assert bill.total == pytest.approx(186_946.3)
    assert bill.mdi_kw == pytest.approx(100.0)
    assert bill.mdi_at_ms == ms(2026, 11, 11, 10)
    assert bill.coverage == 1.0 and bill.notes == ()
    assert bill.line("pf_penalty").rate == pytest.approx(0.08)
    with pytest.raises(NotFound):
        bill.line("nothing")
    diff = compare(bill, 190_000.0)
    # 186,946.3 - 190,000 = -3,053.7, i.e. -1.607 % of the actual bill
    assert diff.difference == pytest.approx(-3_053.7)
    assert diff.percent == pytest.approx(-3_053.7 / 1_900)
    assert compare(100.0, 0.0).percent is None


def test_mdi_billed_on_half_the_sanctioned_load_when_higher() -> None:
    energy = two_days_with_a_demand_peak()
    bill = estimate_bill(TOU, energy, ms(2026, 11, 10), ms(2026, 11, 12), PKT, sanctioned_kw=250.0)
    mdi = bill.line("mdi")
    # 0.5 x 250 = 125 kW > 100 kW recorded: 125 x 1,000 = 125,000
    assert (mdi.quantity, mdi.amount) == (125.0, 125_000.0)
    assert "sanctioned" in mdi.label
    assert bill.mdi_kw == pytest.approx(100.0)


def test_power_factor_from_reactive_energy_and_no_penalty_above_the_threshold() -> None:
    energy = constant(ms(2026, 11, 10), ms(2026, 11, 11), Q, 10.0)  # 240 kWh
    # 240 kWh with 180 kVArh: 300 kVAh, PF 0.8: 10 points x 2 % = 20 % of energy + MDI
    low = estimate_bill(TOU, energy, ms(2026, 11, 10), ms(2026, 11, 11), PKT, kvarh=180.0)
    assert low.power_factor == pytest.approx(0.8)
    # energy 40 x 50 + 200 x 40 = 10,000; MDI 10 kW x 1,000 = 10,000; 20 % of 20,000 = 4,000
    assert low.line("pf_penalty").amount == pytest.approx(4_000.0)
    good = estimate_bill(TOU, energy, ms(2026, 11, 10), ms(2026, 11, 11), PKT, power_factor=0.95)
    assert "pf_penalty" not in {line.id for line in good.lines}
    unknown = estimate_bill(TOU, energy, ms(2026, 11, 10), ms(2026, 11, 11), PKT)
    assert any("power factor unknown" in n for n in unknown.notes)
    assert power_factor_of(0.0, 0.0) is None
    with pytest.raises(InvalidPayload):
        estimate_bill(TOU, energy, ms(2026, 11, 10), ms(2026, 11, 11), PKT, power_factor=1.2)


def test_exact_points_penalty() -> None:
    exact = Tariff(
        "x", "X", "example", "PKR", flat_rate=10.0,
        power_factor=PowerFactorPenalty(0.90, 2.0, ("energy",), whole_points=False),
    )  # fmt: skip
    energy = constant(ms(2026, 11, 10), ms(2026, 11, 11), H, 10.0)  # 240 kWh x 10 = 2,400
    bill = estimate_bill(exact, energy, ms(2026, 11, 10), ms(2026, 11, 11), PKT, power_factor=0.875)
    # 2.5 points x 2 % = 5 % of 2,400 = 120
    assert bill.line("pf_penalty").amount == pytest.approx(120.0)


def test_hourly_data_says_the_mdi_is_underestimated() -> None:
    energy = constant(ms(2026, 11, 10), ms(2026, 11, 11), H, 10.0)
    bill = estimate_bill(TOU, energy, ms(2026, 11, 10), ms(2026, 11, 11), PKT, power_factor=0.95)
    assert bill.mdi_kw == pytest.approx(10.0)
    assert any("maximum demand is likely higher" in n for n in bill.notes)


def test_peak_only_demand() -> None:
    tariff = Tariff(
        "p", "P", "example", "PKR", peak_rate=50.0, off_peak_rate=40.0, seasons=SEASONS,
        demand=DemandCharge(per_kw=1000.0, peak_only=True),
    )  # fmt: skip
    bill = estimate_bill(tariff, two_days_with_a_demand_peak(), ms(2026, 11, 10), ms(2026, 11, 12))
    # the 100 kW half hour is at 10:00, off-peak: the peak-hours MDI is the 20 kW base load
    assert bill.mdi_kw == pytest.approx(20.0)
    assert bill.line("mdi").amount == pytest.approx(20_000.0)


def test_a_flat_tariff_bill_from_the_shipped_example() -> None:
    b1 = load_tariffs()["nepra_b1_flat_example"]
    energy = IntervalSeries.of([(ms(2026, 11, 10, 8), ms(2026, 11, 10, 18), 100.0)])
    start, end = billing_period(ms(2026, 11, 10), PKT)
    bill = estimate_bill(b1, energy, start, end, PKT)
    amounts = {line.id: line.amount for line in bill.lines}
    expected = {
        "energy": 4_400.0,  # 100 x 44
        "meter_rent": 75.0,
        "fpa": 150.0,  # 100 x 1.50
        "electricity_duty": 67.125,  # 1.5 % of (4,400 + 75)
        "gst": 832.5,  # 18 % of (4,400 + 75 + 150 = 4,625)
    }
    assert amounts == pytest.approx(expected)
    assert bill.total == pytest.approx(5_524.625)


def test_shipped_tou_example_bill_adds_up() -> None:
    b2 = load_tariffs()["nepra_b2b_tou_example"]
    start, end = billing_period(ms(2026, 11, 10), PKT)
    energy = constant(start, end, Q, 100.0)  # 30 days x 24 h x 100 kW = 72,000 kWh
    bill = estimate_bill(b2, energy, start, end, PKT, sanctioned_kw=150.0, power_factor=0.92)
    # peak 30 x 4 h x 100 = 12,000 kWh, off-peak 60,000
    assert (bill.kwh_peak, bill.kwh_off_peak) == pytest.approx((12_000.0, 60_000.0))
    energy_amount = 12_000 * 46.5 + 60_000 * 38.5  # 558,000 + 2,310,000
    mdi = 100 * 1250.0
    adjustments = 72_000 * (1.5 + 2.0)
    duty = 0.015 * (energy_amount + 150 + mdi)
    gst = 0.18 * (energy_amount + 150 + mdi + adjustments)
    assert bill.total == pytest.approx(energy_amount + 150 + mdi + adjustments + duty + gst)


def test_many_meters_at_once_equal_one_by_one() -> None:
    start, end = ms(2026, 11, 1), ms(2026, 12, 1)
    rng = np.random.default_rng(7)
    meters = {
        f"m{i}": IntervalSeries.regular(start, Q, rng.uniform(0, 30, (end - start) // Q))
        for i in range(5)
    }
    bills = estimate_bills(TOU, meters, start, end, PKT, power_factor={"m1": 0.8})
    for name, energy in meters.items():
        pf = 0.8 if name == "m1" else None
        assert bills[name].total == pytest.approx(
            estimate_bill(TOU, energy, start, end, PKT, power_factor=pf).total
        )


def test_demand_intervals_follow_the_local_clock() -> None:
    edges = demand_edges(ms(2026, 11, 10, 9, 10), ms(2026, 11, 10, 10, 40), PKT)
    assert edges.tolist() == [
        ms(2026, 11, 10, 9, 10),
        ms(2026, 11, 10, 9, 30),
        ms(2026, 11, 10, 10),
        ms(2026, 11, 10, 10, 30),
        ms(2026, 11, 10, 10, 40),
    ]


def test_bad_periods_are_refused() -> None:
    energy = IntervalSeries.empty()
    with pytest.raises(InvalidPayload):
        estimate_bill(TOU, energy, 10, 10)
    with pytest.raises(InvalidPayload):
        period_costs(TOU, energy, [5, 5])
    empty = estimate_bill(TOU, energy, ms(2026, 11, 1), ms(2026, 12, 1), PKT)
    assert (empty.kwh, empty.mdi_kw, empty.mdi_at_ms, empty.coverage) == (0.0, 0.0, None, 0.0)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 180), st.floats(0, 100)), min_size=1, max_size=40),
    st.integers(0, 24 * 60),
    st.lists(st.integers(1, 3 * 24 * 60), min_size=1, max_size=6),
)
def test_splitting_conserves_energy(
    pieces: list[tuple[int, float]], offset_min: int, cuts_min: list[int]
) -> None:
    start = ms(2026, 11, 29) + offset_min * MIN
    rows, t = [], start
    for minutes, kwh in pieces:
        rows.append((t, t + minutes * MIN, kwh))
        t += minutes * MIN
    energy = IntervalSeries.of(rows)
    edges = sorted(
        {ms(2026, 11, 28), ms(2026, 12, 5), *(ms(2026, 11, 28) + c * MIN for c in cuts_min)}
    )
    costs = period_costs(TOU, energy, edges, PKT)
    assert sum(c.kwh for c in costs) == pytest.approx(energy.total, abs=1e-6)
    assert all(c.kwh_peak >= -1e-9 and c.kwh_off_peak >= -1e-9 for c in costs)
