"""Failure prediction: derived features, F1 and threshold, learning physical limits, AI4I loader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from karkhana.core.errors import InvalidPayload, NotFound
from karkhana.maintenance.datasets import (
    AI4I_DERIVED,
    AI4I_MODES,
    load_ai4i,
    load_csv_table,
    synthetic_failures,
)
from karkhana.maintenance.failure import (
    ClassifierParams,
    Derived,
    FailureModel,
    best_threshold,
    f1_score,
    select_by_cv,
)

POWER = Derived("power", "mul", "torque", "speed", 2 * np.pi / 60)
STRAIN = Derived("strain", "mul", "wear", "torque")


def test_derived_features() -> None:
    a = np.array([2.0, 3.0, 1.0])
    b = np.array([4.0, 1.0, 0.0])
    np.testing.assert_allclose(Derived("p", "mul", "a", "b", 0.5).compute(a, b), [4.0, 1.5, 0.0])
    np.testing.assert_allclose(Derived("d", "sub", "a", "b").compute(a, b), [-2.0, 2.0, 1.0])
    ratio = Derived("r", "div", "a", "b").compute(a, b)
    np.testing.assert_allclose(ratio[:2], [0.5, 3.0])
    assert np.isnan(ratio[2])


def test_offset_and_derived_from_derived() -> None:
    code = np.array([0.0, 1.0, 2.0])
    strain = np.array([11000.0, 6000.0, 13000.0])
    over = Derived("over limit", "div", "strain", "grade", scale=1e-3, offset=11.0)
    np.testing.assert_allclose(over.compute(strain, code), [1.0, 0.5, 1.0])
    t = synthetic_failures(300, seed=3)
    chained = (STRAIN, Derived("strain over limit", "div", "strain", "type", 1e-3, offset=9.0))
    model = FailureModel(derived=chained)
    m = model._matrix(t.x, t.columns)
    wear, torque, kind = t.x[:, 3], t.x[:, 2], t.x[:, 0]
    np.testing.assert_allclose(m[:, -1], wear * torque / (kind + 9.0) / 1000)
    assert model.params()["derived"][1]["offset"] == 9.0
    assert "offset" not in model.params()["derived"][0]


def test_f1_and_best_threshold_by_hand() -> None:
    true = np.array([True, True, False, False, True])
    pred = np.array([True, False, True, False, True])
    # tp 2, fp 1, fn 1 -> 4 / 6
    assert f1_score(pred, true) == pytest.approx(4 / 6)
    assert f1_score(np.zeros(5, dtype=bool), true) == 0.0
    proba = np.array([0.9, 0.8, 0.3, 0.1, 0.7])
    assert best_threshold(proba, true) == pytest.approx(0.7)


def test_learns_physical_failure_limits() -> None:
    train = synthetic_failures(2000, seed=1)
    test = synthetic_failures(1500, seed=2)
    assert test.y is not None
    small = ClassifierParams(n_estimators=100, forest_trees=100)
    model = FailureModel(derived=(POWER, STRAIN), categorical=("type",), trees=small, folds=3)
    model.fit(train.x, train.y, train.columns)
    f1 = f1_score(model.predict(test.x), test.y > 0.5)
    assert f1 > 0.85
    assert 0.0 < model.threshold < 1.0
    assert model.cv_f1 > 0.8
    # the same model without the physics features does worse on the same data
    plain = FailureModel(categorical=("type",), trees=small, folds=3)
    plain.fit(train.x, train.y, train.columns)
    assert f1_score(plain.predict(test.x), test.y > 0.5) < f1


def test_select_by_cv_keeps_the_better_candidate() -> None:
    train = synthetic_failures(1500, seed=1)
    assert train.y is not None
    small = ClassifierParams(n_estimators=60, forest_trees=0)
    # the grade limits of the synthetic data: 9, 10, 11 thousand for type codes 0, 1, 2
    over = Derived("strain over limit", "div", "strain", "type", 1e-3, offset=9.0)
    plain = FailureModel(trees=small, folds=3)
    physics = FailureModel(derived=(POWER, STRAIN, over), trees=small, folds=3)
    best = select_by_cv([plain, physics], train.x, train.y, train.columns)
    assert best is physics
    assert physics.cv_f1 > plain.cv_f1
    assert plain._clf is not None  # every candidate was fitted
    with pytest.raises(InvalidPayload, match="no candidate"):
        select_by_cv([], train.x, train.y, train.columns)


def test_bagged_trees_join_the_average() -> None:
    train = synthetic_failures(600, seed=1)
    assert train.y is not None
    three = ClassifierParams(n_estimators=20, forest_trees=20, bagged_trees=20)
    model = FailureModel(derived=(POWER, STRAIN), trees=three, folds=3)
    model.fit(train.x, train.y, train.columns)
    assert model._clf is not None
    kinds = [type(m).__name__ for m in model._clf.members]
    assert kinds == [
        "GradientBoostingClassifier",
        "ExtraTreesClassifier",
        "RandomForestClassifier",
    ]
    m = model._matrix(train.x[:50], train.columns)
    expected = np.mean([c.predict_proba(m)[:, 1] for c in model._clf.members], axis=0)
    np.testing.assert_allclose(model.predict_proba(train.x[:50]), expected)
    assert model.params()["trees"]["bagged_trees"] == 20


def test_columns_by_name() -> None:
    train = synthetic_failures(400, seed=1)
    model = FailureModel(
        derived=(POWER,), trees=ClassifierParams(n_estimators=20, forest_trees=20), folds=3
    ).fit(train.x, train.y, train.columns)
    order = [4, 3, 2, 1, 0]
    shuffled = train.x[:, order]
    names = [train.columns[i] for i in order]
    np.testing.assert_array_equal(
        model.predict_proba(train.x), model.predict_proba(shuffled, names)
    )
    with pytest.raises(InvalidPayload, match="missing columns: speed"):
        model.predict_proba(train.x[:, [0, 2, 3, 4]], ["type", "torque", "wear", "temperature"])


def test_bad_training_input_is_refused() -> None:
    t = synthetic_failures(200, seed=1)
    assert t.y is not None
    with pytest.raises(InvalidPayload, match="failed and"):
        FailureModel().fit(t.x, np.zeros_like(t.y), t.columns)
    with pytest.raises(InvalidPayload, match="labels"):
        FailureModel().fit(t.x, t.y[:10], t.columns)
    with pytest.raises(InvalidPayload, match="categorical"):
        FailureModel(categorical=("colour",)).fit(t.x, t.y, t.columns)
    with pytest.raises(InvalidPayload, match="needs column"):
        FailureModel(derived=(Derived("x", "mul", "a", "b"),)).fit(t.x, t.y, t.columns)


AI4I_HEADER = (
    "UDI,Product ID,Type,Air temperature [K],Process temperature [K],Rotational speed [rpm],"
    "Torque [Nm],Tool wear [min],Machine failure,TWF,HDF,PWF,OSF,RNF"
)


def test_ai4i_loader_leaves_out_identifiers_and_failure_modes(tmp_path: Path) -> None:
    path = tmp_path / "ai4i.csv"
    rows = [
        "1,M1,M,298.1,308.6,1551,42.8,0,0,0,0,0,0,0",
        "2,L2,L,298.2,308.7,1408,46.3,3,1,0,1,0,0,0",
        "3,H3,H,298.3,308.9,1500,40.0,5,0,0,0,0,0,1",
    ]
    path.write_bytes(("\ufeff" + "\r\n".join([AI4I_HEADER, *rows]) + "\r\n").encode())
    table = load_ai4i(path)
    assert table.columns[0] == "Type"
    assert not set(AI4I_MODES) & set(table.columns)
    assert "UDI" not in table.columns and "Product ID" not in table.columns
    np.testing.assert_array_equal(table.x[:, 0], [1.0, 0.0, 2.0])
    assert table.y is not None and table.y.tolist() == [0.0, 1.0, 0.0]
    names = {d.a for d in AI4I_DERIVED} | {d.b for d in AI4I_DERIVED}
    assert names <= set(table.columns)
    path.write_text(AI4I_HEADER + "\n" + rows[0].replace(",M,", ",X,") + "\n")
    with pytest.raises(InvalidPayload, match="unknown Type"):
        load_ai4i(path)
    with pytest.raises(NotFound):
        load_ai4i(tmp_path / "nope.csv")


def test_csv_table_errors(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("a,b,label\n1,2,0\n3,4\n")
    with pytest.raises(InvalidPayload, match="line 3"):
        load_csv_table(path, label="label")
    path.write_text("a,b,label\n1,2,0\n")
    with pytest.raises(InvalidPayload, match="no column 'y'"):
        load_csv_table(path, label="y")
    path.write_text("a,b,label\n1,,0\n")
    table = load_csv_table(path, label="label", exclude=["a"])
    assert table.columns == ("b",) and np.isnan(table.x[0, 0])
    path.write_text("")
    with pytest.raises(InvalidPayload, match="empty"):
        load_csv_table(path, label=None)
