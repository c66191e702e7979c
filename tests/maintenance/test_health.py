from __future__ import annotations

import math

import numpy as np
import pytest

from karkhana.maintenance.detector import MahalanobisDetector, PCADetector
from karkhana.maintenance.health import (
    DAY_MS,
    ConditionMonitor,
    Ewma,
    HealthTracker,
    days_until,
    health_index,
    trend_per_day,
)

HOUR_MS = 3_600_000


def test_index_scale() -> None:
    assert health_index(0.0) == 100.0
    assert health_index(1.0) == pytest.approx(80.0)
    assert health_index(2.0) == pytest.approx(50.0)
    assert health_index(20.0) < 5.0
    assert health_index(math.nan) == 100.0
    assert health_index(math.inf) == 0.0
    assert health_index(-math.inf) == 100.0
    values = [health_index(s / 10) for s in range(100)]
    assert values == sorted(values, reverse=True)


def test_trend_is_the_least_squares_slope_per_day() -> None:
    points = [(i * HOUR_MS, 90.0 - 0.5 * i) for i in range(24)]
    assert trend_per_day(points) == pytest.approx(-12.0)
    assert trend_per_day(points[:2]) is None
    assert trend_per_day([(0, 1.0)] * 5) is None
    assert days_until(74.0, -12.0) == pytest.approx(2.0)
    assert days_until(74.0, 1.0) is None


def test_ewma_matches_the_pandas_definition() -> None:
    e = Ewma(span=3)
    assert e.update(1.0) == 1.0
    assert e.update(3.0) == pytest.approx(2.0)
    assert e.update(math.nan) == pytest.approx(2.0)  # a gap changes nothing


def test_alarm_needs_confirmation_and_clears_with_hysteresis() -> None:
    t = HealthTracker(span=1, confirm=3)
    assert not t.update(0, 0.2).alarm
    ups = [t.update(i, 3.0) for i in range(1, 4)]
    assert [u.alarm for u in ups] == [False, False, True]
    assert ups[-1].raised
    assert t.update(5, 1.8).alarm  # index 55: between the levels, still in alarm
    cleared = t.update(6, 0.5)
    assert not cleared.alarm and cleared.cleared


def test_a_stopped_machine_is_neither_learned_nor_scored() -> None:
    rng = np.random.default_rng(0)
    monitor = ConditionMonitor(PCADetector(), learn_ms=HOUR_MS)
    ts = 0
    for _ in range(720):  # an hour at one row per 5 s, running
        monitor.update(ts, {"a": rng.normal(5, 0.2), "b": rng.normal(1, 0.1)}, running=True)
        ts += 5000
    assert monitor.detector.n_learned == 720
    assert monitor.update(ts, {"a": 0.0, "b": 0.0}, running=False) is None
    assert monitor.detector.n_learned == 720
    while monitor.learning:
        monitor.update(ts, {"a": rng.normal(5, 0.2), "b": rng.normal(1, 0.1)}, running=True)
        ts += 5000
    healthy = [
        monitor.update(ts + i, {"a": rng.normal(5, 0.2), "b": rng.normal(1, 0.1)}, True)
        for i in range(200)
    ]
    assert all(u is not None and u.index > 80 for u in healthy[50:])
    for i in range(300):
        update = monitor.update(ts + 1000 + i, {"a": 5.0, "b": 2.5}, True)
    assert update is not None and update.index < 20 and update.alarm
    assert max(monitor.explanation, key=monitor.explanation.__getitem__) == "b"
    assert monitor.tracker.trend(DAY_MS) is not None


def test_time_constant_smoothing_does_not_depend_on_the_rate() -> None:
    fast, slow = Ewma(tau_ms=60_000), Ewma(tau_ms=60_000)
    for i in range(601):
        fast.update(0.0 if i == 0 else 1.0, i * 100)
    for i in range(7):
        slow.update(0.0 if i == 0 else 1.0, i * 10_000)
    assert fast.value == pytest.approx(1 - math.exp(-1), abs=0.01)
    assert slow.value == pytest.approx(fast.value, abs=0.01)


