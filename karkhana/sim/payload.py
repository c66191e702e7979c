"""The telemetry a simulated device sends: topic names and JSON bodies (pure)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from karkhana.core.model import Value

TOPIC = "karkhana/{device_id}/telemetry"
HTTP_PATH = "/api/v1/telemetry/{device_id}"


def topic(device_id: str) -> str:
    return TOPIC.format(device_id=device_id)


def http_path(device_id: str) -> str:
    return HTTP_PATH.format(device_id=device_id)


def encode(samples: Sequence[tuple[int, Mapping[str, Value]]]) -> bytes:
    """One sample as ``{"ts": ms, "values": {...}}``; several as a JSON list of those."""
    if not samples:
        raise ValueError("nothing to encode")
    entries = [{"ts": ts, "values": dict(values)} for ts, values in samples]
    doc: object = entries[0] if len(entries) == 1 else entries
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()
