"""One check suite that every supervised maintenance model passes (like scikit-learn's
estimator checks): shapes, determinism, save/load round trip, no NaN, a missing signal."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from karkhana.core.errors import InvalidPayload
from karkhana.maintenance.datasets import synthetic_failures, synthetic_runs
from karkhana.maintenance.failure import ClassifierParams, FailureModel
from karkhana.maintenance.features import WindowSpec
from karkhana.maintenance.registry import ModelRegistry
from karkhana.maintenance.rul import RulModel, Run, TreeParams, truncate


@dataclass(frozen=True)
class Case:
    """How to build, train and query one model class on small generated data."""

    name: str
    make: Callable[[int], Any]
    train: Any
    query: Any
    fit: Callable[[Any, Any], Any]
    predict: Callable[[Any, Any], np.ndarray]
    expected_rows: int
    drop_signal: Callable[[Any, int], Any]
    """The query with signal j missing (all NaN)."""
    width: Callable[[Any], Any]
    """The query with one signal too few."""


def _rul_case() -> Case:
    train = synthetic_runs(14, seed=1, max_life=120)
    query, _ = truncate(synthetic_runs(6, seed=2, max_life=120), seed=3)

    def predict(model: RulModel, runs: list[Run]) -> np.ndarray:
        p = model.predict(runs)
        return np.column_stack([p.rul, p.lower, p.upper])

    def drop(runs: list[Run], j: int) -> list[Run]:
        out = []
        for r in runs:
            s = r.signals.copy()
            s[:, j] = np.nan
            out.append(Run(r.unit, s, r.settings))
        return out

    return Case(
        name="rul",
        make=lambda seed: RulModel(
            cap=100,
            window=WindowSpec(windows=(5, 20)),
            trees=TreeParams(max_iter=30, learning_rate=0.2),
            seed=seed,
        ),
        train=train,
        query=query,
        fit=lambda m, runs: m.fit(runs),
        predict=predict,
        expected_rows=len(query),
        drop_signal=drop,
        width=lambda runs: [Run(r.unit, r.signals[:, 1:], r.settings) for r in runs],
    )


def _failure_case() -> Case:
    table = synthetic_failures(600, seed=4)
    query = synthetic_failures(50, seed=5)

    def drop(x: np.ndarray, j: int) -> np.ndarray:
        x = x.copy()
        x[:, j] = np.nan
        return x

    return Case(
        name="failure",
        make=lambda seed: FailureModel(
            categorical=("type",),
            trees=ClassifierParams(n_estimators=30, forest_trees=30),
            folds=3,
            seed=seed,
        ),
        train=table,
        query=query.x,
        fit=lambda m, t: m.fit(t.x, t.y, t.columns),
        predict=lambda m, x: m.predict_proba(x),
        expected_rows=50,
        drop_signal=drop,
        width=lambda x: x[:, 1:],
    )


CASES = [_rul_case, _failure_case]


@pytest.fixture(params=CASES, ids=lambda c: c.__name__.strip("_").removesuffix("_case"))
def case(request: pytest.FixtureRequest) -> Case:
    made: Case = request.param()
    return made


@pytest.fixture
def trained(case: Case) -> Any:
    return case.fit(case.make(0), case.train)


def test_fit_predict_shapes(case: Case, trained: Any) -> None:
    out = case.predict(trained, case.query)
    assert out.shape[0] == case.expected_rows


def test_same_seed_same_predictions(case: Case, trained: Any) -> None:
    again = case.fit(case.make(0), case.train)
    np.testing.assert_array_equal(
        case.predict(trained, case.query), case.predict(again, case.query)
    )


def test_save_load_round_trip(case: Case, trained: Any, tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    manifest = registry.save("press", trained, metrics={}, data={"rows": 1})
    loaded_manifest, loaded = registry.load("press", manifest.version)
    assert loaded_manifest == manifest
    assert type(loaded) is type(trained)
    np.testing.assert_array_equal(
        case.predict(trained, case.query), case.predict(loaded, case.query)
    )


def test_no_nan_output(case: Case, trained: Any) -> None:
    assert np.isfinite(case.predict(trained, case.query)).all()


def test_missing_signal_is_handled(case: Case, trained: Any) -> None:
    out = case.predict(trained, case.drop_signal(case.query, 1))
    assert out.shape[0] == case.expected_rows
    assert np.isfinite(out).all()


def test_missing_signal_in_training(case: Case) -> None:
    model = case.fit(case.make(0), _drop_train(case))
    assert np.isfinite(case.predict(model, case.query)).all()


def _drop_train(case: Case) -> Any:
    if case.name == "rul":
        return case.drop_signal(case.train, 2)
    t = case.train
    return type(t)(t.columns, case.drop_signal(t.x, 2), t.y)


def test_wrong_number_of_signals_is_refused(case: Case, trained: Any) -> None:
    with pytest.raises(InvalidPayload):
        case.predict(trained, case.width(case.query))


def test_untrained_model_refuses_to_predict(case: Case) -> None:
    with pytest.raises(InvalidPayload, match="not trained"):
        case.predict(case.make(0), case.query)
