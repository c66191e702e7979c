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

Transports:

- ``tcp`` (the default): Modbus TCP, to the device or an RS485-to-TCP gateway that converts;
- ``rtu``: Modbus RTU on a serial port of the edge box (a USB-RS485 adapter)::

      transport = "rtu"
      serial_port = "/dev/ttyUSB0"
      baudrate = 9600           # 1200..921600
      parity = "N"              # N, E or O
      stopbits = 1              # 1 or 2
      bytesize = 8              # 7 or 8

  Several devices on one RS485 line name the same ``serial_port`` with different ``unit`` ids;
  they share the port and take turns on the line. Their line settings must agree.
- ``rtu-over-tcp``: RTU frames carried over TCP, as transparent serial servers forward them
  (``host`` and ``port`` as for ``tcp``).

Errors name the table and field at fault.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from karkhana.core.errors import ConfigError
from karkhana.core.model import is_valid_device_id
from karkhana.edge.modbus.registermap import RegisterMap, load_map, load_maps

TRANSPORTS = ("tcp", "rtu", "rtu-over-tcp")
PARITIES = ("N", "E", "O")
_FIELDS = {
    "device_id",
    "host",
    "port",
    "unit",
    "map",
    "interval_s",
    "timeout_s",
    "transport",
    "serial_port",
    "baudrate",
    "parity",
    "stopbits",
    "bytesize",
}
_SERIAL_FIELDS = ("serial_port", "baudrate", "parity", "stopbits", "bytesize")


@dataclass(frozen=True, slots=True)
class SerialLine:
    """The settings of one RS485 line (transport ``rtu``)."""

    port: str
    baudrate: int = 9600
    parity: str = "N"
    stopbits: int = 1
    bytesize: int = 8


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
    serial: SerialLine | None = None
    """The serial line, for transport ``rtu`` (then ``host`` is the port's path)."""

    @property
    def address(self) -> str:
        """Where the device is, for logs: ``host:port unit 1`` or ``/dev/ttyUSB0 unit 1``."""
        if self.serial is not None:
            return f"{self.serial.port} unit {self.unit}"
        return f"{self.host}:{self.port} unit {self.unit}"

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
    lines: dict[str, SerialLine] = {}
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
                f"{where}.transport: {transport!r} is not supported (expected one of"
                f" {', '.join(TRANSPORTS)})"
            )
        serial: SerialLine | None = None
        if transport == "rtu":
            for name in ("host", "port"):
                if name in item:
                    raise ConfigError(
                        f"{where}.{name}: not used by transport 'rtu' (give serial_port)"
                    )
            serial = _serial_line(item, where)
            lines[serial.port] = _same_line(lines.get(serial.port), serial, where)
        else:
            for name in _SERIAL_FIELDS:
                if name in item:
                    raise ConfigError(
                        f"{where}.{name}: only used by transport 'rtu' (this device is"
                        f" {transport!r})"
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
                host=serial.port if serial else _text(item, "host", where, None),
                register_map=register_map,
                port=int(_number(item, "port", where, 502, 1, 65535, integer=True)),
                unit=int(_number(item, "unit", where, 1, 0, 255, integer=True)),
                interval_s=_number(item, "interval_s", where, 5.0, 0.01, 86_400.0),
                timeout_s=_number(item, "timeout_s", where, 3.0, 0.01, 600.0),
                transport=transport,
                serial=serial,
            )
        )
    return tuple(devices)


def _serial_line(item: dict[str, Any], where: str) -> SerialLine:
    parity = _text(item, "parity", where, "N").upper()
    if parity not in PARITIES:
        raise ConfigError(f"{where}.parity: expected N, E or O, got {item['parity']!r}")
    stopbits = int(_number(item, "stopbits", where, 1, 1, 2, integer=True))
    bytesize = int(_number(item, "bytesize", where, 8, 7, 8, integer=True))
    return SerialLine(
        port=_text(item, "serial_port", where, None),
        baudrate=int(_number(item, "baudrate", where, 9600, 1200, 921_600, integer=True)),
        parity=parity,
        stopbits=stopbits,
        bytesize=bytesize,
    )


def _same_line(known: SerialLine | None, line: SerialLine, where: str) -> SerialLine:
    """Devices sharing a serial port must agree on its settings: one line, one speed."""
    if known is not None and known != line:
        raise ConfigError(
            f"{where}: serial port {line.port} is set up differently by an earlier device"
            f" ({known.baudrate} {known.bytesize}{known.parity}{known.stopbits} against"
            f" {line.baudrate} {line.bytesize}{line.parity}{line.stopbits})"
        )
    return line


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
