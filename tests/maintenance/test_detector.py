from __future__ import annotations

import time

import numpy as np

from karkhana.maintenance.detector import MahalanobisDetector, PCADetector, ZScoreDetector

SIGNALS = ("current", "power", "temperature")


def plant(n: int, seed: int) -> np.ndarray:
    """Power follows current; temperature wanders on its own."""
    rng = np.random.default_rng(seed)
    current = 10 + rng.normal(0, 2.0, n)
    power = 0.7 * current + rng.normal(0, 0.1, n)
    temperature = 40 + np.cumsum(rng.normal(0, 0.02, n))
    return np.column_stack([current, power, temperature])


def test_finds_an_injected_fault_in_a_stream_quickly() -> None:
    data = plant(6000, seed=2)
    data[4000:, 2] += np.linspace(0.0, 6.0, 2000)  # a slow temperature drift begins
    det = PCADetector(seed=1)
    started = time.perf_counter()
    first_alarm = None
    for i, row in enumerate(data):
        x = dict(zip(SIGNALS, row, strict=True))
        if i < 2000:
            det.learn_one(x)
        elif det.score_one(x) > 1.0 and i >= 4000:
            first_alarm = i
            break
    assert time.perf_counter() - started < 5.0
    assert first_alarm is not None and first_alarm < 4800
    assert (
        max(
            det.explain_one(dict(zip(SIGNALS, data[first_alarm], strict=True))).items(),
            key=lambda kv: kv[1],
        )[0]
        == "temperature"
    )


def test_a_broken_relation_is_seen_only_by_multivariate_detectors() -> None:
    train = plant(3000, seed=3)
    test = plant(300, seed=4)
    # power no longer follows current (a slipping belt), each value still in its usual range
    test[:, 1] *= 0.85
    z = ZScoreDetector(SIGNALS).fit(train)
    m = MahalanobisDetector(SIGNALS).fit(train)
    p = PCADetector(SIGNALS).fit(train)
    assert np.mean(z.score(test) > 1.0) < 0.2
    assert np.mean(m.score(test) > 1.0) > 0.8
    assert np.mean(p.score(test) > 1.0) > 0.8


def test_healthy_data_rarely_crosses_the_threshold() -> None:
    det = MahalanobisDetector(SIGNALS, quantile=0.995).fit(plant(5000, seed=6))
    fresh = plant(5000, seed=7)
    fresh[:, 2] = 40 + np.random.default_rng(8).normal(0, 0.05, 5000)
    assert np.mean(det.score(fresh) > 1.0) < 0.03
