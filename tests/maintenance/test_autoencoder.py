from __future__ import annotations

import sys
import time
from collections.abc import Callable

import numpy as np
import pytest

pytest.importorskip("torch", reason="the autoencoder needs the optional extra karkhana[deep]")

from karkhana.core.errors import InvalidPayload
from karkhana.maintenance.autoencoder import ConvAutoencoderDetector, windows
from karkhana.maintenance.detector import Detector
from tests.maintenance import test_detector_checks as checks

SIGNALS = checks.SIGNALS
GENERIC: list[Callable[[type[Detector]], None]] = [
    checks.test_fit_and_score_shapes,
    checks.test_threshold_is_the_training_quantile,
    checks.test_deterministic_with_a_seed,
    checks.test_save_and_load_give_identical_scores,
    checks.test_streaming_state_survives_a_round_trip,
    checks.test_no_nan_output,
    checks.test_handles_a_missing_signal,
    checks.test_unfitted_and_malformed_input_are_clear_errors,
    checks.test_finds_a_shifted_signal,
]


@pytest.mark.parametrize("check", GENERIC, ids=lambda f: f.__name__)
def test_passes_the_detector_checks(check: Callable[[type[Detector]], None]) -> None:
    check(ConvAutoencoderDetector)


def rows(x: np.ndarray) -> list[dict[str, float | None]]:
    return [dict(zip(SIGNALS, r, strict=True)) for r in x]


def test_windows_end_at_each_row_and_repeat_the_first() -> None:
    z = np.arange(10.0).reshape(5, 2)
    w = windows(z, 3)
    assert w.shape == (5, 2, 3)
    np.testing.assert_array_equal(w[0], [[0, 0, 0], [1, 1, 1]])
    np.testing.assert_array_equal(w[4], [[4, 6, 8], [5, 7, 9]])


def test_score_one_after_a_batch_fit_equals_batch_scores() -> None:
    x = checks.normal_data(600)
    det = ConvAutoencoderDetector(SIGNALS, window=20).fit(x)
    probe = checks.normal_data(40, seed=4)
    streamed = [det.score_one(r) for r in rows(probe)]
    np.testing.assert_allclose(streamed, det.score(probe), rtol=1e-5)
    # the trailing rows travel with the model
    copy = Detector.from_bytes(det.to_bytes())
    nxt = rows(probe[:1] * 1.02)[0]
    assert copy.score_one(nxt) == det.score_one(nxt)


def test_explain_one_explains_the_row_just_scored() -> None:
    x = checks.normal_data(600)
    det = ConvAutoencoderDetector(SIGNALS, window=20).fit(x)
    probe = checks.normal_data(30, seed=6)
    probe[-1, 3] += 60.0  # speed far off (20 of its spreads)
    for r in rows(probe):
        det.score_one(r)
    shares = det.explain_one(rows(probe)[-1])
    np.testing.assert_allclose(det.contributions(probe)[-1], list(shares.values()), rtol=1e-5)
    assert max(shares, key=lambda s: shares[s]) == "speed"
    assert len(det._recent) == 20


def test_small_and_reports_its_size() -> None:
    det = ConvAutoencoderDetector(SIGNALS, window=20, epochs=2).fit(checks.normal_data(200))
    assert 1000 < det.n_parameters() < 5000
    assert det.epochs_run == 2


def test_finds_an_injected_fault_quickly() -> None:
    """A slow machine cycle (period 40 rows) where current and vibration move together; in the
    fault the vibration keeps its level and spread but runs half a cycle late: each signal stays
    inside its normal range, only their relation breaks."""
    rng = np.random.default_rng(3)

    def machine(n: int, start: int, lag: int = 0) -> np.ndarray:
        t = np.arange(start, start + n)
        phase = 2 * np.pi * t / 40
        return np.column_stack(
            [
                10 + 2 * np.sin(phase) + rng.normal(0, 0.1, n),
                2 + 0.5 * np.sin(phase - np.pi * lag / 20) + rng.normal(0, 0.05, n),
                40 + rng.normal(0, 0.3, n),
                500 + rng.normal(0, 3, n),
            ]
        )

    started = time.perf_counter()
    det = ConvAutoencoderDetector(SIGNALS).fit(machine(400, 0))
    test = np.vstack([machine(200, 400), machine(200, 600, lag=20)])
    scores = det.score(test)
    elapsed = time.perf_counter() - started
    assert elapsed < 20.0  # about 4 s on 2 shared cores
    normal, fault = scores[60:200], scores[260:]
    assert np.mean(normal > 1.0) < 0.05
    assert np.mean(fault > 1.0) > 0.8
    shares = det.contributions(test[260:]).mean(axis=0)
    assert SIGNALS[int(np.argmax(shares))] in ("current", "vibration")
    # no signal leaves its normal range
    lo, hi = test[:200].min(axis=0), test[:200].max(axis=0)
    assert np.all((test[260:, :2] >= lo[:2] - 0.3) & (test[260:, :2] <= hi[:2] + 0.3))


def test_without_torch_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    with pytest.raises(InvalidPayload, match=r"karkhana\[deep\]"):
        ConvAutoencoderDetector(SIGNALS).fit(checks.normal_data(100))
