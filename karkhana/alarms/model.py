"""Alarm rules as data: conditions, time windows, severity and who is told.

Pure and free of server imports, so that the edge agent can load and evaluate the same rules.
``parse_rule`` checks a rule's JSON field by field and names the field at fault; ``rule_to_json``
writes it back in the same form.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from karkhana.core.errors import InvalidPayload

Severity = Literal["info", "warning", "critical"]
Op = Literal[">", ">=", "<", "<="]
SEVERITIES: tuple[str, ...] = get_args(Severity)
OPS: tuple[str, ...] = get_args(Op)
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ROLES = ("admin", "manager", "engineer", "operator", "viewer")
NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:/-]{0,127}$")
ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_NUMBER = 1e15
"""Limits and values beyond this are mistakes (and huge JSON integers overflow a float)."""
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


@dataclass(frozen=True, slots=True)
class Threshold:
    """Above (or below) a limit; clears only once back past the limit by ``deadband``."""

    signal: str
    op: Op
    value: float
    deadband: float = 0.0


@dataclass(frozen=True, slots=True)
class Rate:
    """Change per minute, measured between samples at least ``window_s`` apart."""

    signal: str
    op: Op
    value: float
    window_s: int = 60


@dataclass(frozen=True, slots=True)
class Deviation:
    """Away from a rolling baseline (exponential mean with time constant ``window_s``) by more
    than ``max_dev`` units or ``sigma`` standard deviations."""

    signal: str
    window_s: int
    max_dev: float | None = None
    sigma: float | None = None
    min_samples: int = 10


@dataclass(frozen=True, slots=True)
class Stale:
    """No sample of the signal for ``after_s`` seconds."""

    signal: str
    after_s: int


@dataclass(frozen=True, slots=True)
class StateIs:
    """A string (or boolean) signal has one of ``states``, e.g. the machine's ``state`` is fault."""

    states: tuple[str, ...]
    signal: str = "state"


@dataclass(frozen=True, slots=True)
class AllOf:
    conditions: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    conditions: tuple[Condition, ...]


Leaf = Threshold | Rate | Deviation | Stale | StateIs
Condition = Leaf | AllOf | AnyOf


@dataclass(frozen=True, slots=True)
class Window:
    """When a rule is active, in the site's local time; ``end`` before ``start`` crosses
    midnight."""

    days: frozenset[int]
    start_min: int
    end_min: int

    def contains(self, weekday: int, minute: int) -> bool:
        if self.start_min <= self.end_min:
            return weekday in self.days and self.start_min <= minute < self.end_min
        if minute >= self.start_min:
            return weekday in self.days
        return (weekday - 1) % 7 in self.days and minute < self.end_min


@dataclass(frozen=True, slots=True)
class Escalation:
    after_min: int
    roles: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Notify:
    """Roles told when the alarm is raised, then the next roles while nobody acknowledges."""

    roles: tuple[str, ...] = ("operator",)
    escalate: tuple[Escalation, ...] = ()
    on_clear: bool = False
    """Also tell everyone who was told when the alarm clears."""


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    name: str
    severity: Severity
    condition: Condition
    machine_id: str | None = None
    template: str | None = None
    site_id: str | None = None
    """For a template rule: only machines of this site (None: every site)."""
    for_s: int = 0
    windows: tuple[Window, ...] = ()
    enabled: bool = True
    notify: Notify = field(default_factory=Notify)
    repeat_window_s: int = 600
    """A re-raise this soon after clearing reopens the same alarm and counts a repeat."""


def leaves(condition: Condition) -> list[Leaf]:
    """The leaf conditions in a fixed (depth-first) order."""
    if isinstance(condition, AllOf | AnyOf):
        return [leaf for c in condition.conditions for leaf in leaves(c)]
    return [condition]


# -- parsing -----------------------------------------------------------------------------


def _fail(where: str, message: str) -> InvalidPayload:
    return InvalidPayload(f"{where}: {message}")


def _number(data: Mapping[str, Any], key: str, where: str, default: float | None = None) -> float:
    value = data.get(key, default)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not abs(value) <= MAX_NUMBER
    ):
        raise _fail(f"{where}.{key}", f"a finite number of at most {MAX_NUMBER:g} is required")
    return float(value)


def _int(
    data: Mapping[str, Any], key: str, where: str, default: int | None = None, low: int = 0
) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 10**9:
        raise _fail(f"{where}.{key}", f"a whole number from {low} is required")
    return value


