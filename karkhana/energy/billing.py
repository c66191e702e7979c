"""Bills from interval energy: tariff windows, demand, power factor, taxes.

Energy is split at window boundaries pro rata (an interval half inside the peak puts half its
kWh at the peak rate), so 15-minute, hourly or per-minute series all give the same peak kWh when
windows start on their boundaries. Everything works on numpy columns, so a month of 15-minute
data for fifty meters is billed in milliseconds, not seconds.

Entry points: `estimate_bill` (one meter), `estimate_bills` (many meters, the same period),
`period_costs` (the energy cost of each shift or day), `demand` and `maximum_demand` (MDI),
`billing_period` / `billing_periods` (calendar months or a meter-reading day), `compare` (an
estimate against the utility's bill).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from karkhana.core.errors import InvalidPayload
from karkhana.energy.model import (
    HOUR_MS,
    MINUTE_MS,
    Bill,
    BillComparison,
    BillLine,
    Floats,
    IntervalSeries,
    Ints,
    PeriodCost,
    Tariff,
)
from karkhana.energy.tariff import KARACHI, at_local, local_date, peak_spans


def _month_start(year: int, month: int, day: int, tz: ZoneInfo) -> int:
    return at_local(date(year, month, day), 0, tz)


def billing_period(t_ms: int, tz: ZoneInfo = KARACHI, reading_day: int = 1) -> tuple[int, int]:
    """The billing month that holds ``t_ms``: from local midnight of ``reading_day`` to the same
    day of the next month (``reading_day=1``: the calendar month)."""
    if not 1 <= reading_day <= 28:
        raise InvalidPayload(f"reading day must be 1-28 (every month has it), got {reading_day}")
    day = local_date(t_ms, tz)
    year, month = day.year, day.month
    if day.day < reading_day:
        year, month = (year - 1, 12) if month == 1 else (year, month - 1)
    nxt = (year + 1, 1) if month == 12 else (year, month + 1)
    return (
        _month_start(year, month, reading_day, tz),
        _month_start(nxt[0], nxt[1], reading_day, tz),
    )


def billing_periods(
    start_ms: int, end_ms: int, tz: ZoneInfo = KARACHI, reading_day: int = 1
) -> list[tuple[int, int]]:
    """The billing months that touch ``[start_ms, end_ms)``, whole."""
    out: list[tuple[int, int]] = []
    t = start_ms
    while t < end_ms:
        period = billing_period(t, tz, reading_day)
        out.append(period)
        t = period[1]
    return out


def day_edges(start_ms: int, end_ms: int, tz: ZoneInfo = KARACHI) -> Ints:
    """Local midnights from the one at or before ``start_ms`` to the first at or after
    ``end_ms``: the edges for `period_costs` per day."""
    day = local_date(start_ms, tz)
    edges = [at_local(day, 0, tz)]
    while edges[-1] < end_ms:
        day += timedelta(days=1)
        edges.append(at_local(day, 0, tz))
    return np.array(edges, np.int64)


def demand_edges(
    start_ms: int, end_ms: int, tz: ZoneInfo = KARACHI, interval_min: int = 30
) -> Ints:
    """Demand interval edges aligned to the local clock (:00 and :30), clipped to the range."""
    if 1440 % interval_min:
        raise InvalidPayload(f"a demand interval of {interval_min} minutes does not divide a day")
    days = day_edges(start_ms, end_ms, tz)
    step = interval_min * MINUTE_MS
    parts = [np.arange(a, b, step, dtype=np.int64) for a, b in itertools.pairwise(days)]
    edges = np.concatenate([*parts, days[-1:]])
    inside = edges[(edges > start_ms) & (edges < end_ms)]
    return np.concatenate(([start_ms], inside, [end_ms])).astype(np.int64)


@dataclass(frozen=True, slots=True, eq=False)
class _Split:
    """Energy per bucket, split into peak and off-peak."""

    peak: Floats
    off_peak: Floats
    covered_ms: Floats


def _in_spans(t: Floats, spans: Ints) -> npt.NDArray[np.bool_]:
    if spans.size == 0:
        return np.zeros(t.shape, bool)
    i = np.searchsorted(spans[:, 0], t, side="right") - 1
    inside: npt.NDArray[np.bool_] = (i >= 0) & (t < spans[np.maximum(i, 0), 1])
    return inside


def _split(energy: IntervalSeries, edges: Ints, spans: Ints) -> _Split:
    """Cut time at every bucket edge and peak boundary; each piece is wholly peak or not and
    lies in one bucket."""
    lo, hi = edges[0], edges[-1]
    cuts = np.unique(np.concatenate((edges, np.clip(spans.ravel(), lo, hi))))
    kwh = np.diff(energy.cumulative(cuts))
    covered = energy.covered_ms(cuts)
    mid = (cuts[:-1] + cuts[1:]) / 2.0
    bucket = np.searchsorted(edges, mid, side="right") - 1
    peak = _in_spans(mid, spans)
    n = edges.size - 1
    return _Split(
        np.bincount(bucket, np.where(peak, kwh, 0.0), n).astype(np.float64),
        np.bincount(bucket, np.where(peak, 0.0, kwh), n).astype(np.float64),
        np.bincount(bucket, covered, n).astype(np.float64),
    )


def _check_edges(edges_ms: npt.ArrayLike) -> Ints:
    edges = np.asarray(edges_ms, np.int64)
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise InvalidPayload("edges must be at least two increasing times")
    return edges


def period_costs(
    tariff: Tariff, energy: IntervalSeries, edges_ms: npt.ArrayLike, tz: ZoneInfo = KARACHI
) -> list[PeriodCost]:
    """The energy cost of each ``[edges[i], edges[i+1])`` (shifts, days): kWh at the peak and
    off-peak (or flat) rate plus the per-kWh adjustments."""
    edges = _check_edges(edges_ms)
    split = _split(energy, edges, peak_spans(tariff, int(edges[0]), int(edges[-1]), tz))
    per_kwh = sum(a.per_kwh for a in tariff.adjustments)
    if tariff.time_of_use:
        assert tariff.peak_rate is not None and tariff.off_peak_rate is not None
        amount = split.peak * tariff.peak_rate + split.off_peak * tariff.off_peak_rate
    else:
        assert tariff.flat_rate is not None
        amount = (split.peak + split.off_peak) * tariff.flat_rate
    width = np.diff(edges).astype(np.float64)
    return [
        PeriodCost(
            int(edges[i]),
            int(edges[i + 1]),
            float(split.peak[i]),
            float(split.off_peak[i]),
            float(amount[i]),
            float((split.peak[i] + split.off_peak[i]) * per_kwh),
            float(split.covered_ms[i] / width[i]),
        )
        for i in range(edges.size - 1)
    ]


def demand(
    energy: IntervalSeries,
    start_ms: int,
    end_ms: int,
    tz: ZoneInfo = KARACHI,
    interval_min: int = 30,
) -> IntervalSeries:
    """Average kW in each demand interval that has data (kWh in the half hour x 2 when the data
    covers it; kWh over the covered hours when it covers part of it)."""
    return _demand_from_edges(energy, demand_edges(start_ms, end_ms, tz, interval_min))


def maximum_demand(
    energy: IntervalSeries,
    start_ms: int,
    end_ms: int,
    tz: ZoneInfo = KARACHI,
    interval_min: int = 30,
    peak: Ints | None = None,
) -> tuple[float, int | None]:
    """The highest demand interval (kW, its start), optionally only intervals whose middle lies
    in the ``peak`` spans; ``(0.0, None)`` without data."""
    kw = demand(energy, start_ms, end_ms, tz, interval_min)
    values = kw.values
    starts = kw.start_ms
    if peak is not None:
        inside = _in_spans((kw.start_ms + kw.end_ms) / 2.0, peak)
        values, starts = values[inside], starts[inside]
    if values.size == 0:
        return 0.0, None
    i = int(np.argmax(values))
    return float(values[i]), int(starts[i])


def power_factor_of(kwh: float, kvarh: float) -> float | None:
    """Average power factor from active and reactive energy; None when both are zero."""
    apparent = math.hypot(kwh, kvarh)
    return abs(kwh) / apparent if apparent > 0 else None


def _matches(line: BillLine, base: Sequence[str]) -> bool:
    kind = "adjustments" if line.kind == "adjustment" else line.kind
    return line.id in base or kind in base


def _base(lines: Sequence[BillLine], base: Sequence[str]) -> float:
    return sum(line.amount for line in lines if _matches(line, base))


def _pct(x: float) -> str:
    return f"{x:g} %"


@dataclass(frozen=True, slots=True)
class _Period:
    start_ms: int
    end_ms: int
    spans: Ints
    demand_edges: Ints


def _prepare(tariff: Tariff, start_ms: int, end_ms: int, tz: ZoneInfo) -> _Period:
    if end_ms <= start_ms:
        raise InvalidPayload("a bill's period must end after it starts")
    interval = tariff.demand.interval_min if tariff.demand else 30
    return _Period(
        start_ms,
        end_ms,
        peak_spans(tariff, start_ms, end_ms, tz),
        demand_edges(start_ms, end_ms, tz, interval),
    )


def _bill(
    tariff: Tariff,
    energy: IntervalSeries,
    p: _Period,
    sanctioned_kw: float | None,
    kvarh: float | None,
    power_factor: float | None,
) -> Bill:
    notes: list[str] = []
    edges = np.array([p.start_ms, p.end_ms], np.int64)
    split = _split(energy, edges, p.spans)
    kwh_peak, kwh_off = float(split.peak[0]), float(split.off_peak[0])
    kwh = kwh_peak + kwh_off
    coverage = float(split.covered_ms[0]) / (p.end_ms - p.start_ms)
    if coverage < 0.999:
        notes.append(
            f"energy data covers {coverage:.1%} of the period; missing time is not estimated"
        )
    lines: list[BillLine] = []
    if tariff.time_of_use:
        assert tariff.peak_rate is not None and tariff.off_peak_rate is not None
        lines.append(
            BillLine(
                "energy_peak",
                "energy",
                "Energy, peak",
                kwh_peak,
                "kWh",
                tariff.peak_rate,
                kwh_peak * tariff.peak_rate,
            )
        )
        lines.append(
            BillLine(
                "energy_off_peak",
                "energy",
                "Energy, off-peak",
                kwh_off,
                "kWh",
                tariff.off_peak_rate,
                kwh_off * tariff.off_peak_rate,
            )
        )
    else:
        assert tariff.flat_rate is not None
        lines.append(
            BillLine(
                "energy", "energy", "Energy", kwh, "kWh", tariff.flat_rate, kwh * tariff.flat_rate
            )
        )
    for f in tariff.fixed:
        lines.append(BillLine(f.id, "fixed", f.name, 1.0, "month", f.amount, f.amount))

    mdi_kw, mdi_at = 0.0, None
    if tariff.demand is not None:
        d = tariff.demand
        kw = _demand_from_edges(energy, p.demand_edges)
        if d.peak_only:
            inside = _in_spans((kw.start_ms + kw.end_ms) / 2.0, p.spans)
            kw = IntervalSeries(kw.start_ms[inside], kw.end_ms[inside], kw.values[inside], "kW")
        if len(kw):
            i = int(np.argmax(kw.values))
            mdi_kw, mdi_at = float(kw.values[i]), int(kw.start_ms[i])
        longest = int(np.max(energy.end_ms - energy.start_ms)) if len(energy) else 0
        if longest > d.interval_min * MINUTE_MS:
            notes.append(
                f"demand from intervals of up to {longest // MINUTE_MS} minutes: the "
                f"{d.interval_min}-minute maximum demand is likely higher than estimated"
            )
        billed = mdi_kw
        label = "Maximum demand (MDI)"
        if sanctioned_kw is not None and d.minimum_fraction > 0:
            floor = d.minimum_fraction * sanctioned_kw
            if floor > mdi_kw:
                billed = floor
                label = f"Maximum demand ({_pct(d.minimum_fraction * 100)} of sanctioned load)"
        lines.append(BillLine("mdi", "mdi", label, billed, "kW", d.per_kw, billed * d.per_kw))

    for a in tariff.adjustments:
        lines.append(BillLine(a.id, "adjustment", a.name, kwh, "kWh", a.per_kwh, kwh * a.per_kwh))

    pf = power_factor
    if pf is None and kvarh is not None:
        pf = power_factor_of(kwh, kvarh)
    if pf is not None and not 0.0 < pf <= 1.0:
        raise InvalidPayload(f"power factor must be in (0, 1], got {pf:g}")
    if tariff.power_factor is not None:
        rule = tariff.power_factor
        if pf is None:
            notes.append("power factor unknown: no low power factor penalty estimated")
        elif pf < rule.threshold:
            points = (rule.threshold - pf) * 100.0
            if rule.whole_points:
                points = math.floor(points + 1e-9)
            percent = points * rule.percent_per_point
            if percent > 0:
                base = _base(lines, rule.base)
                lines.append(
                    BillLine(
                        "pf_penalty",
                        "pf_penalty",
                        f"Low power factor penalty (PF {pf:.3f}, {points:g} points below "
                        f"{rule.threshold:g} x {_pct(rule.percent_per_point)})",
                        base,
                        tariff.currency,
                        percent / 100.0,
                        base * percent / 100.0,
                    )
                )

    for t in tariff.taxes:
        base = _base(lines, t.base)
        lines.append(
            BillLine(
                t.id,
                "tax",
                f"{t.name} ({_pct(t.percent)})",
                base,
                tariff.currency,
                t.percent / 100.0,
                base * t.percent / 100.0,
            )
        )
    return Bill(
        tariff_id=tariff.id,
        currency=tariff.currency,
        start_ms=p.start_ms,
        end_ms=p.end_ms,
        lines=tuple(lines),
        kwh_peak=kwh_peak,
        kwh_off_peak=kwh_off,
        mdi_kw=mdi_kw,
        mdi_at_ms=mdi_at,
        power_factor=pf,
        coverage=coverage,
        notes=tuple(notes),
    )


def _demand_from_edges(energy: IntervalSeries, edges: Ints) -> IntervalSeries:
    kwh = energy.split(edges)
    covered_h = energy.covered_ms(edges) / HOUR_MS
    has = covered_h > 1e-9
    kw = np.divide(kwh, covered_h, out=np.zeros_like(kwh), where=has)
    return IntervalSeries(edges[:-1][has], edges[1:][has], kw[has], "kW")


def estimate_bill(
    tariff: Tariff,
    energy: IntervalSeries,
    start_ms: int,
    end_ms: int,
    tz: ZoneInfo = KARACHI,
    *,
    sanctioned_kw: float | None = None,
    kvarh: float | None = None,
    power_factor: float | None = None,
) -> Bill:
    """The itemised bill of one meter (the connection's incomer) for ``[start_ms, end_ms)``:
    energy at peak and off-peak rates, fixed charges, MDI, per-kWh adjustments, the power
    factor penalty (from ``power_factor``, or from ``kvarh`` and the period's kWh), taxes."""
    return _bill(
        tariff, energy, _prepare(tariff, start_ms, end_ms, tz), sanctioned_kw, kvarh, power_factor
    )


def estimate_bills(
    tariff: Tariff,
    meters: Mapping[str, IntervalSeries],
    start_ms: int,
    end_ms: int,
    tz: ZoneInfo = KARACHI,
    *,
    sanctioned_kw: Mapping[str, float] | None = None,
    kvarh: Mapping[str, float] | None = None,
    power_factor: Mapping[str, float] | None = None,
) -> dict[str, Bill]:
    """`estimate_bill` for many meters on the same tariff and period (windows computed once)."""
    p = _prepare(tariff, start_ms, end_ms, tz)
    return {
        name: _bill(
            tariff,
            energy,
            p,
            (sanctioned_kw or {}).get(name),
            (kvarh or {}).get(name),
            (power_factor or {}).get(name),
        )
        for name, energy in meters.items()
    }


def compare(estimate: Bill | float, actual: float) -> BillComparison:
    """How far an estimate is from the utility's bill total."""
    total = estimate.total if isinstance(estimate, Bill) else float(estimate)
    difference = total - actual
    percent = difference / actual * 100.0 if actual else None
    return BillComparison(total, actual, difference, percent)
