"""What meters measure, turned into energy per interval: counters, power samples, power
factor, phase imbalance and the energy that no sub-meter accounts for.

Missing energy stays missing: a counter that was reset or replaced, a reading that jumps beyond
what the connection can draw, or a silence longer than the caller's limit becomes a `Gap`, never
zero and never a straight line across.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from karkhana.core.errors import InvalidPayload
from karkhana.energy.model import HOUR_MS, Floats, Gap, IntervalSeries, Ints, MeteredEnergy

ROLLOVER_BAND = 0.1
"""A drop counts as a rollover when the old reading was in the top tenth of the counter's range
and the new one in the bottom tenth."""


def _columns(ts_ms: npt.ArrayLike, values: npt.ArrayLike, what: str) -> tuple[Ints, Floats]:
    t = np.asarray(ts_ms, np.int64)
    v = np.asarray(values, np.float64)
    if t.ndim != 1 or t.shape != v.shape:
        raise InvalidPayload(f"{what}: times and values must be 1-D and of equal length")
    if np.any(np.diff(t) <= 0):
        raise InvalidPayload(f"{what}: times must be strictly increasing")
    return t, v


def _gaps(
    start: Ints, end: Ints, bad: npt.NDArray[np.bool_], reasons: npt.NDArray[np.str_]
) -> tuple[Gap, ...]:
    """Runs of bad intervals as gaps, adjacent ones with the same reason joined."""
    out: list[Gap] = []
    for i in np.flatnonzero(bad):
        a, b, why = int(start[i]), int(end[i]), str(reasons[i])
        if out and out[-1].end_ms == a and out[-1].reason == why:
            out[-1] = Gap(out[-1].start_ms, b, why)
        else:
            out.append(Gap(a, b, why))
    return tuple(out)


def counter_energy(
    ts_ms: npt.ArrayLike,
    readings: npt.ArrayLike,
    *,
    rollover: float | None = None,
    max_kw: float | None = None,
    max_gap_ms: int | None = None,
) -> MeteredEnergy:
    """kWh between successive readings of a cumulative kWh register.

    ``rollover`` is the value at which the register wraps to zero (1_000_000 for a display that
    reads 999,999.9 at most; 2**32 x the scale for a raw 32-bit register): a drop from the top
    tenth to the bottom tenth of that range is counted across the wrap. Any other drop is a
    reset or a new meter: the reading starts a new baseline and the interval is a gap
    ("reset"). A rise that would mean more than ``max_kw`` on average is a bad reading (a gap,
    "implausible") and also starts a new baseline. Readings further apart than ``max_gap_ms``
    leave a gap ("no data"): the energy across it is known in total but not when it was used.
    Non-finite readings are skipped.
    """
    t, v = _columns(ts_ms, readings, "counter readings")
    ok = np.isfinite(v)
    t, v = t[ok], v[ok]
    if t.size < 2:
        return MeteredEnergy(IntervalSeries.empty())
    start, end = t[:-1], t[1:]
    delta = np.diff(v)
    reason = np.full(delta.shape, "", dtype="<U16")
    drop = delta < 0
    if rollover is not None:
        if rollover <= 0:
            raise InvalidPayload("counter rollover must be positive")
        wrapped = (
            drop
            & (v[:-1] >= (1 - ROLLOVER_BAND) * rollover)
            & (v[:-1] < rollover)
            & (v[1:] < ROLLOVER_BAND * rollover)
        )
        delta = np.where(wrapped, delta + rollover, delta)
        drop &= ~wrapped
    reason[drop] = "reset"
    if max_kw is not None:
        hours = (end - start) / HOUR_MS
        reason[(reason == "") & (delta > max_kw * hours)] = "implausible"
    if max_gap_ms is not None:
        reason[(reason == "") & (end - start > max_gap_ms)] = "no data"
    bad = reason != ""
    good = ~bad
    return MeteredEnergy(
        IntervalSeries(start[good], end[good], delta[good]),
        _gaps(start, end, bad, reason),
    )


def integrate_power(
    ts_ms: npt.ArrayLike, kw: npt.ArrayLike, *, max_gap_ms: int, unit: str = "kWh"
) -> MeteredEnergy:
    """kWh between successive power samples (kW) by the trapezoid rule, for meters without an
    energy register. Samples further apart than ``max_gap_ms`` are not joined: the time between
    them is a gap ("no data"), as is any interval next to a missing (non-finite) sample. The
    same works for kVAr into kVArh (pass ``unit``)."""
    t, p = _columns(ts_ms, kw, "power samples")
    if max_gap_ms <= 0:
        raise InvalidPayload("max_gap_ms must be positive")
    if t.size < 2:
        return MeteredEnergy(IntervalSeries.empty(unit))
    start, end = t[:-1], t[1:]
    reason = np.full(start.shape, "", dtype="<U16")
    finite = np.isfinite(p)
    reason[~(finite[:-1] & finite[1:])] = "no data"
    reason[end - start > max_gap_ms] = "no data"
    good = reason == ""
    p0 = np.where(finite, p, 0.0)
    kwh = (p0[:-1] + p0[1:]) / 2.0 * (end - start) / HOUR_MS
    return MeteredEnergy(
        IntervalSeries(start[good], end[good], kwh[good], unit),
        _gaps(start, end, ~good, reason),
    )


def power_factor(active: npt.ArrayLike, reactive: npt.ArrayLike) -> Floats:
    """Displacement power factor |P| / sqrt(P² + Q²) from kW and kVAr (or kWh and kVArh),
    element by element; NaN where both are zero. Leading or lagging, the sign of Q is ignored."""
    p = np.abs(np.asarray(active, np.float64))
    q = np.asarray(reactive, np.float64)
    s = np.hypot(p, q)
    out: Floats = np.divide(p, s, out=np.full(s.shape, np.nan), where=s > 0)
    return out


def reactive_from_power_factor(active: npt.ArrayLike, pf: npt.ArrayLike) -> Floats:
    """Reactive energy (kVArh) or power (kVAr) from active energy or power and the meter's PF:
    |P| x tan(acos(PF)). NaN where the PF is outside (0, 1]."""
    p = np.abs(np.asarray(active, np.float64))
    f = np.asarray(pf, np.float64)
    valid = (f > 0) & (f <= 1)
    safe = np.where(valid, f, 1.0)
    out: Floats = np.where(valid, p * np.sqrt(1.0 - safe**2) / safe, np.nan)
    return out


def imbalance(phases: npt.ArrayLike) -> Floats:
    """NEMA unbalance in percent: the largest deviation from the mean of the three phases,
    over the mean, for voltages or currents. ``phases`` is ``(3,)`` or ``(n, 3)``; NaN where the
    mean is zero."""
    x = np.asarray(phases, np.float64)
    if x.shape[-1:] != (3,):
        raise InvalidPayload("imbalance needs three phase values per row")
    mean = x.mean(axis=-1)
    dev = np.abs(x - mean[..., None]).max(axis=-1)
    out: Floats = np.divide(dev * 100.0, mean, out=np.full(np.shape(mean), np.nan), where=mean != 0)
    return out


@dataclass(frozen=True, slots=True, eq=False)
class Remainder:
    """The part of a parent meter's energy that its sub-meters do not account for (lighting,
    losses, unmetered loads), per interval. ``suspect`` marks intervals where the children add
    up to more than the parent beyond the tolerance: a wiring, CT ratio or CT direction problem
    rather than a real negative load. NaN where the parent or a child has no figure."""

    kwh: Floats
    suspect: npt.NDArray[np.bool_]

    @property
    def total(self) -> float:
        return float(np.nansum(self.kwh))

    @property
    def any_suspect(self) -> bool:
        return bool(self.suspect.any())


def unmetered(
    parent: npt.ArrayLike,
    children: npt.ArrayLike,
    *,
    tolerance: float = 0.02,
    tolerance_kwh: float = 0.0,
) -> Remainder:
    """Parent minus the sum of its children, interval by interval.

    ``parent`` is ``(n,)`` kWh; ``children`` is ``(m, n)`` (one row per sub-meter, the same
    intervals; NaN where a meter has no figure). A remainder below ``-(tolerance x parent +
    tolerance_kwh)`` is flagged: meters of the same class disagree by a percent or two, not more.
    """
    p = np.asarray(parent, np.float64)
    c = np.asarray(children, np.float64)
    if c.ndim == 1:
        c = c[None, :]
    if p.ndim != 1 or c.ndim != 2 or c.shape[1] != p.size:
        raise InvalidPayload("unmetered: children must be (meters, intervals) like the parent")
    if tolerance < 0 or tolerance_kwh < 0:
        raise InvalidPayload("unmetered: tolerances must not be negative")
    rest = p - c.sum(axis=0)
    limit = tolerance * np.abs(p) + tolerance_kwh
    with np.errstate(invalid="ignore"):
        suspect = np.isfinite(rest) & (rest < -limit)
    return Remainder(rest, suspect)
