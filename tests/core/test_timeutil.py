from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from karkhana.core.errors import InvalidPayload
from karkhana.core.timeutil import nice_bucket, parse_duration, parse_query_ts, parse_ts


def test_parse_ts_forms() -> None:
    assert parse_ts(1_700_000_000_000) == 1_700_000_000_000
    assert parse_ts("1700000000000") == 1_700_000_000_000
    assert parse_ts("2023-11-14T22:13:20Z") == 1_700_000_000_000
    assert parse_ts("2023-11-15T03:13:20+05:00") == 1_700_000_000_000
    assert parse_ts("2023-11-14T22:13:20") == 1_700_000_000_000  # naive is UTC
    for bad in ["soon", True, None, float("nan"), [1]]:
        with pytest.raises(InvalidPayload):
            parse_ts(bad)


def test_parse_duration() -> None:
    assert parse_duration("500ms") == 500
    assert parse_duration("30s") == 30_000
    assert parse_duration("5m") == 300_000
    assert parse_duration("1h") == 3_600_000
    assert parse_duration("1d") == 86_400_000
    assert parse_duration("250") == 250
    for bad in ["0s", "-1m", "1y", "m", ""]:
        with pytest.raises(InvalidPayload):
            parse_duration(bad)


def test_nice_bucket_examples() -> None:
    year = 365 * 86_400_000
    assert nice_bucket(year, 1000) == 9 * 3_600_000
    assert nice_bucket(3_600_000, 1000) == 5000
    assert nice_bucket(86_400_000, 500) == 3 * 60_000


@given(st.integers(1, 10 * 365 * 86_400_000), st.integers(1, 5000))
def test_nice_bucket_is_rollup_friendly_and_near_the_ask(span: int, points: int) -> None:
    b = nice_bucket(span, points)
    assert span / b <= points
    if b >= 60_000:
        assert b % 60_000 == 0
    if b >= 3_600_000:
        assert b % 3_600_000 == 0


def test_query_times_lie_between_2000_and_2100() -> None:
    assert parse_query_ts("2026-01-01T00:00:00Z", "start") == 1_767_225_600_000
    assert parse_query_ts(946_684_800_000, "start") == 946_684_800_000
    for bad in (1_700_000_000, "1999-12-31T23:59:59Z", "2100-01-01T00:00:01Z"):
        with pytest.raises(InvalidPayload, match="start: must lie between"):
            parse_query_ts(bad, "start")
