"""Which source feeds a plant over time, the load-shedding outages, and the generator's diesel.

The supply is read from a changeover panel's status signals (``source``, ``grid_ok``,
``generator_running``) or, where a plant has none, inferred from a meter's voltage and
frequency. Three timelines are kept apart because they are debounced apart: the source kind,
whether the grid is out (an outage), and whether the generator runs. A grid cut followed by a
generator start 40 s later is one outage even though the kind changes twice.

Samples hold until the next one. Samples further apart than ``max_gap_ms`` leave a gap, which is
unknown rather than an outage, except that a short gap with an outage on both sides is bridged
(the panel's logger often loses power with the plant). Runs shorter than ``min_duration_ms``
between two runs of one state are flicker and take that state.

All functions are pure: series in, frozen values out.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Literal, TypeVar, get_args

import numpy as np
import numpy.typing as npt

from karkhana.core.errors import ConfigError, InvalidPayload
from karkhana.core.model import Value

MINUTE_MS = 60_000
HOUR_MS = 3_600_000

SourceKind = Literal["grid", "generator", "solar", "ups", "none", "unknown"]
SOURCE_KINDS: tuple[str, ...] = get_args(SourceKind)
BACKUP_KINDS: frozenset[str] = frozenset({"generator", "solar", "ups"})
"""Sources that keep (part of) a plant powered while the grid is out."""

SOURCE_ALIASES: dict[str, SourceKind] = {
    "mains": "grid",
    "wapda": "grid",
    "utility": "grid",
    "genset": "generator",
    "gen": "generator",
    "dg": "generator",
    "diesel": "generator",
    "pv": "solar",
    "battery": "ups",
    "inverter": "ups",
    "off": "none",
    "outage": "none",
}
"""Other names panels use for the same sources (matched case-insensitively)."""

Series = Sequence[tuple[int, Value]] | npt.NDArray[Any]
"""Samples in time order: ``(ts_ms, value)`` pairs, or an ``(n, 2)`` numeric array."""

L = TypeVar("L", bound=Hashable)
Segment = tuple[int, int, L | None]
"""``[start_ms, end_ms)`` with a label; None where nothing is known."""


@dataclass(frozen=True, slots=True)
class SourceParams:
    """How samples become a timeline (all in milliseconds)."""

    max_gap_ms: int = 5 * MINUTE_MS
    """Samples further apart than this leave an unknown gap between them."""
    bridge_ms: int = 30 * MINUTE_MS
    """A gap at most this long with an outage on both sides counts as outage."""
    min_duration_ms: int = MINUTE_MS
    """Runs shorter than this between two runs of one state are flicker and take that state."""

    def __post_init__(self) -> None:
        if self.max_gap_ms <= 0 or self.bridge_ms < 0 or self.min_duration_ms < 0:
            raise ConfigError(
                "max_gap_ms must be positive, bridge_ms and min_duration_ms not negative"
            )


@dataclass(frozen=True, slots=True)
class SourceSpan:
    """The plant fed by ``source`` over ``[start_ms, end_ms)``."""

    start_ms: int
    end_ms: int
    source: SourceKind

    @property
    def duration_ms(self) -> int:
        return self.end_ms - self.start_ms


@dataclass(frozen=True, slots=True)
class Outage:
    """The grid out over ``[start_ms, end_ms)``.

    ``open``: the data does not show the grid coming back (the outage runs to the end of the data
    or into a gap); ``end_ms`` is then the last time it was seen. ``backup_ms`` is the time a
    generator, solar plant or UPS fed the plant within it; the rest is ``unpowered_ms``.
    """

    start_ms: int
    end_ms: int
    open: bool
    generator_ms: int
    backup_ms: int

    @property
    def duration_ms(self) -> int:
        return self.end_ms - self.start_ms

    @property
    def unpowered_ms(self) -> int:
        return self.duration_ms - self.backup_ms


@dataclass(frozen=True, slots=True)
class SourceTimeline:
    """The supply of one plant over ``[start_ms, end_ms)``."""

    start_ms: int
    end_ms: int
    spans: tuple[SourceSpan, ...]
    outages: tuple[Outage, ...]
    generator_runs: tuple[tuple[int, int], ...]
    """Spans when the generator ran (also test runs with the grid present)."""

    def time_on(self, source: SourceKind) -> int:
        return sum(s.duration_ms for s in self.spans if s.source == source)

    @property
    def outage_ms(self) -> int:
        return sum(o.duration_ms for o in self.outages)

    @property
    def generator_ms(self) -> int:
        return sum(e - s for s, e in self.generator_runs)


@dataclass(frozen=True, slots=True)
class MeterSignature:
    """How a meter's voltage and frequency tell the grid from a generator and from nothing.

    Below ``dead_v`` there is no supply. Otherwise the supply is the generator when the
    frequency's standard deviation over ``window_ms`` exceeds ``generator_hz_std`` (a diesel
    governor hunts; the grid is held by the whole network) or its mean is further than
    ``grid_hz_band`` from ``nominal_hz``; else it is the grid. Of the windows behind and ahead
    of a sample, the steadier one decides; windows never reach across a sample without supply.
    """

    dead_v: float = 50.0
    nominal_hz: float = 50.0
    grid_hz_band: float = 0.5
    generator_hz_std: float = 0.1
    window_ms: int = 5 * MINUTE_MS
    min_samples: int = 3

    def __post_init__(self) -> None:
        if self.window_ms <= 0 or self.min_samples < 2:
            raise ConfigError("window_ms must be positive and min_samples at least 2")


# ---------------------------------------------------------------- series and segments


def _pairs(series: Series) -> tuple[npt.NDArray[np.int64], list[Value]]:
    if isinstance(series, np.ndarray):
        if series.ndim != 2 or series.shape[1] != 2:
            raise InvalidPayload(f"a series array must have shape (n, 2), got {series.shape}")
        ts = series[:, 0].astype(np.int64)
        values: list[Value] = [float(v) for v in series[:, 1]]
    else:
        ts = np.fromiter((int(t) for t, _ in series), dtype=np.int64, count=len(series))
        values = [v for _, v in series]
    if ts.size > 1 and np.any(np.diff(ts) < 0):
        order = np.argsort(ts, kind="stable")
        ts = ts[order]
        values = [values[i] for i in order]
    return ts, values


def _truth(value: Value) -> bool:
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("true", "1", "on", "yes"):
            return True
        if text in ("false", "0", "off", "no"):
            return False
        raise InvalidPayload(f"not a boolean: {value!r}")
    return bool(value)


def parse_source(value: Value) -> SourceKind:
    """A panel's source value as one of :data:`SOURCE_KINDS`."""
    if not isinstance(value, str):
        raise InvalidPayload(f"a source is a string, got {value!r}")
    text = value.strip().lower()
    if text in SOURCE_KINDS:
        return text  # type: ignore[return-value]
    alias = SOURCE_ALIASES.get(text)
    if alias is None:
        raise InvalidPayload(
            f"unknown power source {value!r} (expected one of {', '.join(SOURCE_KINDS)})"
        )
    return alias


