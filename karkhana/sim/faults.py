"""Injected faults as ground truth, and the delivery faults the runner applies to messages.

Ground truth is what a detector is scored against ("bearing fault flagged at least 24 simulated
hours before failure"), so it is plain data exported as JSON with epoch-millisecond times.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from karkhana.sim.device import DAY_MS, MINUTE_MS, rng_for

JsonScalar = int | float | str | bool | None
DeliveryKind = Literal["sensor_dropout", "duplicate_messages", "out_of_order_messages"]
DELIVERY_KINDS: tuple[DeliveryKind, ...] = (
    "sensor_dropout",
    "duplicate_messages",
    "out_of_order_messages",
)
FORMAT = "karkhana-ground-truth/1"


@dataclass(frozen=True, slots=True)
class FaultRecord:
    """One injected fault. ``end_ms`` None means it lasts past the simulated span."""

    kind: str
    device_id: str
    start_ms: int
    end_ms: int | None = None
    failure_ms: int | None = None
    details: Mapping[str, JsonScalar] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "device_id": self.device_id,
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "failure_ms": self.failure_ms,
            "details": dict(self.details),
        }

    def active(self, t_ms: int) -> bool:
        return self.start_ms <= t_ms and (self.end_ms is None or t_ms < self.end_ms)


def to_json(records: Sequence[FaultRecord], **meta: JsonScalar) -> str:
    """A ground-truth document: ``meta`` (profile, seed, span) plus the faults in time order."""
    doc = {"format": FORMAT, **meta, "faults": [r.to_dict() for r in records]}
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"


def from_json(text: str) -> list[FaultRecord]:
    doc = json.loads(text)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} document")
    return [
        FaultRecord(
            kind=item["kind"],
            device_id=item["device_id"],
            start_ms=item["start_ms"],
            end_ms=item.get("end_ms"),
            failure_ms=item.get("failure_ms"),
            details=item.get("details", {}),
        )
        for item in doc["faults"]
    ]


def sort_key(record: FaultRecord) -> tuple[int, str, str]:
    return (record.start_ms, record.device_id, record.kind)


_EPISODES: dict[DeliveryKind, tuple[int, int, float, float]] = {
    "sensor_dropout": (1, 2, 10.0, 45.0),
    "duplicate_messages": (1, 2, 5.0, 20.0),
    "out_of_order_messages": (1, 2, 5.0, 20.0),
}
"""Per simulated day: least and most episodes, shortest and longest episode in minutes."""


class DeliveryPlan:
    """Dropouts, duplicates and out-of-order episodes, drawn per 24 simulated hours from start.

    Episodes of one device never overlap, so each message meets at most one delivery fault.
    """

    def __init__(
        self, seed: int, start_ms: int, device_ids: Sequence[str], enabled: bool = True
    ) -> None:
        self._seed = seed
        self._start = start_ms
        self._devices = tuple(device_ids)
        self._enabled = enabled and bool(self._devices)
        self._windows: dict[int, tuple[FaultRecord, ...]] = {}

    def window(self, index: int) -> tuple[FaultRecord, ...]:
        cached = self._windows.get(index)
        if cached is not None:
            return cached
        episodes: list[FaultRecord] = []
        if self._enabled and index >= 0:
            rng = rng_for(self._seed, "delivery", index)
            base = self._start + index * DAY_MS
            for kind, (least, most, shortest, longest) in _EPISODES.items():
                for _ in range(rng.randint(least, most)):
                    for _attempt in range(20):
                        device = rng.choice(self._devices)
                        start = base + rng.randrange(0, DAY_MS - int(longest * MINUTE_MS))
                        end = start + int(rng.uniform(shortest, longest) * MINUTE_MS)
                        if not any(
                            e.device_id == device and _overlaps(e, start, end) for e in episodes
                        ):
                            episodes.append(FaultRecord(kind, device, start, end))
                            break
        result = tuple(sorted(episodes, key=sort_key))
        self._windows[index] = result
        return result

    def at(self, device_id: str, t_ms: int) -> FaultRecord | None:
        """The delivery episode of ``device_id`` covering ``t_ms``, if any."""
        index = (t_ms - self._start) // DAY_MS
        for i in (index, index - 1):
            for episode in self.window(i):
                if episode.device_id == device_id and episode.active(t_ms):
                    return episode
        return None

    def records(self, until_ms: int) -> list[FaultRecord]:
        last = (until_ms - self._start) // DAY_MS
        return [e for i in range(0, last + 1) for e in self.window(i) if e.start_ms < until_ms]


def _overlaps(record: FaultRecord, start: int, end: int) -> bool:
    assert record.end_ms is not None
    return record.start_ms < end and start < record.end_ms
