"""Multivariate anomaly detectors that learn a machine's normal behaviour from its own data.

Every detector has the same shape as river's and scikit-learn's estimators: ``learn_one`` and
``score_one`` on dicts for streaming, ``fit`` and ``score`` on 2-D arrays for batches. Scores are
scaled so that 1.0 is the detector's threshold: the ``quantile`` of the scores of its own
training data. ``explain_one`` and ``contributions`` split a score into per-signal shares.

Signals are standardised robustly (median and MAD) and a missing signal (None or NaN) is filled
with its expected value given the others under the training covariance, so one dead sensor
neither raises nor hides a score.

The quadratic detectors use the complete decomposition contributions of Alcala and Qin (2009):
for an index ``z' M z`` the contribution of signal j is ``((M^1/2 z)_j)^2``; they are never
negative and add up to the index exactly.
"""

from __future__ import annotations

import io
import json
import random
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt

from karkhana.core.errors import InvalidPayload

Array = npt.NDArray[np.float64]
MAD_TO_SIGMA = 1.4826
RELATIVE_FLOOR = 0.01
"""A signal's spread is taken as at least 1 % of its typical value: industrial sensors rarely
resolve less, and a barrel held at 230 °C by its controller is not anomalous at 232 °C."""
FORMAT = "karkhana-detector/1"


