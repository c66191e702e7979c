"""The asset hierarchy: site -> area -> line -> machine, and the signals a machine binds."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Site:
    id: str
    name: str
    timezone: str


@dataclass(frozen=True, slots=True)
class Area:
    id: str
    site_id: str
    name: str


@dataclass(frozen=True, slots=True)
class Line:
    id: str
    area_id: str
    name: str


@dataclass(frozen=True, slots=True)
class SignalBinding:
    """A machine's named signal and where its data comes from (a device's key)."""

    name: str
    device_id: str
    key: str
    unit: str | None


@dataclass(frozen=True, slots=True)
class Machine:
    id: str
    line_id: str
    name: str
    template: str
    signals: tuple[SignalBinding, ...]

    def signal(self, name: str) -> SignalBinding | None:
        return next((s for s in self.signals if s.name == name), None)