def _steps(
    ts: npt.NDArray[np.int64], labels: Sequence[L], end_ms: int, max_gap_ms: int
) -> list[Segment[L]]:
    """Hold each label until the next sample; a step longer than ``max_gap_ms`` is unknown."""
    out: list[Segment[L]] = []
    n = len(labels)
    for i in range(n):
        start = int(ts[i])
        stop = int(ts[i + 1]) if i + 1 < n else max(end_ms, start)
        if stop <= start:
            continue
        out.append((start, stop, labels[i] if stop - start <= max_gap_ms else None))
    return out


def _merge(segments: Iterable[Segment[L]]) -> list[Segment[L]]:
    out: list[Segment[L]] = []
    for start, end, label in segments:
        if end <= start:
            continue
        if out and out[-1][2] == label and out[-1][1] == start:
            out[-1] = (out[-1][0], end, label)
        else:
            out.append((start, end, label))
    return out


def _at(segments: Sequence[Segment[L]], cursor: list[int], t: int) -> L | None:
    """The label at ``t``; ``cursor`` keeps the position for a caller walking forward."""
    i = cursor[0]
    while i < len(segments) and segments[i][1] <= t:
        i += 1
    cursor[0] = i
    if i < len(segments) and segments[i][0] <= t:
        return segments[i][2]
    return None


def _bridge(
    segments: Sequence[Segment[L]], max_ms: int, bridgeable: Callable[[L], bool]
) -> list[Segment[L]]:
    out = list(segments)
    for i in range(1, len(out) - 1):
        start, end, label = out[i]
        before, after = out[i - 1][2], out[i + 1][2]
        if (
            label is None
            and before is not None
            and before == after
            and bridgeable(before)
            and end - start <= max_ms
            and out[i - 1][1] == start
            and out[i + 1][0] == end
        ):
            out[i] = (start, end, before)
    return _merge(out)


