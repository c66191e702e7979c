"""Arithmetic on half-open time spans ``(start_ms, end_ms)``, kept sorted and disjoint."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt

Span = tuple[int, int]


def merge(spans: Iterable[Span]) -> list[Span]:
    """Sorted, disjoint spans covering the same time; empty spans dropped."""
    out: list[Span] = []
    for start, end in sorted(s for s in spans if s[1] > s[0]):
        if out and start <= out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def subtract(spans: Sequence[Span], holes: Iterable[Span]) -> list[Span]:
    """``spans`` (merged) without the time in ``holes``."""
    out = list(spans)
    for h_start, h_end in merge(holes):
        nxt: list[Span] = []
        for start, end in out:
            if h_end <= start or end <= h_start:
                nxt.append((start, end))
                continue
            if start < h_start:
                nxt.append((start, h_start))
            if h_end < end:
                nxt.append((h_end, end))
        out = nxt
    return out


def clip(spans: Sequence[Span], start: int, end: int) -> list[Span]:
    return [(max(s, start), min(e, end)) for s, e in spans if e > start and s < end]


def total(spans: Iterable[Span]) -> int:
    return sum(e - s for s, e in spans)


class Cover:
    """Merged spans with fast overlap and membership queries."""

    def __init__(self, spans: Iterable[Span]) -> None:
        self.spans = merge(spans)
        self._starts = [s for s, _ in self.spans]
        self._ends = [e for _, e in self.spans]
        self._prefix = [0]
        for s, e in self.spans:
            self._prefix.append(self._prefix[-1] + e - s)

    def overlap(self, start: int, end: int) -> int:
        """Milliseconds of ``[start, end)`` that the cover contains."""
        if end <= start or not self.spans:
            return 0
        lo = bisect.bisect_right(self._ends, start)
        hi = bisect.bisect_left(self._starts, end)
        if lo >= hi:
            return 0
        inside = self._prefix[hi] - self._prefix[lo]
        inside -= max(0, start - self._starts[lo])
        inside -= max(0, self._ends[hi - 1] - end)
        return inside

    def contains(self, t: int) -> bool:
        i = bisect.bisect_right(self._starts, t) - 1
        return i >= 0 and t < self._ends[i]

    @property
    def length(self) -> int:
        return self._prefix[-1]

    def contains_all(self, times: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        """``contains`` for many instants at once."""
        if not self.spans or not len(times):
            return np.zeros(len(times), dtype=bool)
        starts = np.asarray(self._starts, dtype=np.int64)
        ends = np.asarray(self._ends, dtype=np.int64)
        i = np.searchsorted(starts, times, side="right") - 1
        inside: npt.NDArray[np.bool_] = (i >= 0) & (times < ends[np.clip(i, 0, None)])
        return inside
