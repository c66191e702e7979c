"""Energy values: quantities over time intervals, tariffs, bill lines.

Timestamps are epoch milliseconds (UTC); which tariff window applies is decided in the site's
time zone by the pure modules (`tariff`, `billing`). Money is in the tariff's currency.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from karkhana.core.errors import InvalidPayload, NotFound

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]

MINUTE_MS = 60_000
HOUR_MS = 3_600_000


def _frozen(a: npt.NDArray[np.generic]) -> None:
    a.setflags(write=False)


@dataclass(frozen=True, slots=True, eq=False)
class IntervalSeries:
    """A quantity per time interval ``[start_ms, end_ms)``: kWh per 15 minutes, metres per hour.

    Intervals are sorted and do not overlap; time not covered by any interval is missing data,
    not zero. Within an interval the quantity is taken as spread evenly, so a part of an interval
    holds the same fraction of its quantity (the pro rata rule used for tariff windows, shifts
    and demand intervals).
    """

    start_ms: Ints
    end_ms: Ints
    values: Floats
    unit: str = "kWh"

    def __post_init__(self) -> None:
        start = np.array(self.start_ms, dtype=np.int64)
        end = np.array(self.end_ms, dtype=np.int64)
        values = np.array(self.values, dtype=np.float64)
        for a in (start, end, values):
            _frozen(a)
        object.__setattr__(self, "start_ms", start)
        object.__setattr__(self, "end_ms", end)
        object.__setattr__(self, "values", values)
        if start.ndim != 1 or start.shape != end.shape or start.shape != values.shape:
            raise InvalidPayload("interval series: start, end and values must be 1-D and equal")
        if np.any(end <= start):
            i = int(np.argmax(end <= start))
            raise InvalidPayload(f"interval series: interval {i} ends at or before its start")
        if np.any(start[1:] < end[:-1]):
            i = int(np.argmax(start[1:] < end[:-1])) + 1
            raise InvalidPayload(
                f"interval series: interval {i} starts before the previous one ends "
                "(intervals must be sorted and must not overlap)"
            )
        if not np.all(np.isfinite(values)):
            raise InvalidPayload("interval series: values must be finite (leave missing out)")

    @classmethod
    def of(cls, rows: Iterable[tuple[int, int, float]], unit: str = "kWh") -> IntervalSeries:
        """From ``(start_ms, end_ms, value)`` rows."""
        table = list(rows)
        if not table:
            return cls.empty(unit)
        return cls(
            np.array([r[0] for r in table], np.int64),
            np.array([r[1] for r in table], np.int64),
            np.array([r[2] for r in table], np.float64),
            unit,
        )

    @classmethod
    def regular(
        cls, start_ms: int, step_ms: int, values: Sequence[float] | Floats, unit: str = "kWh"
    ) -> IntervalSeries:
        """Back-to-back intervals of ``step_ms`` from ``start_ms`` (a rollup's buckets)."""
        v = np.asarray(values, np.float64)
        starts = start_ms + step_ms * np.arange(v.size, dtype=np.int64)
        return cls(starts, starts + step_ms, v, unit)

    @classmethod
    def empty(cls, unit: str = "kWh") -> IntervalSeries:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), unit)

    def __len__(self) -> int:
        return int(self.values.size)

    @property
    def total(self) -> float:
        return float(self.values.sum())

    def cumulative(self, t_ms: npt.ArrayLike) -> Floats:
        """The quantity accumulated from the first interval up to each time in ``t_ms``."""
        t = np.asarray(t_ms, np.float64)
        if self.values.size == 0:
            return np.zeros(t.shape)
        after = np.cumsum(self.values)
        before = after - self.values
        xp = np.column_stack((self.start_ms, self.end_ms)).ravel().astype(np.float64)
        fp = np.column_stack((before, after)).ravel()
        # a start equal to the previous end adds nothing and would repeat an x value
        keep = np.ones(xp.size, bool)
        keep[2::2] = self.start_ms[1:] != self.end_ms[:-1]
        return np.interp(t, xp[keep], fp[keep])

    def split(self, edges_ms: npt.ArrayLike) -> Floats:
        """The quantity in each ``[edges[i], edges[i+1])``, intervals cut pro rata."""
        return np.diff(self.cumulative(edges_ms))

    def covered_ms(self, edges_ms: npt.ArrayLike) -> Floats:
        """Milliseconds of each ``[edges[i], edges[i+1])`` that some interval covers."""
        durations = IntervalSeries(
            self.start_ms, self.end_ms, (self.end_ms - self.start_ms).astype(np.float64)
        )
        return durations.split(edges_ms)


@dataclass(frozen=True, slots=True)
class Gap:
    """Time with no trustworthy energy figure: a silent meter, a counter reset, a bad reading."""

    start_ms: int
    end_ms: int
    reason: str


@dataclass(frozen=True, slots=True)
class MeteredEnergy:
    """Energy per interval from a meter, with the time it could not account for."""

    series: IntervalSeries
    gaps: tuple[Gap, ...] = ()

    @property
    def missing_ms(self) -> int:
        return sum(g.end_ms - g.start_ms for g in self.gaps)


# -- tariffs -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClockWindow:
    """A daily window from ``start_min`` to ``end_min`` minutes after local midnight; one that
    ends at or before its start runs past midnight into the next day."""

    start_min: int
    end_min: int

    @property
    def crosses_midnight(self) -> bool:
        return self.end_min <= self.start_min

    @property
    def minutes(self) -> int:
        return self.end_min - self.start_min + (1440 if self.crosses_midnight else 0)

    def __str__(self) -> str:
        def hhmm(m: int) -> str:
            return f"{m // 60:02d}:{m % 60:02d}"

        return f"{hhmm(self.start_min)}-{hhmm(self.end_min)}"