def _str(data: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = data.get(key, default)
    if not isinstance(value, str) or not value.strip():
        raise _fail(f"{where}.{key}", "a non-empty string is required")
    return value


def _known(data: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise _fail(where, f"unknown field {unknown[0]!r}")


def _signal(data: Mapping[str, Any], where: str, default: str | None = None) -> str:
    name = _str(data, "signal", where, default)
    if not NAME.fullmatch(name):
        raise _fail(f"{where}.signal", "letters, digits and _.:/- only")
    return name


def _op(data: Mapping[str, Any], where: str) -> Op:
    op = data.get("op")
    if op not in OPS:
        raise _fail(f"{where}.op", f"one of {', '.join(OPS)}")
    return op  # type: ignore[no-any-return]


def parse_condition(data: object, where: str = "condition", depth: int = 0) -> Condition:
    if not isinstance(data, Mapping):
        raise _fail(where, "an object is required")
    if depth > 4:
        raise _fail(where, "conditions nest at most 4 deep")
    kind = data.get("type")
    if kind == "threshold":
        _known(data, {"type", "signal", "op", "value", "deadband"}, where)
        deadband = _number(data, "deadband", where, 0.0)
        if deadband < 0:
            raise _fail(f"{where}.deadband", "must not be negative")
        return Threshold(
            _signal(data, where), _op(data, where), _number(data, "value", where), deadband
        )
    if kind == "rate":
        _known(data, {"type", "signal", "op", "value", "window_s"}, where)
        return Rate(
            _signal(data, where),
            _op(data, where),
            _number(data, "value", where),
            _int(data, "window_s", where, 60, low=1),
        )
    if kind == "deviation":
        _known(data, {"type", "signal", "window_s", "max_dev", "sigma", "min_samples"}, where)
        max_dev = None if data.get("max_dev") is None else _number(data, "max_dev", where)
        sigma = None if data.get("sigma") is None else _number(data, "sigma", where)
        if (max_dev is None) == (sigma is None):
            raise _fail(where, "give exactly one of max_dev and sigma")
        if (max_dev is not None and max_dev <= 0) or (sigma is not None and sigma <= 0):
            raise _fail(where, "max_dev or sigma must be positive")
        return Deviation(
            _signal(data, where),
            _int(data, "window_s", where, low=1),
            max_dev,
            sigma,
            _int(data, "min_samples", where, 10, low=1),
        )
    if kind == "stale":
        _known(data, {"type", "signal", "after_s"}, where)
        return Stale(_signal(data, where), _int(data, "after_s", where, low=1))
    if kind == "state":
        _known(data, {"type", "signal", "in"}, where)
        states = data.get("in")
        if (
            not isinstance(states, list)
            or not states
            or not all(isinstance(s, str) and s for s in states)
        ):
            raise _fail(f"{where}.in", "a non-empty list of state names is required")
        return StateIs(tuple(states), _signal(data, where, "state"))
    if kind in ("all", "any"):
        _known(data, {"type", "conditions"}, where)
        items = data.get("conditions")
        if not isinstance(items, list) or not 1 <= len(items) <= 16:
            raise _fail(f"{where}.conditions", "a list of 1 to 16 conditions is required")
        parsed = tuple(
            parse_condition(c, f"{where}.conditions[{i}]", depth + 1) for i, c in enumerate(items)
        )
        return AllOf(parsed) if kind == "all" else AnyOf(parsed)
    raise _fail(f"{where}.type", "one of threshold, rate, deviation, stale, state, all, any")


def _minutes(text: object, where: str) -> int:
    if not isinstance(text, str) or not (m := _HHMM.fullmatch(text)):
        raise _fail(where, "a time of day HH:MM is required")
    return int(m.group(1)) * 60 + int(m.group(2))


def parse_window(data: object, where: str) -> Window:
    if not isinstance(data, Mapping):
        raise _fail(where, "an object is required")
    _known(data, {"days", "start", "end"}, where)
    days = data.get("days", list(DAYS))
    if not isinstance(days, list) or not days or any(d not in DAYS for d in days):
        raise _fail(f"{where}.days", f"a list of {', '.join(DAYS)}")
    start = _minutes(data.get("start"), f"{where}.start")
    end = _minutes(data.get("end"), f"{where}.end")
    if start == end:
        raise _fail(where, "start and end must differ")
    return Window(frozenset(DAYS.index(d) for d in days), start, end)


def _roles(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or any(r not in ROLES for r in value):
        raise _fail(where, f"a non-empty list of roles ({', '.join(ROLES)})")
    return tuple(value)


def parse_notify(data: object, where: str = "notify") -> Notify:
    if not isinstance(data, Mapping):
        raise _fail(where, "an object is required")
    _known(data, {"roles", "escalate", "on_clear"}, where)
    on_clear = data.get("on_clear", False)
    if not isinstance(on_clear, bool):
        raise _fail(f"{where}.on_clear", "true or false")
    roles = _roles(data.get("roles", ["operator"]), f"{where}.roles")
    steps = data.get("escalate", [])
    if not isinstance(steps, list) or len(steps) > 8:
        raise _fail(f"{where}.escalate", "a list of at most 8 steps")
    escalate = []
    last = 0
    for i, step in enumerate(steps):
        at = f"{where}.escalate[{i}]"
        if not isinstance(step, Mapping):
            raise _fail(at, "an object is required")
        _known(step, {"after_min", "roles"}, at)
        after = _int(step, "after_min", at, low=1)
        if after <= last:
            raise _fail(f"{at}.after_min", "steps must come later and later")
        last = after
        escalate.append(Escalation(after, _roles(step.get("roles"), f"{at}.roles")))
    return Notify(roles, tuple(escalate), on_clear)


RULE_FIELDS = {
    "id",
    "name",
    "severity",
    "condition",
    "machine_id",
    "template",
    "site_id",
    "for_s",
    "windows",
    "enabled",
    "notify",
    "repeat_window_s",
}


def parse_rule(data: object, rule_id: str | None = None) -> Rule:
    """A rule from its JSON form; ``rule_id`` (when given) wins over the body's ``id``."""
    if not isinstance(data, Mapping):
        raise _fail("rule", "a JSON object is required")
    _known(data, RULE_FIELDS, "rule")
    rid = rule_id if rule_id is not None else data.get("id")
    if not isinstance(rid, str) or not ID.fullmatch(rid):
        raise _fail("id", "1-64 letters, digits, '_', '.' or '-'")
    name = _str(data, "name", "rule")[:200]
    severity = data.get("severity", "warning")
    if severity not in SEVERITIES:
        raise _fail("severity", f"one of {', '.join(SEVERITIES)}")
    machine_id = data.get("machine_id")
    template = data.get("template")
    if (machine_id is None) == (template is None):
        raise _fail("rule", "give exactly one of machine_id and template")
    for key, value in (("machine_id", machine_id), ("template", template)):
        if value is not None and (not isinstance(value, str) or not ID.fullmatch(value)):
            raise _fail(key, "1-64 letters, digits, '_', '.' or '-'")
    site_id = data.get("site_id")
    if site_id is not None and (not isinstance(site_id, str) or not ID.fullmatch(site_id)):
        raise _fail("site_id", "1-64 letters, digits, '_', '.' or '-'")
    windows = data.get("windows", [])
    if not isinstance(windows, list) or len(windows) > 14:
        raise _fail("windows", "a list of at most 14 windows")
    enabled = data.get("enabled", True)
    if not isinstance(enabled, bool):
        raise _fail("enabled", "true or false")
    return Rule(
        id=rid,
        name=name,
        severity=severity,
        condition=parse_condition(data.get("condition")),
        machine_id=machine_id,
        template=template,
        site_id=site_id,
        for_s=_int(data, "for_s", "rule", 0),
        windows=tuple(parse_window(w, f"windows[{i}]") for i, w in enumerate(windows)),
        enabled=enabled,
        notify=parse_notify(data.get("notify", {})),
        repeat_window_s=_int(data, "repeat_window_s", "rule", 600),
    )


def condition_to_json(c: Condition) -> dict[str, Any]:
    if isinstance(c, Threshold):
        return {
            "type": "threshold",
            "signal": c.signal,
            "op": c.op,
            "value": c.value,
            "deadband": c.deadband,
        }
    if isinstance(c, Rate):
        return {
            "type": "rate",
            "signal": c.signal,
            "op": c.op,
            "value": c.value,
            "window_s": c.window_s,
        }
    if isinstance(c, Deviation):
        out: dict[str, Any] = {"type": "deviation", "signal": c.signal, "window_s": c.window_s}
        out["min_samples"] = c.min_samples
        if c.max_dev is not None:
            out["max_dev"] = c.max_dev
        if c.sigma is not None:
            out["sigma"] = c.sigma
        return out
    if isinstance(c, Stale):
        return {"type": "stale", "signal": c.signal, "after_s": c.after_s}
    if isinstance(c, StateIs):
        return {"type": "state", "signal": c.signal, "in": list(c.states)}
    return {
        "type": "all" if isinstance(c, AllOf) else "any",
        "conditions": [condition_to_json(x) for x in c.conditions],
    }


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def rule_to_json(rule: Rule) -> dict[str, Any]:
    return {
        "id": rule.id,
        "name": rule.name,
        "severity": rule.severity,
        "machine_id": rule.machine_id,
        "template": rule.template,
        "site_id": rule.site_id,
        "condition": condition_to_json(rule.condition),
        "for_s": rule.for_s,
        "windows": [
            {
                "days": [DAYS[d] for d in sorted(w.days)],
                "start": _hhmm(w.start_min),
                "end": _hhmm(w.end_min),
            }
            for w in rule.windows
        ],
        "enabled": rule.enabled,
        "notify": {
            "roles": list(rule.notify.roles),
            "escalate": [
                {"after_min": e.after_min, "roles": list(e.roles)} for e in rule.notify.escalate
            ],
            "on_clear": rule.notify.on_clear,
        },
        "repeat_window_s": rule.repeat_window_s,
    }


def signals_of(rule: Rule) -> Sequence[str]:
    return sorted({leaf.signal for leaf in leaves(rule.condition)})