def _debounce(segments: Sequence[Segment[L]], min_ms: int) -> list[Segment[L]]:
    """A known run shorter than ``min_ms`` between two runs of one label (A, short B, A) is
    flicker and becomes A, the shortest such run first (in A, short B, short A, B the shorter
    one is the flicker). A short run between different states is kept: a grid cut followed by
    the generator 40 s later is a real changeover, not flicker."""
    segs = _merge(segments)
    start = [s for s, _, _ in segs]
    end = [e for _, e, _ in segs]
    label = [x for _, _, x in segs]
    prev = list(range(-1, len(segs) - 1))
    nxt = list(range(1, len(segs) + 1))
    alive = [True] * len(segs)

    def flicker(i: int) -> bool:
        p, q = prev[i], nxt[i]
        return (
            alive[i]
            and label[i] is not None
            and end[i] - start[i] < min_ms
            and p >= 0
            and q < len(segs)
            and label[p] is not None
            and label[p] == label[q]
            and end[p] == start[i]
            and end[i] == start[q]
        )

    heap = [(end[i] - start[i], i) for i in range(len(segs)) if flicker(i)]
    heapq.heapify(heap)
    while heap:
        length, i = heapq.heappop(heap)
        if length != end[i] - start[i] or not flicker(i):
            continue
        p, q = prev[i], nxt[i]
        end[p] = end[q]
        alive[i] = alive[q] = False
        nxt[p] = nxt[q]
        if nxt[q] < len(segs):
            prev[nxt[q]] = p
        for j in (prev[p], p, nxt[p]):
            if 0 <= j < len(segs) and flicker(j):
                heapq.heappush(heap, (end[j] - start[j], j))
    return [(start[i], end[i], label[i]) for i in range(len(segs)) if alive[i]]


# ---------------------------------------------------------------- timelines


_State = tuple[SourceKind | None, bool | None, bool | None]
"""(source kind, grid out, generator running) at one instant."""


def _derive(source: str | None, grid_ok: bool | None, running: bool | None) -> _State:
    kind: SourceKind | None
    if source is not None:
        kind = parse_source(source)
    elif grid_ok is True:
        kind = "grid"
    elif running is True:
        kind = "generator"
    elif grid_ok is False and running is False:
        kind = "none"
    elif grid_ok is None and running is None:
        kind = None
    else:
        kind = "unknown"
    if grid_ok is not None:
        out: bool | None = not grid_ok
    elif kind is None or kind == "unknown":
        out = None
    else:
        out = kind != "grid"
    if out is None and running is False and source is None:
        # only a standby generator's status: a set at rest is taken as the grid being there
        out = False
    if running is not None:
        gen: bool | None = running
    elif kind is None or kind == "unknown":
        gen = None
    else:
        gen = kind == "generator"
    return kind, out, gen


def _timeline(
    start_ms: int, end_ms: int, states: Sequence[Segment[_State]], params: SourceParams
) -> SourceTimeline:
    kinds: list[Segment[str]] = [(s, e, None if x is None else x[0]) for s, e, x in states]
    outs: list[Segment[bool]] = [(s, e, None if x is None else x[1]) for s, e, x in states]
    gens: list[Segment[bool]] = [(s, e, None if x is None else x[2]) for s, e, x in states]
    kinds = _debounce(
        _bridge(_merge(kinds), params.bridge_ms, lambda k: k not in ("grid", "unknown")),
        params.min_duration_ms,
    )
    outs = _debounce(_bridge(_merge(outs), params.bridge_ms, bool), params.min_duration_ms)
    gens = _debounce(_bridge(_merge(gens), params.bridge_ms, bool), params.min_duration_ms)
    spans = tuple(
        SourceSpan(s, e, "unknown" if k is None else k)  # type: ignore[arg-type]
        for s, e, k in _merge(kinds)
    )
    outages: list[Outage] = []
    for i, (s, e, out) in enumerate(outs):
        if not out:
            continue
        ended = i + 1 < len(outs) and outs[i + 1][2] is False and outs[i + 1][0] == e
        generator = backup = 0
        for span in spans:
            overlap = min(e, span.end_ms) - max(s, span.start_ms)
            if overlap > 0 and span.source in BACKUP_KINDS:
                backup += overlap
                if span.source == "generator":
                    generator += overlap
        outages.append(Outage(s, e, not ended, generator, backup))
    runs = tuple((s, e) for s, e, g in gens if g)
    return SourceTimeline(start_ms, end_ms, spans, tuple(outages), runs)


