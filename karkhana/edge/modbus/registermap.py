"""Modbus register maps: which registers a device has and what each one means, kept as data.

A map is a TOML file (one per device model) so that factories can describe their own meters and
PLCs without writing code::

    id = "eastron_sdm120"
    name = "Eastron SDM120"
    description = "Single-phase energy meter"

    [defaults]                  # optional: applies to every register that does not say otherwise
    function = "input"
    type = "float32"

    [[registers]]
    key = "voltage_l1_v"        # the sample key (karkhana.core.model.is_valid_key)
    address = 0x0000            # 0-based protocol address of the first word
    unit = "V"

A register has ``key``, ``address`` and ``type`` (int16, uint16, int32, uint32, float32; from
the register or ``[defaults]``), and optionally ``function`` (holding, the default, or input),
``word_order`` and ``byte_order`` (big, the default, or little), ``scale`` and ``offset``
(value = raw * scale + offset), ``unit`` and ``counter`` (a total that only grows, see
:class:`karkhana.edge.modbus.decode.CounterTracker`). Holding and input registers are separate
address spaces: registers of one function must not overlap. Loading names the file and field at
fault, because maps are edited by hand.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast, get_args

from karkhana.core.datafile import FieldReader, load_all, read_toml
from karkhana.core.model import is_valid_key

RegisterType = Literal["int16", "uint16", "int32", "uint32", "float32"]
Function = Literal["holding", "input"]
Order = Literal["big", "little"]

REGISTER_TYPES: tuple[str, ...] = get_args(RegisterType)
FUNCTIONS: tuple[str, ...] = get_args(Function)
ORDERS: tuple[str, ...] = get_args(Order)

WORDS: dict[str, int] = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2}
"""16-bit words each type takes."""

MAX_ADDRESS = 0xFFFF

BUILTIN_DIR = Path(__file__).resolve().parent / "maps"
"""Register maps shipped with karkhana."""

_TOP_FIELDS = {"id", "name", "description", "defaults", "registers"}
_DEFAULT_FIELDS = {"type", "function", "word_order", "byte_order"}
_REGISTER_FIELDS = {
    "key",
    "address",
    "type",
    "function",
    "word_order",
    "byte_order",
    "scale",
    "offset",
    "unit",
    "counter",
}


@dataclass(frozen=True, slots=True)
class Register:
    """One value of a device: ``words`` 16-bit registers from ``address`` on.

    ``word_order`` says which word of a 32-bit value comes first (big: the high word);
    ``byte_order`` says which byte of each word comes first (big: the high byte, as Modbus
    sends it). The decoded value is ``raw * scale + offset``.
    """

    key: str
    address: int
    type: RegisterType
    function: Function = "holding"
    word_order: Order = "big"
    byte_order: Order = "big"
    scale: float = 1.0
    offset: float = 0.0
    unit: str | None = None
    counter: bool = False

    @property
    def words(self) -> int:
        return WORDS[self.type]

    @property
    def addresses(self) -> range:
        return range(self.address, self.address + self.words)

    @property
    def wrap_span(self) -> float | None:
        """How much the decoded value drops when the raw integer wraps (None: float32)."""
        if self.type == "float32":
            return None
        return float(1 << (16 * self.words)) * abs(self.scale)


@dataclass(frozen=True, slots=True)
class RegisterMap:
    id: str
    name: str
    description: str
    registers: tuple[Register, ...]

    def register(self, key: str) -> Register:
        for reg in self.registers:
            if reg.key == key:
                return reg
        raise KeyError(key)

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(reg.key for reg in self.registers)


def load_map(path: Path) -> RegisterMap:
    """One map from a TOML file; raises ConfigError naming the file and field at fault."""
    return _Parser(path).register_map(read_toml(path, "register map"))


def load_maps(directory: Path | None = None) -> dict[str, RegisterMap]:
    """The shipped maps, plus those in ``directory`` (which replace shipped ones by id)."""
    return load_all(BUILTIN_DIR, directory, load_map, lambda m: m.id, "register map")


class _Parser(FieldReader):
    def register_map(self, doc: Mapping[str, Any]) -> RegisterMap:
        self.no_unknown(doc, _TOP_FIELDS, "")
        map_id = self.file_id(doc)
        name = self.text(doc, "name", "name")
        description = self.optional_text(doc, "description", "description") or ""
        defaults = doc.get("defaults", {})
        if not isinstance(defaults, dict):
            raise self.fail("defaults", "expected a table")
        self.no_unknown(defaults, _DEFAULT_FIELDS, "defaults")
        raw = doc.get("registers")
        if not isinstance(raw, list) or not raw:
            raise self.fail("registers", "missing; a map needs at least one [[registers]] table")
        registers = tuple(
            self.register(item, f"registers[{i}]", defaults) for i, item in enumerate(raw)
        )
        keys: set[str] = set()
        owner: dict[tuple[str, int], int] = {}
        for i, reg in enumerate(registers):
            if reg.key in keys:
                raise self.fail(f"registers[{i}].key", f"duplicate key {reg.key!r}")
            keys.add(reg.key)
            for address in reg.addresses:
                other = owner.get((reg.function, address))
                if other is not None:
                    raise self.fail(
                        f"registers[{i}].address",
                        f"{reg.key!r} ({reg.function} {reg.address:#06x}, {reg.words} words) "
                        f"overlaps {registers[other].key!r} at {address:#06x}",
                    )
                owner[(reg.function, address)] = i
        return RegisterMap(id=map_id, name=name, description=description, registers=registers)

    def register(self, item: object, where: str, defaults: Mapping[str, Any]) -> Register:
        if not isinstance(item, dict):
            raise self.fail(where, "expected a table")
        self.no_unknown(item, _REGISTER_FIELDS, where)
        key = self.text(item, "key", f"{where}.key")
        if not is_valid_key(key):
            raise self.fail(f"{where}.key", f"{key!r} is not a valid sample key")
        address = item.get("address")
        if address is None:
            raise self.fail(f"{where}.address", "missing")
        if isinstance(address, bool) or not isinstance(address, int):
            raise self.fail(f"{where}.address", f"expected an integer, got {address!r}")
        merged = {**defaults, **item}
        reg_type = self.choice(merged, "type", REGISTER_TYPES, where, None)
        if not 0 <= address <= MAX_ADDRESS - WORDS[reg_type] + 1:
            raise self.fail(
                f"{where}.address",
                f"{address} is outside 0..{MAX_ADDRESS} for a {WORDS[reg_type]}-word {reg_type}",
            )
        scale = self.number_or(item, "scale", f"{where}.scale", 1.0)
        if scale == 0:
            raise self.fail(f"{where}.scale", "must not be 0")
        counter = item.get("counter", False)
        if not isinstance(counter, bool):
            raise self.fail(f"{where}.counter", f"expected true or false, got {counter!r}")
        return Register(
            key=key,
            address=address,
            type=cast(RegisterType, reg_type),
            function=cast(Function, self.choice(merged, "function", FUNCTIONS, where, "holding")),
            word_order=cast(Order, self.choice(merged, "word_order", ORDERS, where, "big")),
            byte_order=cast(Order, self.choice(merged, "byte_order", ORDERS, where, "big")),
            scale=scale,
            offset=self.number_or(item, "offset", f"{where}.offset", 0.0),
            unit=self.optional_text(item, "unit", f"{where}.unit"),
            counter=counter,
        )

    def choice(
        self,
        item: Mapping[str, Any],
        name: str,
        allowed: tuple[str, ...],
        where: str,
        default: str | None,
    ) -> str:
        field = f"{where}.{name}"
        value = item.get(name, default)
        if value is None:
            raise self.fail(field, "missing (in the register or in [defaults])")
        if value not in allowed:
            raise self.fail(
                field, f"unknown {name} {value!r} (expected one of {', '.join(allowed)})"
            )
        return cast(str, value)

    def number_or(self, item: Mapping[str, Any], name: str, field: str, default: float) -> float:
        value = self.number(item, name, field)
        return default if value is None else value
