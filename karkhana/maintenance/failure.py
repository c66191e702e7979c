"""Failure prediction from a machine's current readings (a classifier with a tuned threshold).

Inputs are the signals of one moment (temperatures, speed, torque, tool wear, ...) and derived
physical quantities (power = torque x speed, a temperature difference, strain = wear x torque)
that make the failure boundaries simple. Gradient-boosted trees averaged with extremely
randomised trees give a failure probability; the alarm threshold is the one with the best F1 on
out-of-fold predictions of the training data, so the test data is never looked at.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from sklearn.ensemble import (
    ExtraTreesClassifier,
    GradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.model_selection import StratifiedKFold

from karkhana.core.errors import InvalidPayload

Array = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Derived:
    """A feature computed from two columns: ``scale * (a op (b + offset))``.

    ``a`` and ``b`` name input columns or derived features listed before this one. ``offset``
    turns a code into a level: AI4I's product grades L/M/H (codes 0/1/2) have overstrain limits
    of 11, 12 and 13 thousand Nm min, so strain / (grade + 11) / 1000 is strain over its limit.
    """

    name: str
    op: Literal["mul", "sub", "div"]
    a: str
    b: str
    scale: float = 1.0
    offset: float = 0.0

    def compute(self, a: Array, b: Array) -> Array:
        b = b + self.offset
        if self.op == "mul":
            out = a * b
        elif self.op == "sub":
            out = a - b
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                out = np.where(b != 0, a / np.where(b != 0, b, 1.0), np.nan)
        result: Array = self.scale * out
        return result


def f1_score(pred: NDArray[np.bool_], true: NDArray[np.bool_]) -> float:
    tp = float(np.sum(pred & true))
    fp = float(np.sum(pred & ~true))
    fn = float(np.sum(~pred & true))
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def best_threshold(proba: Array, true: NDArray[np.bool_]) -> float:
    """The probability cut with the highest F1 (midpoint between neighbouring scores)."""
    candidates = np.unique(np.round(proba, 4))
    best, best_f1 = 0.5, -1.0
    for c in candidates:
        f1 = f1_score(proba >= c, true)
        if f1 > best_f1:
            best, best_f1 = float(c), f1
    return best


@dataclass(frozen=True, slots=True)
class ClassifierParams:
    """Gradient-boosted trees with exact splits (scikit-learn's GradientBoostingClassifier).

    Exact splits, rather than the 255 quantile bins of the histogram variant, matter here:
    failure limits sit in the tails (power below 1 % of the rows), where bins are coarse.
    """

    n_estimators: int = 300
    learning_rate: float = 0.1
    max_depth: int = 3
    min_samples_leaf: int = 1
    subsample: float = 1.0
    forest_trees: int = 300
    """Extremely randomised trees averaged with the boosted ones (0: boosted trees alone)."""
    bagged_trees: int = 0
    """Trees on bootstrap samples (a random forest trying every feature at each split),
    averaged in as well (0: none)."""


class _Blend:
    """The mean failure probability of a few fitted classifiers."""

    def __init__(self, members: list[Any]) -> None:
        self.members = members

    def fit(self, x: Array, y: NDArray[np.bool_]) -> _Blend:
        for m in self.members:
            m.fit(x, y)
        return self

    def predict_proba(self, x: Array) -> Array:
        proba: Array = np.mean([m.predict_proba(x) for m in self.members], axis=0)
        return proba


class FailureModel:
    """Binary failure classifier over named columns (fit on rows labelled 1 = failed).

    Categorical columns (codes such as product type 0/1/2) are one-hot encoded; missing values
    (NaN) are filled with the training median of their column.
    """

    kind = "failure"

    def __init__(
        self,
        *,
        derived: Sequence[Derived] = (),
        categorical: Sequence[str] = (),
        trees: ClassifierParams | None = None,
        folds: int = 5,
        seed: int = 0,
    ) -> None:
        self.derived = tuple(derived)
        self.categorical = tuple(categorical)
        self.trees = trees or ClassifierParams()
        self.folds = folds
        self.seed = seed
        self.columns: tuple[str, ...] = ()
        self.threshold = 0.5
        self.cv_f1 = float("nan")
        """F1 of the out-of-fold predictions of the training data at ``threshold``."""
        self._clf: _Blend | None = None
        self._oof: Array | None = None
        self._fill: Array | None = None
        self._codes: dict[int, Array] = {}
        self.fit_seconds = 0.0

    def params(self) -> dict[str, Any]:
        return {
            "derived": [
                {"name": d.name, "op": d.op, "a": d.a, "b": d.b, "scale": d.scale}
                | ({"offset": d.offset} if d.offset else {})
                for d in self.derived
            ],
            "categorical": list(self.categorical),
            "trees": {k: getattr(self.trees, k) for k in self.trees.__slots__},
            "folds": self.folds,
            "seed": self.seed,
            "threshold": self.threshold,
        }

    def _matrix(self, x: Array, columns: Sequence[str]) -> Array:
        if x.ndim != 2 or x.shape[1] != len(columns):
            raise InvalidPayload(f"{x.shape} values for {len(columns)} columns")
        values = {c: x[:, i] for i, c in enumerate(columns)}
        parts = [x]
        for d in self.derived:
            for name in (d.a, d.b):
                if name not in values:
                    raise InvalidPayload(f"derived feature {d.name} needs column {name!r}")
            values[d.name] = d.compute(values[d.a], values[d.b])
            parts.append(values[d.name][:, None])
        m = np.hstack(parts)
        if self._fill is not None:
            m = np.where(np.isnan(m), self._fill, m)
        if self._codes:
            onehot = [
                (m[:, j : j + 1] == c[None, :]).astype(np.float64) for j, c in self._codes.items()
            ]
            m = np.hstack([m, *onehot])
        return m

    def _classifier(self) -> _Blend:
        p = self.trees
        members: list[Any] = [
            GradientBoostingClassifier(
                n_estimators=p.n_estimators,
                learning_rate=p.learning_rate,
                max_depth=p.max_depth,
                min_samples_leaf=p.min_samples_leaf,
                subsample=p.subsample,
                random_state=self.seed,
            )
        ]
        if p.forest_trees > 0:
            members.append(
                ExtraTreesClassifier(
                    n_estimators=p.forest_trees, max_features=None, random_state=self.seed
                )
            )
        if p.bagged_trees > 0:
            members.append(
                RandomForestClassifier(
                    n_estimators=p.bagged_trees, max_features=None, random_state=self.seed
                )
            )
        return _Blend(members)

    def fit(self, x: Array, y: Array, columns: Sequence[str]) -> FailureModel:
        """Learn from rows ``x`` (named ``columns``) and labels ``y`` (1 failed, 0 not)."""
        for c in self.categorical:
            if c not in columns:
                raise InvalidPayload(f"categorical column {c!r} is not among the inputs")
        if y.shape[0] != x.shape[0]:
            raise InvalidPayload(f"{x.shape[0]} rows but {y.shape[0]} labels")
        labels = np.asarray(y) > 0.5
        positives = int(labels.sum())
        if positives < self.folds or labels.size - positives < self.folds:
            raise InvalidPayload(
                f"training needs at least {self.folds} failed and {self.folds} healthy rows"
            )
        start = time.perf_counter()
        self.columns = tuple(columns)
        self._fill, self._codes = None, {}
        raw = self._matrix(x, columns)
        with warnings.catch_warnings(action="ignore", category=RuntimeWarning):
            self._fill = np.nan_to_num(np.nanmedian(raw, axis=0))
        for c in self.categorical:
            j = self.columns.index(c)
            col = raw[:, j]
            self._codes[j] = np.unique(col[~np.isnan(col)])
        m = self._matrix(x, columns)
        oof = np.empty(labels.size)
        splitter = StratifiedKFold(self.folds, shuffle=True, random_state=self.seed)
        for train, held in splitter.split(m, labels):
            clf = self._classifier().fit(m[train], labels[train])
            oof[held] = clf.predict_proba(m[held])[:, 1]
        self.threshold = best_threshold(oof, labels)
        self.cv_f1 = f1_score(oof >= self.threshold, labels)
        self._oof = oof
        self._clf = self._classifier().fit(m, labels)
        self.fit_seconds = time.perf_counter() - start
        return self

    def predict_proba(self, x: Array, columns: Sequence[str] | None = None) -> Array:
        """Failure probability of each row; ``columns`` (default: the training order) name x."""
        if self._clf is None:
            raise InvalidPayload("the model is not trained")
        if columns is not None and tuple(columns) != self.columns:
            missing = [c for c in self.columns if c not in columns]
            if missing:
                raise InvalidPayload(f"missing columns: {', '.join(missing)}")
            x = x[:, [list(columns).index(c) for c in self.columns]]
        proba: Array = self._clf.predict_proba(self._matrix(x, self.columns))[:, 1]
        return proba

    def predict(self, x: Array, columns: Sequence[str] | None = None) -> NDArray[np.bool_]:
        result: NDArray[np.bool_] = self.predict_proba(x, columns) >= self.threshold
        return result


def select_by_cv(
    candidates: Sequence[FailureModel], x: Array, y: Array, columns: Sequence[str]
) -> FailureModel:
    """Fit every candidate and keep the one with the best out-of-fold F1 (``cv_f1``) on this
    training data; the first listed wins a tie, so list the simplest first."""
    if not candidates:
        raise InvalidPayload("no candidate models to choose from")
    fitted = [c.fit(x, y, columns) for c in candidates]
    return max(fitted, key=lambda m: m.cv_f1)
