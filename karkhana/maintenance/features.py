"""Windowed features of run histories (pure numpy, no I/O).

Each run is a matrix of cycles x signals. For every cycle the features look only backwards
(trailing windows), so the feature row of cycle t is what a live machine would have at t.
Missing values (NaN) are skipped inside a window; a window with no value gives NaN, which the
tree models take as "missing".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """Which trailing statistics to compute per signal."""

    windows: tuple[int, ...] = (5, 10, 20, 40, 80, 160)
    """Trailing mean and least-squares slope over each of these many cycles."""
    alphas: tuple[float, ...] = (0.1, 0.3)
    """Exponentially smoothed values with these smoothing factors."""
    include_last: bool = True
    include_age: bool = True
    """The cycle number (age of the run) as one more feature."""

    def names(self, signals: Sequence[str]) -> list[str]:
        out: list[str] = []
        for s in signals:
            if self.include_last:
                out.append(f"{s}:last")
            out.extend(f"{s}:mean{w}" for w in self.windows)
            out.extend(f"{s}:slope{w}" for w in self.windows)
            out.extend(f"{s}:ewm{a:g}" for a in self.alphas)
        if self.include_age:
            out.append("age")
        return out


def _trailing_sum(c: Array, w: int) -> Array:
    """Sum over the trailing window of w rows from cumulative sums ``c`` (with a zero row first)."""
    n = c.shape[0] - 1
    hi = np.arange(1, n + 1)
    lo = np.maximum(hi - w, 0)
    out: Array = c[hi] - c[lo]
    return out


def trailing_mean_slope(x: Array, w: int) -> tuple[Array, Array]:
    """Mean and OLS slope (per cycle) of each column over the trailing ``w`` cycles, NaN-aware."""
    n = x.shape[0]
    valid = ~np.isnan(x)
    v = np.where(valid, x, 0.0)
    t = np.arange(n, dtype=np.float64)[:, None]
    m = valid.astype(np.float64)
    zero = np.zeros((1, x.shape[1]))

    def csum(a: Array) -> Array:
        return np.concatenate([zero, np.cumsum(a, axis=0)])

    cnt = _trailing_sum(csum(m), w)
    sx = _trailing_sum(csum(v), w)
    st = _trailing_sum(csum(t * m), w)
    stt = _trailing_sum(csum(t * t * m), w)
    stx = _trailing_sum(csum(t * v), w)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(cnt > 0, sx / np.maximum(cnt, 1), np.nan)
        den = cnt * stt - st * st
        slope = np.where((cnt > 1) & (den > 1e-12), (cnt * stx - st * sx) / den, 0.0)
    slope = np.where(cnt > 0, slope, np.nan)
    return mean, slope


def ewm(x: Array, alpha: float) -> Array:
    """Exponentially smoothed columns; NaN rows keep the previous value."""
    out = np.empty_like(x)
    state = np.full(x.shape[1], np.nan)
    for i in range(x.shape[0]):
        row = x[i]
        fresh = np.isnan(state)
        state = np.where(
            np.isnan(row), state, np.where(fresh, row, alpha * row + (1 - alpha) * state)
        )
        out[i] = state
    return out


def run_features(x: Array, spec: WindowSpec) -> Array:
    """Feature matrix (cycles x features) of one run's normalised signals (cycles x signals)."""
    n, k = x.shape
    parts: list[Array] = []
    blocks: list[list[Array]] = [[] for _ in range(k)]
    if spec.include_last:
        for j in range(k):
            blocks[j].append(x[:, j : j + 1])
    means: list[Array] = []
    slopes: list[Array] = []
    for w in spec.windows:
        mean, slope = trailing_mean_slope(x, w)
        means.append(mean)
        slopes.append(slope)
    smooth = [ewm(x, a) for a in spec.alphas]
    for j in range(k):
        blocks[j].extend(m[:, j : j + 1] for m in means)
        blocks[j].extend(s[:, j : j + 1] for s in slopes)
        blocks[j].extend(e[:, j : j + 1] for e in smooth)
        parts.extend(blocks[j])
    if spec.include_age:
        parts.append(np.arange(1, n + 1, dtype=np.float64)[:, None])
    if not parts:
        return np.empty((n, 0))
    return np.hstack(parts)
