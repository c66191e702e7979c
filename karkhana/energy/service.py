"""Energy management over stored telemetry: what each meter used and cost, the bill, the power
supply and its outages, the generator's diesel, idle energy and advice.

The service reads the store and hands numbers to the pure modules (`meter`, `billing`,
`sources`, `waste`, `advice`, `intensity`). Meter energy comes from the rollups: the last
reading of the ``energy_kwh`` counter in each 15-minute, 30-minute or hourly bucket (served from
the 1-minute and 1-hour rollups), so a month of one meter is a few thousand rows whatever the
sampling rate. Machines' own power is read raw over short ranges and as 1-minute averages over
long ones.

Which machines are meters: those whose template has the category ``energy`` (the three-phase
meter), apart from the changeover panel (``power_source``), whose signals give the supply. The
meter hierarchy is in :mod:`karkhana.energy.config`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from karkhana.assets.service import AssetService
from karkhana.core.clock import Clock
from karkhana.core.errors import ConfigError, InvalidPayload, NotFound
from karkhana.core.model import Point, Value
from karkhana.energy import advice as advice_mod
from karkhana.energy.billing import (
    billing_period,
    compare,
    day_edges,
    demand,
    estimate_bill,
    maximum_demand,
    period_costs,
)
from karkhana.energy.config import EnergyConfig, MeterRole, SiteEnergyConfig, meter_roles
from karkhana.energy.intensity import intensity as intensity_of
from karkhana.energy.meter import counter_energy, imbalance, unmetered
from karkhana.energy.model import (
    Bill,
    BillComparison,
    Floats,
    IntervalSeries,
    PeriodCost,
    Tariff,
)
from karkhana.energy.sources import (
    BACKUP_KINDS,
    FuelCurve,
    GeneratorUse,
    Outage,
    SourceTimeline,
    generator_use,
    source_timeline,
)
from karkhana.energy.tariff import at_local, local_date, peak_spans
from karkhana.energy.waste import (
    IDLE_STATES,
    RUNNING_STATES,
    AirLeakEvidence,
    AirLeakFit,
    IdleEnergy,
    PeakEvent,
    WindowEnergy,
    air_leak,
    air_leak_in_production,
    base_load,
    energy_in_windows,
    idle_energy,
    merge_windows,
    peak_demand,
    quiet_windows,
)
from karkhana.production.calendar import day_span, shifts_between
from karkhana.production.downtime import POWER_OUTAGE
from karkhana.production.model import ShiftWindow
from karkhana.production.service import ProductionService
from karkhana.store.base import Agg, Store

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
PANEL_TEMPLATE = "power_source"
METER_CATEGORY = "energy"
COMPRESSOR_TEMPLATE = "air_compressor"
KW_PER_AMP = math.sqrt(3) * 0.4 * 0.85
"""kW per ampere of a three-phase 400 V motor at power factor 0.85: an estimate of a machine's
power from its motor current where it reports no power of its own."""
RAW_LIMIT_MS = 3 * DAY_MS
"""The panel's signals are read raw up to this range, as 1-minute aggregates beyond it."""
POWER_RAW_LIMIT_MS = 6 * HOUR_MS
"""Machines' and meters' power is read raw up to this range, as 1-minute aggregates beyond."""
FINE_LIMIT_MS = 7 * DAY_MS
"""Meters are read in 15-minute buckets up to this range, hourly beyond it."""
LIVE_MS = 10 * MINUTE_MS
"""A meter's latest reading counts as "now" when it is at most this old."""
MAX_RANGE_MS = 400 * DAY_MS
MAX_PEAK_EVENTS = 10
"""The summary lists at most this many peak-demand events, highest first."""
BASE_LOAD_PERCENTILE = 10.0
NO_DATA = "no_data"
NEAR_MAX_SHARE = 0.95
"""A demand block at this share of the month's highest or more is a peak event."""

Binding = tuple[str, str]
Series = list[tuple[int, Value]]

SWITCH_OFF_AFTER_MIN = 15
"""Switching a machine off is advised for stops of this many minutes or more: a weaver mends a
broken end in a minute or two with the loom switched on, a long wait is worth switching off for."""


OUTAGE_MARGIN_MS = 5 * MINUTE_MS
MIN_QUIET_MS = 30 * MINUTE_MS
"""The base load is given only from at least half an hour without production and with supply."""


def _without(
    windows: Sequence[tuple[int, int]], cuts: Sequence[tuple[int, int]]
) -> list[tuple[int, int]]:
    """``windows`` less the time in ``cuts``."""
    out = []
    for s, e in windows:
        pieces = [(s, e)]
        for a, b in cuts:
            pieces = [
                piece
                for ps, pe in pieces
                for piece in ((ps, min(pe, a)), (max(ps, b), pe))
                if piece[1] > piece[0]
            ]
        out += pieces
    return out


