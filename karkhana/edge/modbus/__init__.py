"""Modbus without I/O: register maps kept as data and pure decoders of register words.

A Modbus connector only reads registers (with pymodbus); what the words mean lives here:
:mod:`.registermap` (the maps, shipped as TOML under ``maps/``) and :mod:`.decode` (words to
numbers, counters that wrap to monotonic totals). See docs/edge.md.
"""

from __future__ import annotations

from karkhana.edge.modbus.decode import CounterTracker, decode_map, decode_register
from karkhana.edge.modbus.registermap import (
    BUILTIN_DIR,
    Register,
    RegisterMap,
    load_map,
    load_maps,
)

__all__ = [
    "BUILTIN_DIR",
    "CounterTracker",
    "Register",
    "RegisterMap",
    "decode_map",
    "decode_register",
    "load_map",
    "load_maps",
]
