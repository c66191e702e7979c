"""The JSON telemetry wire format, decoded into samples (pure: no I/O, no clock).

Accepted shapes (``ts`` is optional; the receive time is used when it is missing)::

    {"ts": 1700000000000, "values": {"rpm": 512, "running": true, "state": "running"}}
    [{"ts": "2024-01-01T10:00:00Z", "values": {...}}, ...]
    {"samples": [{"ts": ..., "values": {...}}, ...]}

A message is accepted whole or rejected whole, with a reason naming the offending field.
"""

from __future__ import annotations

import json
import math
from typing import Any

from karkhana.core.errors import InvalidPayload, PayloadTooLarge
from karkhana.core.model import KEY_PATTERN, Sample, Value
from karkhana.core.timeutil import parse_ts

EARLIEST_MS = 946_684_800_000
"""2000-01-01T00:00:00Z: anything earlier is almost surely seconds sent as milliseconds."""

MAX_TEXT = 1024


def _reject_constant(name: str) -> Any:
    raise InvalidPayload(f"{name} is not allowed; send a number or leave the value out")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
"""Built once: json.loads with parse_constant would build a new decoder for every message."""


def parse_json(payload: bytes | str, max_bytes: int) -> Any:
    if len(payload) > max_bytes:
        raise PayloadTooLarge(f"payload is {len(payload)} bytes; the limit is {max_bytes}")
    try:
        text = payload.decode("utf-8") if isinstance(payload, bytes) else payload
        return _DECODER.decode(text)
    except InvalidPayload:
        raise
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidPayload(f"malformed JSON: {exc}") from None


def decode(
    payload: bytes | str,
    device_id: str,
    *,
    now_ms: int,
    max_future_ms: int = 86_400_000,
    max_bytes: int = 256 * 1024,
) -> list[Sample]:
    """Samples of one message from ``device_id``; raises InvalidPayload/PayloadTooLarge."""
    doc = parse_json(payload, max_bytes)
    if isinstance(doc, dict) and "samples" in doc:
        entries, where = doc["samples"], "samples"
        if not isinstance(entries, list):
            raise InvalidPayload("samples: expected a list")
    elif isinstance(doc, list):
        entries, where = doc, ""
    elif isinstance(doc, dict):
        entries, where = [doc], None
    else:
        raise InvalidPayload("expected a JSON object or list of objects with 'values'")
    out: list[Sample] = []
    latest_allowed = now_ms + max_future_ms
    for i, entry in enumerate(entries):
        path = "" if where is None else f"{where}[{i}]"
        out.extend(_entry(entry, path, device_id, now_ms, latest_allowed))
    if not out:
        raise InvalidPayload("no values in message")
    return out


_KNOWN_KEYS: set[str] = set()
"""Keys already validated; bounded so that a stream of junk keys cannot grow it forever."""
_KNOWN_KEYS_MAX = 100_000


def _entry(entry: Any, path: str, device_id: str, now_ms: int, latest_allowed: int) -> list[Sample]:
    prefix = f"{path}." if path else ""
    if entry.__class__ is not dict:
        raise InvalidPayload(f"{path or 'message'}: expected an object with 'values'")
    values = entry.get("values")
    if values.__class__ is not dict:
        raise InvalidPayload(f"{prefix}values: expected an object of key: value")
    if len(entry) > 2 or (len(entry) == 2 and "ts" not in entry):
        unknown = sorted(set(entry) - {"ts", "values"})
        raise InvalidPayload(f"{prefix}{unknown[0]}: unknown field")
    raw_ts = entry.get("ts")
    if raw_ts is None:
        ts = now_ms
    elif raw_ts.__class__ is int:
        ts = raw_ts
    else:
        ts = parse_ts(raw_ts, f"{prefix}ts")
    if ts < EARLIEST_MS:
        raise InvalidPayload(
            f"{prefix}ts: {ts} is before 2000-01-01; timestamps are epoch milliseconds"
        )
    if ts > latest_allowed:
        raise InvalidPayload(f"{prefix}ts: {ts} is too far in the future (device clock wrong?)")
    out = []
    for key, value in values.items():
        if key not in _KNOWN_KEYS:
            _check_key(key, f"{prefix}values")
        cls = value.__class__
        if cls is float:
            if value - value != 0.0:  # NaN or infinity
                raise InvalidPayload(f"{prefix}values.{key}: must be a finite number")
        elif cls is not bool:
            value = _value(value, f"{prefix}values.{key}")
        out.append(Sample(device_id, key, ts, value))
    return out


def _check_key(key: str, path: str) -> None:
    if KEY_PATTERN.fullmatch(key) is None:
        raise InvalidPayload(f"{path}: key {key[:40]!r} must be 1-128 letters, digits or _ . : / -")
    if len(_KNOWN_KEYS) < _KNOWN_KEYS_MAX:
        _KNOWN_KEYS.add(key)


def _value(value: Any, path: str) -> Value:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if abs(value) > 2**53:
            raise InvalidPayload(f"{path}: integer too large to store exactly")
        return float(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidPayload(f"{path}: must be a finite number")
        return value
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            raise InvalidPayload(f"{path}: text longer than {MAX_TEXT} characters")
        return value
    kind = "null" if value is None else type(value).__name__
    raise InvalidPayload(f"{path}: expected a number, boolean or string, got {kind}")


def encode(samples: list[Sample]) -> bytes:
    """The inverse of decode for one device's samples: one entry per timestamp."""
    by_ts: dict[int, dict[str, Value]] = {}
    for s in samples:
        by_ts.setdefault(s.ts, {})[s.key] = s.value
    body = [{"ts": ts, "values": values} for ts, values in sorted(by_ts.items())]
    return json.dumps(body[0] if len(body) == 1 else body, separators=(",", ":")).encode()
