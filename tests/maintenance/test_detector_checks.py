"""The check suite every detector passes (like river's estimator checks)."""

from __future__ import annotations

import numpy as np
import pytest

from karkhana.core.errors import InvalidPayload
from karkhana.maintenance.detector import (
    Detector,
    MahalanobisDetector,
    PCADetector,
    ZScoreDetector,
)

DETECTORS: list[type[Detector]] = [ZScoreDetector, MahalanobisDetector, PCADetector]
SIGNALS = ("current", "vibration", "temperature", "speed")


def normal_data(n: int = 600, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    load = rng.normal(0.0, 1.0, n)
    return np.column_stack(
        [
            10 + 2 * load + rng.normal(0, 0.3, n),
            2 + 0.5 * load + rng.normal(0, 0.1, n),
            40 + rng.normal(0, 0.5, n),
            500 + rng.normal(0, 3, n),
        ]
    )


@pytest.fixture(params=DETECTORS, ids=lambda c: c.__name__)
def detector_class(request: pytest.FixtureRequest) -> type[Detector]:
    cls: type[Detector] = request.param
    return cls


def test_fit_and_score_shapes(detector_class: type[Detector]) -> None:
    x = normal_data()
    det = detector_class(SIGNALS).fit(x)
    scores = det.score(x[:50])
    assert scores.shape == (50,)
    contributions = det.contributions(x[:50])
    assert contributions.shape == (50, len(SIGNALS))
    assert np.all(contributions >= 0)
    np.testing.assert_allclose(contributions.sum(axis=1)[scores > 0], 1.0, atol=1e-9)
    assert det.score(x[0]).shape == (1,)


def test_threshold_is_the_training_quantile(detector_class: type[Detector]) -> None:
    x = normal_data(2000)
    det = detector_class(SIGNALS, quantile=0.99).fit(x)
    share_above = float(np.mean(det.score(x) > 1.0))
    assert 0.005 <= share_above <= 0.015


def test_deterministic_with_a_seed(detector_class: type[Detector]) -> None:
    x = normal_data(3000)
    a, b = detector_class(seed=7, max_train=500), detector_class(seed=7, max_train=500)
    for row in x:
        a.learn_one(dict(zip(SIGNALS, row, strict=True)))
        b.learn_one(dict(zip(SIGNALS, row, strict=True)))
    probe = dict(zip(SIGNALS, x[5] + 3.0, strict=True))
    assert a.score_one(probe) == b.score_one(probe)
    c = detector_class(seed=8, max_train=500)
    for row in x:
        c.learn_one(dict(zip(SIGNALS, row, strict=True)))
    assert c.score_one(probe) != a.score_one(probe)  # a different reservoir sample


def test_save_and_load_give_identical_scores(detector_class: type[Detector]) -> None:
    x = normal_data()
    det = detector_class(SIGNALS, quantile=0.98).fit(x)
    copy = Detector.from_bytes(det.to_bytes())
    assert type(copy) is detector_class
    assert copy.signals == SIGNALS
    probe = normal_data(100, seed=5) * 1.05
    np.testing.assert_array_equal(copy.score(probe), det.score(probe))
    np.testing.assert_array_equal(copy.contributions(probe), det.contributions(probe))


def test_streaming_state_survives_a_round_trip(detector_class: type[Detector]) -> None:
    x = normal_data(400)
    det = detector_class(seed=3, max_train=100)
    for row in x[:300]:
        det.learn_one(dict(zip(SIGNALS, row, strict=True)))
    copy = Detector.from_bytes(det.to_bytes())
    for row in x[300:]:
        det.learn_one(dict(zip(SIGNALS, row, strict=True)))
        copy.learn_one(dict(zip(SIGNALS, row, strict=True)))
    probe = dict(zip(SIGNALS, x[0], strict=True))
    assert copy.score_one(probe) == det.score_one(probe)


def test_no_nan_output(detector_class: type[Detector]) -> None:
    x = normal_data()
    x[:, 2] = 40.0  # a signal that never moved while learning
    det = detector_class(SIGNALS).fit(x)
    probe = normal_data(20, seed=9)
    probe[3, 0] = np.nan
    probe[4, :] = np.nan
    probe[5, 1] = np.inf
    assert np.isfinite(det.score(probe)).all()
    assert np.isfinite(det.contributions(probe)).all()
    assert np.isfinite(det.score_one({"current": None, "vibration": float("nan")}))


def test_handles_a_missing_signal(detector_class: type[Detector]) -> None:
    x = normal_data()
    det = detector_class(SIGNALS).fit(x)
    row = dict(zip(SIGNALS, x[10], strict=True))
    del row["temperature"]
    assert det.score_one(row) < 3.0  # a dead sensor alone is not an anomaly
    assert det.explain_one(row)["temperature"] == 0.0
    row["vibration"] = 9.0
    assert det.score_one(row) > 3.0  # and it hides nothing that the others show


def test_unfitted_and_malformed_input_are_clear_errors(detector_class: type[Detector]) -> None:
    det = detector_class(SIGNALS)
    assert det.score_one(dict.fromkeys(SIGNALS, 1.0)) == 0.0
    with pytest.raises(InvalidPayload):
        det.score(normal_data(5))
    with pytest.raises(InvalidPayload):
        det.fit(normal_data(5))
    with pytest.raises(InvalidPayload):
        det.fit(normal_data()[:, :3])
    with pytest.raises(InvalidPayload):
        Detector.from_bytes(b"not a model")


def test_finds_a_shifted_signal(detector_class: type[Detector]) -> None:
    x = normal_data()
    det = detector_class(SIGNALS).fit(x)
    bad = normal_data(50, seed=11)
    bad[:, 1] += 2.0  # vibration up by four of its own spreads
    assert np.mean(det.score(bad) > 1.0) > 0.8
    shares = det.contributions(bad).mean(axis=0)
    assert SIGNALS[int(np.argmax(shares))] == "vibration"
