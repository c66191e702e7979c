"""Pure decoders: Modbus register words to numbers, and wrapping counters to monotonic totals.

Words are 16-bit unsigned integers, as pymodbus returns them. Nothing here does I/O or reads a
clock, so all of it is tested without a device.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence

from karkhana.core.errors import InvalidPayload
from karkhana.edge.modbus.registermap import Function, Register, RegisterMap

_FORMATS = {"int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I", "float32": ">f"}
_RANGES = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
}


def decode_register(reg: Register, words: Sequence[int]) -> float | None:
    """The value of ``reg`` from its ``words`` (in address order), scaled and offset.

    Returns None for a float32 that is NaN or infinite (a meter's "no reading"), or a value
    that scaling made infinite: the caller drops it and counts it. Raises InvalidPayload for a wrong number of words or a word that is
    not an integer in 0..65535.
    """
    if len(words) != reg.words:
        raise InvalidPayload(f"{reg.key}: {reg.type} takes {reg.words} words, got {len(words)}")
    for word in words:
        if isinstance(word, bool) or not isinstance(word, int) or not 0 <= word <= 0xFFFF:
            raise InvalidPayload(f"{reg.key}: {word!r} is not a 16-bit register word")
    ordered = list(words) if reg.word_order == "big" else list(reversed(words))
    raw_bytes = b"".join(w.to_bytes(2, reg.byte_order) for w in ordered)
    (raw,) = struct.unpack(_FORMATS[reg.type], raw_bytes)
    value = float(raw) * reg.scale + reg.offset
    if not math.isfinite(value):
        return None
    return value


def encode_register(reg: Register, value: float) -> list[int]:
    """The words a device holds for ``value`` (the inverse of :func:`decode_register`), for
    simulated devices and tests. Integer types round and saturate at their range."""
    raw = (value - reg.offset) / reg.scale
    fmt = _FORMATS[reg.type]
    if reg.type != "float32":
        low, high = _RANGES[reg.type]
        raw = min(high, max(low, round(raw))) if math.isfinite(raw) else 0
    packed = struct.pack(fmt, raw)
    words = [int.from_bytes(packed[i : i + 2], reg.byte_order) for i in range(0, len(packed), 2)]
    return words if reg.word_order == "big" else list(reversed(words))


def decode_map(
    register_map: RegisterMap,
    read: Mapping[int, int],
    *,
    function: Function | None = None,
) -> dict[str, float]:
    """Values by key of the registers whose words are all in ``read`` (address -> word).

    Registers with a word missing from ``read`` are left out, and so are float32 values that
    are not numbers (see :func:`decode_register`): a key absent from the result has no value
    this time. Holding and input registers are separate address spaces; for a map that uses
    both, pass each function's words with ``function`` and merge the two results.
    """
    values: dict[str, float] = {}
    for reg in register_map.registers:
        if function is not None and reg.function != function:
            continue
        words = [read.get(address) for address in reg.addresses]
        if any(word is None for word in words):
            continue
        value = decode_register(reg, [w for w in words if w is not None])
        if value is not None:
            values[reg.key] = value
    return values


class CounterTracker:
    """Turns counters that wrap or are reset into totals that never go down, held per key.

    The first reading of a key is its total. After that, every rise is added. A drop means one
    of two things:

    * a rollover, when the counter wraps at its range (``span``: 2**32 raw counts for a 32-bit
      register, times its scale) and the drop is larger than half the span: the counter went up
      past its top and started again from 0, so ``new - old + span`` is added;
    * a reset otherwise (the meter was cleared or replaced, or a float32 counter, which has no
      span, went down): counting continues from the new value, nothing is added for this
      reading, and later rises are added as usual. What the meter counted between its reset and
      this reading is not known and is not guessed.

    The tracker is pure (no clock, no I/O); an agent that keeps totals across restarts saves
    and restores ``state``.
    """

    def __init__(self) -> None:
        self.state: dict[str, tuple[float, float]] = {}
        """key -> (last reading, total)."""
        self.rollovers = 0
        self.resets = 0

    def update(self, key: str, value: float, *, span: float | None = None) -> float:
        """The monotonic total of ``key`` after reading ``value``."""
        previous = self.state.get(key)
        if previous is None:
            total = value
        else:
            last, total = previous
            delta = value - last
            if delta >= 0:
                total += delta
            elif span is not None and -delta > span / 2:
                total += delta + span
                self.rollovers += 1
            else:
                self.resets += 1
        self.state[key] = (value, total)
        return total

    def apply(self, register_map: RegisterMap, values: Mapping[str, float]) -> dict[str, float]:
        """``values`` with every counter register's value replaced by its total."""
        out = dict(values)
        for reg in register_map.registers:
            if reg.counter and reg.key in out:
                out[reg.key] = self.update(reg.key, out[reg.key], span=reg.wrap_span)
        return out
