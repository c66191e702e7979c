from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from karkhana.core.errors import InvalidPayload
from karkhana.energy.intensity import intensity
from karkhana.energy.model import IntervalSeries

PKT = ZoneInfo("Asia/Karachi")
MIN = 60_000
H = 60 * MIN


def ms(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> int:
    return int(datetime(y, mo, d, h, mi, tzinfo=PKT).timestamp() * 1000)


def test_kwh_per_metre_per_shift_from_hourly_energy_and_per_minute_counts() -> None:
    start = ms(2026, 11, 10, 6)
    # 24 hourly intervals from 06:00: 120 kWh each in shift A (06-14), 60 in B, 30 in C
    kwh = [120.0] * 8 + [60.0] * 8 + [30.0] * 8
    energy = IntervalSeries.regular(start, H, kwh)
    # weaving: 2 metres a minute in A, 1 in B, nothing in C (the shed stopped)
    metres = np.array([2.0] * 480 + [1.0] * 480 + [0.0] * 480)
    produced = IntervalSeries.regular(start, MIN, metres, unit="m")
    a, b, c = intensity(energy, produced, [start + k * 8 * H for k in range(4)])
    # A: 8 x 120 = 960 kWh over 480 x 2 = 960 m: 1.0 kWh/m; B: 480 kWh / 480 m = 1.0 kWh/m
    assert (a.kwh, a.produced, a.kwh_per_unit, a.unit) == (960.0, 960.0, 1.0, "m")
    assert (b.kwh, b.produced, b.kwh_per_unit) == (480.0, 480.0, 1.0)
    # C: 240 kWh for nothing: no figure, not infinity
    assert (c.kwh, c.produced, c.kwh_per_unit) == (240.0, 0.0, None)
    assert a.coverage == b.coverage == c.coverage == 1.0


def test_energy_and_parts_split_pro_rata_at_day_edges() -> None:
    # one 2-hour energy interval of 30 kWh across midnight, 40 parts in the same 2 hours
    energy = IntervalSeries.of([(ms(2026, 11, 10, 23), ms(2026, 11, 11, 1), 30.0)])
    parts = IntervalSeries.of([(ms(2026, 11, 10, 23), ms(2026, 11, 11, 1), 40.0)], unit="part")
    day1, day2 = intensity(energy, parts, [ms(2026, 11, 10), ms(2026, 11, 11), ms(2026, 11, 12)])
    # each day gets half: 15 kWh / 20 parts = 0.75 kWh per part
    assert (day1.kwh, day1.produced, day1.kwh_per_unit) == (15.0, 20.0, 0.75)
    assert (day2.kwh, day2.produced, day2.kwh_per_unit) == (15.0, 20.0, 0.75)
    # one hour of 24 with energy data
    assert day1.coverage == pytest.approx(1 / 24)
    with pytest.raises(InvalidPayload):
        intensity(energy, parts, [ms(2026, 11, 10)])