def _bridged(intervals: Sequence[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """A machine's states with stops shorter than ``SWITCH_OFF_AFTER_MIN`` between two running
    spans counted as running: a loom that restarts after a broken end is not a start-up that
    staggering could move (peak-demand events name the machines starting from a real stop)."""
    out = list(intervals)
    for i in range(1, len(out) - 1):
        s, e, state = out[i]
        if (
            state not in RUNNING_STATES
            and e - s < SWITCH_OFF_AFTER_MIN * MINUTE_MS
            and out[i - 1][2] in RUNNING_STATES
            and out[i + 1][2] in RUNNING_STATES
        ):
            out[i] = (s, e, out[i - 1][2])
    return out


@dataclass(frozen=True, slots=True)
class MachineRef:
    id: str
    name: str
    template: str
    category: str
    bindings: Mapping[str, Binding]
    line_id: str = ""


@dataclass(frozen=True, slots=True)
class Site:
    """One site as the energy service sees it."""

    id: str
    name: str
    tz: ZoneInfo
    config: SiteEnergyConfig
    tariff: Tariff
    meters: tuple[MeterRole, ...]
    machines: Mapping[str, MachineRef]
    panels: tuple[MachineRef, ...]
    lines: Mapping[str, str] = field(default_factory=dict)
    """line id -> name"""

    @property
    def main_meters(self) -> list[MeterRole]:
        return [m for m in self.meters if m.role == "main"]

    def subs_of(self, machine_id: str) -> list[MeterRole]:
        return [m for m in self.meters if m.parent == machine_id]


@dataclass(frozen=True, slots=True, eq=False)
class Grid:
    """kWh per bucket of one meter on a regular grid of ``step_ms`` from ``t0``; NaN where the
    data says nothing. A bucket ends at the range's end when that is earlier, and at ``tail_ms``
    when the data ends inside it (``tail_at`` is its index)."""

    t0: int
    step_ms: int
    end_ms: int
    kwh: Floats
    tail_at: int | None = None
    tail_ms: int | None = None

    @property
    def starts(self) -> npt.NDArray[np.int64]:
        return self.t0 + self.step_ms * np.arange(self.kwh.size, dtype=np.int64)

    def series(self) -> IntervalSeries:
        starts = self.starts
        ends = np.minimum(starts + self.step_ms, self.end_ms)
        if self.tail_at is not None and self.tail_ms is not None:
            ends[self.tail_at] = min(int(ends[self.tail_at]), self.tail_ms)
        keep = np.isfinite(self.kwh) & (ends > starts)
        return IntervalSeries(starts[keep], ends[keep], self.kwh[keep])

    @classmethod
    def total_of(cls, grids: Sequence[Grid]) -> Grid:
        """The sum of meters on the same grid (NaN only where every meter is missing)."""
        stack = np.vstack([g.kwh for g in grids])
        has = np.isfinite(stack).any(axis=0)
        total = np.where(has, np.nansum(stack, axis=0), np.nan)
        first = grids[0]
        tails = [g for g in grids if g.tail_at is not None]
        if len(grids) == 1 or not tails:
            return cls(first.t0, first.step_ms, first.end_ms, total, first.tail_at, first.tail_ms)
        # meters that stop at different times: the sum's last bucket runs to the latest
        last = max(tails, key=lambda g: (g.tail_at or 0, g.tail_ms or 0))
        return cls(first.t0, first.step_ms, first.end_ms, total, last.tail_at, last.tail_ms)


@dataclass(frozen=True, slots=True)
class MeterReading:
    """One meter over a range: its energy grid and power factor."""

    role: MeterRole
    grid: Grid
    power_factor: float | None


@dataclass(frozen=True, slots=True)
class Supply:
    """The panel's timeline over a range (None without panel data), clipped to the range."""

    timeline: SourceTimeline | None
    start_ms: int
    end_ms: int

    def hours_by_source(self) -> dict[str, float]:
        out: dict[str, float] = {}
        covered = 0
        if self.timeline is not None:
            for s in self.timeline.spans:
                a, b = max(s.start_ms, self.start_ms), min(s.end_ms, self.end_ms)
                if b > a:
                    out[s.source] = out.get(s.source, 0.0) + (b - a) / HOUR_MS
                    covered += b - a
        rest = self.end_ms - self.start_ms - covered
        if rest > 0:
            out["unknown"] = out.get("unknown", 0.0) + rest / HOUR_MS
        return out

    def outages(self) -> list[Outage]:
        if self.timeline is None:
            return []
        return [
            o
            for o in self.timeline.outages
            if o.start_ms < self.end_ms
            and (o.end_ms > self.start_ms or (o.open and o.end_ms == self.start_ms))
        ]

    def generator_runs(self) -> list[tuple[int, int]]:
        if self.timeline is None:
            return []
        out = []
        for s, e in self.timeline.generator_runs:
            a, b = max(s, self.start_ms), min(e, self.end_ms)
            if b > a:
                out.append((a, b))
        return out

    def source_at(self, start: int, end: int) -> str:
        """The source that fed most of ``[start, end)``."""
        if self.timeline is None:
            return "unknown"
        best, best_ms = "unknown", 0
        share: dict[str, int] = {}
        for s in self.timeline.spans:
            a, b = max(s.start_ms, start), min(s.end_ms, end)
            if b > a:
                share[s.source] = share.get(s.source, 0) + b - a
        for src, ms in share.items():
            if ms > best_ms:
                best, best_ms = src, ms
        return best


@dataclass(frozen=True, slots=True)
class IdleMachine:
    machine_id: str
    name: str
    idle: IdleEnergy
    long: IdleEnergy | None = None
    """The part in stops of ``SWITCH_OFF_AFTER_MIN`` minutes or more (what switching off saves)."""


@dataclass(frozen=True, slots=True)
class Summary:
    """Everything the summary route shows, as values (the API turns it into JSON)."""

    site: Site
    start_ms: int
    end_ms: int
    energy: IntervalSeries
    cost: PeriodCost
    demand_kw_max: float
    demand_max_at_ms: int | None
    power_factor: float | None
    supply: Supply
    generator: GeneratorUse | None
    generator_run_ms: int
    idle: list[IdleMachine]
    idle_rate: float
    unmetered_kwh: float | None
    coverage: float
    base_load_kw: float | None = None
    """A low percentile of the main meter's power in the hours known to be without production
    (None without a single main meter with power, or without such hours)."""
    peak_events: tuple[PeakEvent, ...] = ()
    """30-minute demand blocks near the calendar month's maximum, highest first."""


@dataclass(frozen=True, slots=True)
class AdviceItem:
    advice: advice_mod.Advice
    subject_id: str


@dataclass(frozen=True, slots=True)
class MonthData:
    """What the monthly report shows."""

    site: Site
    month: str
    bill: Bill
    days: list[PeriodCost]
    summary: Summary
    advice: list[AdviceItem] = field(default_factory=list)
    intensity_days: list[dict[str, Any]] = field(default_factory=list)
    """Energy per unit of each production machine and line per day (`intensity` rows)."""
    shifts: list[dict[str, Any]] = field(default_factory=list)
    """Energy and cost per shift (`series` rows of ``bucket="shift"``)."""


_READS: ContextVar[dict[tuple[Any, ...], Any] | None] = ContextVar("energy_reads", default=None)
"""Store answers already read in this request; None outside one."""

_S = TypeVar("_S")
_P = ParamSpec("_P")
_T = TypeVar("_T")


def _reads_once(
    fn: Callable[Concatenate[_S, _P], Awaitable[_T]],
) -> Callable[Concatenate[_S, _P], Awaitable[_T]]:
    """Within the decorated call (and the calls it makes) each series is read from the store
    once; the answers are dropped when the outermost call returns."""

    @functools.wraps(fn)
    async def wrapper(self: _S, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        if _READS.get() is not None:
            return await fn(self, *args, **kwargs)
        token = _READS.set({})
        try:
            return await fn(self, *args, **kwargs)
        finally:
            _READS.reset(token)

    return wrapper


def _floor(t: int, step: int) -> int:
    return t - t % step


def _ceil(t: int, step: int) -> int:
    return -((-t) // step) * step


def _numbers(series: Series) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """The numeric samples of a series as arrays of times and values."""
    pairs = [(t, float(v)) for t, v in series if isinstance(v, int | float)]
    return (
        np.array([t for t, _ in pairs], np.int64),
        np.array([v for _, v in pairs], np.float64),
    )


def _at(
    series: tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]],
    t: npt.NDArray[np.int64],
    default: npt.NDArray[np.float64],
) -> npt.NDArray[np.float64]:
    """The series' value at exactly each of ``t`` (sorted times), else ``default``."""
    ts, values = series
    if ts.size == 0:
        return default
    i = np.clip(np.searchsorted(ts, t), 0, ts.size - 1)
    return np.where(ts[i] == t, values[i], default)


def _local_hours(windows: Sequence[tuple[int, int]], tz: ZoneInfo) -> str:
    """The distinct local clock spans of ``windows``, as ``"17:00-21:00"``."""
    seen: list[str] = []
    for a, b in windows:
        text = (
            f"{datetime.fromtimestamp(a / 1000, tz):%H:%M}-"
            f"{datetime.fromtimestamp(b / 1000, tz):%H:%M}"
        )
        if text not in seen:
            seen.append(text)
    return ", ".join(seen)


Span = tuple[int, int, dict[str, Any]]
"""A shift or day within a range: start, end and the labels its rows carry."""
BY = ("shift", "day")


def _pieces(spans: Sequence[Span]) -> tuple[npt.NDArray[np.int64], list[tuple[int, int]]]:
    """The sorted edges of all spans, and each span as the indices of its first and last edge:
    a figure of a span is the sum of the pieces between them (spans may leave gaps)."""
    edges = np.unique(np.array([t for a, b, _ in spans for t in (a, b)], np.int64))
    return edges, [
        (int(np.searchsorted(edges, a)), int(np.searchsorted(edges, b))) for a, b, _ in spans
    ]


def parse_month(month: str) -> tuple[int, int]:
    """``YYYY-MM`` as (year, month)."""
    text = month.strip()
    if len(text) != 7 or text[4] != "-" or not (text[:4] + text[5:]).isdigit():
        raise InvalidPayload(f"month: expected YYYY-MM, got {month[:20]!r}")
    year, mon = int(text[:4]), int(text[5:])
    if not 1 <= mon <= 12 or not 2000 <= year <= 2100:
        raise InvalidPayload(f"month: {month!r} is not a month between 2000 and 2100")
    return year, mon


class EnergyService:
    def __init__(
        self,
        store: Store,
        assets: AssetService,
        production: ProductionService,
        clock: Clock,
        config: Callable[[], EnergyConfig],
        tariffs: Mapping[str, Tariff],
        *,
        watch: Path | None = None,
    ) -> None:
        """``config`` loads the configuration; it is loaded again when the file ``watch``
        (``<data_dir>/energy.toml``) appears or changes."""
        self.store = store
        self.assets = assets
        self.production = production
        self.clock = clock
        self.tariffs = dict(tariffs)
        self._load = config
        self._watch = watch
        self._stamp = self._mtime()
        self.config = self._checked(config())

    def _mtime(self) -> float | None:
        try:
            return self._watch.stat().st_mtime if self._watch is not None else None
        except FileNotFoundError:
            return None

    def _checked(self, config: EnergyConfig) -> EnergyConfig:
        for site_id, cfg in [("(default)", config.defaults), *config.sites.items()]:
            if cfg.tariff_id not in self.tariffs:
                raise ConfigError(
                    f"energy: site {site_id} names tariff {cfg.tariff_id!r}, which is not one of"
                    f" {', '.join(sorted(self.tariffs))}"
                )
        return config

    def _current(self) -> EnergyConfig:
        stamp = self._mtime()
        if stamp != self._stamp:
            self.config = self._checked(self._load())
            self._stamp = stamp
        return self.config

    # -- the site -------------------------------------------------------------------------
    async def site(self, site_id: str) -> Site:
        tree = await self.assets.tree(frozenset({site_id}))
        if not tree:
            raise NotFound(f"no site {site_id}")
        node = tree[0]
        cfg = self._current().site(site_id)
        try:
            tz = ZoneInfo(node["timezone"])
        except (KeyError, ValueError):
            tz = ZoneInfo("Asia/Karachi")
        machines: dict[str, MachineRef] = {}
        lines: dict[str, str] = {}
        for area in node["areas"]:
            for line in area["lines"]:
                lines[line["id"]] = line["name"]
                for m in line["machines"]:
                    template = self.assets.templates.get(m["template"])
                    full = await self.assets.get_machine(m["id"])
                    machines[m["id"]] = MachineRef(
                        m["id"],
                        m["name"],
                        m["template"],
                        template.category if template else "",
                        {s.name: (s.device_id, s.key) for s in full.signals},
                        line["id"],
                    )
        panels = tuple(m for m in machines.values() if m.template == PANEL_TEMPLATE)
        meters = [
            (m.id, m.name)
            for m in machines.values()
            if m.category == METER_CATEGORY and m.template != PANEL_TEMPLATE
        ]
        return Site(
            site_id,
            node["name"],
            tz,
            cfg,
            self.tariffs[cfg.tariff_id],
            tuple(meter_roles(sorted(meters), cfg)),
            machines,
            panels,
            lines,
        )

    def check_range(self, start: int, end: int) -> None:
        if start >= end:
            raise InvalidPayload("start: must be before end")
        if end - start > MAX_RANGE_MS:
            raise InvalidPayload("end: a range may span at most 400 days")

    def today(self, site: Site) -> tuple[int, int]:
        now = self.clock.now_ms()
        return at_local(local_date(now, site.tz), 0, site.tz), now

    def month_range(self, site: Site, month: str | None) -> tuple[str, int, int]:
        """The billing month named ``YYYY-MM`` (default: the current one)."""
        day = site.config.reading_day
        if month in (None, ""):
            start, end = billing_period(self.clock.now_ms(), site.tz, day)
        else:
            year, mon = parse_month(month)
            start, end = billing_period(at_local(date(year, mon, day), 0, site.tz), site.tz, day)
        first = local_date(start, site.tz)
        return f"{first.year:04d}-{first.month:02d}", start, end

    async def _query(
        self,
        device_id: str,
        key: str,
        start: int,
        end: int,
        bucket: int | None = None,
        agg: Agg = Agg.AVG,
    ) -> list[Point]:
        """The store's answer, read once per request (:func:`_reads_once`): the month's report
        and the advice in it ask for the same series."""
        memo = _READS.get()
        memo_key = ("query", device_id, key, start, end, bucket, agg)
        if memo is not None and memo_key in memo:
            got: list[Point] = memo[memo_key]
            return got
        points = await self.store.query(device_id, key, start, end, bucket, agg)
        if memo is not None:
            memo[memo_key] = points
        return points

    # -- meters ---------------------------------------------------------------------------
    async def meter_grid(self, m: MachineRef, start: int, end: int, step: int) -> Grid:
        """kWh per ``step`` bucket of one meter from the rollups: the counter's first reading in
        each bucket to the first of the next (the last reading for the final bucket with data),
        or its average power where it has no counter. Counter resets and silences longer than a
        bucket are left missing (`counter_energy`)."""
        t0 = _floor(start, step)
        n = max(1, (_ceil(end, step) - t0) // step)
        kwh = np.full(n, np.nan)
        counter = m.bindings.get("energy_kwh")
        tail: tuple[int, int] | None = None
        if counter is not None:
            dev, key = counter
            points = await self._query(dev, key, t0, t0 + (n + 1) * step, step, Agg.FIRST)
            nums = [(p.ts, float(p.value)) for p in points if isinstance(p.value, int | float)]
            if nums and nums[-1][0] < t0 + n * step:
                # the data ends inside the range: close the last bucket at its last reading
                b = nums[-1][0]
                raw = [
                    (p.ts, float(p.value))
                    for p in await self._query(dev, key, b, min(b + step, end))
                    if isinstance(p.value, int | float)
                ]
                if raw and raw[-1][0] > b:
                    nums.append(raw[-1])
                    tail = ((b - t0) // step, raw[-1][0])
            if len(nums) >= 2:
                got = counter_energy([t for t, _ in nums], [v for _, v in nums], max_gap_ms=step)
                idx = (got.series.start_ms - t0) // step
                ok = (idx >= 0) & (idx < n)
                kwh[idx[ok]] = got.series.values[ok]
            return Grid(t0, step, end, kwh, *tail) if tail else Grid(t0, step, end, kwh)
        power = m.bindings.get("power_kw")
        if power is not None:
            for p in await self._query(
                power[0], power[1], t0, t0 + n * step, bucket=step, agg=Agg.AVG
            ):
                if isinstance(p.value, int | float):
                    kwh[(p.ts - t0) // step] = float(p.value) * step / HOUR_MS
        return Grid(t0, step, end, kwh)

    async def _power_factor(self, m: MachineRef, grid: Grid) -> float | None:
        """Energy-weighted mean of the meter's power factor per bucket."""
        b = m.bindings.get("power_factor")
        if b is None:
            return None
        pf = np.full(grid.kwh.size, np.nan)
        for p in await self._query(
            b[0], b[1], grid.t0, grid.t0 + grid.kwh.size * grid.step_ms, grid.step_ms, Agg.AVG
        ):
            if isinstance(p.value, int | float):
                pf[(p.ts - grid.t0) // grid.step_ms] = float(p.value)
        ok = np.isfinite(pf) & np.isfinite(grid.kwh) & (pf > 0) & (pf <= 1)
        weight = float(grid.kwh[ok].sum())
        if weight <= 0:
            return None
        return float((grid.kwh[ok] * pf[ok]).sum() / weight)

    async def read_meters(
        self, site: Site, start: int, end: int, step: int | None = None
    ) -> list[MeterReading]:
        step = step or (15 * MINUTE_MS if end - start <= FINE_LIMIT_MS else HOUR_MS)
        out = []
        for role in site.meters:
            m = site.machines[role.machine_id]
            grid = await self.meter_grid(m, start, end, step)
            out.append(MeterReading(role, grid, await self._power_factor(m, grid)))
        return out

    @staticmethod
    def site_grid(readings: Sequence[MeterReading]) -> Grid | None:
        mains = [r.grid for r in readings if r.role.role == "main"]
        return Grid.total_of(mains) if mains else None

    @staticmethod
    def unmetered_grid(readings: Sequence[MeterReading], main_id: str) -> Grid | None:
        main = next((r for r in readings if r.role.machine_id == main_id), None)
        subs = [r.grid.kwh for r in readings if r.role.parent == main_id]
        if main is None or not subs:
            return None
        rest = unmetered(main.grid.kwh, np.vstack(subs))
        g = main.grid
        return Grid(g.t0, g.step_ms, g.end_ms, rest.kwh, g.tail_at, g.tail_ms)

    # -- the supply -----------------------------------------------------------------------
    async def _signal(self, binding: Binding, start: int, end: int) -> Series:
        points = await self._query(binding[0], binding[1], start, end)
        return [(p.ts, p.value) for p in points if p.value is not None]

    async def _signal_minutes(self, binding: Binding, start: int, end: int, agg: Agg) -> Series:
        points = await self._query(binding[0], binding[1], start, end, MINUTE_MS, agg)
        return [(p.ts, p.value) for p in points if p.value is not None]

    async def supply(self, site: Site, start: int, end: int) -> Supply:
        """The panel's timeline; from raw samples over short ranges, else from 1-minute
        aggregates (grid out for the whole minute if it was out at any time in it)."""
        if not site.panels:
            return Supply(None, start, end)
        panel = site.panels[0]
        lead = start - 30 * MINUTE_MS
        raw = end - start <= RAW_LIMIT_MS
        signals: dict[str, Series] = {}
        for name, agg in (("grid_ok", Agg.MIN), ("generator_running", Agg.MAX)):
            b = panel.bindings.get(name)
            if b is not None:
                signals[name] = (
                    await self._signal(b, lead, end)
                    if raw
                    else await self._signal_minutes(b, lead, end, agg)
                )
        if not any(signals.values()) and "source" in panel.bindings:
            signals["source"] = await self._signal(panel.bindings["source"], lead, end)
        if not any(signals.values()):
            return Supply(None, start, end)
        last = max(s[-1][0] for s in signals.values() if s)
        timeline = source_timeline(
            source=signals.get("source"),
            grid_ok=signals.get("grid_ok"),
            generator_running=signals.get("generator_running"),
            until_ms=max(last, min(end, self.clock.now_ms())),
        )
        return Supply(timeline, start, end)

    async def _power_of(
        self, m: MachineRef, start: int, end: int, *, minutes: bool | None = None
    ) -> Series | None:
        """A machine's power in kW: its ``power_kw``, or estimated from ``motor_current_a``."""
        use_minutes = end - start > POWER_RAW_LIMIT_MS if minutes is None else minutes
        for name, scale in (("power_kw", 1.0), ("motor_current_a", KW_PER_AMP)):
            b = m.bindings.get(name)
            if b is None:
                continue
            series = (
                await self._signal_minutes(b, start, end, Agg.AVG)
                if use_minutes
                else await self._signal(b, start, end)
            )
            return [(t, float(v) * scale) for t, v in series if isinstance(v, int | float)]
        return None

    async def generator(
        self, site: Site, supply: Supply, main_power: Series | None
    ) -> GeneratorUse | None:
        runs = supply.generator_runs()
        kva = site.config.generator_kva
        if kva is None or not runs:
            return None
        return generator_use(
            runs,
            FuelCurve.typical(kva),
            site.config.diesel_price_pkr_per_litre,
            load_kw=main_power or None,
        )

    # -- idle energy ----------------------------------------------------------------------
    def _consumers(self, site: Site) -> list[MachineRef]:
        """Production machines with a power or motor-current signal (looms, presses): their
        idle, stopped and planned-stop time is energy that makes nothing. Utilities are left
        out: a compressor running unloaded is judged by the leak check instead."""
        producing = {mid for mid, m in self.production.machines.items() if m.produces}
        return [
            m
            for m in site.machines.values()
            if m.id in producing and ("power_kw" in m.bindings or "motor_current_a" in m.bindings)
        ]

    async def _intervals(
        self, ids: Sequence[str], start: int, end: int
    ) -> dict[str, list[tuple[int, int, str]]]:
        memo = _READS.get()
        memo_key = ("intervals", tuple(ids), start, end)
        if memo is not None and memo_key in memo:
            got = memo[memo_key]
        else:
            got = await self.production.intervals(ids, start, end)
            if memo is not None:
                memo[memo_key] = got
        return {
            mid: [
                (max(iv.start_ms, start), min(iv.end_ms, end), str(iv.state))
                for _, iv in rows
                if min(iv.end_ms, end) > max(iv.start_ms, start)
            ]
            for mid, rows in got.items()
        }

    async def idle(self, site: Site, start: int, end: int, rate: float) -> list[IdleMachine]:
        memo = _READS.get()
        memo_key = ("idle", site.id, start, end, rate)
        if memo is not None and memo_key in memo:
            done: list[IdleMachine] = memo[memo_key]
            return list(done)
        out = await self._idle(site, start, end, rate)
        if memo is not None:
            memo[memo_key] = list(out)
        return out

    async def _idle(self, site: Site, start: int, end: int, rate: float) -> list[IdleMachine]:
        machines = self._consumers(site)
        intervals = await self._intervals([m.id for m in machines], start, end)
        out = []
        for m in machines:
            ivs = intervals.get(m.id) or []
            if not ivs:
                continue
            power = await self._idle_power(m, ivs, start, end)
            if power is None or len(power) == 0:
                continue
            got = idle_energy(ivs, power_kw=power, rate_pkr_per_kwh=rate)
            if got.hours > 0:
                stands = [
                    (a, b, "stopped")
                    for a, b in merge_windows((a, b) for a, b, st in ivs if st in IDLE_STATES)
                    if b - a >= SWITCH_OFF_AFTER_MIN * MINUTE_MS
                ]
                long = idle_energy(stands, power_kw=power, rate_pkr_per_kwh=rate)
                out.append(IdleMachine(m.id, m.name, got, long))
        out.sort(key=lambda x: (-x.idle.kwh, x.machine_id))
        return out

    async def _idle_power(
        self, m: MachineRef, intervals: Sequence[tuple[int, int, str]], start: int, end: int
    ) -> Series | npt.NDArray[np.float64] | None:
        """The machine's power for idle energy. Over long ranges from 1-minute aggregates: the
        minute's average where the whole minute lies in an idle state, else its lowest reading
        (a minute that holds the start or end of a stop also holds running power, and the
        machine draws least while it makes nothing; the lower of that minute's and the one
        before, as a reading holds until the next)."""
        if end - start <= POWER_RAW_LIMIT_MS:
            return await self._power_of(m, start, end, minutes=False)
        for name, scale in (("power_kw", 1.0), ("motor_current_a", KW_PER_AMP)):
            b = m.bindings.get(name)
            if b is None:
                continue
            avg = _numbers(await self._signal_minutes(b, start, end, Agg.AVG))
            low = _numbers(await self._signal_minutes(b, start, end, Agg.MIN))
            idle = merge_windows((s, e) for s, e, st in intervals if st in IDLE_STATES)
            starts = np.array([a for a, _ in idle], np.int64)
            ends = np.array([e for _, e in idle], np.int64)
            t, v = avg
            i = np.searchsorted(starts, t, side="right") - 1
            whole = (i >= 0) & (t + MINUTE_MS <= ends[np.clip(i, 0, None)]) if idle else i >= 0
            # readings hold until the next one, so the minute after a stop's last reading
            # may hold only running readings: its neighbour's lowest counts too
            value = np.where(whole, v, np.minimum(_at(low, t, v), _at(low, t - MINUTE_MS, v)))
            return np.column_stack((t.astype(np.float64), value * scale))
        return None

    @staticmethod
    def average_rate(tariff: Tariff, cost: PeriodCost | None) -> float:
        """PKR per kWh of the energy actually used, or the off-peak (flat) rate without data."""
        if cost is not None and cost.kwh > 0:
            return cost.amount / cost.kwh
        adj = sum(a.per_kwh for a in tariff.adjustments)
        base = tariff.flat_rate if tariff.flat_rate is not None else tariff.off_peak_rate
        return (base or 0.0) + adj

    # -- shifts and days ------------------------------------------------------------------
    def shifts(self, site: Site, start: int, end: int) -> list[ShiftWindow]:
        """The production calendar's working shifts that start in ``[start, end)`` (a shift
        belongs to the day it starts on, as in production's reports)."""
        info = self.production.sites.get(site.id)
        if info is None:
            return []
        return [
            w for w in shifts_between(info.calendar, site.tz, start, end) if w.start_ms >= start
        ]

    def spans(self, site: Site, start: int, end: int, by: str) -> list[Span]:
        """The shifts (clipped at ``end``) or local days (clipped to the range) of a range."""
        if by == "shift":
            return [
                (
                    w.start_ms,
                    min(w.end_ms, end),
                    {"shift_id": w.id, "shift_name": w.name, "day": w.day},
                )
                for w in self.shifts(site, start, end)
            ]
        if by == "day":
            out: list[Span] = []
            day = local_date(start, site.tz)
            while True:
                a, b = day_span(day, site.tz)
                if a >= end:
                    return out
                out.append((max(a, start), min(b, end), {"day": day.isoformat()}))
                day = local_date(b, site.tz)
        raise InvalidPayload(f"by: expected shift or day, got {by[:20]!r}")

    # -- answers --------------------------------------------------------------------------
    @_reads_once
    async def summary(self, site: Site, start: int, end: int) -> Summary:
        self.check_range(start, end)
        readings = await self.read_meters(site, start, end)
        grid = self.site_grid(readings)
        energy = grid.series() if grid is not None else IntervalSeries.empty()
        cost = period_costs(site.tariff, energy, [start, end], site.tz)[0]
        interval = site.tariff.demand.interval_min if site.tariff.demand else 30
        mains = [r for r in readings if r.role.role == "main"]
        demand_energy = energy
        step = interval * MINUTE_MS
        if mains and mains[0].grid.step_ms > step and HOUR_MS % step == 0:
            # long ranges read meters hourly: the demand needs the main meters at its interval
            grids = [
                await self.meter_grid(site.machines[r.role.machine_id], start, end, step)
                for r in mains
            ]
            demand_energy = Grid.total_of(grids).series()
        kw_max, kw_at = maximum_demand(demand_energy, start, end, site.tz, interval)
        pf_weight = sum(r.grid.series().split([start, end])[0] for r in mains if r.power_factor)
        pf = (
            sum(
                r.grid.series().split([start, end])[0] * (r.power_factor or 0.0)
                for r in mains
                if r.power_factor
            )
            / pf_weight
            if pf_weight > 0
            else None
        )
        supply = await self.supply(site, start, end)
        main_power = None
        if mains:
            main_power = await self._power_of(site.machines[mains[0].role.machine_id], start, end)
        gen = await self.generator(site, supply, main_power)
        rate = self.average_rate(site.tariff, cost)
        idle = await self.idle(site, start, end, rate)
        unmetered_kwh = None
        if len(mains) == 1:
            rest = self.unmetered_grid(readings, mains[0].role.machine_id)
            if rest is not None:
                unmetered_kwh = float(rest.series().split([start, end])[0])
        coverage = float(energy.covered_ms([start, end])[0]) / (end - start) if len(energy) else 0.0
        base_kw, events = await self.base_and_peaks(site, start, end)
        return Summary(
            site=site,
            start_ms=start,
            end_ms=end,
            energy=energy,
            cost=cost,
            demand_kw_max=kw_max,
            demand_max_at_ms=kw_at,
            power_factor=pf,
            supply=supply,
            generator=gen,
            generator_run_ms=sum(b - a for a, b in supply.generator_runs()),
            idle=idle,
            idle_rate=rate,
            unmetered_kwh=unmetered_kwh,
            coverage=min(1.0, coverage),
            base_load_kw=base_kw,
            peak_events=events,
        )

    async def base_and_peaks(
        self, site: Site, start: int, end: int
    ) -> tuple[float | None, tuple[PeakEvent, ...]]:
        """The base load in ``[start, end)`` and its peak-demand events, from the 1-minute
        averages of the single main meter's power. The base load counts only the stretches when
        every production machine's state is known and none runs. The events are the 30-minute
        blocks within the range at 95% or more of the calendar month's highest block (the part
        of the month before the range read as 30-minute averages from the rollups, so a quiet
        day does not call its own top block a peak), with the production machines running and
        starting in them."""
        mains = site.main_meters
        if len(mains) != 1:
            return None, ()
        main = site.machines[mains[0].machine_id]
        power = await self._power_of(main, start, end, minutes=True)
        if not power:
            return None, ()
        intervals = await self._intervals([m.id for m in self._consumers(site)], start, end)
        producers = {
            mid: ivs
            for mid, ivs in intervals.items()
            if ivs and mid in self.production.machines and self.production.machines[mid].produces
        }
        base: float | None = None
        if producers:
            # hours are without production only where every machine's state is known: the time
            # before a machine's first record and its ``no_data`` spans count as busy
            known = {
                mid: [(start, ivs[0][0], NO_DATA), *ivs] if ivs[0][0] > start else ivs
                for mid, ivs in producers.items()
            }
            quiet = quiet_windows(
                known,
                start,
                min(end, self.clock.now_ms()),
                running_states=RUNNING_STATES | {NO_DATA},
            )
            if quiet:
                # a stretch without production because the grid is out (and a few minutes on
                # either side, while machines stop and start) says nothing of the base load
                supply = await self.supply(site, start, end)
                outages = [
                    (o.start_ms - OUTAGE_MARGIN_MS, o.end_ms + OUTAGE_MARGIN_MS)
                    for o in supply.outages()
                ]
                quiet = _without(quiet, outages)
            if sum(e - s for s, e in quiet) >= MIN_QUIET_MS:
                with contextlib.suppress(InvalidPayload):
                    base = base_load(power, quiet, percentile=BASE_LOAD_PERCENTILE).kw
        running = {site.machines[mid].name: _bridged(ivs) for mid, ivs in producers.items()}
        peak = peak_demand(power, machines=running, tz=str(site.tz), near_max_share=NEAR_MAX_SHARE)
        first_month = local_date(start, site.tz).strftime("%Y-%m")
        before = await self._block_max(main, site, start)
        events = []
        for e in peak.events:
            if not start <= e.start_ms < end:
                continue
            if e.month == first_month and before is not None and before > e.month_max_kw:
                if e.demand_kw < NEAR_MAX_SHARE * before:
                    continue
                e = dataclasses.replace(e, month_max_kw=before)
            if e.near_max or e.demand_kw >= NEAR_MAX_SHARE * e.month_max_kw:
                events.append(e)
        events.sort(key=lambda e: (-e.demand_kw, e.start_ms))
        return base, tuple(events[:MAX_PEAK_EVENTS])

    async def _block_max(self, m: MachineRef, site: Site, start: int) -> float | None:
        """The highest 30-minute average power of the machine from the first of ``start``'s
        local month up to ``start`` (None when that is empty or has no data)."""
        first = local_date(start, site.tz).replace(day=1)
        month_start = at_local(first, 0, site.tz)
        if month_start >= start:
            return None
        for name, scale in (("power_kw", 1.0), ("motor_current_a", KW_PER_AMP)):
            b = m.bindings.get(name)
            if b is None:
                continue
            points = await self._query(b[0], b[1], month_start, start, 30 * MINUTE_MS, Agg.AVG)
            values = [float(p.value) for p in points if isinstance(p.value, int | float)]
            return max(values) * scale if values else None
        return None

    @_reads_once
    async def meters(self, site: Site, start: int, end: int) -> list[dict[str, Any]]:
        self.check_range(start, end)
        readings = await self.read_meters(site, start, end)
        now = self.clock.now_ms()
        rows: list[dict[str, Any]] = []
        for r in readings:
            m = site.machines[r.role.machine_id]
            rows.append(
                {
                    "machine_id": m.id,
                    "name": m.name,
                    "role": r.role.role,
                    "parent": r.role.parent,
                    **self._energy_cost(site, r.grid.series(), start, end),
                    **(await self._live(m, now)),
                    "power_factor": r.power_factor,
                }
            )
        for main in [r for r in readings if r.role.role == "main"]:
            rest = self.unmetered_grid(readings, main.role.machine_id)
            if rest is None:
                continue
            series = rest.series()
            rows.append(
                {
                    "machine_id": None,
                    "name": "unmetered",
                    "role": "unmetered",
                    "parent": main.role.machine_id,
                    **self._energy_cost(site, series, start, end),
                    "kw_now": None,
                    "power_factor": None,
                    "voltage_imbalance_pct": None,
                    "current_imbalance_pct": None,
                }
            )
        return rows

    def _energy_cost(
        self, site: Site, series: IntervalSeries, start: int, end: int
    ) -> dict[str, Any]:
        c = period_costs(site.tariff, series, [start, end], site.tz)[0]
        return {"kwh": c.kwh, "cost": c.amount, "coverage": c.coverage}

    async def _live(self, m: MachineRef, now: int) -> dict[str, Any]:
        """Latest power and phase imbalance, when the meter reported recently."""
        values: dict[str, float] = {}
        devices = {b[0] for b in m.bindings.values()}
        for device in devices:
            for latest in await self.store.latest(device):
                if now - latest.ts <= LIVE_MS and isinstance(latest.value, int | float):
                    for name, b in m.bindings.items():
                        if b == (device, latest.key):
                            values[name] = float(latest.value)

        def phases(prefix: str, unit: str) -> float | None:
            keys = [f"{prefix}_l{i}_{unit}" for i in (1, 2, 3)]
            if not all(k in values for k in keys):
                return None
            got = float(imbalance([values[k] for k in keys]))
            return None if math.isnan(got) else got

        return {
            "kw_now": values.get("power_kw"),
            "voltage_imbalance_pct": phases("voltage", "v"),
            "current_imbalance_pct": phases("current", "a"),
        }

    @_reads_once
    async def series(self, site: Site, start: int, end: int, bucket: str) -> list[dict[str, Any]]:
        """Energy and cost per local hour, day or shift of the production calendar (shifts that
        start in the range, the last clipped at its end), with the peak and off-peak parts."""
        self.check_range(start, end)
        if bucket not in ("hour", "day", "shift"):
            raise InvalidPayload("bucket: expected hour, day or shift")
        if bucket == "shift":
            spans = self.spans(site, start, end, "shift")
            if not spans:
                return []
        else:
            if bucket == "hour":
                days = day_edges(start, end, site.tz)
                grid = np.arange(int(days[0]), int(days[-1]) + 1, HOUR_MS, dtype=np.int64)
            else:
                grid = day_edges(start, end, site.tz)
            inner = grid[(grid > start) & (grid < end)]
            bounds = [start, *(int(t) for t in inner), end]
            spans = [(a, b, {}) for a, b in itertools.pairwise(bounds)]
        edges, index = _pieces(spans)
        lo, hi = int(edges[0]), int(edges[-1])
        readings = await self.read_meters(site, lo, hi)
        site_grid = self.site_grid(readings)
        energy = site_grid.series() if site_grid is not None else IntervalSeries.empty()
        pieces = period_costs(site.tariff, energy, edges, site.tz)
        interval = site.tariff.demand.interval_min if site.tariff.demand else 30
        kw = demand(energy, lo, hi, site.tz, interval)
        supply = await self.supply(site, lo, hi)
        peaks = peak_spans(site.tariff, lo, hi, site.tz)
        t = site.tariff
        adj = sum(x.per_kwh for x in t.adjustments)
        rows = []
        for (a, b, labels), (i, j) in zip(spans, index, strict=True):
            part = pieces[i:j]
            kwh_peak = sum(p.kwh_peak for p in part)
            kwh_off = sum(p.kwh_off_peak for p in part)
            cost = sum(p.amount for p in part)
            cost_peak = kwh_peak * ((t.peak_rate or 0.0) + adj) if t.time_of_use else 0.0
            inside = (kw.start_ms >= a) & (kw.start_ms < b)
            rows.append(
                {
                    "ts": a,
                    "end_ms": b,
                    **labels,
                    "kwh": kwh_peak + kwh_off,
                    "cost": cost,
                    "kwh_peak": kwh_peak,
                    "kwh_off_peak": kwh_off,
                    "cost_peak": cost_peak,
                    "cost_off_peak": cost - cost_peak,
                    "period": self._period_of(t, peaks, a, b),
                    "demand_kw": float(kw.values[inside].max()) if inside.any() else None,
                    "source": supply.source_at(a, b),
                    "coverage": sum(p.coverage * (p.end_ms - p.start_ms) for p in part) / (b - a),
                }
            )
        return rows

    @staticmethod
    def _period_of(tariff: Tariff, peaks: npt.NDArray[np.int64], start: int, end: int) -> str:
        if not tariff.time_of_use:
            return "flat"
        inside = sum(max(0, min(int(b), end) - max(int(a), start)) for a, b in peaks)
        if inside <= 0:
            return "off_peak"
        if inside >= end - start:
            return "peak"
        return "mixed"

    @_reads_once
    async def outages(self, site: Site, start: int, end: int) -> list[dict[str, Any]]:
        """The outages with the production stops labelled as caused by them."""
        self.check_range(start, end)
        supply = await self.supply(site, start, end)
        found = supply.outages()
        labelled: list[int] = []
        if found:
            machines = [m for m in self.production.machines.values() if m.site_id == site.id]
            stops = await self.production.stops(machines, start, end)
            labelled = [s.start_ms for s in stops if s.reason_id == POWER_OUTAGE]
        grace = self.production.profiles.outage_grace_ms
        rows = []
        for o in found:
            covered = "none"
            if o.generator_ms > 0:
                covered = "generator"
            elif o.backup_ms > 0:
                covered = supply.source_at(o.start_ms, o.end_ms)  # solar or UPS
                if covered not in BACKUP_KINDS:
                    spans = supply.timeline.spans if supply.timeline else ()
                    covered = next(
                        (
                            s.source
                            for s in spans
                            if s.source in BACKUP_KINDS and s.end_ms > o.start_ms
                        ),
                        "backup",
                    )
            rows.append(
                {
                    "start_ms": o.start_ms,
                    "end_ms": None if o.open else o.end_ms,
                    "last_seen_ms": o.end_ms,
                    "minutes": o.duration_ms / MINUTE_MS,
                    "kind": "grid_out" if o.backup_ms > 0 else "no_supply",
                    "covered_by": covered,
                    "generator_minutes": o.generator_ms / MINUTE_MS,
                    "unpowered_minutes": o.unpowered_ms / MINUTE_MS,
                    "open": o.open,
                    "stops_labelled": sum(
                        1 for t in labelled if o.start_ms - grace <= t < o.end_ms
                    ),
                }
            )
        return rows

    @_reads_once
    async def bill(self, site: Site, month: str | None) -> tuple[str, Bill]:
        label, start, end = self.month_range(site, month)
        interval = site.tariff.demand.interval_min if site.tariff.demand else 30
        step = interval * MINUTE_MS if HOUR_MS % (interval * MINUTE_MS) == 0 else HOUR_MS
        mains = [r for r in site.meters if r.role == "main"]
        grids = []
        weighted, weight = 0.0, 0.0
        for role in mains:
            m = site.machines[role.machine_id]
            g = await self.meter_grid(m, start, end, step)
            grids.append(g)
            pf = await self._power_factor(m, g)
            if pf is not None:
                kwh = float(np.nansum(g.kwh))
                weighted += pf * kwh
                weight += kwh
        energy = Grid.total_of(grids).series() if grids else IntervalSeries.empty()
        bill = estimate_bill(
            site.tariff,
            energy,
            start,
            end,
            site.tz,
            sanctioned_kw=site.config.sanctioned_kw,
            power_factor=weighted / weight if weight > 0 else None,
        )
        return label, bill

    async def compare_bill(
        self, site: Site, month: str, actual: float
    ) -> tuple[str, BillComparison]:
        if not math.isfinite(actual) or actual < 0:
            raise InvalidPayload("actual_total: must be a number of at least 0")
        label, bill = await self.bill(site, month)
        return label, compare(bill, actual)

    @_reads_once
    async def advice(self, site: Site, start: int, end: int) -> list[AdviceItem]:
        """Savings found in ``[start, end)``, largest first."""
        self.check_range(start, end)
        readings = await self.read_meters(site, start, end)
        grid = self.site_grid(readings)
        energy = grid.series() if grid is not None else IntervalSeries.empty()
        cost = period_costs(site.tariff, energy, [start, end], site.tz)[0]
        rate = self.average_rate(site.tariff, cost)
        tz_name = str(site.tz)
        items: list[AdviceItem] = []
        subject = site.name
        # the figures are scaled to a month over the time that has passed, not the future
        span_end = min(end, self.clock.now_ms())
        # and over the time with data: a plant monitored for three days is not scaled from seven
        seen = max(start, int(energy.start_ms[0])) if len(energy) else start
        tariff = site.tariff
        items += await self._off_peak(site, readings, start, end, span_end)
        mains = [r for r in readings if r.role.role == "main"]
        consumers = self._consumers(site)
        intervals = await self._intervals([m.id for m in consumers], start, end)
        if tariff.demand is not None and mains and span_end > seen:
            main = site.machines[mains[0].role.machine_id]
            power = await self._power_of(main, start, end, minutes=True)
            if power:
                running = {
                    site.machines[mid].name: _bridged(ivs) for mid, ivs in intervals.items() if ivs
                }
                peak = peak_demand(power, machines=running, tz=tz_name)
                if peak.months:
                    month = max(peak.months, key=lambda x: x.max_kw)
                    event = next((e for e in peak.events if e.start_ms == month.max_start_ms), None)
                    items.append(
                        AdviceItem(
                            advice_mod.stagger_startups(
                                month,
                                mdi_rate=tariff.demand.per_kw,
                                evidence=advice_mod.Evidence(
                                    f"{main.id} power_kw",
                                    seen,
                                    span_end,
                                    ((month.max_start_ms, month.max_start_ms + 30 * MINUTE_MS),),
                                    "30-minute demand blocks from 1-minute averages",
                                ),
                                starting=event.starting if event else (),
                                subject=subject,
                                tz=tz_name,
                            ),
                            main.id,
                        )
                    )
        producers = {
            mid: ivs
            for mid, ivs in intervals.items()
            if mid in self.production.machines and self.production.machines[mid].produces
        }
        quiet = quiet_windows(producers, start, span_end) if producers else []
        for m in site.machines.values():
            if m.template != COMPRESSOR_TEMPLATE:
                continue
            got: advice_mod.Advice | None = None
            if quiet:
                leak = await self.air_leak_of(m, quiet)
                if leak is not None:
                    got = advice_mod.fix_air_leak(
                        m.name,
                        leak,
                        rate=rate,
                        evidence=advice_mod.Evidence(
                            f"{m.id} loaded, power_kw",
                            seen,
                            span_end,
                            tuple(quiet),
                            "no production",
                        ),
                    )
            if got is None and producers:
                fit = await self.air_leak_running_of(site, m, producers, start, span_end)
                if fit is not None:
                    got = advice_mod.fix_air_leak_running(
                        m.name,
                        fit,
                        rate=rate,
                        evidence=advice_mod.Evidence(
                            f"{m.id} {'flow_m3_min' if fit.unit == 'm3/min' else 'power_kw'}"
                            f" against the running state of {fit.users} production machines",
                            seen,
                            span_end,
                            note=(
                                f"{fit.points} spans of {fit.bucket_ms // MINUTE_MS} minutes,"
                                f" {fit.users_min:.1f} to {fit.users_max:.1f} machines running,"
                                f" R² {fit.r2:.2f}, intercept {fit.intercept:.2f}"
                                f" ± {fit.intercept_se:.2f} {fit.unit}"
                            ),
                        ),
                    )
            if got is not None:
                items.append(AdviceItem(got, m.id))
        for idle in await self.idle(site, start, end, rate):
            if idle.long is None or idle.long.kwh <= 0 or span_end <= seen:
                continue
            items.append(
                AdviceItem(
                    advice_mod.switch_off_idle(
                        idle.name,
                        idle.long,
                        rate=rate,
                        min_stop_min=SWITCH_OFF_AFTER_MIN,
                        evidence=advice_mod.Evidence(
                            f"{idle.machine_id} power while idle, stopped or in a planned stop"
                            f" for {SWITCH_OFF_AFTER_MIN} minutes or more",
                            seen,
                            span_end,
                        ),
                    ),
                    idle.machine_id,
                )
            )
        ranked = advice_mod.rank([i.advice for i in items])
        order = {id(a): n for n, a in enumerate(ranked)}
        kept = [i for i in items if id(i.advice) in order]
        kept.sort(key=lambda i: order[id(i.advice)])
        return kept

    async def air_leak_of(
        self, m: MachineRef, windows: Sequence[tuple[int, int]]
    ) -> AirLeakEvidence | None:
        if "loaded" not in m.bindings or "power_kw" not in m.bindings:
            return None
        start, end = windows[0][0], windows[-1][1]
        loaded = await self._signal(m.bindings["loaded"], start, end)
        power = await self._signal(m.bindings["power_kw"], start, end)
        running = (
            await self._signal(m.bindings["running"], start, end)
            if "running" in m.bindings
            else None
        )
        flow = (
            await self._signal(m.bindings["flow_m3_min"], start, end)
            if "flow_m3_min" in m.bindings
            else None
        )
        if not loaded or not power:
            return None
        return air_leak(windows, loaded=loaded, power_kw=power, running=running, flow_m3_min=flow)

    async def air_leak_running_of(
        self,
        site: Site,
        m: MachineRef,
        users: Mapping[str, Sequence[tuple[int, int, str]]],
        start: int,
        end: int,
    ) -> AirLeakFit | None:
        """The leak fit of one compressor while production runs: its flow (or, without a flow
        meter, its power less its unloaded draw) against the production machines running."""
        if "power_kw" not in m.bindings or end <= start:
            return None
        power = await self._signal_minutes(m.bindings["power_kw"], start, end, Agg.AVG)
        running = (
            await self._signal_minutes(m.bindings["running"], start, end, Agg.MIN)
            if "running" in m.bindings
            else None
        )
        kinds = {mid: site.machines[mid].template for mid in users if mid in site.machines}
        cfg = site.config
        if "flow_m3_min" in m.bindings:
            flow = await self._signal_minutes(m.bindings["flow_m3_min"], start, end, Agg.AVG)
            if not flow:
                return None
            return air_leak_in_production(
                flow,
                users,
                start,
                end,
                kinds=kinds,
                power_kw=power,
                running=running,
                own_use=cfg.air_own_use_m3_min.get(m.id, 0.0),
            )
        if "loaded" not in m.bindings or not power:
            return None
        # the unloaded draw: the median power of minutes running and never loaded
        loaded = dict(await self._signal_minutes(m.bindings["loaded"], start, end, Agg.MAX))
        on = {t: float(v) > 0 for t, v in running or [] if isinstance(v, int | float)}
        idle_kw = [
            float(v)
            for t, v in power
            if isinstance(v, int | float) and loaded.get(t) == 0 and on.get(t, running is None)
        ]
        if not idle_kw:
            return None
        return air_leak_in_production(
            power,
            users,
            start,
            end,
            unit="kW",
            kinds=kinds,
            running=running,
            own_use=float(np.median(idle_kw)) + cfg.air_own_use_kw.get(m.id, 0.0),
        )

    async def _off_peak(
        self, site: Site, readings: Sequence[MeterReading], start: int, end: int, span_end: int
    ) -> list[AdviceItem]:
        """One recommendation per flexible load (``flexible`` in the site's energy config): its
        own energy in the peak windows, from its meter or its power, priced at the difference
        between the peak and off-peak rates. Loads not named flexible are left alone: a loom
        running three shifts cannot move."""
        tariff = site.tariff
        if not tariff.time_of_use or not site.config.flexible:
            return []
        assert tariff.peak_rate is not None and tariff.off_peak_rate is not None
        peaks = peak_spans(tariff, start, end, site.tz)
        windows = tuple((int(a), int(b)) for a, b in peaks)
        if not windows:
            return []
        hours = _local_hours(windows, site.tz)
        grids = {r.role.machine_id: r.grid for r in readings}
        out = []
        for mid in site.config.flexible:
            m = site.machines.get(mid)
            if m is None:
                continue
            grid = grids.get(mid)
            got: WindowEnergy | None = None
            first: int | None = None
            source = ""
            if grid is not None:
                series = grid.series()
                if len(series):
                    edges = np.array([t for w in windows for t in w], np.int64)
                    kwh = float(series.split(edges)[::2].sum())
                    covered = int(series.covered_ms(edges)[::2].sum())
                    window_ms = sum(b - a for a, b in windows)
                    got = WindowEnergy(kwh, covered, window_ms)
                    first, source = int(series.start_ms[0]), "energy_kwh"
            if got is None:
                power = await self._power_of(m, start, end, minutes=True)
                if power:
                    got = energy_in_windows(windows, power_kw=power)
                    first = int(power[0][0])
                    source = "power_kw" if "power_kw" in m.bindings else "motor_current_a"
            if got is None or first is None or got.covered_ms <= 0:
                continue
            seen = max(start, first)
            if span_end <= seen:
                continue
            out.append(
                AdviceItem(
                    advice_mod.shift_off_peak(
                        m.name,
                        got,
                        peak_rate=tariff.peak_rate,
                        off_peak_rate=tariff.off_peak_rate,
                        evidence=advice_mod.Evidence(
                            f"{m.id} {source}", seen, span_end, windows, f"peak hours {hours}"
                        ),
                        hours=hours,
                    ),
                    m.id,
                )
            )
        return out

    @_reads_once
    async def intensity(
        self, site: Site, start: int, end: int, by: str | None = None
    ) -> list[dict[str, Any]]:
        """Energy per unit of each production machine and each of their lines, over the range
        or per shift or day (``by``). Energy is the machine's own power (estimated from its
        motor current where it has no power signal); units are its good count."""
        self.check_range(start, end)
        spans: list[Span] = (
            [(start, end, {})] if by in (None, "") else self.spans(site, start, end, by)
        )
        machines = [
            m
            for m in self.production.machines.values()
            if m.site_id == site.id and m.produces and m.id in site.machines
        ]
        if not spans or not machines:
            return []
        edges, index = _pieces(spans)
        width = np.diff(edges).astype(np.float64)
        counts = await self.production.counts([m.id for m in machines], start, end)
        per_machine: list[tuple[MachineRef, str, bool, list[tuple[float, float, float]]]] = []
        for info in machines:
            m = site.machines[info.id]
            power = await self._power_of(m, start, end, minutes=True)
            energy = IntervalSeries.empty()
            if power:
                starts = np.array([t for t, _ in power], np.int64)
                kw = np.array([float(v) for _, v in power])
                energy = IntervalSeries(starts, starts + MINUTE_MS, kw * MINUTE_MS / HOUR_MS)
            c = counts.get(m.id)
            unit = info.count_key or "units"
            if info.template is not None and info.count_key is not None:
                with contextlib.suppress(KeyError):
                    unit = info.template.signal(info.count_key).unit or unit
            produced = IntervalSeries.empty(unit)
            if c is not None and c.minutes.size:
                good = c.totals - c.rejects
                produced = IntervalSeries(c.minutes, c.minutes + MINUTE_MS, good, unit)
            parts = intensity_of(energy, produced, edges)
            kwh = np.array([p.kwh for p in parts])
            units = np.array([p.produced for p in parts])
            covered = np.array([p.coverage for p in parts]) * width
            figures = [
                (float(kwh[a:b].sum()), float(units[a:b].sum()), float(covered[a:b].sum()))
                for a, b in index
            ]
            per_machine.append((m, unit, "power_kw" not in m.bindings, figures))
        rows: list[dict[str, Any]] = []
        for n, (a, b, labels) in enumerate(spans):
            lines: dict[str, list[dict[str, Any]]] = {}
            for m, unit, estimated, figures in per_machine:
                kwh_n, units_n, covered_n = figures[n]
                row = {
                    "level": "machine",
                    "machine_id": m.id,
                    "line_id": m.line_id,
                    "name": m.name,
                    "start_ms": a,
                    "end_ms": b,
                    **labels,
                    "kwh": kwh_n,
                    "units": units_n,
                    "unit": unit,
                    "kwh_per_unit": kwh_n / units_n if units_n > 1e-12 else None,
                    "coverage": covered_n / (b - a),
                    "estimated": estimated,
                }
                rows.append(row)
                lines.setdefault(m.line_id, []).append(row)
            for line_id, members in lines.items():
                kwh_l = sum(r["kwh"] for r in members)
                same = len({r["unit"] for r in members}) == 1
                units_l = sum(r["units"] for r in members) if same else None
                rows.append(
                    {
                        "level": "line",
                        "machine_id": None,
                        "line_id": line_id,
                        "name": site.lines.get(line_id, line_id),
                        "start_ms": a,
                        "end_ms": b,
                        **labels,
                        "kwh": kwh_l,
                        "units": units_l,
                        "unit": members[0]["unit"] if same else None,
                        "kwh_per_unit": kwh_l / units_l if units_l and units_l > 1e-12 else None,
                        "coverage": min(r["coverage"] for r in members),
                        "estimated": any(r["estimated"] for r in members),
                    }
                )
        return rows

    @_reads_once
    async def month(self, site: Site, month: str | None) -> MonthData:
        label, bill = await self.bill(site, month)
        end = min(bill.end_ms, max(bill.start_ms + 1, self.clock.now_ms()))
        summary = await self.summary(site, bill.start_ms, end)
        days = period_costs(
            site.tariff,
            summary.energy,
            np.clip(day_edges(bill.start_ms, bill.end_ms, site.tz), bill.start_ms, bill.end_ms),
            site.tz,
        )
        advice = await self.advice(site, bill.start_ms, end)
        per_day = await self.intensity(site, bill.start_ms, end, by="day")
        shifts = await self.series(site, bill.start_ms, end, "shift")
        return MonthData(site, label, bill, days, summary, advice, per_day, shifts)
