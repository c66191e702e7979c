"""The rule engine: ``evaluate(rule, state, sample) -> (state, events)``.

Pure: no I/O and no clock; time comes from the sample (or a ``Tick`` when time passes with no
sample, for stale signals and durations). The edge agent and the server run the same code, and
an alarm's id depends only on the rule, the machine and the raise time, so the same samples
evaluated on the edge and on the server name the same alarm.

States are named tuples rather than frozen dataclasses: they are just as immutable, and one is
made for every evaluated sample, where a tuple is built several times faster.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, NamedTuple, Union
from zoneinfo import ZoneInfo

from karkhana.alarms.model import (
    SEVERITIES,
    AllOf,
    AnyOf,
    Condition,
    Deviation,
    Leaf,
    Rate,
    Rule,
    Severity,
    Stale,
    StateIs,
    Threshold,
    leaves,
)
from karkhana.core.errors import InvalidPayload
from karkhana.core.model import Sample, Value


class Tick(NamedTuple):
    """Time passing with no sample: lets stale signals and durations fire."""

    ts: int


class LeafState(NamedTuple):
    active: bool = False
    value: Value | None = None
    """What a message shows: the sample, the rate, or seconds without data."""
    ts: int | None = None
    """Time of the signal's newest sample."""
    limit: float | None = None
    a: float = 0.0
    """rate: anchor value; deviation: baseline mean."""
    b: float = 0.0
    """rate: anchor time; deviation: baseline variance."""
    n: int = 0
    """rate: 1 once anchored; deviation: samples learnt."""


class RuleState(NamedTuple):
    leaves: tuple[LeafState, ...]
    first_ms: int
    """When the rule first saw time pass (a signal that never reported is stale from here)."""
    true_since: int | None = None
    raised_ms: int | None = None
    alarm_id: str | None = None
    cause: int = 0
    """Index of the leaf that raised the alarm."""
    seen_ms: int = 0
    """The latest time seen (stale rules only): late samples do not make a signal fresh."""


EventKind = Literal["raised", "cleared"]


@dataclass(frozen=True, slots=True)
class AlarmEvent:
    id: str
    kind: EventKind
    rule_id: str
    machine_id: str
    ts: int
    severity: Severity
    signal: str
    message: str
    """Message kind: above, below, rate, deviation, stale or state."""
    value: Value | None
    limit: float | None
    unit: str | None
    origin: str = "server"


@dataclass(frozen=True, slots=True)
class Source:
    """Where a machine's named signal comes from."""

    device_id: str
    key: str
    unit: str | None = None


Expr = Union[int, tuple[bool, tuple["Expr", ...]]]  # noqa: UP007
"""A leaf index, or (is_all, parts)."""


@dataclass(frozen=True, slots=True)
class BoundRule:
    """A rule bound to one machine: its signals resolved to device keys."""

    rule: Rule
    machine_id: str
    leaves: tuple[Leaf, ...]
    sources: tuple[Source, ...]
    by_key: Mapping[tuple[str, str], tuple[int, ...]]
    expr: Expr
    timed: bool
    stale: tuple[int, ...]
    tz: ZoneInfo | None
    origin: str = "server"
    site_id: str | None = None
    machine_name: str = ""
    template: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return self.rule.id, self.machine_id


def _compile(condition: Condition, counter: list[int]) -> Expr:
    if isinstance(condition, AllOf | AnyOf):
        parts = tuple(_compile(c, counter) for c in condition.conditions)
        return (isinstance(condition, AllOf), parts)
    index = counter[0]
    counter[0] += 1
    return index


def bind(
    rule: Rule,
    machine_id: str,
    signals: Mapping[str, Source],
    *,
    timezone: str = "UTC",
    origin: str = "server",
    site_id: str | None = None,
    machine_name: str = "",
    template: str | None = None,
) -> BoundRule | None:
    """Bind a rule to a machine; None when the machine lacks one of the rule's signals."""
    found = leaves(rule.condition)
    sources = []
    for leaf in found:
        source = signals.get(leaf.signal)
        if source is None:
            return None
        sources.append(source)
    by_key: dict[tuple[str, str], tuple[int, ...]] = {}
    for i, s in enumerate(sources):
        by_key[(s.device_id, s.key)] = (*by_key.get((s.device_id, s.key), ()), i)
    stale = tuple(i for i, leaf in enumerate(found) if isinstance(leaf, Stale))
    return BoundRule(
        rule=rule,
        machine_id=machine_id,
        leaves=tuple(found),
        sources=tuple(sources),
        by_key=by_key,
        expr=_compile(rule.condition, [0]),
        timed=bool(stale) or rule.for_s > 0 or bool(rule.windows),
        stale=stale,
        tz=ZoneInfo(timezone) if rule.windows else None,
        origin=origin,
        site_id=site_id,
        machine_name=machine_name or machine_id,
        template=template,
    )


