"""Hourly condition cycles of a machine, and run-to-failure lives made of them (pure).

A remaining-life model works on cycles; for a machine on the floor a cycle is one hour of the
clock. The cycle's value of each signal is its mean over the rows in which the machine was
running (a stopped loom's vibration says nothing about its bearing); an hour without running
rows has no cycle, and a life built from cycles holds NaN for it, so remaining life counts clock
hours whatever the shift plan or the power cuts did.

Machines of one template differ (one loom runs faster and shakes more than another), so every
signal is also given relative to the machine's own normal: its median over the first
``BASELINE_CYCLES`` cycles of the life (a machine is healthy after a repair or when it is first
watched). The model sees both, the raw and the relative value.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from karkhana.assets.template import Condition, MachineTemplate
from karkhana.core.model import Value

Array = NDArray[np.float64]
HOUR_MS = 3_600_000
CYCLE_MS = HOUR_MS
BASELINE_CYCLES = 24
"""A machine's normal is the median of its first day of hourly cycles (with running data)."""


def _holds(cond: Condition, value: Value | None) -> bool:
    if value is None:
        return False
    want = cond.value
    if cond.op == "==":
        return value == want
    if cond.op == "!=":
        return value != want
    if isinstance(value, str) or isinstance(want, str):
        return False
    a, b = float(value), float(want)
    return {">": a > b, ">=": a >= b, "<": a < b, "<=": a <= b}[cond.op]


def operating_state(template: MachineTemplate, values: Mapping[str, Value | None]) -> str | None:
    """The first state rule of the template that holds (None: unknown)."""
    for rule in template.state_rules:
        if all(_holds(c, values.get(c.signal)) for c in rule.when):
            return rule.state
    return None


def template_features(template: MachineTemplate) -> tuple[str, ...]:
    """The numeric signals of a template (not counters, flags or text): what a cycle averages."""
    return tuple(s.key for s in template.signals if s.kind == "number")


@dataclass(frozen=True, slots=True)
class Cycle:
    """The running-time means of one machine's signals over one clock hour."""

    start_ms: int
    means: Mapping[str, float]
    rows: int
    """Running rows averaged."""


class CycleBuilder:
    """Accumulates aligned rows into hourly cycles; a cycle is complete when a row of a later
    hour arrives (rows come in time order)."""

    def __init__(self, signals: Sequence[str], cycle_ms: int = CYCLE_MS) -> None:
        self.signals = tuple(signals)
        self.cycle_ms = cycle_ms
        self.start_ms: int | None = None
        self._sums = dict.fromkeys(self.signals, 0.0)
        self._counts = dict.fromkeys(self.signals, 0)
        self._rows = 0

    def add(self, ts: int, row: Mapping[str, float | None], running: bool) -> Cycle | None:
        """Take one row; returns the previous hour's cycle when this row begins a new hour."""
        start = ts - ts % self.cycle_ms
        done = None
        if self.start_ms is not None and start > self.start_ms:
            done = self._close()
        if self.start_ms is None or start > self.start_ms:
            self.start_ms = start
        if running:
            self._rows += 1
            for k in self.signals:
                v = row.get(k)
                if v is not None and math.isfinite(v):
                    self._sums[k] += v
                    self._counts[k] += 1
        return done

    def _close(self) -> Cycle | None:
        assert self.start_ms is not None
        means = {k: self._sums[k] / n for k, n in self._counts.items() if n > 0}
        cycle = Cycle(self.start_ms, means, self._rows) if means else None
        self._sums = dict.fromkeys(self.signals, 0.0)
        self._counts = dict.fromkeys(self.signals, 0)
        self._rows = 0
        return cycle


def cycles_of(
    template: MachineTemplate,
    rows: Iterable[tuple[int, Mapping[str, Value | None]]],
    signals: Sequence[str],
    cycle_ms: int = CYCLE_MS,
) -> list[Cycle]:
    """Complete cycles of rows in time order (the last, unfinished hour is left out)."""
    builder = CycleBuilder(signals, cycle_ms)
    out = []
    for ts, values in rows:
        running = operating_state(template, values) == "running"
        numbers = {k: _number(values.get(k)) for k in signals}
        cycle = builder.add(ts, numbers, running)
        if cycle is not None:
            out.append(cycle)
    return out


def _number(value: Value | None) -> float | None:
    if value is None or isinstance(value, str):
        return None
    return float(value)


def matrix(
    cycles: Sequence[Cycle], signals: Sequence[str], start_ms: int, end_ms: int, cycle_ms: int
) -> Array:
    """Hours [start_ms, end_ms) x signals, NaN where an hour had no running data."""
    n = max(0, -(-(end_ms - start_ms) // cycle_ms))
    out = np.full((n, len(signals)), np.nan)
    for c in cycles:
        i = (c.start_ms - start_ms) // cycle_ms
        if 0 <= i < n:
            out[i] = [c.means.get(k, np.nan) for k in signals]
    return out


def with_relative(x: Array, baseline_cycles: int = BASELINE_CYCLES) -> Array:
    """``x`` beside ``x`` minus each column's median over its first ``baseline_cycles``
    values (the machine's own normal); a column with no value yet stays NaN."""
    rel = np.full_like(x, np.nan)
    for j in range(x.shape[1]):
        col = x[:, j]
        seen = np.flatnonzero(~np.isnan(col))
        if seen.size == 0:
            continue
        base = float(np.median(col[seen[:baseline_cycles]]))
        rel[:, j] = col - base
    return np.hstack([x, rel])


def relative_names(signals: Sequence[str]) -> list[str]:
    return [*signals, *(f"{s}:relative" for s in signals)]


@dataclass(frozen=True, slots=True)
class Life:
    """One machine's life between two repairs: [start_ms, end_ms); ``failed`` when it ended in
    a failure (a training life), not when it is the machine's current life."""

    machine_id: str
    start_ms: int
    end_ms: int
    failed: bool


def lives(
    machine_id: str,
    first_ms: int,
    now_ms: int,
    failures: Sequence[tuple[int, int | None]],
    cycle_ms: int = CYCLE_MS,
) -> list[Life]:
    """Split a machine's history at its failures.

    ``failures`` are (failure time, back in service time or None) in any order; the life
    after the last repair, up to ``now_ms``, comes last with ``failed`` False (absent when the
    machine is still down). Times are aligned to cycles.
    """

    def floor(t: int) -> int:
        return t - t % cycle_ms

    out: list[Life] = []
    start = floor(first_ms)
    for failed_ms, back_ms in sorted(failures):
        end = floor(failed_ms)
        if end > start:
            out.append(Life(machine_id, start, end, True))
        if back_ms is None:
            return out
        start = max(start, floor(back_ms) + cycle_ms)
    if floor(now_ms) > start:
        out.append(Life(machine_id, start, floor(now_ms), False))
    return out
