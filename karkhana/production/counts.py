"""Output counts from counter signals, across counter resets and rollovers.

A counter that goes down was either reset (a power cycle, an operator's reset: it counts again
from zero, so the new value is the increment) or wrapped at its register width (16 or 32 bits, or
the width a machine profile names: the increment runs over the top). A wrap is recognised when
the old value was in the top tenth of the range and the new one in the bottom tenth.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from karkhana.production.model import CountBucket

MINUTE_MS = 60_000
WIDTHS = (2.0**16, 2.0**32)


def increment(prev: float | None, value: float, modulus: float | None = None) -> float:
    """Units counted between two readings of a counter."""
    if prev is None:
        return 0.0
    if value >= prev:
        return value - prev
    for width in (modulus,) if modulus else WIDTHS:
        if width is not None and prev < width and prev >= 0.9 * width and value < 0.1 * width:
            return width - prev + value
    return value


def minute_of(ts: int) -> int:
    return ts - ts % MINUTE_MS


def bucket(
    readings: Iterable[tuple[int, float]],
    prev: float | None = None,
    modulus: float | None = None,
) -> tuple[dict[int, float], float | None]:
    """Increments of time-ordered readings summed per minute (stamped with the later reading),
    and the last reading, to continue from."""
    out: dict[int, float] = {}
    for ts, value in readings:
        step = increment(prev, value, modulus)
        prev = value
        if step:
            minute = minute_of(ts)
            out[minute] = out.get(minute, 0.0) + step
    return out, prev


def merge_buckets(total: dict[int, float], rejects: dict[int, float]) -> list[CountBucket]:
    return [
        CountBucket(m, total.get(m, 0.0), rejects.get(m, 0.0))
        for m in sorted(total.keys() | rejects.keys())
    ]


@dataclass(frozen=True, slots=True)
class CountSeries:
    """Per-minute counts as columns, for long ranges (a month is 43,200 minutes)."""

    minutes: npt.NDArray[np.int64]
    totals: npt.NDArray[np.float64]
    rejects: npt.NDArray[np.float64]

    @classmethod
    def of(cls, buckets: Sequence[CountBucket]) -> CountSeries:
        return cls.of_rows([(b.minute_ms, b.total, b.rejects) for b in buckets])

    @classmethod
    def of_rows(cls, rows: Sequence[tuple[int, float, float]]) -> CountSeries:
        """From ``(minute_ms, total, rejects)`` rows sorted by minute."""
        if not rows:
            return cls(np.zeros(0, np.int64), np.zeros(0), np.zeros(0))
        table = np.array(rows, dtype=np.float64)
        return cls(table[:, 0].astype(np.int64), table[:, 1], table[:, 2])
