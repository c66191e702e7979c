"""Pure rollup arithmetic: partial aggregates, their merge, and query planning over resolutions.

A partial aggregate summarises some samples of one bucket; partials of the same bucket merge
exactly, which is what lets a long-range query read 1-hour and 1-minute rollups instead of raw
points and still return the same answer.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from karkhana.store.base import Agg

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
ROLLUP_RESOLUTIONS = (HOUR_MS, MINUTE_MS)
"""Rollup resolutions kept by the stores, coarsest first."""

RAW = 0


@dataclass(slots=True)
class Partial:
    """A mergeable summary of numeric samples within one bucket."""

    count: int
    total: float
    minimum: float
    maximum: float
    first_ts: int
    first: float
    last_ts: int
    last: float

    @classmethod
    def of(cls, ts: int, value: float) -> Partial:
        return cls(1, value, value, value, ts, value, ts, value)

    def add(self, ts: int, value: float) -> None:
        self.count += 1
        self.total += value
        if value < self.minimum:
            self.minimum = value
        if value > self.maximum:
            self.maximum = value
        if ts < self.first_ts:
            self.first_ts, self.first = ts, value
        if ts >= self.last_ts:
            self.last_ts, self.last = ts, value

    def merge(self, other: Partial) -> None:
        self.count += other.count
        self.total += other.total
        self.minimum = min(self.minimum, other.minimum)
        self.maximum = max(self.maximum, other.maximum)
        if other.first_ts < self.first_ts:
            self.first_ts, self.first = other.first_ts, other.first
        if other.last_ts >= self.last_ts:
            self.last_ts, self.last = other.last_ts, other.last

    def value(self, agg: Agg) -> float:
        if agg is Agg.AVG:
            return self.total / self.count
        if agg is Agg.MIN:
            return self.minimum
        if agg is Agg.MAX:
            return self.maximum
        if agg is Agg.FIRST:
            return self.first
        if agg is Agg.LAST:
            return self.last
        if agg is Agg.COUNT:
            return float(self.count)
        return self.total


def summarise(points: Iterable[tuple[int, float]], resolution: int) -> dict[int, Partial]:
    """Group (ts, value) points into partials keyed by bucket start at ``resolution``."""
    out: dict[int, Partial] = {}
    for ts, value in points:
        b = ts - ts % resolution
        p = out.get(b)
        if p is None:
            out[b] = Partial.of(ts, value)
        else:
            p.add(ts, value)
    return out


def floor_to(ts: int, step: int) -> int:
    return ts - ts % step


def ceil_to(ts: int, step: int) -> int:
    r = ts % step
    return ts if r == 0 else ts + step - r


def plan(start: int, end: int, bucket: int) -> list[tuple[int, int, int]]:
    """Split [start, end) into (resolution, lo, hi) pieces, each read from one source.

    A rollup of resolution r serves the part aligned to r when r divides the bucket (so a rollup
    row never straddles two output buckets); the ragged edges fall through to finer resolutions
    and finally to raw points (resolution ``RAW``).
    """
    return _plan(start, end, bucket, 0)


def _plan(start: int, end: int, bucket: int, level: int) -> list[tuple[int, int, int]]:
    if start >= end:
        return []
    for i in range(level, len(ROLLUP_RESOLUTIONS)):
        res = ROLLUP_RESOLUTIONS[i]
        if bucket % res:
            continue
        lo, hi = ceil_to(start, res), floor_to(end, res)
        if lo >= hi:
            continue
        return [
            *_plan(start, lo, bucket, i + 1),
            (res, lo, hi),
            *_plan(hi, end, bucket, i + 1),
        ]
    return [(RAW, start, end)]
