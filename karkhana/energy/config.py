"""Per-site energy configuration: tariff, diesel price, generator, and which meter feeds which.

The plant-wide defaults come from the settings table (``energy_tariff``,
``diesel_price_pkr_per_litre``, ``generator_kva``); ``<data_dir>/energy.toml`` may give each
site its own values and its meter hierarchy::

    [sites.demo-mill]
    tariff = "nepra_b2b_tou_example"
    diesel_price_pkr_per_litre = 285.0
    generator_kva = 250
    sanctioned_kw = 300
    reading_day = 1
    main_meter = "tx-meter-main"
    sub_meters = ["tx-meter-shed1", "tx-meter-shed2"]
    flexible = ["pump-1", "washer-2"]          # loads that can run outside the peak hours
    air_own_use_m3_min = { "tx-compressor-1" = 0.3 }   # air a compressor uses itself (dryer)

Without a hierarchy in the file, the rule of :func:`meter_roles` applies: the meter whose id or
name says "main" or "incomer" (or the only meter) is the main meter and every other meter of the
site is its sub-meter.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from karkhana.core.datafile import read_toml
from karkhana.core.errors import ConfigError

FILE_NAME = "energy.toml"
_SITE_KEYS = {
    "tariff",
    "diesel_price_pkr_per_litre",
    "generator_kva",
    "sanctioned_kw",
    "reading_day",
    "main_meter",
    "sub_meters",
    "flexible",
    "air_own_use_m3_min",
    "air_own_use_kw",
}
MAIN_WORDS = re.compile(r"main|incomer", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class SiteEnergyConfig:
    """What the energy service needs to know about one site beyond its telemetry."""

    tariff_id: str
    diesel_price_pkr_per_litre: float
    generator_kva: float | None
    """None: no generator known (its diesel is then not estimated)."""
    sanctioned_kw: float | None = None
    reading_day: int = 1
    main_meter: str | None = None
    sub_meters: tuple[str, ...] | None = None
    """None: decided by :func:`meter_roles`."""
    flexible: tuple[str, ...] = ()
    """Machines whose work can be moved out of the peak-tariff hours (pumps, washers, chillers
    filling a store); only these get the off-peak recommendation."""
    air_own_use_m3_min: Mapping[str, float] = field(default_factory=dict)
    """Air each compressor uses itself (dryer purge, drains), not counted as leaks."""
    air_own_use_kw: Mapping[str, float] = field(default_factory=dict)
    """The same in kW above the unloaded draw, for compressors metered by power only."""


@dataclass(frozen=True, slots=True)
class EnergyConfig:
    defaults: SiteEnergyConfig
    sites: Mapping[str, SiteEnergyConfig]

    def site(self, site_id: str) -> SiteEnergyConfig:
        return self.sites.get(site_id, self.defaults)


def _number(path: Path, where: str, raw: object, *, positive: bool = False) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise ConfigError(f"{path}: {where}: expected a number, got {raw!r}")
    value = float(raw)
    if value < 0 or (positive and value == 0):
        raise ConfigError(f"{path}: {where}: must be {'positive' if positive else 'at least 0'}")
    return value


def _site(path: Path, site_id: str, raw: object, defaults: SiteEnergyConfig) -> SiteEnergyConfig:
    where = f"sites.{site_id}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: {where}: expected a table")
    unknown = sorted(set(raw) - _SITE_KEYS)
    if unknown:
        raise ConfigError(
            f"{path}: {where}: unknown field {unknown[0]!r} (expected {', '.join(sorted(_SITE_KEYS))})"
        )
    values: dict[str, Any] = {}
    tariff = raw.get("tariff", defaults.tariff_id)
    if not isinstance(tariff, str) or not tariff:
        raise ConfigError(f"{path}: {where}.tariff: expected a tariff id")
    values["tariff_id"] = tariff
    values["diesel_price_pkr_per_litre"] = (
        _number(path, f"{where}.diesel_price_pkr_per_litre", raw["diesel_price_pkr_per_litre"])
        if "diesel_price_pkr_per_litre" in raw
        else defaults.diesel_price_pkr_per_litre
    )
    kva = raw.get("generator_kva")
    values["generator_kva"] = (
        defaults.generator_kva
        if kva is None
        else (_number(path, f"{where}.generator_kva", kva) or None)
    )
    kw = raw.get("sanctioned_kw")
    values["sanctioned_kw"] = (
        None if kw is None else _number(path, f"{where}.sanctioned_kw", kw, positive=True)
    )
    day = raw.get("reading_day", 1)
    if isinstance(day, bool) or not isinstance(day, int) or not 1 <= day <= 28:
        raise ConfigError(f"{path}: {where}.reading_day: expected a day from 1 to 28")
    values["reading_day"] = day
    main = raw.get("main_meter")
    if main is not None and (not isinstance(main, str) or not main):
        raise ConfigError(f"{path}: {where}.main_meter: expected a machine id")
    subs = raw.get("sub_meters")
    if subs is not None:
        if not isinstance(subs, list) or not all(isinstance(s, str) and s for s in subs):
            raise ConfigError(f"{path}: {where}.sub_meters: expected a list of machine ids")
        if main is None:
            raise ConfigError(f"{path}: {where}.sub_meters: name the main_meter they hang under")
        if main in subs or len(set(subs)) != len(subs):
            raise ConfigError(f"{path}: {where}.sub_meters: repeats a meter or the main meter")
    values["main_meter"] = main
    values["sub_meters"] = None if subs is None else tuple(subs)
    flexible = raw.get("flexible", [])
    if not isinstance(flexible, list) or not all(isinstance(f, str) and f for f in flexible):
        raise ConfigError(f"{path}: {where}.flexible: expected a list of machine ids")
    if len(set(flexible)) != len(flexible):
        raise ConfigError(f"{path}: {where}.flexible: repeats a machine")
    values["flexible"] = tuple(flexible)
    for key in ("air_own_use_m3_min", "air_own_use_kw"):
        table = raw.get(key, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: {where}.{key}: expected a table of compressor ids")
        values[key] = {
            str(mid): _number(path, f"{where}.{key}.{mid}", v) for mid, v in table.items()
        }
    return SiteEnergyConfig(**values)


def load_energy_config(
    data_dir: Path,
    *,
    tariff_id: str,
    diesel_price_pkr_per_litre: float,
    generator_kva: float,
) -> EnergyConfig:
    """The settings' defaults, overridden per site by ``<data_dir>/energy.toml`` if present."""
    if diesel_price_pkr_per_litre < 0 or generator_kva < 0:
        raise ConfigError("diesel price and generator kVA must not be negative")
    defaults = SiteEnergyConfig(tariff_id, diesel_price_pkr_per_litre, generator_kva or None)
    path = data_dir / FILE_NAME
    if not path.is_file():
        return EnergyConfig(defaults, {})
    doc = read_toml(path, "energy configuration")
    unknown = sorted(set(doc) - {"sites"})
    if unknown:
        raise ConfigError(f"{path}: unknown table {unknown[0]!r} (expected [sites.<site id>])")
    raw_sites = doc.get("sites", {})
    if not isinstance(raw_sites, dict):
        raise ConfigError(f"{path}: sites: expected [sites.<site id>] tables")
    sites = {sid: _site(path, sid, raw, defaults) for sid, raw in raw_sites.items()}
    return EnergyConfig(defaults, sites)


