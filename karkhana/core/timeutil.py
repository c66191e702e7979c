"""Parsing of timestamps and durations as users write them (epoch ms, ISO 8601, "5m")."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

from karkhana.core.errors import InvalidPayload

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d|w)?$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def parse_ts(value: object, field: str = "ts") -> int:
    """Epoch milliseconds from an int/float (ms) or an ISO 8601 string (naive means UTC)."""
    if isinstance(value, bool):
        raise InvalidPayload(f"{field}: expected epoch milliseconds or ISO 8601, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidPayload(f"{field}: must be finite")
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"-?\d+", text):
            return int(text)
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            raise InvalidPayload(
                f"{field}: {value[:40]!r} is neither epoch milliseconds nor ISO 8601"
            ) from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return int(dt.timestamp() * 1000)
    raise InvalidPayload(
        f"{field}: expected epoch milliseconds or ISO 8601, got {type(value).__name__}"
    )


EARLIEST_MS = 946_684_800_000
"""2000-01-01: the earliest time a query may name."""
LATEST_MS = 4_102_444_800_000
"""2100-01-01: the latest."""


def parse_query_ts(value: object, field: str) -> int:
    """A time a user puts in a query (epoch ms or ISO 8601), between the years 2000 and 2100."""
    t = parse_ts(value, field)
    if not EARLIEST_MS <= t <= LATEST_MS:
        raise InvalidPayload(f"{field}: must lie between the years 2000 and 2100")
    return t


def parse_duration(value: str | int, field: str = "bucket") -> int:
    """Milliseconds from "500ms", "30s", "5m", "1h", "1d", "1w" or a bare number of ms."""
    if isinstance(value, int) and not isinstance(value, bool):
        ms = value
    else:
        m = _DURATION.fullmatch(str(value).strip())
        if m is None:
            raise InvalidPayload(f"{field}: {value!r} is not a duration such as 30s, 5m, 1h or 1d")
        ms = int(float(m.group(1)) * _UNIT_MS[m.group(2) or "ms"])
    if ms <= 0:
        raise InvalidPayload(f"{field}: must be positive")
    return ms


_SUB_MINUTE = (1000, 2000, 5000, 10_000, 15_000, 20_000, 30_000)


def nice_bucket(span_ms: int, points: int) -> int:
    """A bucket giving about ``points`` buckets over ``span_ms`` that the rollups can serve.

    Below a minute it picks from a short ladder; above, it rounds up to whole minutes or hours,
    so long-range charts read 1-minute or 1-hour rollups instead of raw samples.
    """
    if points <= 0:
        raise InvalidPayload("points: must be positive")
    want = max(1, math.ceil(span_ms / points))
    if want < 60_000:
        for step in _SUB_MINUTE:
            if step >= want:
                return step
        return 60_000
    if want < 3_600_000:
        return math.ceil(want / 60_000) * 60_000
    return math.ceil(want / 3_600_000) * 3_600_000
