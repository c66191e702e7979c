"""SKAB outlier detection: the condition-monitoring detectors on the Skoltech Anomaly Benchmark.

Protocol (SKAB's leaderboard, README of commit b2c0d46): for each of the 34 labelled files
(valve1, valve2, other) fit on the first 400 rows, score the rest, and pool the confusion
matrix of every file: F1 = TP / (TP + (FP + FN) / 2), FAR = FP / (FP + TN), MAR = FN / (FN + TP).

Nothing is tuned on the scored rows. Per file, only its first 400 rows are used:

- the detector learns from rows 0-299;
- scores are smoothed with an EWMA of span ``--span`` rows (10 s, set a priori);
- the alarm threshold is ``factor`` times the ``--quantile`` (0.99) of the smoothed scores of
  rows 300-399, which the detector did not learn from.

``factor`` is one number per detector, set before any labelled file is read: the same protocol
is run on 1,100-row windows of ``anomaly-free.csv`` (a separate recording of normal operation,
not part of the scored files), and ``factor`` is the multiple that gives ``--far`` (10 %) false
alarms there. It measures how much more scores grow over 700 unseen rows than over 100.

Labels of the scored part are read only to count the confusion matrix. The baseline in the same
run is the simplest usual one: per-signal robust z-scores fitted on all 400 rows, alarm when any
signal's squared z-score passes its in-sample 99 % quantile, no smoothing.

    python bench/skab.py --data ../shared/datasets/skab
"""

from __future__ import annotations

import argparse
import csv
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from karkhana.maintenance.detector import (
    Detector,
    MahalanobisDetector,
    PCADetector,
    ZScoreDetector,
)

TRAIN = 400
FIT = 300
WINDOW = 1100
"""Anomaly-free windows as long as a typical scored file (400 training + 700 scored rows)."""
WINDOW_STEP = 200
PUBLISHED = (
    ("Conv-AE", 0.78, 13.55, 28.02),
    ("MSET", 0.78, 39.73, 14.13),
    ("T²+Q (PCA)", 0.76, 26.62, 24.92),
    ("LSTM-AE", 0.74, 29.96, 25.92),
    ("T²", 0.66, 19.21, 42.6),
    ("Isolation forest", 0.29, 2.56, 82.89),
)


@dataclass
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def add(self, predicted: np.ndarray, truth: np.ndarray) -> None:
        self.tp += int(np.sum(predicted & truth))
        self.fp += int(np.sum(predicted & ~truth))
        self.fn += int(np.sum(~predicted & truth))
        self.tn += int(np.sum(~predicted & ~truth))

    def f1(self) -> float:
        return self.tp / (self.tp + (self.fn + self.fp) / 2)

    def far(self) -> float:
        return 100 * self.fp / (self.fp + self.tn)

    def mar(self) -> float:
        return 100 * self.fn / (self.fn + self.tp)


Predict = Callable[[list[str], np.ndarray], np.ndarray]


