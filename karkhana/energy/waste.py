"""Energy that buys nothing: machines drawing power while idle, the plant's base load,
compressed air leaking away while production is stopped, and the half-hours that set the
maximum-demand charge.

Power series hold each sample until the next one (within ``max_gap_ms``; longer silences are
unknown and not counted). Energy counters are read by interpolating the counter, with resets
skipped. All functions are pure and return frozen values that carry their evidence.
"""

from __future__ import annotations

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
    kwh, covered = 0.0, 0
    for start, end in spans:
        k, c = steps.integral(start, end)
        kwh += k
        covered += c
    return WindowEnergy(kwh, covered, total)


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
