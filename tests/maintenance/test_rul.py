"""Remaining useful life: targets, metrics, features, regimes, and learning a known law."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from karkhana.core.errors import InvalidPayload, NotFound
from karkhana.maintenance.datasets import (
    load_cmapss,
    load_cmapss_file,
    load_csv_runs,
    synthetic_runs,
)
from karkhana.maintenance.features import WindowSpec, ewm, run_features, trailing_mean_slope
from karkhana.maintenance.rul import (
    HealthIndex,
    RegimeScaler,
    RulModel,
    Run,
    TreeParams,
    phm08_score,
    rmse,
    rul_targets,
    split_units,
    truncate,
)

SMALL_TREES = TreeParams(max_iter=80, learning_rate=0.1)
SMALL_WINDOWS = WindowSpec(windows=(5, 20, 60))


def test_targets_count_down_to_zero_and_are_capped() -> None:
    np.testing.assert_array_equal(rul_targets(5, 3.0), [3, 3, 2, 1, 0])
    np.testing.assert_array_equal(rul_targets(3, 125.0), [2, 1, 0])


def test_rmse_and_phm08_score_by_hand() -> None:
    pred = np.array([10.0, 20.0])
    true = np.array([13.0, 10.0])
    assert rmse(pred, true) == pytest.approx(np.sqrt((9 + 100) / 2))
    # early by 3: exp(3/13) - 1; late by 10: exp(10/10) - 1
    assert phm08_score(pred, true) == pytest.approx(np.exp(3 / 13) - 1 + np.e - 1)
    assert phm08_score(true, true) == 0.0


def test_trailing_mean_and_slope_by_hand() -> None:
    x = np.array([[1.0], [3.0], [5.0], [4.0]])
    mean, slope = trailing_mean_slope(x, 2)
    np.testing.assert_allclose(mean[:, 0], [1.0, 2.0, 4.0, 4.5])
    np.testing.assert_allclose(slope[:, 0], [0.0, 2.0, 2.0, -1.0])
    mean, slope = trailing_mean_slope(x, 3)
    np.testing.assert_allclose(mean[:, 0], [1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(slope[2:, 0], [2.0, 0.5])


def test_windows_skip_missing_values() -> None:
    x = np.array([[1.0, np.nan], [np.nan, np.nan], [3.0, np.nan]])
    mean, slope = trailing_mean_slope(x, 3)
    np.testing.assert_allclose(mean[:, 0], [1.0, 1.0, 2.0])
    assert slope[2, 0] == pytest.approx(1.0)
    assert np.isnan(mean[:, 1]).all() and np.isnan(slope[:, 1]).all()
    np.testing.assert_allclose(ewm(x, 0.5)[:, 0], [1.0, 1.0, 2.0])


def test_feature_names_match_columns() -> None:
    spec = WindowSpec(windows=(3, 5), alphas=(0.2,))
    f = run_features(np.random.default_rng(0).normal(size=(12, 2)), spec)
    assert f.shape == (12, len(spec.names(["a", "b"])))
    np.testing.assert_array_equal(f[:, -1], np.arange(1, 13))


def test_truncate_and_unit_split() -> None:
    runs = synthetic_runs(10, seed=0)
    train, held = split_units(runs, 0.3, seed=1)
    assert len(held) == 3 and {r.unit for r in train}.isdisjoint({r.unit for r in held})
    cut, true = truncate(runs, seed=2)
    for whole, part, rul in zip(runs, cut, true, strict=True):
        assert len(part) + rul == len(whole)
        np.testing.assert_array_equal(part.signals, whole.signals[: len(part)])


def test_scaler_drops_flat_and_empty_signals() -> None:
    runs = synthetic_runs(5, seed=0)
    for r in runs:
        r.signals[:, 3] = np.nan
    scaler = RegimeScaler().fit(runs)
    assert scaler.keep.tolist() == [True, True, True, False, False]
    z = np.vstack([scaler.transform(r) for r in runs])
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-9)
    np.testing.assert_allclose(z.std(axis=0), 1.0, atol=1e-9)


def test_learns_a_known_degradation_law() -> None:
    runs = synthetic_runs(30, seed=1)
    test, true = truncate(synthetic_runs(30, seed=2), seed=3)
    true = np.minimum(true, 100)
    model = RulModel(cap=100, window=SMALL_WINDOWS, trees=SMALL_TREES, seed=0).fit(runs)
    pred = model.predict(test)
    constant = rmse(np.full_like(true, true.mean()), true)
    assert rmse(pred.rul, true) < 0.4 * constant
    assert rmse(pred.rul, true) < 10.0
    assert (pred.lower <= pred.rul).all() and (pred.rul <= pred.upper).all()
    assert ((pred.rul >= 0) & (pred.rul <= 100)).all()
    covered = np.mean((true >= pred.lower) & (true <= pred.upper))
    assert covered >= 0.6
    assert pred.units == tuple(r.unit for r in test)


def test_per_regime_normalisation_helps_with_operating_conditions() -> None:
    runs = synthetic_runs(30, seed=1, regimes=3)
    test, true = truncate(synthetic_runs(30, seed=2, regimes=3), seed=3)
    true = np.minimum(true, 100)

    def error(regimes: int, health: tuple[float, ...]) -> float:
        model = RulModel(
            cap=100,
            regimes=regimes,
            window=SMALL_WINDOWS,
            trees=SMALL_TREES,
            seed=0,
            health=health,
        ).fit(runs)
        return rmse(model.predict(test).rul, true)

    assert error(3, ()) < 0.75 * error(1, ())
    # the per-regime health indices help on top (6.4 -> 5.5 when this was written)
    assert error(3, (1.0, 0.5)) < 0.95 * error(3, ())


def test_health_index_puts_every_regime_on_one_scale() -> None:
    """Two regimes in which one degradation moves the signals by different amounts."""
    rng = np.random.default_rng(0)
    life = rng.uniform(0.0, 200.0, 4000)
    labels = rng.integers(0, 2, 4000).astype(np.intp)
    gain = np.where(labels == 0, 0.02, -0.05)[:, None] * np.array([[1.0, 0.5]])
    z = 1.0 + gain * np.minimum(life, 100.0)[:, None] + rng.normal(0.0, 0.01, (4000, 2))
    index = HealthIndex(regimes=2, caps=(100.0, 50.0)).fit([z], [labels], [life])
    out = index.transform(z, labels)
    assert out.shape == (4000, 2)
    np.testing.assert_allclose(out[:, 0], np.minimum(life, 100.0), atol=3.0)
    # the index capped at 50 is linear in the signals too, so it is least squares, not exact
    assert rmse(out[:, 1], np.minimum(life, 50.0)) < rmse(out[:, 0], np.minimum(life, 50.0))
    gaps = np.array([[np.nan, np.nan], [np.nan, z[0, 1]]])
    filled = index.transform(gaps, np.array([0, 0], dtype=np.intp))
    assert np.isnan(filled[0]).all() and np.isfinite(filled[1]).all()


def test_features_look_only_backwards() -> None:
    """The last feature row of a run cut at cycle t is row t of the whole run (what a live
    machine has at t), health indices included."""
    runs = synthetic_runs(8, seed=4, regimes=2)
    model = RulModel(regimes=2, window=SMALL_WINDOWS, trees=TreeParams(max_iter=5)).fit(runs)
    whole = model._features(runs[:3])
    cut, _ = truncate(runs[:3], seed=5)
    for full, part, feats in zip(whole, cut, model._features(cut), strict=True):
        np.testing.assert_allclose(feats, full[: len(part)])


def test_health_indices_are_optional_and_add_windowed_signals() -> None:
    runs = synthetic_runs(8, seed=2)
    plain = RulModel(window=SMALL_WINDOWS, trees=TreeParams(max_iter=5), health=()).fit(runs)
    both = RulModel(window=SMALL_WINDOWS, trees=TreeParams(max_iter=5)).fit(runs)
    assert plain.health is None and both.health is not None
    assert both.health.caps == (125.0, 62.5)
    per_signal = len(SMALL_WINDOWS.names(["s"])) - 1  # without the age column
    width = both._features(runs[:1])[0].shape[1] - plain._features(runs[:1])[0].shape[1]
    assert width == 2 * per_signal
    assert both.params()["health"] == [1.0, 0.5]


def test_model_saved_before_health_indices_still_predicts() -> None:
    runs = synthetic_runs(8, seed=2)
    model = RulModel(window=SMALL_WINDOWS, trees=TreeParams(max_iter=5), health=()).fit(runs)
    expected = model.predict(runs).rul
    del model.health, model.health_caps  # attributes a model pickled earlier does not have
    np.testing.assert_array_equal(model.predict(runs).rul, expected)
    assert model.params()["health"] == []


def test_live_machine_with_missing_signals_and_no_settings() -> None:
    runs = synthetic_runs(12, seed=6)
    for r in runs:
        r.signals[::7, 1] = np.nan
    model = RulModel(
        cap=100, window=WindowSpec(windows=(5, 20), include_age=False), trees=SMALL_TREES
    ).fit(runs)
    test, _ = truncate(synthetic_runs(5, seed=7), seed=8)
    test[0].signals[:, :] = np.nan
    pred = model.predict(test)
    assert np.isfinite(pred.rul).all() and ((pred.rul >= 0) & (pred.rul <= 100)).all()


def test_bad_training_input_is_refused() -> None:
    runs = synthetic_runs(3, seed=0)
    with pytest.raises(InvalidPayload, match="at least two"):
        RulModel().fit(runs[:1])
    odd = [runs[0], Run("x", runs[1].signals[:, :3])]
    with pytest.raises(InvalidPayload, match="different numbers"):
        RulModel().fit(odd)
    with pytest.raises(InvalidPayload, match="settings"):
        RulModel(regimes=2).fit(runs)
    flat = [Run(r.unit, np.ones_like(r.signals)) for r in runs]
    with pytest.raises(InvalidPayload, match="constant"):
        RulModel().fit(flat)
    with pytest.raises(InvalidPayload, match="coverage"):
        RulModel(coverage=1.5)


def test_empty_run_is_refused() -> None:
    model = RulModel(window=SMALL_WINDOWS, trees=TreeParams(max_iter=5)).fit(
        synthetic_runs(6, seed=0)
    )
    with pytest.raises(InvalidPayload, match="no cycles"):
        model.predict([Run("empty", np.empty((0, 5)))])
    with pytest.raises(InvalidPayload, match="no runs"):
        model.predict([])


def _cmapss_lines(units: int, cycles: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    lines = []
    for u in range(1, units + 1):
        for c in range(1, cycles + 1):
            values = [u, c, *rng.normal(size=3), *rng.normal(size=21)]
            lines.append(" ".join(f"{v:g}" for v in values) + "  ")
    return "\n".join(lines) + "\n"


def test_cmapss_loader_reads_gzip_and_plain_text(tmp_path: Path) -> None:
    with gzip.open(tmp_path / "train_FD002.txt.gz", "wt") as f:
        f.write(_cmapss_lines(3, 7, 0))
    (tmp_path / "test_FD002.txt").write_text(_cmapss_lines(2, 4, 1))
    (tmp_path / "RUL_FD002.txt").write_text("12\n30\n")
    subset = load_cmapss(tmp_path, "FD002")
    assert [len(r) for r in subset.train] == [7, 7, 7]
    assert subset.train[0].signals.shape == (7, 21)
    assert subset.train[0].settings is not None and subset.train[0].settings.shape == (7, 3)
    np.testing.assert_array_equal(subset.test_rul, [12, 30])
    assert subset.regimes == 6


def test_cmapss_loader_errors(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        load_cmapss(tmp_path, "FD001")
    with pytest.raises(InvalidPayload):
        load_cmapss(tmp_path, "FD009")
    (tmp_path / "bad.txt").write_text("1 2 3\n")
    with pytest.raises(InvalidPayload, match="26 columns"):
        load_cmapss_file(tmp_path / "bad.txt")
    (tmp_path / "broken.txt.gz").write_bytes(b"\x1f\x8b\x08garbage")
    with pytest.raises(InvalidPayload, match="gzip"):
        load_cmapss_file(tmp_path / "broken.txt.gz")


def test_csv_runs_loader(tmp_path: Path) -> None:
    path = tmp_path / "runs.csv"
    path.write_text("unit,cycle,load,temp,vib\na,2,1,20,\na,1,1,19,0.1\nb,1,2,18,0.2\n")
    runs, signals = load_csv_runs(path, settings=["load"])
    assert signals == ["temp", "vib"]
    a = runs[0]
    np.testing.assert_array_equal(a.signals[:, 0], [19, 20])
    assert np.isnan(a.signals[1, 1])
    assert a.settings is not None and a.settings.shape == (2, 1)
    path.write_text("unit,cycle,temp\na,1,hot\n")
    with pytest.raises(InvalidPayload, match="not a number"):
        load_csv_runs(path)
    path.write_text("unit,temp\na,1\n")
    with pytest.raises(InvalidPayload, match="cycle"):
        load_csv_runs(path)