def _sym_sqrt(m: Array) -> Array:
    values, vectors = np.linalg.eigh((m + m.T) / 2.0)
    return np.asarray((vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T)


class Detector(ABC):
    """Base: robust scaling, imputation, threshold and the streaming buffer."""

    kinds: ClassVar[dict[str, type[Detector]]] = {}

    def __init__(
        self,
        signals: Sequence[str] | None = None,
        *,
        quantile: float = 0.995,
        min_train: int = 30,
        max_train: int = 5000,
        seed: int = 0,
    ) -> None:
        if not 0.5 <= quantile < 1.0:
            raise ValueError("quantile must be in [0.5, 1)")
        self.signals: tuple[str, ...] = tuple(signals or ())
        self.quantile = quantile
        self.min_train = max(2, min_train)
        self.max_train = max(self.min_train, max_train)
        self.seed = seed
        self.center: Array = np.zeros(0)
        self.scale: Array = np.zeros(0)
        self.cov: Array = np.zeros((0, 0))
        self._floored: npt.NDArray[np.bool_] = np.zeros(0, dtype=bool)
        self.threshold = 1.0
        self.fitted = False
        self._buffer: list[list[float]] = []
        self._seen = 0
        self._fitted_on = 0
        self._rng = random.Random(seed)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Detector.kinds[cls.__name__] = cls

    # -- the model proper (on standardised, complete data) ------------------------------
    @abstractmethod
    def _fit_z(self, z: Array) -> None: ...

    @abstractmethod
    def _index(self, z: Array) -> Array:
        """Raw anomaly index of each row."""

    @abstractmethod
    def _contrib(self, z: Array) -> Array:
        """Non-negative per-signal parts of each row's index."""

    def _state(self) -> dict[str, Array]:
        return {}

    def params(self) -> dict[str, Any]:
        """Constructor arguments beyond the common ones (saved with the model)."""
        return {}

    def _load_state(self, arrays: Mapping[str, Array]) -> None:
        return None

    # -- batch --------------------------------------------------------------------------
    def fit(self, x: npt.ArrayLike, signals: Sequence[str] | None = None) -> Self:
        """Learn normal behaviour from rows of ``x`` (one column per signal)."""
        data = self._matrix(x, signals)
        complete = data[~np.isnan(data).any(axis=1)]
        if len(complete) < self.min_train:
            raise InvalidPayload(
                f"need at least {self.min_train} complete rows to learn from, got {len(complete)}"
            )
        center = np.median(complete, axis=0)
        mad = np.median(np.abs(complete - center), axis=0) * MAD_TO_SIGMA
        std = complete.std(axis=0)
        floor = np.maximum(RELATIVE_FLOOR * np.abs(center), 1e-6)
        self.center = center
        measured = np.where(mad > 0, mad, std)
        self.scale = np.maximum(measured, floor)
        self._floored = floor > measured
        z = (complete - center) / self.scale
        self.cov = self._regularise(np.cov(z, rowvar=False).reshape(z.shape[1], z.shape[1]))
        self._fit_z(z)
        self.threshold = 1.0
        raw = self._index(z)
        self.threshold = max(float(np.quantile(raw, self.quantile)), 1e-12)
        self.fitted = True
        return self

    def _regularise(self, cov: Array) -> Array:
        """A small ridge; and a signal whose spread was raised to the floor keeps it (variance
        at least 1), so that the floor holds for the multivariate detectors too."""
        lift = np.where(self._floored, np.maximum(0.0, 1.0 - np.diag(cov)), 0.0)
        return np.asarray(cov + np.diag(lift) + 1e-4 * np.eye(len(cov)))

    def score(self, x: npt.ArrayLike) -> Array:
        """Score of each row; 1.0 is the threshold."""
        z = self._standardise(self._matrix(x))
        return np.asarray(self._index(z) / self.threshold)

    def contributions(self, x: npt.ArrayLike) -> Array:
        """Per-signal shares of each row's score (each row adds up to 1; missing signals 0)."""
        data = self._matrix(x)
        parts = self._contrib(self._standardise(data))
        parts[np.isnan(data)] = 0.0
        total = parts.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            shares = np.where(total > 0, parts / total, 0.0)
        return np.asarray(shares)

    # -- streaming ----------------------------------------------------------------------
    def learn_one(self, x: Mapping[str, float | None]) -> None:
        """Add one row of normal behaviour; the model is refitted when scoring needs it."""
        if not self.signals:
            self.signals = tuple(sorted(x))
        row = self._row(x)
        if np.isnan(row).any():
            return
        self._seen += 1
        if len(self._buffer) < self.max_train:
            self._buffer.append(list(row))
        else:  # reservoir sampling: every row seen so far is equally likely to be kept
            j = self._rng.randrange(self._seen)
            if j < self.max_train:
                self._buffer[j] = list(row)

    def score_one(self, x: Mapping[str, float | None]) -> float:
        """Score of one row (0.0 until enough rows were learned)."""
        if not self._ready():
            return 0.0
        return float(self.score(self._row(x)[None, :])[0])

    def explain_one(self, x: Mapping[str, float | None]) -> dict[str, float]:
        """Share of each signal in the score of one row."""
        if not self._ready():
            return dict.fromkeys(self.signals, 0.0)
        shares = self.contributions(self._row(x)[None, :])[0]
        return {s: float(v) for s, v in zip(self.signals, shares, strict=True)}

    def spread(self) -> dict[str, float]:
        """Robust spread (1.4826 x MAD) of each signal in what was learned so far (empty with
        too few rows)."""
        if self.fitted:
            return {s: float(v) for s, v in zip(self.signals, self.scale, strict=True)}
        if len(self._buffer) < self.min_train:
            return {}
        data = np.array(self._buffer)
        mad = np.median(np.abs(data - np.median(data, axis=0)), axis=0) * MAD_TO_SIGMA
        floor = np.maximum(RELATIVE_FLOOR * np.abs(np.median(data, axis=0)), 1e-6)
        return {s: float(v) for s, v in zip(self.signals, np.maximum(mad, floor), strict=True)}

    @property
    def n_learned(self) -> int:
        return self._seen

    def _ready(self) -> bool:
        n = len(self._buffer)
        if n >= self.min_train and (
            not self.fitted or self._seen - self._fitted_on >= max(1, n // 10)
        ):
            self.fit(np.array(self._buffer))
            self._fitted_on = self._seen
        return self.fitted

    # -- persistence --------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """The fitted model and its training buffer, without pickle."""
        header = {
            "format": FORMAT,
            "kind": type(self).__name__,
            "signals": list(self.signals),
            "quantile": self.quantile,
            "min_train": self.min_train,
            "max_train": self.max_train,
            "seed": self.seed,
            "threshold": self.threshold,
            "fitted": self.fitted,
            "seen": self._seen,
            "fitted_on": self._fitted_on,
            "rng": self._rng.getstate()[1][:625],
            "params": self.params(),
        }
        out = io.BytesIO()
        arrays = {
            "center": self.center,
            "scale": self.scale,
            "cov": self.cov,
            "buffer": np.array(self._buffer, dtype=np.float64).reshape(-1, len(self.signals)),
            **{f"m_{k}": v for k, v in self._state().items()},
        }
        arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
        np.savez(out, allow_pickle=False, **arrays)
        return out.getvalue()

    @staticmethod
    def from_bytes(data: bytes) -> Detector:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                header = json.loads(npz["header"].tobytes().decode())
                arrays = {
                    k: np.asarray(npz[k], dtype=np.float64) for k in npz.files if k != "header"
                }
        except (ValueError, OSError, KeyError, UnicodeDecodeError) as exc:
            raise InvalidPayload(f"not a saved detector: {exc}") from None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise InvalidPayload("not a saved detector")
        cls = Detector.kinds.get(str(header.get("kind")))
        if cls is None:
            raise InvalidPayload(f"unknown detector kind {header.get('kind')!r}")
        det = cls(
            header["signals"],
            quantile=header["quantile"],
            min_train=header["min_train"],
            max_train=header["max_train"],
            seed=header["seed"],
            **header.get("params", {}),
        )
        det.threshold = float(header["threshold"])
        det.fitted = bool(header["fitted"])
        det._seen = int(header["seen"])
        det._fitted_on = int(header["fitted_on"])
        det._rng.setstate((3, (*(int(v) for v in header["rng"]),), None))
        det.center, det.scale, det.cov = arrays["center"], arrays["scale"], arrays["cov"]
        det._buffer = arrays["buffer"].tolist()
        det._load_state({k[2:]: v for k, v in arrays.items() if k.startswith("m_")})
        return det

    # -- helpers ------------------------------------------------------------------------
    def _row(self, x: Mapping[str, float | None]) -> Array:
        values = []
        for s in self.signals:
            v = x.get(s)
            values.append(np.nan if v is None else float(v))
        return np.array(values, dtype=np.float64)

    def _matrix(self, x: npt.ArrayLike, signals: Sequence[str] | None = None) -> Array:
        data = np.array(x, dtype=np.float64)
        if data.ndim == 1:
            data = data[None, :]
        if data.ndim != 2:
            raise InvalidPayload("expected a 2-D array: one row per time, one column per signal")
        if signals is not None:
            self.signals = tuple(signals)
        if not self.signals:
            self.signals = tuple(f"x{i}" for i in range(data.shape[1]))
        if data.shape[1] != len(self.signals):
            raise InvalidPayload(
                f"expected {len(self.signals)} columns ({', '.join(self.signals)}),"
                f" got {data.shape[1]}"
            )
        data[~np.isfinite(data)] = np.nan
        return data

    def _standardise(self, data: Array) -> Array:
        if not self.fitted:
            raise InvalidPayload("the detector has not learned anything yet")
        z = (data - self.center) / self.scale
        missing = np.isnan(z)
        if missing.any():
            z = self._impute(z, missing)
        return np.asarray(z)

    def _impute(self, z: Array, missing: npt.NDArray[np.bool_]) -> Array:
        """Missing values -> their conditional mean given the observed ones."""
        z = z.copy()
        patterns, inverse = np.unique(missing, axis=0, return_inverse=True)
        for p, pattern in enumerate(patterns):
            rows = np.flatnonzero(inverse.ravel() == p)
            m, o = pattern, ~pattern
            if not o.any():
                z[np.ix_(rows, m)] = 0.0
                continue
            coef = np.linalg.solve(self.cov[np.ix_(o, o)], self.cov[np.ix_(o, m)])
            z[np.ix_(rows, m)] = z[np.ix_(rows, o)] @ coef
        return z


class ZScoreDetector(Detector):
    """Per-signal robust z-scores: the largest squared one is the index (a simple baseline)."""

    def _fit_z(self, z: Array) -> None:
        return None

    def _index(self, z: Array) -> Array:
        return np.asarray(np.max(z * z, axis=1))

    def _contrib(self, z: Array) -> Array:
        return np.asarray(z * z)


class _Quadratic(Detector):
    """An index ``z' M z`` with its complete decomposition contributions."""

    def __init__(self, signals: Sequence[str] | None = None, **kwargs: Any) -> None:
        super().__init__(signals, **kwargs)
        self.m: Array = np.zeros((0, 0))
        self.m_sqrt: Array = np.zeros((0, 0))

    def _set_m(self, m: Array) -> None:
        self.m = (m + m.T) / 2.0
        self.m_sqrt = _sym_sqrt(self.m)

    def _index(self, z: Array) -> Array:
        return np.asarray(np.einsum("ij,jk,ik->i", z, self.m, z))

    def _contrib(self, z: Array) -> Array:
        return np.asarray((z @ self.m_sqrt) ** 2)

    def _state(self) -> dict[str, Array]:
        return {"m": self.m}

    def _load_state(self, arrays: Mapping[str, Array]) -> None:
        if "m" in arrays:
            self._set_m(arrays["m"])


class MahalanobisDetector(_Quadratic):
    """Squared Mahalanobis distance under a covariance re-estimated without the training rows
    that look like outliers themselves (one reweighting step)."""

    def _fit_z(self, z: Array) -> None:
        self._set_m(np.asarray(np.linalg.inv(self.cov), dtype=np.float64))
        d2 = self._index(z)
        keep = d2 <= np.quantile(d2, 0.975)
        if keep.sum() > z.shape[1] + 1:
            cov = self._regularise(np.cov(z[keep], rowvar=False).reshape(z.shape[1], z.shape[1]))
            self._set_m(np.asarray(np.linalg.inv(cov), dtype=np.float64))


class PCADetector(_Quadratic):
    """PCA monitoring: Hotelling's T² in the principal subspace plus the squared prediction
    error (SPE, Q) of the residual, combined as ``T²/τ_T + SPE/τ_Q`` (Yue and Qin, 2001), each
    part scaled by its own training quantile."""

    def __init__(
        self, signals: Sequence[str] | None = None, *, variance: float = 0.9, **kwargs: Any
    ) -> None:
        super().__init__(signals, **kwargs)
        self.variance = variance

    def params(self) -> dict[str, Any]:
        return {"variance": self.variance}

    def _fit_z(self, z: Array) -> None:
        values, vectors = np.linalg.eigh(self.cov)
        order = np.argsort(values)[::-1]
        values, vectors = np.clip(values[order], 1e-9, None), vectors[:, order]
        share = np.cumsum(values) / values.sum()
        k = min(int(np.searchsorted(share, self.variance)) + 1, max(1, len(values) - 1))
        p = vectors[:, :k]
        t2 = p @ np.diag(1.0 / values[:k]) @ p.T
        residual = np.eye(len(values)) - p @ p.T
        tau_t = max(float(np.quantile(np.einsum("ij,jk,ik->i", z, t2, z), self.quantile)), 1e-9)
        tau_q = max(
            float(np.quantile(np.einsum("ij,jk,ik->i", z, residual, z), self.quantile)), 1e-9
        )
        self._set_m(t2 / tau_t + residual / tau_q)
