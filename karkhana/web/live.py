"""Live view of committed samples, in machine terms, framed as Server-Sent Events.

Pure: the route table maps a device's key to the machine signals bound to it, and the framing
turns samples into SSE text. The API's ``/api/v1/live`` route feeds it from the bus.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from karkhana.assets.model import Machine
from karkhana.core.model import Sample

RETRY_MS = 2000
"""How long a browser waits before reconnecting a dropped stream."""


@dataclass(frozen=True, slots=True)
class Target:
    machine_id: str
    signal: str


@dataclass(frozen=True, slots=True)
class Routes:
    """Which machine signals each (device, key) feeds."""

    table: Mapping[tuple[str, str], tuple[Target, ...]]

    @classmethod
    def of(cls, machines: Iterable[Machine]) -> Routes:
        table: dict[tuple[str, str], list[Target]] = {}
        for machine in machines:
            for s in machine.signals:
                table.setdefault((s.device_id, s.key), []).append(Target(machine.id, s.name))
        return cls({k: tuple(v) for k, v in table.items()})

    @property
    def devices(self) -> frozenset[str]:
        return frozenset(device for device, _ in self.table)

    def events(self, samples: Sequence[Sample]) -> list[dict[str, object]]:
        """One entry per bound machine signal; samples of unbound keys are left out."""
        out: list[dict[str, object]] = []
        for s in samples:
            for target in self.table.get((s.device_id, s.key), ()):
                out.append(
                    {
                        "machine_id": target.machine_id,
                        "signal": target.signal,
                        "ts": s.ts,
                        "value": s.value,
                    }
                )
        return out


def frame(event: str, data: object) -> str:
    """One SSE message; JSON never contains a raw newline, so one ``data:`` line suffices."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def opening(machines: Sequence[str]) -> str:
    """The first message: how long to wait before reconnecting, and what is being watched."""
    return f"retry: {RETRY_MS}\n" + frame("ready", {"machines": list(machines)})


KEEPALIVE = ": keep-alive\n\n"
"""A comment line: keeps proxies from closing an idle stream and reveals a gone client."""