def test_after_a_stop_the_machine_settles_before_it_is_scored() -> None:
    rng = np.random.default_rng(1)
    monitor = ConditionMonitor(PCADetector(), learn_ms=HOUR_MS)
    ts = 0
    while monitor.learning or ts < 2 * HOUR_MS:
        monitor.update(ts, {"a": rng.normal(5, 0.2), "b": rng.normal(10, 0.1)}, running=True)
        ts += 10_000
    for _ in range(3 * 360):  # a power cut: three hours stopped
        assert monitor.update(ts, {"a": 0.0, "b": 2.0}, running=False) is None
        ts += 10_000
    # b warms up from cold (time constant 25 minutes): not judged until it is back
    scored = []
    for i in range(4 * 360):
        b = 10.0 - 8.0 * math.exp(-i * 10_000 / (25 * 60_000)) + rng.normal(0, 0.1)
        if monitor.update(ts, {"a": rng.normal(5, 0.2), "b": b}, running=True) is not None:
            scored.append(i * 10 / 60)
        ts += 10_000
    assert scored and 60 < scored[0] < 180  # minutes after the restart
    assert not monitor.tracker.alarm
    # a fault growing while it runs is not hidden by a short stop
    for i in range(360):
        b = 10.0 + i / 60 + rng.normal(0, 0.1)
        if i % 60 == 30:
            monitor.update(ts, {"a": 0.0, "b": b}, running=False)
            ts += 60_000
        update = monitor.update(ts, {"a": rng.normal(5, 0.2), "b": b}, running=True)
        ts += 10_000
    assert update is not None and update.index < 50


def _barrel_after_a_stop(warm_up_ms: int | None) -> tuple[float | None, bool]:
    """A moulding machine stands for two hours with its heaters off; they come on 20 minutes
    before it runs again, and the barrel heats back to 230 °C with a time constant of 25
    minutes. Returns the barrel temperature when the machine is first judged, and whether an
    alarm came of the warm-up."""
    rng = np.random.default_rng(3)
    monitor = ConditionMonitor(MahalanobisDetector(), learn_ms=HOUR_MS, warm_up_ms=warm_up_ms)
    ts = 0
    while monitor.learning or ts < 2 * HOUR_MS:
        row = {"pressure": rng.normal(70, 3), "barrel": rng.normal(230, 0.3)}
        monitor.update(ts, row, running=True)
        ts += 30_000
    for _ in range(2 * 120):
        monitor.update(ts, {"pressure": 0.0, "barrel": 60.0}, running=False)
        ts += 30_000
    first = None
    for i in range(5 * 120):
        barrel = 230.0 - 170.0 * math.exp(-i * 30_000 / (25 * 60_000)) + rng.normal(0, 0.3)
        running = i >= 40
        row = {"pressure": rng.normal(70, 3) if running else 0.0, "barrel": barrel}
        if monitor.update(ts, row, running=running) is not None and first is None:
            first = barrel
        ts += 30_000
    return first, monitor.tracker.alarm


def test_a_machine_with_a_warm_up_time_is_not_judged_while_it_heats() -> None:
    first, alarm = _barrel_after_a_stop(90 * 60_000)
    assert first is not None and first > 225.0 and not alarm
    # without it, the barrel's fast and slow averages agree while it still heats
    first, _ = _barrel_after_a_stop(None)
    assert first is not None and first < 225.0


def test_the_alarm_needs_an_hour_low_while_judged() -> None:
    t = HealthTracker(tau_ms=60_000, confirm_ms=HOUR_MS)
    ts = 0
    for _ in range(21):  # ten minutes low
        assert not t.update(ts, 5.0).alarm
        ts += 30_000
    ts += 3 * HOUR_MS  # stopped for three hours: counts as half an hour at most
    low = [t.update(ts + i * 30_000, 5.0).alarm for i in range(50)]
    assert not any(low[:38]) and low[-1]  # raised after 10 + 30 + about 20 minutes
    assert t.update(ts + 100 * 30_000, 1e9).score <= 10.0  # clipped