def source_timeline(
    *,
    source: Series | None = None,
    grid_ok: Series | None = None,
    generator_running: Series | None = None,
    until_ms: int | None = None,
    params: SourceParams | None = None,
) -> SourceTimeline:
    """The supply from a changeover panel's status signals; any of them may be missing.

    ``source`` names the source (grid, generator, solar, ups, none, or an alias), ``grid_ok``
    says whether the grid is there, ``generator_running`` whether the generator runs. Where
    ``grid_ok`` is known it decides outages; otherwise a source other than the grid is one.
    The last samples hold until ``until_ms`` (default: the last sample) if it is within
    ``max_gap_ms`` of them.
    """
    params = params or SourceParams()
    given = [s for s in (source, grid_ok, generator_running) if s is not None and len(s) > 0]
    if not given:
        raise InvalidPayload("no power-source samples: give source, grid_ok or generator_running")
    parsed = [_pairs(s) for s in given]
    start = min(int(ts[0]) for ts, _ in parsed)
    end = max(int(ts[-1]) for ts, _ in parsed)
    if until_ms is not None:
        if until_ms < end:
            raise InvalidPayload(f"until_ms {until_ms} is before the last sample {end}")
        end = until_ms

    def steps(series: Series | None, parse: Callable[[Value], Any]) -> list[Segment[Any]]:
        if series is None or len(series) == 0:
            return []
        ts, values = _pairs(series)
        return _merge(_steps(ts, [parse(v) for v in values], end, params.max_gap_ms))

    src = steps(source, lambda v: parse_source(v))
    grid = steps(grid_ok, _truth)
    gen = steps(generator_running, _truth)
    cuts = sorted({start, end} | {t for seg in (*src, *grid, *gen) for t in seg[:2]})
    cursors = ([0], [0], [0])
    states: list[Segment[_State]] = []
    for a, b in pairwise(cuts):
        state = _derive(_at(src, cursors[0], a), _at(grid, cursors[1], a), _at(gen, cursors[2], a))
        states.append((a, b, None if state == (None, None, None) else state))
    return _timeline(start, end, _merge(states), params)


def classify_meter(
    voltage: Series, frequency: Series, signature: MeterSignature | None = None
) -> list[tuple[int, SourceKind]]:
    """The source at each voltage sample, read from the voltage and the frequency."""
    sig = signature or MeterSignature()
    v_ts, v_raw = _pairs(voltage)
    f_ts, f_raw = _pairs(frequency)
    volts = np.array([float(v) for v in v_raw], dtype=np.float64)
    freq_all = np.array([float(v) for v in f_raw], dtype=np.float64)
    n = v_ts.size
    if n == 0:
        return []
    idx = np.searchsorted(f_ts, v_ts, side="right") - 1
    has_f = idx >= 0
    freq = np.where(has_f, freq_all[np.clip(idx, 0, None)] if freq_all.size else np.nan, np.nan)
    live = (volts >= sig.dead_v) & has_f & np.isfinite(freq)
    # runs of consecutive live samples; windows never reach across a dead sample
    run_id = np.cumsum(np.concatenate(([1], np.diff(live.astype(np.int64)) != 0)))
    run_start = np.zeros(n, dtype=np.int64)
    run_end = np.zeros(n, dtype=np.int64)
    edges = np.flatnonzero(np.diff(run_id)) + 1
    bounds = np.concatenate(([0], edges, [n]))
    for a, b in pairwise(bounds):
        run_start[a:b], run_end[a:b] = a, b
    dev = np.where(live, freq - sig.nominal_hz, 0.0)
    c1 = np.concatenate(([0.0], np.cumsum(dev)))
    c2 = np.concatenate(([0.0], np.cumsum(dev * dev)))
    here = np.arange(n)

    def window(lo: npt.NDArray[np.int64], hi: npt.NDArray[np.int64]) -> tuple[Any, Any, Any]:
        count = (hi - lo).astype(np.float64)
        safe = np.maximum(count, 1.0)
        mean = (c1[hi] - c1[lo]) / safe
        var = np.maximum((c2[hi] - c2[lo]) / safe - mean * mean, 0.0)
        return count, mean, np.sqrt(var * safe / np.maximum(safe - 1.0, 1.0))

    # the window behind and the window ahead of each sample. A window cut short by the start or
    # end of the supply is used only when the other one is cut short too; of two whole windows
    # the steadier decides, so that the grid is recognised from its first sample after a
    # changeover and the generator from its first sample after a dead spell
    back_lo = np.searchsorted(v_ts, v_ts - sig.window_ms, "left")
    ahead_hi = np.searchsorted(v_ts, v_ts + sig.window_ms, "right")
    back = window(np.maximum(back_lo, run_start), here + 1)
    ahead = window(here, np.minimum(ahead_hi, run_end))
    back_ok = (back[0] >= sig.min_samples) & (back_lo >= run_start)
    ahead_ok = (ahead[0] >= sig.min_samples) & (ahead_hi <= run_end)
    use_back = np.where(
        back_ok & ahead_ok,
        back[2] <= ahead[2],
        np.where(back_ok | ahead_ok, back_ok, back[0] >= ahead[0]),
    )
    count = np.where(use_back, back[0], ahead[0])
    mean = np.where(use_back, back[1], ahead[1])
    std = np.where(use_back, back[2], ahead[2])
    out: list[tuple[int, SourceKind]] = []
    for i in range(n):
        kind: SourceKind
        if not has_f[i] or not np.isfinite(volts[i]):
            kind = "unknown"
        elif volts[i] < sig.dead_v:
            kind = "none"
        elif count[i] < sig.min_samples:
            kind = "unknown"
        elif abs(mean[i]) > sig.grid_hz_band or std[i] > sig.generator_hz_std:
            kind = "generator"
        else:
            kind = "grid"
        out.append((int(v_ts[i]), kind))
    return out


