"""The ``[[modbus]]`` tables of the edge config: which Modbus devices the edge polls.

::

    [[modbus]]
    device_id = "meter-1"       # the device the samples belong to (on the server)
    host = "192.168.1.50"       # the device, or its RS485-to-TCP gateway
    port = 502
    unit = 1                    # Modbus unit (slave) id behind the gateway
    map = "eastron_sdm630"      # a shipped register map, or the path of a map .toml
    interval_s = 5.0
    timeout_s = 3.0

Only Modbus TCP is built in (``transport = "tcp"``, the default); a serial line (RTU) is read
through an RS485-to-TCP gateway. Errors name the table and field at fault.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from karkhana.core.errors import ConfigError
from karkhana.core.model import is_valid_device_id
from karkhana.edge.modbus.registermap import RegisterMap, load_map, load_maps

TRANSPORTS = ("tcp",)
_FIELDS = {"device_id", "host", "port", "unit", "map", "interval_s", "timeout_s", "transport"}


@dataclass(frozen=True, slots=True)
class ModbusDevice:
    """One Modbus device polled by the edge."""

    device_id: str
    host: str
    register_map: RegisterMap = field(repr=False)
    port: int = 502
    unit: int = 1
    interval_s: float = 5.0
    timeout_s: float = 3.0
    transport: str = "tcp"

    @property
    def map_id(self) -> str:
        return self.register_map.id


def parse_devices(raw: Any, source: str) -> tuple[ModbusDevice, ...]:
    """The ``[[modbus]]`` array of tables of a config file, validated."""
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        raise ConfigError(f"{source}: modbus must be an array of tables ([[modbus]])")
    maps: dict[str, RegisterMap] | None = None
    devices: list[ModbusDevice] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        where = f"{source}: modbus[{i}]"
        for name in item:
            if name not in _FIELDS:
                allowed = ", ".join(sorted(_FIELDS))
                raise ConfigError(f"{where}.{name}: unknown field (expected one of {allowed})")
        device_id = _text(item, "device_id", where, None)
        if not is_valid_device_id(device_id):
            raise ConfigError(f"{where}.device_id: {device_id!r} is not a valid device id")
        if device_id in seen:
            raise ConfigError(f"{where}.device_id: {device_id!r} is polled twice")
        seen.add(device_id)
        transport = _text(item, "transport", where, "tcp")
        if transport not in TRANSPORTS:
            raise ConfigError(
                f"{where}.transport: {transport!r} is not supported (only tcp; read an RS485"
                " line through an RS485-to-TCP gateway)"
            )
        map_name = _text(item, "map", where, "eastron_sdm630")
        if map_name.endswith(".toml"):
            register_map = load_map(Path(map_name))
        else:
            maps = load_maps() if maps is None else maps
            if map_name not in maps:
                known = ", ".join(sorted(maps))
                raise ConfigError(
                    f"{where}.map: no register map {map_name!r} (shipped: {known}; or give the"
                    " path of a .toml map)"
                )
            register_map = maps[map_name]
        devices.append(
            ModbusDevice(
                device_id=device_id,
                host=_text(item, "host", where, None),
                register_map=register_map,
                port=int(_number(item, "port", where, 502, 1, 65535, integer=True)),
                unit=int(_number(item, "unit", where, 1, 0, 255, integer=True)),
                interval_s=_number(item, "interval_s", where, 5.0, 0.01, 86_400.0),
                timeout_s=_number(item, "timeout_s", where, 3.0, 0.01, 600.0),
                transport=transport,
            )
        )
    return tuple(devices)


def _text(item: dict[str, Any], name: str, where: str, default: str | None) -> str:
    value = item.get(name, default)
    if value is None:
        raise ConfigError(f"{where}.{name}: missing")
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}.{name}: expected non-empty text, got {value!r}")
    return value


def _number(
    item: dict[str, Any],
    name: str,
    where: str,
    default: float,
    low: float,
    high: float,
    *,
    integer: bool = False,
) -> float:
    value = item.get(name, default)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (integer and not isinstance(value, int))
    ):
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{where}.{name}: expected {kind}, got {value!r}")
    if not math.isfinite(value) or not low <= value <= high:
        raise ConfigError(f"{where}.{name}: must be between {low:g} and {high:g}, got {value!r}")
    return float(value)
