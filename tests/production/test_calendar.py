"""Shift calendars in local time: shifts, breaks, jumu'ah, days off, holidays."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from karkhana.production.calendar import (
    NO_PLAN,
    planned_windows,
    shift_at,
    shift_on,
    shifts_between,
)
from karkhana.production.datafiles import load_calendars

PKT = ZoneInfo("Asia/Karachi")
CAL = load_calendars()["default"]
H = 3_600_000
M = 60_000


def pkt(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> int:
    return int(datetime(y, mo, d, h, mi, tzinfo=PKT).timestamp() * 1000)


def test_karachi_is_utc_plus_five() -> None:
    assert pkt(2026, 6, 3, 6) == int(datetime(2026, 6, 3, 1, tzinfo=UTC).timestamp() * 1000)


def test_three_shifts_of_a_wednesday() -> None:
    day = date(2026, 6, 3)  # a Wednesday
    a, b, c = (shift_on(CAL, PKT, day, s) for s in "ABC")
    assert a is not None and b is not None and c is not None
    assert (a.start_ms, a.end_ms) == (pkt(2026, 6, 3, 6), pkt(2026, 6, 3, 14))
    assert (c.start_ms, c.end_ms) == (pkt(2026, 6, 3, 22), pkt(2026, 6, 4, 6))  # past midnight
    assert shift_at(CAL, PKT, pkt(2026, 6, 4, 3)) == c
    assert shift_at(CAL, PKT, pkt(2026, 6, 3, 14)) == b


def test_planned_time_without_breaks() -> None:
    windows = planned_windows(CAL, PKT, pkt(2026, 6, 3, 6), pkt(2026, 6, 3, 14))
    # back-to-back shifts make one window; windows are whole, not cut at the range
    assert windows == [
        (pkt(2026, 6, 3, 2, 30), pkt(2026, 6, 3, 10)),
        (pkt(2026, 6, 3, 10, 30), pkt(2026, 6, 3, 18)),
    ]


def test_jumuah_break_on_friday_only() -> None:
    friday = planned_windows(CAL, PKT, pkt(2026, 6, 5, 6), pkt(2026, 6, 5, 22))
    assert (pkt(2026, 6, 5, 10, 30), pkt(2026, 6, 5, 13)) in friday
    assert any(s == pkt(2026, 6, 5, 14, 30) for s, _ in friday)
    thursday = planned_windows(CAL, PKT, pkt(2026, 6, 4, 6), pkt(2026, 6, 4, 22))
    assert (pkt(2026, 6, 4, 10, 30), pkt(2026, 6, 4, 18)) in thursday


def test_sunday_off_and_the_night_shift_belongs_to_its_start_day() -> None:
    sunday = date(2026, 6, 7)
    assert shift_on(CAL, PKT, sunday, "A") is None
    # Saturday's night shift runs into Sunday morning; Sunday's own night shift does not exist
    got = shifts_between(CAL, PKT, pkt(2026, 6, 7, 0), pkt(2026, 6, 8, 0))
    assert [(w.day, w.id) for w in got] == [("2026-06-06", "C")]


def test_holiday_has_no_shifts() -> None:
    assert shift_on(CAL, PKT, date(2026, 8, 14), "A") is None
    assert shift_on(CAL, PKT, date(2026, 8, 13), "A") is not None


def test_no_plan() -> None:
    assert planned_windows(NO_PLAN, PKT, 0, 10 * H) == []
    assert shift_at(NO_PLAN, PKT, 5 * H) is None
