"""Machine templates: what a kind of machine reports and how its state is read, kept as data.

A template is a TOML file (one per machine kind) so that factories can describe their own machines
without writing code. Loading validates everything a later consumer relies on, and names the file
and field at fault, because templates are edited by hand.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast, get_args

from karkhana.core.datafile import FieldReader, load_all, read_toml
from karkhana.core.model import Value, is_valid_key

SignalKind = Literal["number", "bool", "string", "counter"]
MachineState = Literal["running", "idle", "stopped", "fault", "planned_stop", "no_data"]
Operator = Literal[">", ">=", "<", "<=", "==", "!="]

SIGNAL_KINDS: tuple[str, ...] = get_args(SignalKind)
MACHINE_STATES: tuple[str, ...] = get_args(MachineState)
OPERATORS: tuple[str, ...] = get_args(Operator)

BUILTIN_DIR = Path(__file__).resolve().parent / "templates"
"""Templates shipped with karkhana."""

_TOP_FIELDS = {
    "id",
    "name",
    "category",
    "description",
    "ideal_cycle_time_s",
    "count_key",
    "warm_up_min",
    "signals",
    "state_rules",
}
MAX_WARM_UP_MIN = 240.0
"""Condition monitoring waits at most 4 hours after a stop in any case."""
_SIGNAL_FIELDS = {"key", "name", "unit", "kind", "description", "min", "max", "values"}
_RULE_FIELDS = {"state", "when"}
_CONDITION_FIELDS = {"signal", "op", "value"}


@dataclass(frozen=True, slots=True)
class SignalSpec:
    """One signal a machine reports; ``min``/``max`` are the expected range, not hard limits."""

    key: str
    name: str
    unit: str | None
    kind: SignalKind
    description: str = ""
    min: float | None = None
    max: float | None = None
    values: tuple[str, ...] = ()
    """The values a string signal takes (empty: free text)."""


@dataclass(frozen=True, slots=True)
class Condition:
    """``<signal> <op> <value>``, evaluated later against the latest value of the signal."""

    signal: str
    op: Operator
    value: Value


@dataclass(frozen=True, slots=True)
class StateRule:
    """The machine is in ``state`` when every condition holds; rules are tried in order."""

    state: MachineState
    when: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class MachineTemplate:
    id: str
    name: str
    category: str
    description: str
    signals: tuple[SignalSpec, ...]
    ideal_cycle_time_s: float | None
    state_rules: tuple[StateRule, ...]
    count_key: str | None = None
    """The counter that counts good output (parts, picks, strokes), for OEE."""
    warm_up_min: float | None = None
    """Minutes the machine needs after a long stop to be back at its running temperatures (a
    barrel's or a mould's heating time); condition monitoring does not judge it sooner after a
    stop at least as long. None: up to 20 minutes, or until its signals are steady."""

    def signal(self, key: str) -> SignalSpec:
        for spec in self.signals:
            if spec.key == key:
                return spec
        raise KeyError(key)

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(spec.key for spec in self.signals)


def load_template(path: Path) -> MachineTemplate:
    """One template from a TOML file; raises ConfigError naming the file and field at fault."""
    return _Parser(path).template(read_toml(path, "template"))


def load_templates(directory: Path | None = None) -> dict[str, MachineTemplate]:
    """The shipped templates, plus those in ``directory`` (which replace shipped ones by id)."""
    return load_all(BUILTIN_DIR, directory, load_template, lambda t: t.id, "template")


class _Parser(FieldReader):
    def template(self, doc: Mapping[str, Any]) -> MachineTemplate:
        self.no_unknown(doc, _TOP_FIELDS, "")
        template_id = self.file_id(doc)
        raw_signals = doc.get("signals")
        if not isinstance(raw_signals, list) or not raw_signals:
            raise self.fail("signals", "missing; a template needs at least one [[signals]] table")
        signals = tuple(self.signal(item, f"signals[{i}]") for i, item in enumerate(raw_signals))
        by_key: dict[str, SignalSpec] = {}
        for i, spec in enumerate(signals):
            if spec.key in by_key:
                raise self.fail(f"signals[{i}].key", f"duplicate key {spec.key!r}")
            by_key[spec.key] = spec
        raw_rules = doc.get("state_rules", [])
        if not isinstance(raw_rules, list):
            raise self.fail("state_rules", "expected an array of [[state_rules]] tables")
        rules = tuple(
            self.rule(item, f"state_rules[{i}]", by_key) for i, item in enumerate(raw_rules)
        )
        count_key = self.optional_text(doc, "count_key", "count_key")
        if count_key is not None:
            counter = by_key.get(count_key)
            if counter is None or counter.kind != "counter":
                raise self.fail(
                    "count_key", f"{count_key!r} is not a counter signal of this template"
                )
        return MachineTemplate(
            id=template_id,
            name=self.text(doc, "name", "name"),
            category=self.text(doc, "category", "category"),
            description=self.optional_text(doc, "description", "description") or "",
            signals=signals,
            ideal_cycle_time_s=self.positive(doc, "ideal_cycle_time_s"),
            state_rules=rules,
            count_key=count_key,
            warm_up_min=self.warm_up(doc),
        )

    def signal(self, item: object, where: str) -> SignalSpec:
        if not isinstance(item, dict):
            raise self.fail(where, "expected a table")
        self.no_unknown(item, _SIGNAL_FIELDS, where)
        key = self.text(item, "key", f"{where}.key")
        if not is_valid_key(key):
            raise self.fail(f"{where}.key", f"{key!r} is not a valid signal key")
        kind = self.text(item, "kind", f"{where}.kind")
        if kind not in SIGNAL_KINDS:
            raise self.fail(
                f"{where}.kind",
                f"unknown kind {kind!r} (expected one of {', '.join(SIGNAL_KINDS)})",
            )
        low = self.number(item, "min", f"{where}.min")
        high = self.number(item, "max", f"{where}.max")
        if low is not None and high is not None and low > high:
            raise self.fail(f"{where}.min", f"min {low} is above max {high}")
        values = item.get("values", [])
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise self.fail(f"{where}.values", "expected a list of strings")
        if values and kind != "string":
            raise self.fail(f"{where}.values", "only string signals list their values")
        return SignalSpec(
            key=key,
            name=self.text(item, "name", f"{where}.name"),
            unit=self.optional_text(item, "unit", f"{where}.unit"),
            kind=cast(SignalKind, kind),
            description=self.optional_text(item, "description", f"{where}.description") or "",
            min=low,
            max=high,
            values=tuple(values),
        )

    def rule(self, item: object, where: str, signals: Mapping[str, SignalSpec]) -> StateRule:
        if not isinstance(item, dict):
            raise self.fail(where, "expected a table")
        self.no_unknown(item, _RULE_FIELDS, where)
        state = self.text(item, "state", f"{where}.state")
        if state not in MACHINE_STATES:
            raise self.fail(
                f"{where}.state",
                f"unknown state {state!r} (expected one of {', '.join(MACHINE_STATES)})",
            )
        raw = item.get("when")
        if isinstance(raw, dict):
            raw = [raw]
        if not isinstance(raw, list) or not raw:
            raise self.fail(
                f"{where}.when", "missing; expected a condition table or a list of them"
            )
        conditions = tuple(
            self.condition(c, f"{where}.when[{i}]", signals) for i, c in enumerate(raw)
        )
        return StateRule(state=cast(MachineState, state), when=conditions)

    def condition(self, item: object, where: str, signals: Mapping[str, SignalSpec]) -> Condition:
        if not isinstance(item, dict):
            raise self.fail(where, 'expected a table such as {signal = "x", op = ">", value = 1}')
        self.no_unknown(item, _CONDITION_FIELDS, where)
        key = self.text(item, "signal", f"{where}.signal")
        spec = signals.get(key)
        if spec is None:
            raise self.fail(f"{where}.signal", f"{key!r} is not a signal of this template")
        op = self.text(item, "op", f"{where}.op")
        if op not in OPERATORS:
            raise self.fail(
                f"{where}.op", f"unknown operator {op!r} (expected {' '.join(OPERATORS)})"
            )
        if "value" not in item:
            raise self.fail(f"{where}.value", "missing")
        value = item["value"]
        if spec.kind in ("number", "counter"):
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        elif spec.kind == "bool":
            ok = isinstance(value, bool) and op in ("==", "!=")
        else:
            ok = isinstance(value, str) and op in ("==", "!=")
            if ok and spec.values and value not in spec.values:
                raise self.fail(
                    f"{where}.value", f"{value!r} is not one of {key}'s values {list(spec.values)}"
                )
        if not ok:
            raise self.fail(
                f"{where}.value", f"{op} {value!r} does not fit {spec.kind} signal {key!r}"
            )
        return Condition(signal=key, op=cast(Operator, op), value=cast(Value, value))

    def warm_up(self, doc: Mapping[str, Any]) -> float | None:
        value = self.positive(doc, "warm_up_min")
        if value is not None and value > MAX_WARM_UP_MIN:
            raise self.fail("warm_up_min", f"at most {MAX_WARM_UP_MIN:g} minutes")
        return value

    def positive(self, item: Mapping[str, Any], name: str) -> float | None:
        value = self.number(item, name, name)
        if value is not None and value <= 0:
            raise self.fail(name, "must be positive")
        return value