def alarm_id(rule_id: str, machine_id: str, raised_ms: int) -> str:
    """Stable id of an alarm: the same wherever the rule ran."""
    return hashlib.sha256(f"{rule_id}|{machine_id}|{raised_ms}".encode()).hexdigest()[:24]


def initial_state(rule: BoundRule, ts: int) -> RuleState:
    return RuleState(tuple(LeafState() for _ in rule.leaves), ts)


def _beyond(x: float, op: str, limit: float) -> bool:
    if op == ">":
        return x > limit
    if op == ">=":
        return x >= limit
    if op == "<":
        return x < limit
    return x <= limit


def _number(value: Value) -> float | None:
    if isinstance(value, str):
        return None
    return float(value)


def _update(leaf: Leaf, st: LeafState, ts: int, value: Value) -> LeafState:
    if st.ts is not None and ts < st.ts:
        return st  # older than what this leaf has seen: out of order, ignored
    if isinstance(leaf, Threshold):
        x = _number(value)
        if x is None:
            return st._replace(ts=ts)
        if st.active:
            held = leaf.value - leaf.deadband if leaf.op[0] == ">" else leaf.value + leaf.deadband
            return LeafState(_beyond(x, leaf.op, held), x, ts, leaf.value)
        return LeafState(_beyond(x, leaf.op, leaf.value), x, ts, leaf.value)
    if isinstance(leaf, StateIs):
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        return LeafState(text in leaf.states, text, ts)
    if isinstance(leaf, Stale):
        return st._replace(active=False, value=0.0, ts=ts, limit=float(leaf.after_s))
    x = _number(value)
    if x is None:
        return st._replace(ts=ts)
    if isinstance(leaf, Rate):
        if st.n == 0:
            return LeafState(False, None, ts, leaf.value, x, float(ts), 1)
        dt = ts - st.b
        if dt < leaf.window_s * 1000:
            return st._replace(ts=ts)
        rate = (x - st.a) / dt * 60_000.0
        return LeafState(_beyond(rate, leaf.op, leaf.value), rate, ts, leaf.value, x, float(ts), 1)
    return _deviation(leaf, st, ts, x)


def _deviation(leaf: Deviation, st: LeafState, ts: int, x: float) -> LeafState:
    if st.n == 0:
        return LeafState(False, x, ts, None, x, 0.0, 1)
    mean, var = st.a, st.b
    diff = x - mean
    active, limit = False, None
    if st.n >= leaf.min_samples:
        bound = leaf.max_dev if leaf.max_dev is not None else (leaf.sigma or 0.0) * math.sqrt(var)
        active = abs(diff) > bound
        limit = mean + math.copysign(bound, diff)
    dt = ts - (st.ts or ts)
    alpha = 1.0 - math.exp(-dt / (leaf.window_s * 1000.0)) if dt > 0 else 0.0
    incr = alpha * diff
    return LeafState(
        active, x, ts, limit, mean + incr, (1.0 - alpha) * (var + diff * incr), st.n + 1
    )


def _true(expr: Expr, states: Sequence[LeafState]) -> bool:
    if isinstance(expr, int):
        return states[expr].active
    is_all, parts = expr
    if is_all:
        return all(_true(p, states) for p in parts)
    return any(_true(p, states) for p in parts)


def in_windows(rule: BoundRule, ts: int) -> bool:
    if rule.tz is None:
        return True
    local = datetime.fromtimestamp(ts / 1000, rule.tz)
    minute = local.hour * 60 + local.minute
    weekday = local.weekday()
    return any(w.contains(weekday, minute) for w in rule.rule.windows)


_MESSAGE = {Rate: "rate", Deviation: "deviation", Stale: "stale", StateIs: "state"}


def _event(
    rule: BoundRule, kind: EventKind, aid: str, ts: int, cause: int, st: LeafState
) -> AlarmEvent:
    leaf = rule.leaves[cause]
    value: Value | None = st.value
    limit = st.limit
    unit = rule.sources[cause].unit
    if isinstance(leaf, Threshold):
        message = "above" if leaf.op[0] == ">" else "below"
    else:
        message = _MESSAGE[type(leaf)]
        if isinstance(leaf, StateIs):
            limit, unit = rule.rule.for_s / 60, "min"
        elif isinstance(leaf, Stale):
            unit = "s"
        elif isinstance(leaf, Rate) and unit:
            unit = f"{unit}/min"
    return AlarmEvent(
        aid,
        kind,
        rule.rule.id,
        rule.machine_id,
        ts,
        rule.rule.severity,
        leaf.signal,
        message,
        value,
        limit,
        unit,
        rule.origin,
    )