def load(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    with path.open(newline="") as f:
        rows = list(csv.reader(f, delimiter=";"))
    header = rows[0]
    signals = [h for h in header[1:] if h not in ("anomaly", "changepoint")]
    data = np.array([[float(v) for v in r[1 : 1 + len(signals)]] for r in rows[1:]])
    labels = np.array([float(r[header.index("anomaly")]) > 0 for r in rows[1:]])
    return signals, data, labels


def ewma(x: np.ndarray, span: float) -> np.ndarray:
    alpha = 2.0 / (span + 1.0)
    out = np.empty_like(x)
    s = x[0]
    for i, v in enumerate(x):
        s = alpha * v + (1 - alpha) * s
        out[i] = s
    return out


def load_free(root: Path) -> tuple[list[str], np.ndarray]:
    with (root / "anomaly-free" / "anomaly-free.csv").open(newline="") as f:
        rows = list(csv.reader(f, delimiter=";"))
    return rows[0][1:], np.array([[float(v) for v in r[1:]] for r in rows[1:]])


Make = Callable[[list[str]], Detector]


def ratios(make: Make, signals: list[str], data: np.ndarray, span: float, q: float) -> np.ndarray:
    """Smoothed scores after the training part, divided by the held-out quantile."""
    det = make(signals).fit(data[:FIT])
    smoothed = ewma(det.score(data), span)
    base = float(np.quantile(smoothed[FIT:TRAIN], q))
    return np.asarray(smoothed[TRAIN:] / base)


def factor_from_normal_data(
    make: Make, free: tuple[list[str], np.ndarray], span: float, q: float, far: float
) -> float:
    """The multiple of the held-out quantile that gives a false-alarm rate of ``far`` on
    windows of the anomaly-free recording run through the same protocol (no scored data)."""
    signals, data = free
    pooled = np.concatenate(
        [
            ratios(make, signals, data[start : start + WINDOW], span, q)
            for start in range(0, len(data) - WINDOW + 1, WINDOW_STEP)
        ]
    )
    return max(1.0, float(np.quantile(pooled, 1.0 - far)))


def calibrated(make: Make, span: float, q: float, factor: float) -> Predict:
    """Fit on rows 0-299, threshold = factor x quantile of rows 300-399, alarms after row 400."""

    def predict(signals: list[str], data: np.ndarray) -> np.ndarray:
        return np.asarray(ratios(make, signals, data, span, q) > factor)

    return predict


def baseline(signals: list[str], data: np.ndarray) -> np.ndarray:
    det = ZScoreDetector(signals, quantile=0.99).fit(data[:TRAIN])
    return np.asarray(det.score(data[TRAIN:]) > 1.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="the SKAB folder (holds data/)")
    p.add_argument("--span", type=float, default=10.0, help="EWMA span in rows (1 row = 1 s)")
    p.add_argument("--quantile", type=float, default=0.99)
    p.add_argument(
        "--far",
        type=float,
        default=10.0,
        help="false-alarm rate (%%) the threshold factor is set for on the anomaly-free file",
    )
    args = p.parse_args()
    root = args.data / "data" if (args.data / "data").is_dir() else args.data
    files = sorted(f for d in ("valve1", "valve2", "other") for f in (root / d).glob("*.csv"))
    if len(files) != 34:
        raise SystemExit(f"expected 34 labelled SKAB files under {root}, found {len(files)}")
    free = load_free(root)
    makers: dict[str, Make] = {
        "Mahalanobis (service default)": lambda s: MahalanobisDetector(s),
        "PCA T²+SPE": lambda s: PCADetector(s),
        "z-score, same protocol": lambda s: ZScoreDetector(s),
    }
    factors = {
        name: factor_from_normal_data(make, free, args.span, args.quantile, args.far / 100)
        for name, make in makers.items()
    }
    methods: dict[str, Predict] = {
        name: calibrated(make, args.span, args.quantile, factors[name])
        for name, make in makers.items()
    }
    methods["baseline: z-score, in-sample"] = baseline
    counts = {name: Counts() for name in methods}
    started = time.perf_counter()
    for path in files:
        signals, data, labels = load(path)
        truth = labels[TRAIN:]
        for name, predict in methods.items():
            counts[name].add(predict(signals, data), truth)
    elapsed = time.perf_counter() - started
    rows = sum(c.tp + c.fp + c.fn + c.tn for c in counts.values()) // len(counts)
    print(
        f"SKAB: {len(files)} files, {rows} scored rows; EWMA span {args.span:g},"
        f" threshold quantile {args.quantile:g} of rows {FIT}-{TRAIN - 1};"
        f" {platform.machine()}, python {platform.python_version()}, {elapsed:.1f} s"
    )
    print(f"{'method':<32} {'F1':>5} {'FAR %':>7} {'MAR %':>7}  threshold factor")
    for name, c in counts.items():
        factor = f"{factors[name]:.2f}" if name in factors else "-"
        print(f"{name:<32} {c.f1():>5.2f} {c.far():>7.2f} {c.mar():>7.2f}  {factor}")
    print("published (SKAB README, same protocol):")
    for name, f1, far, mar in PUBLISHED:
        print(f"  {name:<30} {f1:>5.2f} {far:>7.2f} {mar:>7.2f}")
    main_result = counts["Mahalanobis (service default)"]
    met = main_result.f1() >= 0.80 and main_result.far() <= 15.0
    print(f"target F1 >= 0.80 with FAR <= 15 %: {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