@dataclass(frozen=True, slots=True)
class MeterRole:
    machine_id: str
    name: str
    role: str
    """"main" or "sub"."""
    parent: str | None


def meter_roles(meters: Sequence[tuple[str, str]], config: SiteEnergyConfig) -> list[MeterRole]:
    """The role of each ``(machine id, name)`` meter of a site.

    The configured main meter and sub-meters win. Otherwise the main meter is the only meter, or
    the one meter whose id or name says "main" or "incomer"; every other meter is its sub-meter.
    With no such meter (or several) every meter stands alone as a main meter.
    """
    ids = {mid for mid, _ in meters}
    main = config.main_meter if config.main_meter in ids else None
    if main is None and config.main_meter is None:
        named = [mid for mid, name in meters if MAIN_WORDS.search(mid) or MAIN_WORDS.search(name)]
        if len(meters) == 1:
            main = meters[0][0]
        elif len(named) == 1:
            main = named[0]
    subs: set[str]
    if main is None:
        subs = set()
    elif config.sub_meters is not None:
        subs = set(config.sub_meters) & ids
    else:
        subs = ids - {main}
    out = []
    for mid, name in meters:
        if mid in subs:
            out.append(MeterRole(mid, name, "sub", main))
        else:
            out.append(MeterRole(mid, name, "main", None))
    # the main meter first, then its sub-meters, then meters standing alone
    out.sort(key=lambda r: (r.machine_id != main, r.role == "main", r.machine_id))
    return out
