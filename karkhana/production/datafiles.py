"""Production data files: shift calendars, downtime reason trees and machine profiles (TOML).

Each mistake names the file and field, as for machine templates.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, cast, get_args

from karkhana.core.datafile import ID, FieldReader, load_all, read_toml
from karkhana.core.errors import ConfigError
from karkhana.production.calendar import WEEKDAYS, BreakSpec, Calendar, ShiftSpec
from karkhana.production.downtime import Label, Reason, ReasonTree
from karkhana.production.model import LossKind

DATA_DIR = Path(__file__).resolve().parent / "data"
_CLOCK = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)$")
LOSS_KINDS: tuple[str, ...] = get_args(LossKind)


@dataclass(frozen=True, slots=True)
class TemplateProfile:
    speed_key: str | None = None
    reject_key: str | None = None
    counter_modulus: float | None = None


@dataclass(frozen=True, slots=True)
class PowerSpec:
    """Which machines report the plant's power source, and the value that means grid."""

    template: str = "power_source"
    signal: str = "source"
    normal: str = "grid"


@dataclass(frozen=True, slots=True)
class Profiles:
    no_data_timeout_ms: int = 120_000
    micro_stop_ms: int = 120_000
    startup_window_ms: int = 600_000
    outage_grace_ms: int = 60_000
    templates: Mapping[str, TemplateProfile] = field(default_factory=dict)
    power: PowerSpec = PowerSpec()

    def of(self, template_id: str) -> TemplateProfile:
        return self.templates.get(template_id, TemplateProfile())


class _Reader(FieldReader):
    def clock(self, item: Mapping[str, Any], name: str, where: str) -> int:
        text = self.text(item, name, f"{where}.{name}")
        m = _CLOCK.fullmatch(text)
        if m is None or (m.group(1) == "24" and m.group(2) != "00"):
            raise self.fail(f"{where}.{name}", f"{text!r} is not a time such as 06:00")
        return int(m.group(1)) * 60 + int(m.group(2))

    def weekdays(self, item: Mapping[str, Any], name: str, where: str) -> frozenset[int]:
        raw = item.get(name, [])
        if not isinstance(raw, list) or not all(
            isinstance(d, str) and d.lower() in WEEKDAYS for d in raw
        ):
            raise self.fail(f"{where}.{name}", f"expected a list of {', '.join(WEEKDAYS)}")
        return frozenset(WEEKDAYS.index(d.lower()) for d in raw)

    def tables(self, doc: Mapping[str, Any], name: str) -> list[dict[str, Any]]:
        raw = doc.get(name, [])
        if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
            raise self.fail(name, f"expected [[{name}]] tables")
        return cast(list[dict[str, Any]], raw)


def load_calendar(path: Path) -> Calendar:
    r = _Reader(path)
    doc = read_toml(path, "calendar")
    r.no_unknown(doc, {"id", "name", "sites", "days_off", "shifts", "breaks", "holidays"}, "")
    sites = doc.get("sites", [])
    if not isinstance(sites, list) or not all(isinstance(x, str) for x in sites):
        raise r.fail("sites", "expected a list of site ids")
    calendar_id = r.file_id(doc)
    shifts: list[ShiftSpec] = []
    for i, item in enumerate(r.tables(doc, "shifts")):
        where = f"shifts[{i}]"
        r.no_unknown(item, {"id", "name", "start", "end"}, where)
        spec = ShiftSpec(
            r.text(item, "id", f"{where}.id"),
            r.text(item, "name", f"{where}.name"),
            r.clock(item, "start", where),
            r.clock(item, "end", where),
        )
        if any(s.id == spec.id for s in shifts):
            raise r.fail(f"{where}.id", f"duplicate shift id {spec.id!r}")
        shifts.append(spec)
    if not shifts:
        raise r.fail("shifts", "missing; a calendar needs at least one [[shifts]] table")
    breaks = []
    for i, item in enumerate(r.tables(doc, "breaks")):
        where = f"breaks[{i}]"
        r.no_unknown(item, {"name", "start", "end", "weekdays"}, where)
        breaks.append(
            BreakSpec(
                r.text(item, "name", f"{where}.name"),
                r.clock(item, "start", where),
                r.clock(item, "end", where),
                r.weekdays(item, "weekdays", where),
            )
        )
    holidays: dict[str, str] = {}
    for i, item in enumerate(r.tables(doc, "holidays")):
        where = f"holidays[{i}]"
        r.no_unknown(item, {"date", "name"}, where)
        raw = item.get("date")
        if isinstance(raw, str):
            try:
                raw = date.fromisoformat(raw)
            except ValueError:
                raise r.fail(f"{where}.date", f"{raw!r} is not a date (YYYY-MM-DD)") from None
        if not isinstance(raw, date):
            raise r.fail(f"{where}.date", "expected a date (YYYY-MM-DD)")
        holidays[raw.isoformat()] = r.text(item, "name", f"{where}.name")
    return Calendar(
        id=calendar_id,
        name=r.text(doc, "name", "name"),
        shifts=tuple(shifts),
        breaks=tuple(breaks),
        days_off=r.weekdays(doc, "days_off", "days_off"),
        holidays=holidays,
        sites=frozenset(sites),
    )