@dataclass(frozen=True, slots=True)
class Season:
    """Months (1-12) that share the same peak windows; a window belongs to the day it starts."""

    name: str
    months: frozenset[int]
    peak: tuple[ClockWindow, ...]


@dataclass(frozen=True, slots=True)
class FixedCharge:
    id: str
    name: str
    amount: float
    """Per billing month."""


@dataclass(frozen=True, slots=True)
class Adjustment:
    """A per-kWh addition on all energy (fuel price or quarterly adjustment); may be negative."""

    id: str
    name: str
    per_kwh: float


@dataclass(frozen=True, slots=True)
class DemandCharge:
    """The maximum demand (MDI) charge: ``per_kw`` times the month's highest demand interval
    (average kW over ``interval_min`` minutes), at least ``minimum_fraction`` of the sanctioned
    load when that is known; ``peak_only`` counts only intervals in peak windows."""

    per_kw: float
    interval_min: int = 30
    minimum_fraction: float = 0.0
    peak_only: bool = False


@dataclass(frozen=True, slots=True)
class PowerFactorPenalty:
    """Below ``threshold`` average power factor, ``percent_per_point`` percent of the lines named
    in ``base`` per 0.01 of shortfall (counted in whole hundredths when ``whole_points``)."""

    threshold: float
    percent_per_point: float
    base: tuple[str, ...]
    whole_points: bool = True


@dataclass(frozen=True, slots=True)
class Tax:
    """``percent`` of the lines named in ``base`` (line kinds, adjustment ids, earlier taxes)."""

    id: str
    name: str
    percent: float
    base: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Tariff:
    """A tariff as data. Time-of-use tariffs have ``peak_rate``, ``off_peak_rate`` and seasons
    covering all twelve months; flat tariffs have ``flat_rate`` and no seasons."""

    id: str
    name: str
    note: str
    currency: str
    peak_rate: float | None = None
    off_peak_rate: float | None = None
    flat_rate: float | None = None
    seasons: tuple[Season, ...] = ()
    fixed: tuple[FixedCharge, ...] = ()
    demand: DemandCharge | None = None
    power_factor: PowerFactorPenalty | None = None
    adjustments: tuple[Adjustment, ...] = ()
    taxes: tuple[Tax, ...] = ()

    @property
    def time_of_use(self) -> bool:
        return self.flat_rate is None

    def season_of(self, month: int) -> Season | None:
        for season in self.seasons:
            if month in season.months:
                return season
        return None


# -- bills -------------------------------------------------------------------------------

LineKind = Literal["energy", "fixed", "mdi", "pf_penalty", "adjustment", "tax"]
LINE_KINDS: tuple[LineKind, ...] = ("energy", "fixed", "mdi", "pf_penalty", "adjustment", "tax")


@dataclass(frozen=True, slots=True)
class BillLine:
    """One line of a bill: ``quantity`` (kWh, kW, percent, a base amount) times ``rate``."""

    id: str
    kind: LineKind
    label: str
    quantity: float
    unit: str
    rate: float
    amount: float


@dataclass(frozen=True, slots=True)
class Bill:
    """An estimated bill for ``[start_ms, end_ms)`` with its itemised lines.

    ``coverage`` is the fraction of the period that the energy data covers; ``notes`` say what
    makes the estimate less certain (missing data, demand from intervals longer than the
    tariff's demand interval, an unknown power factor).
    """

    tariff_id: str
    currency: str
    start_ms: int
    end_ms: int
    lines: tuple[BillLine, ...]
    kwh_peak: float
    kwh_off_peak: float
    mdi_kw: float
    mdi_at_ms: int | None
    power_factor: float | None
    coverage: float
    notes: tuple[str, ...] = ()

    @property
    def total(self) -> float:
        return sum(line.amount for line in self.lines)

    @property
    def kwh(self) -> float:
        return self.kwh_peak + self.kwh_off_peak

    def line(self, line_id: str) -> BillLine:
        for line in self.lines:
            if line.id == line_id:
                return line
        raise NotFound(f"bill has no line {line_id!r}")

    def amount_of(self, kind: LineKind) -> float:
        return sum(line.amount for line in self.lines if line.kind == kind)


@dataclass(frozen=True, slots=True)
class BillComparison:
    """An estimate against the utility's bill: ``difference`` = estimate - actual."""

    estimate: float
    actual: float
    difference: float
    percent: float | None
    """Difference as a percentage of the actual bill; None when the actual bill is zero."""


@dataclass(frozen=True, slots=True)
class PeriodCost:
    """The energy part of the cost of one shift, day or any span: kWh at the tariff's rates plus
    the per-kWh adjustments. Monthly charges (fixed, MDI, power factor) and taxes are left to
    the bill."""

    start_ms: int
    end_ms: int
    kwh_peak: float
    kwh_off_peak: float
    energy_amount: float
    adjustments_amount: float
    coverage: float

    @property
    def kwh(self) -> float:
        return self.kwh_peak + self.kwh_off_peak

    @property
    def amount(self) -> float:
        return self.energy_amount + self.adjustments_amount


@dataclass(frozen=True, slots=True)
class Intensity:
    """Energy per unit produced over ``[start_ms, end_ms)``; None when nothing was produced."""

    start_ms: int
    end_ms: int
    kwh: float
    produced: float
    unit: str
    kwh_per_unit: float | None
    coverage: float
    """Fraction of the span with energy data."""
