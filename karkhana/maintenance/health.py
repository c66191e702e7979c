"""Health index 0-100 from anomaly scores, its trend, and when it raises an alarm.

The index maps a smoothed anomaly score ``s`` (1.0 = the detector's threshold) to
``100 / (1 + (s / 2)^2)``: about 98 for normal data (s ~ 0.3), 80 at the threshold, 50 at twice
the threshold. Scores are smoothed with an EWMA first, so a single odd reading moves it little.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from karkhana.maintenance.detector import Detector

DAY_MS = 86_400_000
ALARM_BELOW = 50.0
CLEAR_ABOVE = 65.0


def health_index(score: float) -> float:
    """0-100 from a smoothed score; NaN or negative scores count as perfectly normal."""
    if score == math.inf:
        return 0.0
    if math.isnan(score) or score <= 0.0:
        return 100.0
    return 100.0 / (1.0 + (score / 2.0) ** 2)


def trend_per_day(points: Sequence[tuple[int, float]]) -> float | None:
    """Least-squares slope of (epoch ms, index) points, in index points per day."""
    if len(points) < 3:
        return None
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    sxx = sum((t - mt) ** 2 for t, _ in points)
    if sxx == 0:
        return None
    sxy = sum((t - mt) * (v - mv) for t, v in points)
    return sxy / sxx * DAY_MS


def days_until(
    index: float, slope_per_day: float | None, level: float = ALARM_BELOW
) -> float | None:
    """Days until a falling index reaches ``level`` at the present slope (None if not falling)."""
    if slope_per_day is None or slope_per_day >= 0 or index <= level:
        return None
    return (index - level) / -slope_per_day


class Ewma:
    """Exponentially weighted moving average, with a span in samples (pandas' ``span``) or,
    given ``tau_ms``, a time constant, so that the smoothing does not depend on the sample
    rate (``update`` then needs the sample's time)."""

    def __init__(self, span: float = 1.0, tau_ms: float | None = None) -> None:
        if span < 1 or (tau_ms is not None and tau_ms <= 0):
            raise ValueError("span must be at least 1 and tau_ms positive")
        self.alpha = 2.0 / (span + 1.0)
        self.tau_ms = tau_ms
        self.value: float | None = None
        self.last_ts: int | None = None

    def update(self, x: float, ts: int | None = None) -> float:
        if not math.isfinite(x):
            return self.value if self.value is not None else 0.0
        alpha = self.alpha
        if self.tau_ms is not None and ts is not None:
            if self.last_ts is not None:
                alpha = 1.0 - math.exp(-max(0, ts - self.last_ts) / self.tau_ms)
            self.last_ts = ts
        self.value = x if self.value is None else alpha * x + (1 - alpha) * self.value
        return self.value


@dataclass(frozen=True, slots=True)
class HealthUpdate:
    ts: int
    index: float
    score: float
    alarm: bool
    raised: bool
    """The alarm began with this update."""
    cleared: bool


class HealthTracker:
    """Smoothed score -> index, a bounded history for the trend, and an alarm with hysteresis:
    raised when the index stays below ``alarm_below`` for ``confirm`` updates, cleared when it
    is back above ``clear_above``."""

    def __init__(
        self,
        span: float = 30.0,
        *,
        tau_ms: float | None = None,
        alarm_below: float = ALARM_BELOW,
        clear_above: float = CLEAR_ABOVE,
        confirm: int = 3,
        history: int = 2000,
    ) -> None:
        self.ewma = Ewma(span, tau_ms)
        self.alarm_below = alarm_below
        self.clear_above = clear_above
        self.confirm = max(1, confirm)
        self.history: deque[tuple[int, float]] = deque(maxlen=history)
        self.alarm = False
        self._low = 0

    @property
    def index(self) -> float:
        return self.history[-1][1] if self.history else 100.0

    def update(self, ts: int, score: float) -> HealthUpdate:
        smoothed = self.ewma.update(score, ts)
        index = health_index(smoothed)
        self.history.append((ts, index))
        raised = cleared = False
        if index < self.alarm_below:
            self._low += 1
            if not self.alarm and self._low >= self.confirm:
                self.alarm = raised = True
        else:
            self._low = 0
            if self.alarm and index > self.clear_above:
                self.alarm, cleared = False, True
        return HealthUpdate(ts, index, smoothed, self.alarm, raised, cleared)

    def trend(self, window_ms: int = DAY_MS) -> float | None:
        points = list(self.history)  # a copy: the monitor may append from its thread
        if not points:
            return None
        since = points[-1][0] - window_ms
        return trend_per_day([p for p in points if p[0] >= since])


class ConditionMonitor:
    """One machine's condition monitoring: learn its normal behaviour from the first
    ``learn_ms`` of running data, then score every running row into the health tracker.

    Only rows in the running state are learned and scored: a stopped loom is not an anomaly,
    and its health stays where the last running data left it. After a stop the machine needs
    time to come back to its steady state (a bearing that cooled during a power cut warms up
    again): rows are skipped for as long as it stood still, at most ``settle_ms``.
    """

    def __init__(
        self,
        detector: Detector,
        *,
        learn_ms: int = DAY_MS,
        tracker: HealthTracker | None = None,
        first_ts: int | None = None,
        settle_ms: int = 3_600_000,
        stop_gap_ms: int = 120_000,
    ) -> None:
        self.detector = detector
        self.learn_ms = learn_ms
        self.tracker = tracker or HealthTracker()
        self.first_ts = first_ts
        self.last_ts: int | None = None
        self.settle_ms = settle_ms
        self.stop_gap_ms = stop_gap_ms
        self.settled_from: int | None = None
        self.explanation: dict[str, float] = {}

    @property
    def learning(self) -> bool:
        return (
            self.first_ts is None
            or self.last_ts is None
            or self.last_ts - self.first_ts < self.learn_ms
            or self.detector.n_learned < self.detector.min_train
        )

    @property
    def progress(self) -> float:
        """Share of the learning period done (1.0 once scoring)."""
        if not self.learning:
            return 1.0
        if self.first_ts is None or self.last_ts is None:
            return 0.0
        return min(0.99, (self.last_ts - self.first_ts) / self.learn_ms)

    def update(
        self, ts: int, row: Mapping[str, float | None], running: bool
    ) -> HealthUpdate | None:
        if not running:
            return None
        if self.last_ts is not None and ts - self.last_ts > self.stop_gap_ms:
            gap = ts - self.last_ts
            self.settled_from = max(self.settled_from or 0, ts + min(gap, self.settle_ms))
        if self.settled_from is not None and ts < self.settled_from:
            self.last_ts = ts
            return None
        if self.first_ts is None:
            self.first_ts = ts
        self.last_ts = ts
        if self.learning:
            self.detector.learn_one(row)
            return None
        score = self.detector.score_one(row)
        update = self.tracker.update(ts, score)
        if score >= 1.0 or not self.explanation:
            self.explanation = self.detector.explain_one(row)
        return update