def meter_timeline(
    voltage: Series,
    frequency: Series,
    *,
    signature: MeterSignature | None = None,
    until_ms: int | None = None,
    params: SourceParams | None = None,
) -> SourceTimeline:
    """The supply inferred from a meter where a plant has no panel status signals."""
    kinds = classify_meter(voltage, frequency, signature)
    if not kinds:
        raise InvalidPayload("no meter samples to infer the power source from")
    return source_timeline(source=kinds, until_ms=until_ms, params=params)


def outage_intervals(
    timeline: SourceTimeline, *, unpowered_only: bool = False
) -> list[tuple[int, int]]:
    """Outages as ``(start_ms, end_ms)`` for production to use as a downtime reason.

    ``unpowered_only`` keeps only the time with no supply at all (source ``none``): machines the
    generator carries were not stopped by the outage.
    """
    if not unpowered_only:
        return [(o.start_ms, o.end_ms) for o in timeline.outages]
    return [(s.start_ms, s.end_ms) for s in timeline.spans if s.source == "none"]


# ---------------------------------------------------------------- generator and diesel


TYPICAL_LITRES_PER_KVA_HOUR: tuple[float, float, float, float, float] = (
    0.0328,
    0.0784,
    0.1240,
    0.1760,
    0.2240,
)
"""Diesel litres per hour per kVA of rating at 0, 25, 50, 75 and 100 % load: an approximation.

From the widely reproduced "approximate diesel fuel consumption chart" of generator suppliers
for a 100 kW (125 kVA at power factor 0.8) set: 9.8, 15.5, 22.0 and 28.0 L/h at 1/4, 1/2, 3/4
and full load, divided by 125 kVA. The no-load figure extends the 1/4-to-1/2 load line to zero
(4.1 L/h). Real sets differ by make, age and maintenance: use the maker's curve where known.
"""


@dataclass(frozen=True, slots=True)
class FuelCurve:
    """A generator's diesel use: litres per hour at 0, 25, 50, 75 and 100 % of its rating.

    Load is the generator's real power over its rated real power, ``rated_kva x rated_pf``
    (sets are rated in kVA at power factor 0.8). Between the points the use is interpolated
    linearly; above full load it stays at the full-load figure.
    """

    rated_kva: float
    litres_per_hour: tuple[float, float, float, float, float]
    rated_pf: float = 0.8

    def __post_init__(self) -> None:
        if self.rated_kva <= 0 or not 0 < self.rated_pf <= 1:
            raise ConfigError(
                "a generator needs a positive kVA rating and a power factor in (0, 1]"
            )
        if len(self.litres_per_hour) != 5 or any(x < 0 for x in self.litres_per_hour):
            raise ConfigError("a fuel curve has five non-negative litres-per-hour figures")
        if any(b < a for a, b in pairwise(self.litres_per_hour)):
            raise ConfigError("a fuel curve must not fall as the load rises")

    @classmethod
    def typical(cls, rated_kva: float) -> FuelCurve:
        """:data:`TYPICAL_LITRES_PER_KVA_HOUR` scaled to a set of ``rated_kva``."""
        lph = tuple(round(x * rated_kva, 4) for x in TYPICAL_LITRES_PER_KVA_HOUR)
        return cls(rated_kva, lph)  # type: ignore[arg-type]

    @property
    def rated_kw(self) -> float:
        return self.rated_kva * self.rated_pf

    def litres_per_hour_at(self, load_kw: npt.ArrayLike) -> npt.NDArray[np.float64]:
        pct = np.asarray(load_kw, dtype=np.float64) / self.rated_kw * 100.0
        return np.interp(pct, (0.0, 25.0, 50.0, 75.0, 100.0), self.litres_per_hour)