NO_EVENTS: tuple[AlarmEvent, ...] = ()


def evaluate(
    rule: BoundRule, state: RuleState | None, sample: Sample | Tick
) -> tuple[RuleState, tuple[AlarmEvent, ...]]:
    """The rule's next state and the alarms it raises or clears on this sample (or tick)."""
    ts = sample.ts
    if state is None:
        state = initial_state(rule, ts)
    states = state.leaves
    if not isinstance(sample, Tick):
        hit = rule.by_key.get((sample.device_id, sample.key))
        if hit is None and not rule.timed:
            return state, NO_EVENTS
        if hit is not None:
            changed = list(states)
            for i in hit:
                changed[i] = _update(rule.leaves[i], changed[i], ts, sample.value)
            states = tuple(changed)
    seen = state.seen_ms
    if rule.stale:
        seen = ts if ts > seen else seen
        changed = list(states)
        for i in rule.stale:
            st = changed[i]
            leaf = rule.leaves[i]
            assert isinstance(leaf, Stale)
            age = seen - (st.ts if st.ts is not None else state.first_ms)
            changed[i] = st._replace(
                active=age >= leaf.after_s * 1000, value=age / 1000, limit=float(leaf.after_s)
            )
        states = tuple(changed)
    now_true = _true(rule.expr, states) and (rule.tz is None or in_windows(rule, ts))
    since = (state.true_since if state.true_since is not None else ts) if now_true else None
    raised = state.raised_ms
    if raised is None:
        if now_true and since is not None and ts - since >= rule.rule.for_s * 1000:
            cause = next((i for i, s in enumerate(states) if s.active), 0)
            aid = alarm_id(rule.rule.id, rule.machine_id, ts)
            new = RuleState(states, state.first_ms, since, ts, aid, cause, seen)
            return new, (_event(rule, "raised", aid, ts, cause, states[cause]),)
        return RuleState(states, state.first_ms, since, None, None, 0, seen), NO_EVENTS
    if not now_true:
        aid = state.alarm_id or alarm_id(rule.rule.id, rule.machine_id, raised)
        cleared = _event(rule, "cleared", aid, ts, state.cause, states[state.cause])
        return RuleState(states, state.first_ms, None, None, None, 0, seen), (cleared,)
    return state._replace(leaves=states, true_since=since, seen_ms=seen), NO_EVENTS


