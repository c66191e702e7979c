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
STEADY_SPREADS = 2.0
"""A signal is steady when its fast and slow EWMAs differ by at most this many spreads."""
CLEAR_ABOVE = 65.0
SCORE_CLIP = 10.0
LOW_GAP_MS = 30 * 60_000
"""Updates further apart than this add only this much to the time the index spent low."""
"""Scores above ten times the threshold count as ten (health index 3.8)."""


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
    raised when the index stays below ``alarm_below`` for ``confirm`` updates and at least
    ``confirm_ms``, cleared when it is back above ``clear_above``.

    Scores are clipped at ``clip`` before smoothing: one wild reading (a sensor glitch, a
    transient) then cannot hold the index down for long, while a real fault keeps it low."""

    def __init__(
        self,
        span: float = 30.0,
        *,
        tau_ms: float | None = None,
        alarm_below: float = ALARM_BELOW,
        clear_above: float = CLEAR_ABOVE,
        confirm: int = 3,
        confirm_ms: int = 0,
        clip: float = SCORE_CLIP,
        history: int = 2000,
    ) -> None:
        self.ewma = Ewma(span, tau_ms)
        self.alarm_below = alarm_below
        self.clear_above = clear_above
        self.confirm = max(1, confirm)
        self.confirm_ms = confirm_ms
        self.clip = clip
        self._low_ms = 0
        self._low_at: int | None = None
        self.history: deque[tuple[int, float]] = deque(maxlen=history)
        self.alarm = False
        self._low = 0

    @property
    def index(self) -> float:
        return self.history[-1][1] if self.history else 100.0

    def update(self, ts: int, score: float) -> HealthUpdate:
        smoothed = self.ewma.update(min(score, self.clip), ts)
        index = health_index(smoothed)
        self.history.append((ts, index))
        raised = cleared = False
        if index < self.alarm_below:
            self._low += 1
            if self._low_at is not None:
                # time below the level while judged: a stop or a gap in between does not count
                self._low_ms += min(max(0, ts - self._low_at), LOW_GAP_MS)
            self._low_at = ts
            confirmed = self._low >= self.confirm and self._low_ms >= self.confirm_ms
            if not self.alarm and confirmed:
                self.alarm = raised = True
        else:
            self._low, self._low_ms, self._low_at = 0, 0, None
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
    and its health stays where the last running data left it. After a stop of at least
    ``settle_after_ms`` (or as long without data) the machine must also be back in its steady
    state: a bearing that cooled
    during a power cut warms up again, a moulding machine's barrel heats for hours. Rows are
    skipped until every signal is back near its level before the stop or has stopped moving (a
    fast and a slow EWMA of it, time constants ``fast_ms`` and ``slow_ms``, agree), within two
    of the signal's learned spreads; for at least as long as the machine stood still (up to
    ``slow_ms``, or up to ``warm_up_ms`` for a machine with a known warm-up time, such as a
    moulding machine's barrel) and at most ``settle_ms``. A fault that grows while the machine
    runs is back near its level before a short stop at once, so it is not hidden.
    """

    def __init__(
        self,
        detector: Detector,
        *,
        learn_ms: int = DAY_MS,
        tracker: HealthTracker | None = None,
        first_ts: int | None = None,
        settle_ms: int = 4 * 3_600_000,
        stop_gap_ms: int = 120_000,
        fast_ms: int = 5 * 60_000,
        slow_ms: int = 20 * 60_000,
        settle_after_ms: int = 10 * 60_000,
        warm_up_ms: int | None = None,
    ) -> None:
        self.detector = detector
        self.learn_ms = learn_ms
        self.tracker = tracker or HealthTracker()
        self.first_ts = first_ts
        self.last_ts: int | None = None
        self.settle_ms = settle_ms
        self.stop_gap_ms = stop_gap_ms
        self.fast_ms = fast_ms
        self.slow_ms = slow_ms
        self.settle_after_ms = settle_after_ms
        self.warm_up_ms = warm_up_ms
        self.explanation: dict[str, float] = {}
        self._settle_start: int | None = None
        self._settle_min = 0
        self._spread: dict[str, float] = {}
        self._fast: dict[str, float] = {}
        self._slow: dict[str, float] = {}
        self._ewma_ts = 0
        self._stopped_at: int | None = None
        self._before: dict[str, float] = {}
        self._steady_since: int | None = None

    @property
    def settling(self) -> bool:
        return self._settle_start is not None

    def _start_settling(self, ts: int, stopped_ms: int) -> None:
        least = max(self.slow_ms, self.warm_up_ms or 0)
        self._settle_min = max(self._settle_min, ts + min(stopped_ms, least, self.settle_ms))
        self._spread = self.detector.spread()
        if self._settle_start is None:
            # the running level just before the stop, of the signals that were steady then
            self._before = {
                k: self._fast[k]
                for k, spread in self._spread.items()
                if k in self._fast
                and k in self._slow
                and abs(self._fast[k] - self._slow[k]) <= STEADY_SPREADS * spread
            }
        self._settle_start = ts

    def _track(self, ts: int, row: Mapping[str, float | None]) -> None:
        """Fast and slow EWMAs of every signal over running rows; a stop does not count as
        elapsed time, so after it they still remember the steady running level."""
        dt = min(max(0, ts - self._ewma_ts), self.stop_gap_ms)
        self._ewma_ts = ts
        a_fast = 1.0 - math.exp(-dt / self.fast_ms)
        a_slow = 1.0 - math.exp(-dt / self.slow_ms)
        for k, v in row.items():
            if v is None or not math.isfinite(v):
                continue
            self._fast[k] = a_fast * v + (1 - a_fast) * self._fast.get(k, v)
            self._slow[k] = a_slow * v + (1 - a_slow) * self._slow.get(k, v)

    def _steady(self, ts: int) -> bool:
        assert self._settle_start is not None
        if ts - self._settle_start >= self.settle_ms:
            return True
        if ts < self._settle_min:
            return False
        limit = STEADY_SPREADS
        steady = all(
            abs(self._fast[k] - self._slow[k]) <= limit * spread
            or abs(self._fast[k] - self._before.get(k, math.inf)) <= limit * spread
            for k, spread in self._spread.items()
            if k in self._fast and k in self._slow
        )
        # held for a while: the averages also agree for a moment when one crosses the other
        if not steady:
            self._steady_since = None
            return False
        if self._steady_since is None:
            self._steady_since = ts
        return ts - self._steady_since >= min(self.fast_ms, ts - self._settle_start)

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
            if self._stopped_at is None:
                self._stopped_at = ts
            return None
        stopped = None
        if self._stopped_at is not None:
            stopped, self._stopped_at = ts - self._stopped_at, None
        elif self.last_ts is not None and ts - self.last_ts > self.stop_gap_ms:
            stopped = ts - self.last_ts  # no data: it may have stopped
        if stopped is not None and stopped >= self.settle_after_ms:
            self._start_settling(ts, stopped)
        self._track(ts, row)
        if self._settle_start is not None:
            if not self._steady(ts):
                self.last_ts = ts
                return None
            self._settle_start, self._settle_min, self._steady_since = None, 0, None
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