def load_calendars(directory: Path | None = None) -> dict[str, Calendar]:
    """Shipped calendars plus those in ``directory`` (which replace shipped ones by id)."""
    return load_all(DATA_DIR / "calendars", directory, load_calendar, lambda c: c.id, "calendar")


def calendar_for(calendars: Mapping[str, Calendar], site_id: str) -> Calendar:
    """The calendar that lists the site, else ``default``."""
    for calendar in calendars.values():
        if site_id in calendar.sites:
            return calendar
    return calendars["default"]


def _reason(r: _Reader, item: object, where: str, parent: str | None) -> Reason:
    if not isinstance(item, dict):
        raise r.fail(where, "expected a table")
    r.no_unknown(item, {"id", "en", "ur", "loss", "children"}, where)
    own = r.text(item, "id", f"{where}.id")
    if not ID.fullmatch(own):
        raise r.fail(f"{where}.id", f"{own!r} must be lower-case letters, digits and _")
    loss = r.text(item, "loss", f"{where}.loss")
    if loss not in LOSS_KINDS:
        raise r.fail(f"{where}.loss", f"unknown loss {loss!r} (expected {', '.join(LOSS_KINDS)})")
    full = own if parent is None else f"{parent}.{own}"
    children = item.get("children", [])
    if not isinstance(children, list):
        raise r.fail(f"{where}.children", "expected [[...children]] tables")
    return Reason(
        full,
        Label(r.text(item, "en", f"{where}.en"), r.text(item, "ur", f"{where}.ur")),
        cast(LossKind, loss),
        tuple(_reason(r, c, f"{where}.children[{i}]", full) for i, c in enumerate(children)),
    )


def load_reason_file(path: Path) -> tuple[str, list[Reason]]:
    r = _Reader(path)
    doc = read_toml(path, "reasons")
    r.no_unknown(doc, {"id", "reasons"}, "")
    roots = [
        _reason(r, item, f"reasons[{i}]", None) for i, item in enumerate(r.tables(doc, "reasons"))
    ]
    return r.file_id(doc), roots


def _merge(into: dict[str, Reason], node: Reason, source: Path) -> None:
    have = into.get(node.id)
    if have is None:
        into[node.id] = node
        return
    if have.label != node.label or have.loss != node.loss:
        raise ConfigError(f"{source}: reason {node.id!r} differs from one of the same id")
    kids = {c.id: c for c in have.children}
    for child in node.children:
        _merge(kids, child, source)
    into[node.id] = Reason(have.id, have.label, have.loss, tuple(kids.values()))


def load_reasons(directory: Path | None = None) -> ReasonTree:
    """Every reason file, merged: the same top-level reason in two files shares its children."""
    files = sorted((DATA_DIR / "reasons").glob("*.toml"), key=lambda p: (p.stem != "common", p))
    if directory is not None:
        files += sorted(directory.glob("*.toml"))
    roots: dict[str, Reason] = {}
    for path in files:
        for node in load_reason_file(path)[1]:
            _merge(roots, node, path)
    return ReasonTree(list(roots.values()))


def load_profiles(path: Path = DATA_DIR / "machines.toml") -> Profiles:
    r = _Reader(path)
    doc = read_toml(path, "machine profiles")
    r.no_unknown(doc, {"defaults", "templates", "power"}, "")
    defaults = doc.get("defaults", {})
    names = {"no_data_timeout_s", "micro_stop_s", "startup_window_s", "outage_grace_s"}
    r.no_unknown(defaults, names, "defaults")
    ms: dict[str, int] = {}
    for name in names:
        value = r.number(defaults, name, f"defaults.{name}")
        if value is not None and value <= 0:
            raise r.fail(f"defaults.{name}", "must be positive")
        if value is not None:
            ms[name] = int(value * 1000)
    templates: dict[str, TemplateProfile] = {}
    for tid, item in doc.get("templates", {}).items():
        where = f"templates.{tid}"
        if not isinstance(item, dict):
            raise r.fail(where, "expected a table")
        r.no_unknown(item, {"speed_key", "reject_key", "counter_modulus"}, where)
        templates[tid] = TemplateProfile(
            r.optional_text(item, "speed_key", f"{where}.speed_key"),
            r.optional_text(item, "reject_key", f"{where}.reject_key"),
            r.number(item, "counter_modulus", f"{where}.counter_modulus"),
        )
    power = doc.get("power", {})
    r.no_unknown(power, {"template", "signal", "normal"}, "power")
    return Profiles(
        no_data_timeout_ms=ms.get("no_data_timeout_s", 120_000),
        micro_stop_ms=ms.get("micro_stop_s", 120_000),
        startup_window_ms=ms.get("startup_window_s", 600_000),
        outage_grace_ms=ms.get("outage_grace_s", 60_000),
        templates=templates,
        power=PowerSpec(
            r.optional_text(power, "template", "power.template") or "power_source",
            r.optional_text(power, "signal", "power.signal") or "source",
            r.optional_text(power, "normal", "power.normal") or "grid",
        ),
    )
