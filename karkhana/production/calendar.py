"""Shift calendars: planned production time in a site's local time, as pure functions.

A calendar lists daily shifts (a shift that ends at or before its start runs past midnight),
breaks (optionally only on some weekdays, such as the Friday jumu'ah prayer), weekly days off and
holidays. A shift belongs to the local date it starts on: the night shift of a holiday is off.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from karkhana.production.model import ShiftWindow
from karkhana.production.spans import Span, merge, subtract

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
DAY_MINUTES = 24 * 60


@dataclass(frozen=True, slots=True)
class ShiftSpec:
    """A daily shift from ``start_min`` to ``end_min`` minutes after local midnight."""

    id: str
    name: str
    start_min: int
    end_min: int


@dataclass(frozen=True, slots=True)
class BreakSpec:
    """A daily pause in production; ``weekdays`` (Monday = 0) limits it to some days."""

    name: str
    start_min: int
    end_min: int
    weekdays: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class Calendar:
    id: str
    name: str
    shifts: tuple[ShiftSpec, ...]
    breaks: tuple[BreakSpec, ...] = ()
    days_off: frozenset[int] = frozenset()
    holidays: Mapping[str, str] = field(default_factory=dict)
    """ISO date -> name."""
    sites: frozenset[str] = frozenset()
    """Sites that keep this calendar (the others keep ``default``)."""

    def working(self, day: date) -> bool:
        return day.weekday() not in self.days_off and day.isoformat() not in self.holidays


NO_PLAN = Calendar("none", "No planned production", ())
"""A calendar without shifts: nothing is planned, so availability cannot be computed."""


def _at(day: date, minutes: int, tz: ZoneInfo) -> int:
    # wall-clock arithmetic, then back to UTC (correct across DST changes where they exist)
    naive = datetime(day.year, day.month, day.day) + timedelta(minutes=minutes)
    local = naive.replace(tzinfo=tz)
    return int(local.timestamp() * 1000)


def _span(day: date, start_min: int, end_min: int, tz: ZoneInfo) -> Span:
    end = end_min if end_min > start_min else end_min + DAY_MINUTES
    return _at(day, start_min, tz), _at(day, end, tz)


def local_date(t_ms: int, tz: ZoneInfo) -> date:
    return datetime.fromtimestamp(t_ms / 1000, tz).date()


def _days(start_ms: int, end_ms: int, tz: ZoneInfo) -> list[date]:
    """Local dates whose shifts may touch ``[start_ms, end_ms)`` (one day of margin before)."""
    first = local_date(start_ms, tz) - timedelta(days=1)
    last = local_date(max(start_ms, end_ms - 1), tz)
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def shift_window(cal: Calendar, spec: ShiftSpec, day: date, tz: ZoneInfo) -> ShiftWindow:
    start, end = _span(day, spec.start_min, spec.end_min, tz)
    return ShiftWindow(spec.id, spec.name, day.isoformat(), start, end)


def shifts_between(cal: Calendar, tz: ZoneInfo, start_ms: int, end_ms: int) -> list[ShiftWindow]:
    """Working shifts that overlap ``[start_ms, end_ms)``, in time order (not clipped)."""
    out = [
        shift_window(cal, spec, day, tz)
        for day in _days(start_ms, end_ms, tz)
        if cal.working(day)
        for spec in cal.shifts
    ]
    return sorted(
        (w for w in out if w.end_ms > start_ms and w.start_ms < end_ms), key=lambda w: w.start_ms
    )


def shift_at(cal: Calendar, tz: ZoneInfo, t_ms: int) -> ShiftWindow | None:
    return next(iter(shifts_between(cal, tz, t_ms, t_ms + 1)), None)


def shift_on(cal: Calendar, tz: ZoneInfo, day: date, shift_id: str) -> ShiftWindow | None:
    """The shift ``shift_id`` starting on local date ``day``; None on a day off."""
    if not cal.working(day):
        return None
    spec = next((s for s in cal.shifts if s.id == shift_id), None)
    return None if spec is None else shift_window(cal, spec, day, tz)


def day_span(day: date, tz: ZoneInfo) -> Span:
    """The local calendar day as UTC milliseconds."""
    return _at(day, 0, tz), _at(day + timedelta(days=1), 0, tz)


def breaks_between(cal: Calendar, tz: ZoneInfo, start_ms: int, end_ms: int) -> list[Span]:
    out = [
        _span(day, b.start_min, b.end_min, tz)
        for day in _days(start_ms, end_ms, tz)
        for b in cal.breaks
        if not b.weekdays or day.weekday() in b.weekdays
    ]
    return merge(s for s in out if s[1] > start_ms and s[0] < end_ms)


def planned_windows(cal: Calendar, tz: ZoneInfo, start_ms: int, end_ms: int) -> list[Span]:
    """Planned production time touching ``[start_ms, end_ms)``: working shifts without breaks.

    Windows are not clipped to the range, so that a caller can see where production restarts.
    """
    # shifts a day either side, so that back-to-back shifts merge into one window
    day = 86_400_000
    nearby = shifts_between(cal, tz, start_ms - day, end_ms + day)
    shifts = merge((w.start_ms, w.end_ms) for w in nearby)
    if not shifts:
        return []
    windows = subtract(shifts, breaks_between(cal, tz, shifts[0][0], shifts[-1][1]))
    return [w for w in windows if w[1] > start_ms and w[0] < end_ms]
