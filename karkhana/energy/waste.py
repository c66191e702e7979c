"""Energy that buys nothing: machines drawing power while idle, the plant's base load,
compressed air leaking away (seen while production is stopped, or fitted while it runs), and the
half-hours that set the maximum-demand charge.

Power series hold each sample until the next one (within ``max_gap_ms``; longer silences are
unknown and not counted). Energy counters are read by interpolating the counter, with resets
skipped. All functions are pure and return frozen values that carry their evidence.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from karkhana.core.errors import ConfigError, InvalidPayload
from karkhana.core.model import Value

MINUTE_MS = 60_000
HOUR_MS = 3_600_000

Series = Sequence[tuple[int, Value]] | npt.NDArray[Any]
"""Samples in time order: ``(ts_ms, value)`` pairs, or an ``(n, 2)`` numeric array."""

Window = tuple[int, int]
"""A half-open span ``[start_ms, end_ms)``."""

IDLE_STATES: frozenset[str] = frozenset({"idle", "stopped", "planned_stop"})
"""Machine states in which power drawn produces nothing."""
RUNNING_STATES: frozenset[str] = frozenset({"running"})


class StateInterval(Protocol):
    """A machine in one state over ``[start_ms, end_ms)`` (production's ``Interval`` fits)."""

    @property
    def start_ms(self) -> int: ...

    @property
    def end_ms(self) -> int: ...

    @property
    def state(self) -> str: ...


Intervals = Iterable[StateInterval | tuple[int, int, str]]


# ---------------------------------------------------------------- series helpers


def _numeric(series: Series) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    if isinstance(series, np.ndarray):
        if series.ndim != 2 or series.shape[1] != 2:
            raise InvalidPayload(f"a series array must have shape (n, 2), got {series.shape}")
        ts = series[:, 0].astype(np.int64)
        values = series[:, 1].astype(np.float64)
    else:
        ts = np.fromiter((int(t) for t, _ in series), dtype=np.int64, count=len(series))
        try:
            values = np.fromiter((float(v) for _, v in series), dtype=np.float64, count=len(series))
        except ValueError as exc:
            raise InvalidPayload(f"a numeric series holds a non-number: {exc}") from None
    if ts.size > 1 and np.any(np.diff(ts) < 0):
        order = np.argsort(ts, kind="stable")
        ts, values = ts[order], values[order]
    return ts, values


def _spans(intervals: Intervals, states: Collection[str]) -> list[Window]:
    out: list[Window] = []
    for item in intervals:
        if isinstance(item, tuple):
            start, end, state = item
        else:
            start, end, state = item.start_ms, item.end_ms, item.state
        if state in states and end > start:
            out.append((int(start), int(end)))
    return merge_windows(out)


def merge_windows(windows: Iterable[Window]) -> list[Window]:
    """Sorted, disjoint windows covering the same time."""
    out: list[Window] = []
    for start, end in sorted(w for w in windows if w[1] > w[0]):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


class _Steps:
    """A sampled quantity held from each sample to the next; NaN over silences."""

    def __init__(self, series: Series, max_gap_ms: int, end_ms: int | None = None) -> None:
        ts, values = _numeric(series)
        self.ts = ts
        n = ts.size
        ends = np.empty(n, dtype=np.int64)
        if n:
            ends[:-1] = ts[1:]
            ends[-1] = max(int(ts[-1]), end_ms if end_ms is not None else int(ts[-1]))
        values = values.copy()
        values[(ends - ts) > max_gap_ms] = np.nan
        self.ends = ends
        self.values = values

    def pieces(self, start: int, end: int) -> tuple[npt.NDArray[np.float64], ...]:
        """Durations (ms) and values of the steps overlapping ``[start, end)``."""
        lo = max(0, int(np.searchsorted(self.ts, start, side="right")) - 1)
        hi = int(np.searchsorted(self.ts, end, side="left"))
        if hi <= lo:
            return np.zeros(0), np.zeros(0)
        a = np.maximum(self.ts[lo:hi], start)
        b = np.minimum(self.ends[lo:hi], end)
        dur = np.maximum(b - a, 0).astype(np.float64)
        return dur, self.values[lo:hi]

    def integral(self, start: int, end: int) -> tuple[float, int]:
        """(value x hours, known ms) over ``[start, end)``."""
        dur, vals = self.pieces(start, end)
        known = np.isfinite(vals) & (dur > 0)
        return float(np.sum(dur[known] * vals[known]) / HOUR_MS), int(np.sum(dur[known]))

    def integrals(
        self, starts: npt.NDArray[np.int64], ends: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """:meth:`integral` of many spans at once, from running totals: (value x hours, known
        ms) over each ``[starts[i], ends[i])``."""
        if self.ts.size == 0:
            zeros = np.zeros(np.size(starts))
            return zeros, zeros.copy()
        known = np.isfinite(self.values)
        value = np.where(known, self.values, 0.0)
        length = (self.ends - self.ts).astype(np.float64)
        total_v = np.concatenate(([0.0], np.cumsum(length * value)))
        total_k = np.concatenate(([0.0], np.cumsum(length * known)))

        def upto(t: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.float64], ...]:
            k = np.searchsorted(self.ts, t, "right") - 1
            kk = np.clip(k, 0, None)
            part = np.clip(t - self.ts[kk], 0, length[kk])
            v = np.where(k >= 0, total_v[kk] + part * value[kk], 0.0)
            c = np.where(k >= 0, total_k[kk] + part * known[kk], 0.0)
            return v, c

        v0, c0 = upto(np.asarray(starts, np.int64))
        v1, c1 = upto(np.asarray(ends, np.int64))
        return (v1 - v0) / HOUR_MS, c1 - c0


def _counter_kwh(energy: Series, windows: Sequence[Window]) -> tuple[float, int]:
    ts, values = _numeric(energy)
    if ts.size < 2:
        return 0.0, 0
    steps = np.diff(values)
    clean = np.concatenate(([0.0], np.cumsum(np.where(steps > 0, steps, 0.0))))
    first, last = int(ts[0]), int(ts[-1])
    kwh, covered = 0.0, 0
    for start, end in windows:
        a, b = max(start, first), min(end, last)
        if b <= a:
            continue
        kwh += float(np.interp(b, ts, clean) - np.interp(a, ts, clean))
        covered += b - a
    return kwh, covered


@dataclass(frozen=True, slots=True)
class WindowEnergy:
    """Energy drawn within some windows; ``covered_ms`` of their ``window_ms`` had data."""

    kwh: float
    covered_ms: int
    window_ms: int

    @property
    def covered_share(self) -> float:
        return self.covered_ms / self.window_ms if self.window_ms else 0.0


def energy_in_windows(
    windows: Iterable[Window],
    *,
    power_kw: Series | None = None,
    energy_kwh: Series | None = None,
    max_gap_ms: int = 5 * MINUTE_MS,
) -> WindowEnergy:
    """kWh drawn within ``windows``, from a power series or an energy counter (preferred)."""
    spans = merge_windows(windows)
    total = sum(e - s for s, e in spans)
    if energy_kwh is not None and len(energy_kwh) > 0:
        kwh, covered = _counter_kwh(energy_kwh, spans)
        return WindowEnergy(kwh, covered, total)
    if power_kw is None:
        raise InvalidPayload("give a power series or an energy counter")
    steps = _Steps(power_kw, max_gap_ms)
    if not spans:
        return WindowEnergy(0.0, 0, total)
    each_kwh, each_ms = steps.integrals(
        np.array([a for a, _ in spans], np.int64), np.array([b for _, b in spans], np.int64)
    )
    return WindowEnergy(float(each_kwh.sum()), round(float(each_ms.sum())), total)


def daily_windows(
    start_ms: int, end_ms: int, from_hour: float, to_hour: float, tz: str = "Asia/Karachi"
) -> list[Window]:
    """The same local hours every day (``to_hour`` below ``from_hour`` runs past midnight),
    clipped to ``[start_ms, end_ms)``: peak-tariff hours, nights."""
    if not (0 <= from_hour <= 24 and 0 <= to_hour <= 24) or from_hour == to_hour:
        raise ConfigError("daily window hours must be within 0-24 and differ")
    zone = ZoneInfo(tz)
    first = datetime.fromtimestamp(start_ms / 1000, zone).date() - timedelta(days=1)
    last = datetime.fromtimestamp(end_ms / 1000, zone).date()
    out: list[Window] = []
    day = first
    while day <= last:
        a = _local_ms(day, from_hour, zone)
        b = _local_ms(day + timedelta(days=1) if to_hour < from_hour else day, to_hour, zone)
        if b > start_ms and a < end_ms:
            out.append((max(a, start_ms), min(b, end_ms)))
        day += timedelta(days=1)
    return merge_windows(out)


def _local_ms(day: date, hour: float, zone: ZoneInfo) -> int:
    midnight = datetime.combine(day, time(0), zone)
    return int((midnight + timedelta(hours=hour)).timestamp() * 1000)


def quiet_windows(
    intervals: Mapping[str, Intervals],
    start_ms: int,
    end_ms: int,
    *,
    running_states: Collection[str] = RUNNING_STATES,
    min_ms: int = 30 * MINUTE_MS,
) -> list[Window]:
    """Windows of at least ``min_ms`` within ``[start_ms, end_ms)`` when no machine runs."""
    busy = merge_windows(w for ivs in intervals.values() for w in _spans(ivs, running_states))
    out: list[Window] = []
    t = start_ms
    for s, e in busy:
        if s > t:
            out.append((t, min(s, end_ms)))
        t = max(t, e)
        if t >= end_ms:
            break
    if t < end_ms:
        out.append((t, end_ms))
    return [(s, e) for s, e in out if e - s >= min_ms]


# ---------------------------------------------------------------- idle energy


@dataclass(frozen=True, slots=True)
class StateEnergy:
    state: str
    hours: float
    kwh: float


@dataclass(frozen=True, slots=True)
class IdleEnergy:
    """Energy one machine drew while producing nothing.

    ``hours`` is idle time with power data; ``uncovered_hours`` idle time without. ``cost_pkr``
    is ``kwh x rate`` when a rate was given.
    """

    kwh: float
    hours: float
    uncovered_hours: float
    by_state: tuple[StateEnergy, ...]
    rate_pkr_per_kwh: float | None
    cost_pkr: float | None

    @property
    def mean_kw(self) -> float:
        return self.kwh / self.hours if self.hours > 0 else 0.0


def idle_energy(
    intervals: Intervals,
    *,
    power_kw: Series | None = None,
    energy_kwh: Series | None = None,
    rate_pkr_per_kwh: float | None = None,
    idle_states: Collection[str] = IDLE_STATES,
    max_gap_ms: int = 5 * MINUTE_MS,
) -> IdleEnergy:
    """Energy drawn in idle states, from the machine's power series or its energy counter."""
    if rate_pkr_per_kwh is not None and rate_pkr_per_kwh < 0:
        raise ConfigError("a rate must not be negative")
    items = list(intervals)
    rows: list[StateEnergy] = []
    kwh_total, covered_total, window_total = 0.0, 0, 0
    for state in sorted(set(idle_states)):
        spans = _spans(items, {state})
        if not spans:
            continue
        got = energy_in_windows(
            spans, power_kw=power_kw, energy_kwh=energy_kwh, max_gap_ms=max_gap_ms
        )
        rows.append(StateEnergy(state, got.covered_ms / HOUR_MS, got.kwh))
        kwh_total += got.kwh
        covered_total += got.covered_ms
        window_total += got.window_ms
    return IdleEnergy(
        kwh=kwh_total,
        hours=covered_total / HOUR_MS,
        uncovered_hours=(window_total - covered_total) / HOUR_MS,
        by_state=tuple(rows),
        rate_pkr_per_kwh=rate_pkr_per_kwh,
        cost_pkr=None if rate_pkr_per_kwh is None else kwh_total * rate_pkr_per_kwh,
    )


# ---------------------------------------------------------------- base load


@dataclass(frozen=True, slots=True)
class BaseLoad:
    """The demand left when nothing is produced: a low percentile of power samples."""

    kw: float
    percentile: float
    samples: int
    hours: float
    """Length of the windows the samples came from."""


def base_load(power_kw: Series, windows: Iterable[Window], *, percentile: float = 10.0) -> BaseLoad:
    """The ``percentile`` of the power samples within non-production ``windows``."""
    if not 0 <= percentile <= 100:
        raise ConfigError("percentile must be within 0-100")
    spans = merge_windows(windows)
    ts, kw = _numeric(power_kw)
    inside = np.zeros(ts.size, dtype=bool)
    for s, e in spans:
        inside[np.searchsorted(ts, s, "left") : np.searchsorted(ts, e, "left")] = True
    values = kw[inside & np.isfinite(kw)]
    if values.size == 0:
        raise InvalidPayload("no power samples within the non-production windows")
    return BaseLoad(
        kw=float(np.percentile(values, percentile)),
        percentile=percentile,
        samples=int(values.size),
        hours=sum(e - s for s, e in spans) / HOUR_MS,
    )


# ---------------------------------------------------------------- compressed-air leaks


@dataclass(frozen=True, slots=True)
class LeakWindow:
    """The compressor in one no-production window."""

    start_ms: int
    end_ms: int
    running_ms: int
    loaded_ms: int
    kwh: float
    excess_kwh: float
    mean_flow_m3_min: float | None

    @property
    def loaded_share(self) -> float:
        return self.loaded_ms / self.running_ms if self.running_ms else 0.0


@dataclass(frozen=True, slots=True)
class AirLeakEvidence:
    """What a compressor did while production was stopped.

    With nothing using air, a compressor that still loads is feeding leaks. ``loaded_share`` is
    loaded time over running time in the windows; ``flagged`` when it reaches
    ``threshold_share`` over at least ``min_hours`` of running. ``excess_kwh`` is the energy
    drawn while loaded above the unloaded draw (``unloaded_kw``, the median power while running
    unloaded): what the leaks cost. ``leak_kw`` is that per running hour, ``leak_flow_m3_min``
    the mean air delivered less ``allowed_flow_m3_min`` (when flow is measured).
    """

    flagged: bool
    threshold_share: float
    loaded_share: float
    running_hours: float
    loaded_hours: float
    kwh: float
    excess_kwh: float
    unloaded_kw: float | None
    leak_kw: float
    leak_flow_m3_min: float | None
    windows: tuple[LeakWindow, ...]


def air_leak(
    windows: Iterable[Window],
    *,
    loaded: Series,
    power_kw: Series,
    running: Series | None = None,
    flow_m3_min: Series | None = None,
    threshold_share: float = 0.10,
    min_hours: float = 1.0,
    allowed_flow_m3_min: float = 0.0,
    max_gap_ms: int = 5 * MINUTE_MS,
) -> AirLeakEvidence:
    """The leak signature of one compressor over no-production ``windows`` (nights, holidays).

    ``loaded`` and ``running`` are the compressor's boolean signals (1/0 as stored); without
    ``running``, the compressor runs where its power is above zero.
    """
    if not 0 < threshold_share <= 1 or min_hours < 0:
        raise ConfigError("threshold_share must be within (0, 1], min_hours not negative")
    spans = merge_windows(windows)
    load_steps = _Steps(loaded, max_gap_ms)
    power_steps = _Steps(power_kw, max_gap_ms)
    run_steps = _Steps(running, max_gap_ms) if running is not None else power_steps
    flow_steps = _Steps(flow_m3_min, max_gap_ms) if flow_m3_min is not None else None

    def pieces(start: int, end: int) -> tuple[npt.NDArray[np.float64], ...]:
        """Elementary pieces of the window: duration, loaded, power, running, flow."""
        cuts = [start, end]
        for st in (load_steps, power_steps, run_steps, flow_steps):
            if st is not None:
                lo, hi = np.searchsorted(st.ts, start, "right"), np.searchsorted(st.ts, end, "left")
                cuts.extend(st.ts[lo:hi].tolist())
                cuts.extend(t for t in st.ends[max(lo - 1, 0) : hi].tolist() if start < t < end)
        edges = np.unique(np.asarray(cuts, dtype=np.int64))
        a = edges[:-1]

        def at(st: _Steps | None) -> npt.NDArray[np.float64]:
            if st is None or st.ts.size == 0:
                return np.full(a.size, np.nan)
            i = np.searchsorted(st.ts, a, "right") - 1
            ok = (i >= 0) & (a < st.ends[np.clip(i, 0, None)])
            return np.where(ok, st.values[np.clip(i, 0, None)], np.nan)

        return (
            np.diff(edges).astype(np.float64),
            at(load_steps),
            at(power_steps),
            at(run_steps),
            at(flow_steps),
        )

    cut = [pieces(s, e) for s, e in spans]
    unloaded_samples: list[npt.NDArray[np.float64]] = []
    for dur, ld, kw, rn, _ in cut:
        on = np.isfinite(rn) & (rn > 0) & np.isfinite(ld) & (ld <= 0) & np.isfinite(kw)
        unloaded_samples.append(kw[on & (dur > 0)])
    pool = np.concatenate(unloaded_samples) if unloaded_samples else np.zeros(0)
    unloaded_kw = float(np.median(pool)) if pool.size else None
    rows: list[LeakWindow] = []
    flow_sum = flow_ms = 0.0
    for (start, end), (dur, ld, kw, rn, fl) in zip(spans, cut, strict=True):
        on = np.isfinite(rn) & (rn > 0) & np.isfinite(ld)
        is_loaded = on & (ld > 0)
        has_kw = on & np.isfinite(kw)
        kwh = float(np.sum(dur[has_kw] * kw[has_kw]) / HOUR_MS)
        above = kw - (unloaded_kw or 0.0)
        sel = is_loaded & np.isfinite(kw)
        excess = float(np.sum(dur[sel] * np.maximum(above[sel], 0.0)) / HOUR_MS)
        mean_flow = None
        if flow_steps is not None:
            has_fl = on & np.isfinite(fl)
            if np.any(has_fl):
                w_flow = float(np.sum(dur[has_fl] * fl[has_fl]))
                w_ms = float(np.sum(dur[has_fl]))
                flow_sum += w_flow
                flow_ms += w_ms
                mean_flow = w_flow / w_ms
        rows.append(
            LeakWindow(
                start,
                end,
                int(np.sum(dur[on])),
                int(np.sum(dur[is_loaded])),
                kwh,
                excess,
                mean_flow,
            )
        )
    running_ms = sum(r.running_ms for r in rows)
    loaded_ms = sum(r.loaded_ms for r in rows)
    share = loaded_ms / running_ms if running_ms else 0.0
    excess_total = sum(r.excess_kwh for r in rows)
    running_hours = running_ms / HOUR_MS
    leak_flow = None
    if flow_ms > 0:
        leak_flow = max(0.0, flow_sum / flow_ms - allowed_flow_m3_min)
    return AirLeakEvidence(
        flagged=share >= threshold_share and running_hours >= min_hours and running_ms > 0,
        threshold_share=threshold_share,
        loaded_share=share,
        running_hours=running_hours,
        loaded_hours=loaded_ms / HOUR_MS,
        kwh=sum(r.kwh for r in rows),
        excess_kwh=excess_total,
        unloaded_kw=unloaded_kw,
        leak_kw=excess_total / running_hours if running_hours > 0 else 0.0,
        leak_flow_m3_min=leak_flow,
        windows=tuple(r for r in rows if r.running_ms > 0),
    )


# ---------------------------------------------------------------- air leaks while production runs


@dataclass(frozen=True, slots=True)
class AirLeakFit:
    """A compressor's delivered air (or power) against the number of air users running.

    A plane through ``points`` buckets of ``bucket_ms``: the mean delivered against the mean
    number of users running, one slope per kind of user (looms, ring frames: a kind that uses
    no air gets a slope near zero instead of bending the others). ``intercept`` is what the
    compressor delivers with no user running (air nobody uses: leaks, plus its own use), with
    its standard error. ``leak`` is the intercept less ``own_use``, in ``unit`` (``m3/min``
    from a flow meter, ``kW`` from power). ``leak_kw`` prices it: from flow, ``leak`` x
    ``kw_per_m3_min`` (the slope of the compressor's power against its flow over the same
    buckets); from power, ``leak`` itself. ``flagged`` only when the fit can be trusted and
    the leak is clear of its uncertainty; ``reason`` says why not otherwise.
    """

    unit: str
    points: int
    bucket_ms: int
    users: int
    users_min: float
    users_max: float
    r2: float
    intercept: float
    intercept_se: float
    slopes: tuple[tuple[str, float], ...]
    own_use: float
    leak: float
    kw_per_m3_min: float | None
    leak_kw: float | None
    hours: float
    flagged: bool
    reason: str

    @property
    def leak_flow_m3_min(self) -> float | None:
        return self.leak if self.unit == "m3/min" else None


def _time_in(spans: Sequence[Window], edges: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """Milliseconds of the disjoint sorted ``spans`` within each span between ``edges``."""
    if not spans:
        return np.zeros(edges.size - 1)
    s = np.array([a for a, _ in spans], dtype=np.int64)
    e = np.array([b for _, b in spans], dtype=np.int64)
    before = np.concatenate(([0], np.cumsum(e - s)))
    k = np.searchsorted(s, edges, "right") - 1
    kk = np.clip(k, 0, None)
    inside = np.minimum(edges, e[kk]) - s[kk]
    cum = np.where(k >= 0, before[kk] + inside, 0).astype(np.float64)
    return np.diff(cum)


def _bucket_means(
    steps: _Steps, edges: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Time-weighted mean and covered ms of a held series in each span between ``edges``."""
    value, covered = steps.integrals(edges[:-1], edges[1:])
    means = np.full(covered.size, np.nan)
    has = covered > 0
    means[has] = value[has] * HOUR_MS / covered[has]
    return means, covered


def _fit(
    x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]
) -> tuple[float, npt.NDArray[np.float64], float, float]:
    """Least squares ``y = a + x @ b`` (``x``: one column per regressor): (a, b, R², standard
    error of a)."""
    n = y.size
    design = np.column_stack((np.ones(n), x))
    solved, *_ = np.linalg.lstsq(design, y, rcond=None)
    coef = np.asarray(solved, dtype=np.float64)
    resid = y - design @ coef
    ss_res = float(resid @ resid)
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 0.0
    dof = n - design.shape[1]
    se = math.inf
    if dof > 0:
        cov = np.linalg.pinv(design.T @ design) * (ss_res / dof)
        se = math.sqrt(max(float(cov[0, 0]), 0.0))
    return float(coef[0]), coef[1:], r2, se


def air_leak_in_production(
    delivered: Series,
    users: Mapping[str, Intervals],
    start_ms: int,
    end_ms: int,
    *,
    unit: str = "m3/min",
    kinds: Mapping[str, str] | None = None,
    power_kw: Series | None = None,
    running: Series | None = None,
    own_use: float = 0.0,
    bucket_ms: int = 15 * MINUTE_MS,
    min_points: int = 48,
    min_spread: float = 3.0,
    min_r2: float = 0.3,
    min_leak: float = 0.1,
    running_states: Collection[str] = RUNNING_STATES,
    max_gap_ms: int = 5 * MINUTE_MS,
) -> AirLeakFit:
    """The air a compressor delivers that no running machine uses, while production runs.

    ``delivered`` is the compressor's flow in m³/min (``unit="m3/min"``) or, without a flow
    meter, its power in kW (``unit="kW"``; then ``own_use`` should hold its unloaded draw);
    ``users`` the state intervals of the machines that may use its air, ``kinds`` their kind
    (template), each kind with its own slope (default: one kind). Per bucket the mean
    delivered is set against the mean number of each kind running; buckets where the
    compressor did not run throughout (``running``, its boolean signal, when given), where it
    has less than 90 % data, or where a user's state is unknown for more than a tenth of the
    bucket are left out. ``power_kw`` (with flow) prices the leak.

    The fit is trusted with at least ``min_points`` buckets, a spread of at least
    ``min_spread`` users between the fewest and the most running, R² of at least ``min_r2``
    and more air with more users; the leak is flagged when it is at least ``min_leak`` and
    more than twice the intercept's standard error.
    """
    if unit not in ("m3/min", "kW"):
        raise ConfigError("unit must be m3/min or kW")
    if bucket_ms <= 0 or min_points < 3 or min_spread <= 0 or not 0 <= min_r2 <= 1:
        raise ConfigError(
            "bucket_ms must be positive, min_points at least 3, min_spread positive and"
            " min_r2 within 0-1"
        )
    if own_use < 0 or min_leak < 0:
        raise ConfigError("own_use and min_leak must not be negative")
    edges = np.arange(start_ms - start_ms % bucket_ms, end_ms + 1, bucket_ms, dtype=np.int64)
    edges = edges[(edges >= start_ms) & (edges <= end_ms)]
    nb = max(edges.size - 1, 0)
    groups = sorted({(kinds or {}).get(name, "") for name in users})
    x = np.zeros((nb, len(groups)))
    y = np.full(nb, np.nan)
    keep = np.zeros(nb, dtype=bool)
    if nb:
        y, covered = _bucket_means(_Steps(delivered, max_gap_ms), edges)
        keep = covered >= 0.9 * bucket_ms
        if running is not None:
            run_ts, run_values = _numeric(running)
            on = np.column_stack((run_ts, (run_values > 0).astype(np.float64)))
            share, run_cov = _bucket_means(_Steps(on, max_gap_ms), edges)
            keep &= (run_cov >= 0.9 * bucket_ms) & (np.nan_to_num(share) >= 0.999)
        for name, ivs in users.items():
            items = list(ivs)
            known = _time_in(_spans(items, {_state_of(i) for i in items}), edges)
            keep &= known >= 0.9 * bucket_ms
            col = groups.index((kinds or {}).get(name, ""))
            x[:, col] += _time_in(_spans(items, running_states), edges) / np.maximum(known, 1.0)
    xs, ys = x[keep], y[keep]
    total = xs.sum(axis=1)
    points = int(ys.size)
    lo = float(total.min()) if points else 0.0
    hi = float(total.max()) if points else 0.0
    a, r2, se = 0.0, 0.0, math.inf
    slopes = np.zeros(len(groups))
    reason = ""
    if points < min_points:
        reason = f"{points} buckets with data, fewer than {min_points}"
    elif hi - lo < min_spread:
        reason = f"the machines running varied by {hi - lo:.1f}, less than {min_spread:g}"
    else:
        varied = [i for i in range(len(groups)) if float(np.ptp(xs[:, i])) > 0]
        a, got, r2, se = _fit(xs[:, varied], ys)
        slopes[varied] = got
        if float(xs.mean(axis=0) @ slopes) <= 0:
            reason = "the delivered air does not rise with the machines running"
        elif r2 < min_r2:
            reason = f"R² {r2:.2f} is below {min_r2:g}"
    leak = max(0.0, a - own_use)
    if not reason and (leak < min_leak or leak <= 2 * se):
        reason = f"no leak beyond the fit's uncertainty ({leak:.2f} ± {2 * se:.2f} {unit})"
    kw_per = None
    leak_kw: float | None = leak if unit == "kW" else None
    if unit == "m3/min" and power_kw is not None and points >= 3:
        kw, _ = _bucket_means(_Steps(power_kw, max_gap_ms), edges)
        ok = keep & np.isfinite(kw)
        if int(ok.sum()) >= 3 and float(np.ptp(y[ok])) > 0:
            _, slope, _, _ = _fit(y[ok][:, None], kw[ok])
            if float(slope[0]) > 0:
                kw_per = float(slope[0])
                leak_kw = leak * kw_per
    return AirLeakFit(
        unit=unit,
        points=points,
        bucket_ms=bucket_ms,
        users=len(users),
        users_min=lo,
        users_max=hi,
        r2=r2,
        intercept=a,
        intercept_se=se,
        slopes=tuple((g, float(v)) for g, v in zip(groups, slopes, strict=True)),
        own_use=own_use,
        leak=leak,
        kw_per_m3_min=kw_per,
        leak_kw=leak_kw,
        hours=points * bucket_ms / HOUR_MS,
        flagged=not reason and leak_kw is not None,
        reason=reason or ("" if leak_kw is not None else "no power reading to price the air"),
    )


def _state_of(item: StateInterval | tuple[int, int, str]) -> str:
    return item[2] if isinstance(item, tuple) else item.state


# ---------------------------------------------------------------- peak demand


@dataclass(frozen=True, slots=True)
class DemandBlock:
    """Mean demand over one demand interval (30 minutes on Pakistani tariffs)."""

    start_ms: int
    end_ms: int
    kw: float


@dataclass(frozen=True, slots=True)
class MonthDemand:
    """One local calendar month: its maximum demand (what the MDI charge bills) and the
    demand at ``percentile`` of its blocks, the level the top blocks could be brought to."""

    month: str
    max_kw: float
    max_start_ms: int
    percentile: float
    percentile_kw: float
    blocks: int


@dataclass(frozen=True, slots=True)
class PeakEvent:
    """A demand block at or above the threshold, or near its month's maximum.

    ``running``: machines running in the block; ``starting``: those that started in it.
    """

    start_ms: int
    end_ms: int
    demand_kw: float
    month: str
    month_max_kw: float
    above_threshold: bool
    near_max: bool
    running: tuple[str, ...]
    starting: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PeakDemand:
    interval_ms: int
    blocks: tuple[DemandBlock, ...]
    months: tuple[MonthDemand, ...]
    events: tuple[PeakEvent, ...]


def demand_blocks(
    power_kw: Series,
    *,
    interval_ms: int = 30 * MINUTE_MS,
    max_gap_ms: int = 5 * MINUTE_MS,
    min_coverage: float = 0.5,
) -> list[DemandBlock]:
    """Mean power per clock-aligned interval (energy over covered time); blocks with less
    than ``min_coverage`` of their time covered by data are left out."""
    if interval_ms <= 0 or not 0 < min_coverage <= 1:
        raise ConfigError("interval_ms must be positive, min_coverage within (0, 1]")
    steps = _Steps(power_kw, max_gap_ms)
    if steps.ts.size == 0:
        return []
    first = int(steps.ts[0]) // interval_ms * interval_ms
    last = int(steps.ends[-1])
    edges = np.arange(first, last + interval_ms, interval_ms, dtype=np.int64)
    cuts = np.union1d(np.union1d(steps.ts, steps.ends), edges)
    cuts = cuts[(cuts >= first) & (cuts <= edges[-1])]
    a, b = cuts[:-1], cuts[1:]
    i = np.searchsorted(steps.ts, a, "right") - 1
    ok = (i >= 0) & (a < steps.ends[np.clip(i, 0, None)])
    kw = np.where(ok, steps.values[np.clip(i, 0, None)], np.nan)
    known = np.isfinite(kw)
    dur = (b - a).astype(np.float64)
    block = ((a - first) // interval_ms).astype(np.int64)
    nblocks = edges.size - 1
    energy = np.bincount(block[known], weights=dur[known] * kw[known], minlength=nblocks)
    covered = np.bincount(block[known], weights=dur[known], minlength=nblocks)
    out: list[DemandBlock] = []
    for k in range(nblocks):
        if covered[k] >= min_coverage * interval_ms:
            start = int(edges[k])
            out.append(DemandBlock(start, start + interval_ms, float(energy[k] / covered[k])))
    return out


def peak_demand(
    power_kw: Series,
    *,
    threshold_kw: float | None = None,
    near_max_share: float = 0.95,
    percentile: float = 95.0,
    machines: Mapping[str, Intervals] | None = None,
    running_states: Collection[str] = RUNNING_STATES,
    interval_ms: int = 30 * MINUTE_MS,
    tz: str = "Asia/Karachi",
    max_gap_ms: int = 5 * MINUTE_MS,
) -> PeakDemand:
    """Demand blocks, each local month's maximum, and the peak events with the machines
    running (and starting) then."""
    if not 0 < near_max_share <= 1 or not 0 <= percentile <= 100:
        raise ConfigError("near_max_share must be within (0, 1], percentile within 0-100")
    blocks = demand_blocks(power_kw, interval_ms=interval_ms, max_gap_ms=max_gap_ms)
    zone = ZoneInfo(tz)
    by_month: dict[str, list[DemandBlock]] = {}
    for blk in blocks:
        label = datetime.fromtimestamp(blk.start_ms / 1000, UTC).astimezone(zone).strftime("%Y-%m")
        by_month.setdefault(label, []).append(blk)
    months: list[MonthDemand] = []
    for label, items in by_month.items():
        top = max(items, key=lambda x: x.kw)
        level = float(np.percentile([x.kw for x in items], percentile))
        months.append(MonthDemand(label, top.kw, top.start_ms, percentile, level, len(items)))
    month_max = {m.month: m.max_kw for m in months}
    runs = {name: _spans(ivs, running_states) for name, ivs in (machines or {}).items()}
    events: list[PeakEvent] = []
    for label, items in by_month.items():
        for blk in items:
            above = threshold_kw is not None and blk.kw >= threshold_kw
            near = blk.kw >= near_max_share * month_max[label]
            if not (above or near):
                continue
            running = tuple(
                sorted(
                    name
                    for name, spans in runs.items()
                    if any(s < blk.end_ms and e > blk.start_ms for s, e in spans)
                )
            )
            starting = tuple(
                sorted(
                    name
                    for name, spans in runs.items()
                    if any(blk.start_ms <= s < blk.end_ms for s, _ in spans)
                )
            )
            events.append(
                PeakEvent(
                    blk.start_ms,
                    blk.end_ms,
                    blk.kw,
                    label,
                    month_max[label],
                    above,
                    near,
                    running,
                    starting,
                )
            )
    return PeakDemand(interval_ms, tuple(blocks), tuple(months), tuple(events))