@dataclass(frozen=True, slots=True)
class GeneratorUse:
    """Run time, diesel and its cost over the runs of one generator.

    ``assumed_ms`` is run time without a load reading, counted at ``assumed_load_pct``.
    """

    run_ms: int
    litres: float
    cost_pkr: float
    energy_kwh: float
    assumed_ms: int
    assumed_load_pct: float
    diesel_pkr_per_litre: float

    @property
    def run_hours(self) -> float:
        return self.run_ms / HOUR_MS

    @property
    def litres_per_hour(self) -> float:
        return self.litres / self.run_hours if self.run_ms else 0.0

    @property
    def pkr_per_kwh(self) -> float | None:
        """Diesel cost of one generated kWh (None without metered load)."""
        return self.cost_pkr / self.energy_kwh if self.energy_kwh > 0 else None


def generator_use(
    runs: Sequence[tuple[int, int]],
    curve: FuelCurve,
    diesel_pkr_per_litre: float,
    *,
    load_kw: Series | None = None,
    assumed_load_pct: float = 50.0,
    max_gap_ms: int = 5 * MINUTE_MS,
) -> GeneratorUse:
    """Diesel burnt over ``runs`` (e.g. ``timeline.generator_runs``).

    ``load_kw`` is the power the generator delivered (a meter on its output, or the plant's
    incomer while on the generator); each sample holds until the next within ``max_gap_ms``.
    """
    if diesel_pkr_per_litre < 0 or not 0 <= assumed_load_pct <= 150:
        raise ConfigError("diesel price must not be negative, assumed load within 0-150 %")
    runs = sorted(runs)
    steps: list[Segment[float]] = []
    if load_kw is not None and len(load_kw) > 0:
        ts, values = _pairs(load_kw)
        loads = [max(0.0, float(v)) for v in values]
        last = max([int(ts[-1]), *(e for _, e in runs)])
        steps = _steps(ts, loads, last, max_gap_ms)
    assumed_kw = assumed_load_pct / 100.0 * curve.rated_kw
    assumed_lph = float(curve.litres_per_hour_at(assumed_kw))
    run_ms = assumed_ms = 0
    litres = kwh = 0.0
    for start, end in runs:
        if end <= start:
            continue
        run_ms += end - start
        known = 0
        for s, e, kw in steps:
            a, b = max(s, start), min(e, end)
            if b <= a or kw is None:
                continue
            hours = (b - a) / HOUR_MS
            litres += float(curve.litres_per_hour_at(kw)) * hours
            kwh += kw * hours
            known += b - a
        missing = end - start - known
        assumed_ms += missing
        litres += assumed_lph * missing / HOUR_MS
    return GeneratorUse(
        run_ms=run_ms,
        litres=litres,
        cost_pkr=litres * diesel_pkr_per_litre,
        energy_kwh=kwh,
        assumed_ms=assumed_ms,
        assumed_load_pct=assumed_load_pct,
        diesel_pkr_per_litre=diesel_pkr_per_litre,
    )


def fuel_from_tank(
    level_pct: Series, tank_litres: float, *, deadband_pct: float = 0.5, refill_pct: float = 5.0
) -> float:
    """Litres drawn from the tank, read from its level: the falls added up, refills skipped.

    A fall counts once it exceeds ``deadband_pct`` (sensor noise); a rise of ``refill_pct`` or
    more is a refill and restarts the count from the new level.
    """
    if tank_litres <= 0:
        raise ConfigError("tank_litres must be positive")
    _, values = _pairs(level_pct)
    if not values:
        return 0.0
    ref = float(values[0])
    used_pct = 0.0
    for v in values[1:]:
        level = float(v)
        if level < ref - deadband_pct:
            used_pct += ref - level
            ref = level
        elif level > ref + refill_pct:
            ref = level
    return used_pct / 100.0 * tank_litres
