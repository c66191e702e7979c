"""Frozen values of production monitoring: state intervals, stops, shifts, counts and OEE."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from karkhana.assets.template import MachineState

LossKind = Literal["breakdown", "setup", "planned"]
"""What a downtime reason costs: an availability loss (breakdown, setup) or planned time."""

STOP_STATES: frozenset[str] = frozenset({"idle", "stopped", "fault", "no_data"})
"""States that are downtime when they fall in planned production time."""


@dataclass(frozen=True, slots=True)
class Interval:
    """A machine in one state over ``[start_ms, end_ms)``; ``loss`` comes from its reason."""

    start_ms: int
    end_ms: int
    state: MachineState
    reason_id: str | None = None
    loss: LossKind | None = None

    @property
    def duration_ms(self) -> int:
        return self.end_ms - self.start_ms


@dataclass(frozen=True, slots=True)
class Stop:
    """A stored stop: an interval in a stop state; ``end_ms`` is None while it lasts."""

    id: int
    machine_id: str
    start_ms: int
    end_ms: int | None
    state: MachineState
    reason_id: str | None
    auto: bool


@dataclass(frozen=True, slots=True)
class ShiftWindow:
    """One occurrence of a shift: ``day`` is the local date it starts on (ISO)."""

    id: str
    name: str
    day: str
    start_ms: int
    end_ms: int


@dataclass(frozen=True, slots=True)
class CountBucket:
    """Output counted in the minute starting at ``minute_ms``: all units and rejected units."""

    minute_ms: int
    total: float
    rejects: float = 0.0


@dataclass(frozen=True, slots=True)
class Losses:
    """The six big losses: four in milliseconds, the two quality losses in units."""

    breakdowns_ms: int = 0
    setup_ms: int = 0
    small_stops_ms: int = 0
    reduced_speed_ms: int = 0
    startup_rejects: float = 0.0
    production_rejects: float = 0.0


@dataclass(frozen=True, slots=True)
class Oee:
    """OEE of a machine (or several) over ``[start_ms, end_ms)``.

    A factor is None when it cannot be known: availability without planned time, performance
    without an ideal cycle time. ``quality_measured`` is False when no reject count exists and
    quality is taken as 1.
    """

    start_ms: int
    end_ms: int
    planned_ms: int
    run_ms: int
    total_count: float
    good_count: float
    availability: float | None
    performance: float | None
    quality: float
    losses: Losses
    quality_measured: bool
    ideal_ms: float | None = None
    """Ideal time for the counted output (ideal cycle time x total count)."""

    @property
    def oee(self) -> float | None:
        if self.availability is None or self.performance is None:
            return None
        return self.availability * self.performance * self.quality
