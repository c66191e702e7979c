"""Electricity tariffs as data files, and where their peak windows fall in time.

A tariff file (``data/tariffs/*.toml``, or a site's own folder) gives rates per kWh (peak and
off-peak, or one flat rate), the seasons that move the peak windows, fixed monthly charges, the
maximum demand (MDI) charge, a power factor penalty, per-kWh adjustments and taxes. Every
mistake names the file and the field. The shipped files are examples, not a current schedule.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo

import numpy as np

from karkhana.core.datafile import ID, FieldReader, load_all, read_toml
from karkhana.energy.model import (
    LINE_KINDS,
    Adjustment,
    ClockWindow,
    DemandCharge,
    FixedCharge,
    Ints,
    PowerFactorPenalty,
    Season,
    Tariff,
    Tax,
)

DATA_DIR = Path(__file__).resolve().parent / "data" / "tariffs"
KARACHI = ZoneInfo("Asia/Karachi")
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_FULL = "january february march april may june july august september october november december"
_MONTH_NAMES = {n: i + 1 for i, n in enumerate(MONTHS)} | {
    n: i + 1 for i, n in enumerate(_FULL.split())
}
_RESERVED = {
    "energy",
    "energy_peak",
    "energy_off_peak",
    "fixed",
    "mdi",
    "pf_penalty",
    "adjustments",
}
_WINDOW = re.compile(r"^(\d\d):(\d\d)-(\d\d):(\d\d)$")
_TOP = {
    "id",
    "name",
    "note",
    "currency",
    "energy",
    "seasons",
    "fixed",
    "demand",
    "power_factor",
    "adjustments",
    "taxes",
}


class _Reader(FieldReader):
    def rate(
        self, item: Mapping[str, Any], name: str, where: str, *, signed: bool = False
    ) -> float:
        value = self.number(item, name, where)
        if value is None:
            raise self.fail(where, "missing")
        if value < 0 and not signed:
            raise self.fail(where, f"must not be negative, got {value:g}")
        return value

    def table(self, doc: Mapping[str, Any], name: str) -> dict[str, Any] | None:
        raw = doc.get(name)
        if raw is None:
            return None
        if not isinstance(raw, dict):
            raise self.fail(name, f"expected a [{name}] table")
        return cast(dict[str, Any], raw)

    def tables(self, doc: Mapping[str, Any], name: str) -> list[dict[str, Any]]:
        raw = doc.get(name, [])
        if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
            raise self.fail(name, f"expected [[{name}]] tables")
        return cast(list[dict[str, Any]], raw)

    def ident(self, item: Mapping[str, Any], where: str, taken: set[str]) -> str:
        value = self.text(item, "id", f"{where}.id")
        if not ID.fullmatch(value):
            raise self.fail(f"{where}.id", f"{value!r} must be lower-case letters, digits and _")
        if value in _RESERVED:
            raise self.fail(f"{where}.id", f"{value!r} is reserved for the bill's own lines")
        if value in taken:
            raise self.fail(f"{where}.id", f"{value!r} is already used in this file")
        taken.add(value)
        return value

    def month(self, raw: object, where: str) -> int:
        if isinstance(raw, int) and not isinstance(raw, bool) and 1 <= raw <= 12:
            return raw
        if isinstance(raw, str) and raw.strip().lower() in _MONTH_NAMES:
            return _MONTH_NAMES[raw.strip().lower()]
        raise self.fail(where, f"unknown month {raw!r} (expected 1-12 or jan ... dec)")

    def months(self, item: Mapping[str, Any], where: str) -> frozenset[int]:
        """``"dec-feb"`` (a range, wrapping past December), ``"jun"`` or a list of months."""
        raw = item.get("months")
        if raw is None:
            raise self.fail(where, "missing")
        if isinstance(raw, list):
            if not raw:
                raise self.fail(where, "empty")
            return frozenset(self.month(m, where) for m in raw)
        if isinstance(raw, str):
            first, sep, last = raw.partition("-")
            a = self.month(first, where)
            if not sep:
                return frozenset({a})
            b = self.month(last, where)
            return frozenset((a - 1 + i) % 12 + 1 for i in range((b - a) % 12 + 1))
        raise self.fail(where, 'expected a month range such as "dec-feb" or a list of months')

    def window(self, raw: object, where: str) -> ClockWindow:
        m = _WINDOW.fullmatch(raw.strip()) if isinstance(raw, str) else None
        if m is None:
            raise self.fail(where, f'{raw!r} is not a window such as "17:00-21:00"')
        h1, m1, h2, m2 = (int(g) for g in m.groups())
        if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59 or (h2 == 24 and m2 != 0):
            raise self.fail(where, f"{raw!r} is not a time of day")
        window = ClockWindow(h1 * 60 + m1, (h2 * 60 + m2) % 1440)
        if window.start_min == window.end_min:
            raise self.fail(where, f"{raw!r} is empty or the whole day")
        return window

    def base(self, item: Mapping[str, Any], where: str, known: set[str]) -> tuple[str, ...]:
        raw = item.get("base")
        if not isinstance(raw, list) or not raw or not all(isinstance(b, str) for b in raw):
            raise self.fail(where, "expected a non-empty list of line kinds or ids")
        for b in raw:
            if b not in known:
                raise self.fail(
                    where,
                    f"unknown base {b!r} (expected one of {', '.join(sorted(known))}; a tax "
                    "may name only taxes listed before it)",
                )
        if len(set(raw)) != len(raw):
            raise self.fail(where, "names a line twice")
        return tuple(raw)


def _overlap(a: ClockWindow, b: ClockWindow) -> bool:
    """Whether two daily windows share any minute (on the 24-hour circle)."""
    for shift in (-1440, 0, 1440):
        if a.start_min < b.start_min + b.minutes + shift and b.start_min + shift < (
            a.start_min + a.minutes
        ):
            return True
    return False


def _seasons(r: _Reader, doc: Mapping[str, Any], tou: bool) -> tuple[Season, ...]:
    items = r.tables(doc, "seasons")
    if not tou:
        if items:
            raise r.fail("seasons", "a flat-rate tariff has no peak windows; remove [[seasons]]")
        return ()
    if not items:
        raise r.fail("seasons", "missing; a time-of-use tariff needs [[seasons]] with peak windows")
    seasons: list[Season] = []
    owner: dict[int, str] = {}
    for i, item in enumerate(items):
        where = f"seasons[{i}]"
        r.no_unknown(item, {"name", "months", "peak"}, where)
        name = r.text(item, "name", f"{where}.name")
        months = r.months(item, f"{where}.months")
        for m in sorted(months):
            if m in owner:
                raise r.fail(
                    f"{where}.months", f"{MONTHS[m - 1]} is already in season {owner[m]!r}"
                )
            owner[m] = name
        raw = item.get("peak")
        if not isinstance(raw, list) or not raw:
            raise r.fail(f"{where}.peak", 'expected a list of windows such as ["17:00-21:00"]')
        windows = [r.window(w, f"{where}.peak[{j}]") for j, w in enumerate(raw)]
        for j, w in enumerate(windows):
            for k in range(j):
                if _overlap(w, windows[k]):
                    raise r.fail(f"{where}.peak[{j}]", f"window {w} overlaps window {windows[k]}")
        seasons.append(Season(name, months, tuple(windows)))
    missing = [MONTHS[m - 1] for m in range(1, 13) if m not in owner]
    if missing:
        raise r.fail("seasons", f"months in no season: {', '.join(missing)}")
    return tuple(seasons)


def load_tariff(path: Path) -> Tariff:
    """One tariff file, checked field by field (`ConfigError` names the file and field)."""
    r = _Reader(path)
    doc = read_toml(path, "tariff")
    r.no_unknown(doc, _TOP, "")
    tariff_id = r.file_id(doc)
    currency = r.text(doc, "currency", "currency")
    if not re.fullmatch(r"[A-Z]{3}", currency):
        raise r.fail("currency", f"{currency!r} is not a currency code such as PKR")

    energy = r.table(doc, "energy")
    if energy is None:
        raise r.fail("energy", "missing; give [energy] peak and off_peak, or flat")
    r.no_unknown(energy, {"peak", "off_peak", "flat"}, "energy")
    tou = "flat" not in energy
    if tou and not {"peak", "off_peak"} <= energy.keys():
        raise r.fail("energy", "give both peak and off_peak rates, or one flat rate")
    if not tou and energy.keys() & {"peak", "off_peak"}:
        raise r.fail("energy", "a flat rate excludes peak and off_peak rates")
    rates = {k: r.rate(energy, k, f"energy.{k}") for k in energy}

    taken: set[str] = set()
    fixed = []
    for i, item in enumerate(r.tables(doc, "fixed")):
        where = f"fixed[{i}]"
        r.no_unknown(item, {"id", "name", "amount"}, where)
        fixed.append(
            FixedCharge(
                r.ident(item, where, taken),
                r.text(item, "name", f"{where}.name"),
                r.rate(item, "amount", f"{where}.amount"),
            )
        )

    demand = None
    raw_demand = r.table(doc, "demand")
    if raw_demand is not None:
        r.no_unknown(
            raw_demand, {"per_kw", "interval_minutes", "minimum_fraction", "peak_only"}, "demand"
        )
        interval = r.number(raw_demand, "interval_minutes", "demand.interval_minutes") or 30.0
        if interval != int(interval) or interval <= 0 or 1440 % int(interval):
            raise r.fail("demand.interval_minutes", f"{interval:g} does not divide a day")
        fraction = r.number(raw_demand, "minimum_fraction", "demand.minimum_fraction") or 0.0
        if not 0.0 <= fraction <= 1.0:
            raise r.fail("demand.minimum_fraction", f"must be between 0 and 1, got {fraction:g}")
        peak_only = raw_demand.get("peak_only", False)
        if not isinstance(peak_only, bool):
            raise r.fail("demand.peak_only", "expected true or false")
        if peak_only and not tou:
            raise r.fail("demand.peak_only", "a flat-rate tariff has no peak windows")
        demand = DemandCharge(
            r.rate(raw_demand, "per_kw", "demand.per_kw"), int(interval), fraction, peak_only
        )

    adjustments = []
    for i, item in enumerate(r.tables(doc, "adjustments")):
        where = f"adjustments[{i}]"
        r.no_unknown(item, {"id", "name", "per_kwh"}, where)
        adjustments.append(
            Adjustment(
                r.ident(item, where, taken),
                r.text(item, "name", f"{where}.name"),
                r.rate(item, "per_kwh", f"{where}.per_kwh", signed=True),
            )
        )

    known = set(LINE_KINDS) - {"tax", "adjustment"} | {"adjustments"}
    known |= {a.id for a in adjustments} | {f.id for f in fixed}
    penalty = None
    raw_pf = r.table(doc, "power_factor")
    if raw_pf is not None:
        r.no_unknown(
            raw_pf, {"threshold", "percent_per_point", "base", "whole_points"}, "power_factor"
        )
        threshold = r.rate(raw_pf, "threshold", "power_factor.threshold")
        if not 0.0 < threshold <= 1.0:
            raise r.fail("power_factor.threshold", f"must be in (0, 1], got {threshold:g}")
        whole = raw_pf.get("whole_points", True)
        if not isinstance(whole, bool):
            raise r.fail("power_factor.whole_points", "expected true or false")
        penalty = PowerFactorPenalty(
            threshold,
            r.rate(raw_pf, "percent_per_point", "power_factor.percent_per_point"),
            r.base(raw_pf, "power_factor.base", known - {"pf_penalty"}),
            whole,
        )

    taxes = []
    for i, item in enumerate(r.tables(doc, "taxes")):
        where = f"taxes[{i}]"
        r.no_unknown(item, {"id", "name", "percent", "base"}, where)
        tax_id = r.ident(item, where, taken)
        taxes.append(
            Tax(
                tax_id,
                r.text(item, "name", f"{where}.name"),
                r.rate(item, "percent", f"{where}.percent"),
                r.base(item, f"{where}.base", known),
            )
        )
        known.add(tax_id)

    return Tariff(
        id=tariff_id,
        name=r.text(doc, "name", "name"),
        note=r.text(doc, "note", "note"),
        currency=currency,
        peak_rate=rates.get("peak"),
        off_peak_rate=rates.get("off_peak"),
        flat_rate=rates.get("flat"),
        seasons=_seasons(r, doc, tou),
        fixed=tuple(fixed),
        demand=demand,
        power_factor=penalty,
        adjustments=tuple(adjustments),
        taxes=tuple(taxes),
    )


def load_tariffs(directory: Path | None = None) -> dict[str, Tariff]:
    """The shipped example tariffs plus those in ``directory`` (which replace them by id)."""
    return load_all(DATA_DIR, directory, load_tariff, lambda t: t.id, "tariff")


def at_local(day: date, minutes: int, tz: ZoneInfo) -> int:
    """Epoch ms of ``minutes`` after local midnight of ``day`` (wall-clock arithmetic)."""
    naive = datetime(day.year, day.month, day.day) + timedelta(minutes=minutes)
    return int(naive.replace(tzinfo=tz).timestamp() * 1000)


def local_date(t_ms: int, tz: ZoneInfo) -> date:
    return datetime.fromtimestamp(t_ms / 1000, tz).date()


def peak_spans(tariff: Tariff, start_ms: int, end_ms: int, tz: ZoneInfo = KARACHI) -> Ints:
    """The peak windows that touch ``[start_ms, end_ms)`` as sorted, disjoint ``(start, end)``
    rows in epoch ms, clipped to the range. A window belongs to the local day it starts on, so
    a window past midnight keeps its season into the next month. Flat tariffs have none."""
    rows: list[tuple[int, int]] = []
    if tariff.time_of_use and end_ms > start_ms:
        day = local_date(start_ms, tz) - timedelta(days=1)
        last = local_date(end_ms, tz)
        while day <= last:
            season = tariff.season_of(day.month)
            for w in season.peak if season else ():
                a = at_local(day, w.start_min, tz)
                b = at_local(day, w.start_min + w.minutes, tz)
                a, b = max(a, start_ms), min(b, end_ms)
                if b > a:
                    rows.append((a, b))
            day += timedelta(days=1)
    rows.sort()
    merged: list[list[int]] = []
    for a, b in rows:
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return np.array(merged, np.int64).reshape(-1, 2)


def is_peak(tariff: Tariff, t_ms: int, tz: ZoneInfo = KARACHI) -> bool:
    spans = peak_spans(tariff, t_ms, t_ms + 1, tz)
    return bool(spans.size)
