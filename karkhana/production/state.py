"""Machine state from signals: a template's rules applied to a time-ordered stream of samples.

Rules are tried in order and the first whose conditions all hold names the state; signals seen
but matching no rule mean ``stopped``. A machine silent for longer than the timeout is in
``no_data`` from its last sample until it reports again. Planned stops come from the shift
calendar and are laid over the stored intervals when they are read (``overlay_plan``), so a
changed calendar applies to the past as well.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from itertools import groupby, pairwise

from karkhana.assets.template import Condition, MachineState, StateRule
from karkhana.core.model import Value
from karkhana.production.model import Interval
from karkhana.production.spans import Cover, Span

UNMATCHED: MachineState = "stopped"


def holds(cond: Condition, value: Value | None) -> bool:
    """Whether ``value`` (None: never seen) satisfies the condition.

    Booleans come back from the store as 1.0 and 0.0, so they compare by truth.
    """
    if value is None:
        return False
    want = cond.value
    have: Value = value
    if isinstance(want, bool):
        have = have.strip().lower() in ("true", "1", "on") if isinstance(have, str) else bool(have)
    elif isinstance(want, str):
        if not isinstance(have, str):
            return False
    elif isinstance(have, str):
        return False
    op = cond.op
    if op == "==":
        return have == want
    if op == "!=":
        return have != want
    assert not isinstance(have, str) and not isinstance(want, str)
    a, b = float(have), float(want)
    if op == ">":
        return a > b
    if op == ">=":
        return a >= b
    if op == "<":
        return a < b
    return a <= b


def classify(rules: Sequence[StateRule], values: Mapping[str, Value]) -> MachineState:
    for rule in rules:
        if all(holds(c, values.get(c.signal)) for c in rule.when):
            return rule.state
    return UNMATCHED


def rule_signals(rules: Sequence[StateRule]) -> frozenset[str]:
    return frozenset(c.signal for rule in rules for c in rule.when)


class StateTracker:
    """Turns samples, fed in time order, into closed intervals; keeps the open one.

    A change is committed when a later sample arrives, so that several messages stamped with the
    same instant settle into one state instead of leaving zero-length intervals behind.
    """

    def __init__(
        self,
        rules: Sequence[StateRule],
        timeout_ms: int,
        values: Mapping[str, Value] | None = None,
    ) -> None:
        self.rules = tuple(rules)
        self.timeout_ms = timeout_ms
        self.values: dict[str, Value] = dict(values or {})
        self.state: MachineState | None = None
        self.since_ms = 0
        self.last_seen: int | None = None
        self._prev: tuple[MachineState, int] | None = None
        """The state before the latest change and when it began (not yet emitted)."""

    def _settle(self, ts: int, out: list[Interval]) -> None:
        if self._prev is not None and ts > self.since_ms:
            state, start = self._prev
            out.append(Interval(start, self.since_ms, state))
            self._prev = None

    def _change(self, ts: int, state: MachineState, out: list[Interval]) -> None:
        ts = max(ts, self.since_ms)
        if self.state is None:
            self.state, self.since_ms = state, ts
            return
        if state == self.state:
            return
        self._settle(ts, out)
        if ts == self.since_ms and self._prev is not None:
            prev_state, prev_start = self._prev
            if prev_state == state:  # changed and changed back at the same instant
                self.state, self.since_ms, self._prev = state, prev_start, None
                return
            self.state = state
            return
        if ts == self.since_ms:  # the first state, replaced at the instant it began
            self.state = state
            return
        self._prev = (self.state, self.since_ms)
        self.state, self.since_ms = state, ts

    def feed(self, ts: int, values: Mapping[str, Value]) -> list[Interval]:
        """Samples of one instant; returns the intervals this closed. Older samples are ignored."""
        out: list[Interval] = []
        if self.last_seen is not None and ts < self.last_seen:
            return out
        if self.last_seen is not None and ts - self.last_seen > self.timeout_ms:
            # before settling: a state that lasted no time gives way to no_data, which then
            # joins a no_data interval just before it
            self._change(self.last_seen, "no_data", out)
        self._settle(ts, out)
        self.values.update(values)
        self.last_seen = ts
        self._change(ts, classify(self.rules, self.values), out)
        return out

    def silence(self, now_ms: int) -> list[Interval]:
        """Move to ``no_data`` (from the last sample) once the machine has been silent too long."""
        out: list[Interval] = []
        if self.last_seen is None or now_ms - self.last_seen <= self.timeout_ms:
            return out
        self._change(self.last_seen, "no_data", out)
        self._settle(now_ms, out)
        return out

    def flush(self) -> list[Interval]:
        """Emit a pending change now (when no later sample will come, as at the end of a range)."""
        out: list[Interval] = []
        if self._prev is not None:
            state, start = self._prev
            out.append(Interval(start, self.since_ms, state))
            self._prev = None
        return out


def derive(
    rules: Sequence[StateRule],
    samples: Iterable[tuple[int, str, Value]],
    timeout_ms: int,
    end_ms: int,
    values: Mapping[str, Value] | None = None,
) -> list[Interval]:
    """Intervals from samples ``(ts, signal, value)`` sorted by time, up to ``end_ms``.

    ``values`` are the signals' values before the first sample (none: the first interval begins
    at the first sample).
    """
    tracker = StateTracker(rules, timeout_ms, values)
    out: list[Interval] = []
    for ts, group in groupby(samples, key=lambda s: s[0]):
        if ts >= end_ms:
            break
        out += tracker.feed(ts, {signal: value for _, signal, value in group})
    out += tracker.silence(end_ms)
    out += tracker.flush()
    if tracker.state is not None and tracker.since_ms < end_ms:
        out.append(Interval(tracker.since_ms, end_ms, tracker.state))
    return out


def overlay_plan(intervals: Sequence[Interval], planned: Sequence[Span]) -> list[Interval]:
    """Time outside planned production becomes ``planned_stop`` unless the machine ran."""
    cover = Cover(planned)
    out: list[Interval] = []
    for iv in intervals:
        if iv.state == "running":
            out.append(iv)
            continue
        cuts = sorted(
            {iv.start_ms, iv.end_ms}
            | {t for s in cover.spans for t in s if iv.start_ms < t < iv.end_ms}
        )
        for a, b in pairwise(cuts):
            state: MachineState = iv.state if cover.contains(a) else "planned_stop"
            piece = Interval(a, b, state, iv.reason_id if state != "planned_stop" else None)
            if out and out[-1].state == state == "planned_stop" and out[-1].end_ms == a:
                out[-1] = Interval(out[-1].start_ms, b, state)
            else:
                out.append(piece)
    return out