class RuleSet:
    """Many bound rules with their states, indexed by device key so that a sample meets only the
    rules that read it."""

    def __init__(self, rules: Iterable[BoundRule] = ()) -> None:
        self.rules: list[BoundRule] = []
        self.states: list[RuleState | None] = []
        self._index: dict[tuple[str, str], list[int]] = {}
        self._timed: list[int] = []
        self.replace(rules)

    def replace(self, rules: Iterable[BoundRule]) -> None:
        """Swap in new rules, keeping the state of every rule (and machine) that is unchanged."""
        kept = {(r.key, r.rule, r.sources): s for r, s in zip(self.rules, self.states, strict=True)}
        self.rules = list(rules)
        self.states = [kept.get((r.key, r.rule, r.sources)) for r in self.rules]
        self._index = {}
        for i, r in enumerate(self.rules):
            for key in r.by_key:
                self._index.setdefault(key, []).append(i)
        self._timed = [i for i, r in enumerate(self.rules) if r.timed]

    def latch(self, rule_id: str, machine_id: str, raised_ms: int, aid: str, now_ms: int) -> None:
        """Start a rule that has no state yet as raised (an alarm still open from before a
        restart or a rule change), so that it clears when its condition is false again instead
        of raising a second alarm."""
        for i, r in enumerate(self.rules):
            if r.key == (rule_id, machine_id) and self.states[i] is None:
                base = self.states[i] or initial_state(r, now_ms)
                leaves_ = tuple(s._replace(active=True) for s in base.leaves)
                self.states[i] = RuleState(leaves_, base.first_ms, raised_ms, raised_ms, aid, 0)

    def open_alarms(self) -> dict[tuple[str, str], str]:
        return {
            r.key: s.alarm_id
            for r, s in zip(self.rules, self.states, strict=True)
            if s is not None and s.alarm_id is not None
        }

    def fresh(self) -> list[int]:
        """Indices of the rules that have no state yet."""
        return [i for i, s in enumerate(self.states) if s is None]

    def feed_some(self, indices: Iterable[int], samples: Sequence[Sample]) -> list[AlarmEvent]:
        """Evaluate ``samples`` (oldest first) against some of the rules only."""
        events: list[AlarmEvent] = []
        for i in indices:
            rule = self.rules[i]
            for sample in samples:
                if (sample.device_id, sample.key) in rule.by_key:
                    self.states[i], found = evaluate(rule, self.states[i], sample)
                    events.extend(found)
        return events

    def unlatch(self, indices: Iterable[int], open_ids: Container[str]) -> list[int]:
        """Forget raised states whose alarm is not open any more; returns those rules."""
        found = []
        for i in indices:
            state = self.states[i]
            if state is not None and state.alarm_id is not None and state.alarm_id not in open_ids:
                self.states[i] = state._replace(raised_ms=None, alarm_id=None, true_since=None)
                found.append(i)
        return found

    def tick_some(self, indices: Iterable[int], now_ms: int) -> list[AlarmEvent]:
        events: list[AlarmEvent] = []
        for i in indices:
            self.states[i], found = evaluate(self.rules[i], self.states[i], Tick(now_ms))
            events.extend(found)
        return events

    def feed(self, samples: Iterable[Sample]) -> list[AlarmEvent]:
        events: list[AlarmEvent] = []
        index, rules, states = self._index, self.rules, self.states
        for sample in samples:
            hits = index.get((sample[0], sample[1]))
            if hits is None:
                continue
            for i in hits:
                state, found = evaluate(rules[i], states[i], sample)
                states[i] = state
                if found:
                    events.extend(found)
        return events

    def tick(self, now_ms: int) -> list[AlarmEvent]:
        events: list[AlarmEvent] = []
        tick = Tick(now_ms)
        for i in self._timed:
            state, found = evaluate(self.rules[i], self.states[i], tick)
            self.states[i] = state
            events.extend(found)
        return events


def event_to_json(event: AlarmEvent) -> dict[str, Any]:
    """An event as JSON, e.g. for an edge agent to send to the server."""
    return {
        "id": event.id,
        "kind": event.kind,
        "rule_id": event.rule_id,
        "machine_id": event.machine_id,
        "ts": event.ts,
        "severity": event.severity,
        "signal": event.signal,
        "message": event.message,
        "value": event.value,
        "limit": event.limit,
        "unit": event.unit,
        "origin": event.origin,
    }


def event_from_json(data: object) -> AlarmEvent:
    """An event from its JSON form; InvalidPayload names the field at fault."""
    if not isinstance(data, Mapping):
        raise InvalidPayload("event: a JSON object is required")

    def text(key: str, optional: bool = False) -> str | None:
        value = data.get(key)
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value or len(value) > 200:
            raise InvalidPayload(f"event.{key}: a string is required")
        return value

    kind = data.get("kind")
    if kind not in ("raised", "cleared"):
        raise InvalidPayload("event.kind: raised or cleared")
    severity = data.get("severity")
    if severity not in SEVERITIES:
        raise InvalidPayload(f"event.severity: one of {', '.join(SEVERITIES)}")
    ts = data.get("ts")
    if isinstance(ts, bool) or not isinstance(ts, int) or ts < 0:
        raise InvalidPayload("event.ts: epoch milliseconds")
    value = data.get("value")
    if value is not None and not isinstance(value, bool | int | float | str):
        raise InvalidPayload("event.value: a number, boolean or string")
    if isinstance(value, int | float) and not isinstance(value, bool) and not abs(value) <= 1e300:
        raise InvalidPayload("event.value: must be finite")
    limit = data.get("limit")
    if limit is not None and (
        isinstance(limit, bool) or not isinstance(limit, int | float) or not abs(limit) <= 1e300
    ):
        raise InvalidPayload("event.limit: a finite number")
    return AlarmEvent(
        id=str(text("id")),
        kind=kind,
        rule_id=str(text("rule_id")),
        machine_id=str(text("machine_id")),
        ts=ts,
        severity=severity,
        signal=str(text("signal")),
        message=str(text("message")),
        value=float(value) if isinstance(value, int) and not isinstance(value, bool) else value,
        limit=None if limit is None else float(limit),
        unit=text("unit", optional=True),
        origin=str(text("origin")),
    )
