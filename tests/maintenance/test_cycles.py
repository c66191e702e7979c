from __future__ import annotations

import math

import numpy as np

from karkhana.assets.template import load_templates
from karkhana.maintenance.cycles import (
    HOUR_MS,
    Cycle,
    CycleBuilder,
    Life,
    cycles_of,
    lives,
    matrix,
    operating_state,
    relative_names,
    template_features,
    with_relative,
)

T0 = 1_760_000_400_000 - 1_760_000_400_000 % HOUR_MS
LOOM = load_templates()["power_loom"]


def test_a_cycle_averages_only_the_running_rows_of_its_hour() -> None:
    b = CycleBuilder(["v", "t"])
    assert b.add(T0, {"v": 2.0, "t": 40.0}, True) is None
    assert b.add(T0 + 60_000, {"v": 4.0, "t": None}, True) is None
    assert b.add(T0 + 120_000, {"v": 100.0, "t": 10.0}, False) is None  # stopped: left out
    done = b.add(T0 + HOUR_MS + 5, {"v": 1.0, "t": 1.0}, True)
    assert done == Cycle(T0, {"v": 3.0, "t": 40.0}, 2)


def test_an_hour_without_running_rows_gives_no_cycle() -> None:
    b = CycleBuilder(["v"])
    b.add(T0, {"v": 1.0}, False)
    assert b.add(T0 + HOUR_MS, {"v": 2.0}, True) is None
    # NaN and missing values are skipped, not averaged
    b.add(T0 + HOUR_MS + 1, {"v": math.nan}, True)
    done = b.add(T0 + 3 * HOUR_MS, {"v": 9.0}, True)
    assert done == Cycle(T0 + HOUR_MS, {"v": 2.0}, 2)


def test_cycles_of_uses_the_templates_state_rules() -> None:
    assert operating_state(LOOM, {"state": "running"}) == "running"
    rows = [
        (T0 + i * 600_000, {"state": "running" if i % 2 else "stopped", "vibration_rms_mm_s": i})
        for i in range(13)
    ]
    out = cycles_of(LOOM, rows, ["vibration_rms_mm_s"])
    # hour 1: running rows 1, 3, 5 -> mean 3; hour 2: 7, 9, 11 -> 9; row 12 is an unfinished hour
    assert [(c.start_ms, c.means["vibration_rms_mm_s"]) for c in out] == [
        (T0, 3.0),
        (T0 + HOUR_MS, 9.0),
    ]
    assert "vibration_rms_mm_s" in template_features(LOOM)
    assert "pick_count" not in template_features(LOOM)  # a counter is not averaged


def test_matrix_has_a_row_per_hour_with_nan_for_hours_without_data() -> None:
    cycles = [Cycle(T0, {"a": 1.0}, 3), Cycle(T0 + 2 * HOUR_MS, {"a": 3.0, "b": 5.0}, 3)]
    x = matrix(cycles, ["a", "b"], T0, T0 + 3 * HOUR_MS, HOUR_MS)
    assert x.shape == (3, 2)
    assert x[0, 0] == 1.0 and np.isnan(x[0, 1])
    assert np.isnan(x[1]).all()
    assert x[2].tolist() == [3.0, 5.0]


def test_relative_values_are_against_the_machines_first_day() -> None:
    col = np.array([np.nan, 2.0, 4.0, 3.0, 10.0])[:, None]
    out = with_relative(col, baseline_cycles=3)
    assert out.shape == (5, 2)
    assert np.isnan(out[0, 1])
    assert out[1:, 1].tolist() == [-1.0, 1.0, 0.0, 7.0]  # median of 2, 4, 3 is 3
    assert relative_names(["a"]) == ["a", "a:relative"]
    empty = with_relative(np.full((3, 1), np.nan))
    assert np.isnan(empty).all()


def test_failures_cut_the_history_into_lives() -> None:
    h = HOUR_MS
    got = lives(
        "m",
        T0 + 10,
        T0 + 100 * h + 5,
        [(T0 + 60 * h + 30, T0 + 64 * h), (T0 + 20 * h, T0 + 22 * h)],
    )
    assert got == [
        Life("m", T0, T0 + 20 * h, True),
        Life("m", T0 + 23 * h, T0 + 60 * h, True),
        Life("m", T0 + 65 * h, T0 + 100 * h, False),
    ]
    # still down: no current life
    assert lives("m", T0, T0 + 50 * h, [(T0 + 40 * h, None)]) == [Life("m", T0, T0 + 40 * h, True)]
    # a failure before the data begins leaves no empty life
    assert lives("m", T0 + 10 * h, T0 + 20 * h, [(T0 + 5 * h, T0 + 6 * h)]) == [
        Life("m", T0 + 10 * h, T0 + 20 * h, False)
    ]


def test_an_hour_of_only_infinite_values_gives_no_cycle() -> None:
    b = CycleBuilder(["v"])
    b.add(T0, {"v": math.inf}, True)
    assert b.add(T0 + HOUR_MS, {"v": 1.0}, True) is None
    # a cycle without one of the signals leaves NaN in its column
    x = matrix([Cycle(T0, {"w": 1.0}, 1)], ["v", "w"], T0, T0 + HOUR_MS, HOUR_MS)
    assert np.isnan(x[0, 0]) and x[0, 1] == 1.0
