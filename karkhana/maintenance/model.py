"""Frozen domain values of condition monitoring and maintenance management."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class WorkOrderStatus(StrEnum):
    OPEN = "open"
    IN_PROGRESS = "in_progress"
    DONE = "done"
    CANCELLED = "cancelled"


class WorkOrderKind(StrEnum):
    CORRECTIVE = "corrective"
    """Repair after a failure (a breakdown: counts for MTBF and MTTR)."""
    PREVENTIVE = "preventive"
    """From a schedule (run hours, counts, calendar)."""
    PREDICTIVE = "predictive"
    """From condition monitoring or a failure prediction."""


class WorkOrderSource(StrEnum):
    MANUAL = "manual"
    ALARM = "alarm"
    PREDICTION = "prediction"
    HEALTH = "health"
    SCHEDULE = "schedule"


class Priority(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    URGENT = "urgent"


class ScheduleBasis(StrEnum):
    CALENDAR = "calendar"
    """Every ``interval`` days."""
    RUN_HOURS = "run_hours"
    """Every ``interval`` hours of running."""
    COUNT = "count"
    """Every ``interval`` counts of a counter signal (picks, strokes, shots)."""


OPEN_STATUSES = frozenset({WorkOrderStatus.OPEN, WorkOrderStatus.IN_PROGRESS})


@dataclass(frozen=True, slots=True)
class Part:
    name: str
    quantity: float = 1.0
    part_no: str | None = None


@dataclass(frozen=True, slots=True)
class WorkOrder:
    """A maintenance job on one machine. Times are epoch milliseconds (UTC)."""

    id: int
    machine_id: str
    title: str
    kind: WorkOrderKind
    source: WorkOrderSource
    priority: Priority
    status: WorkOrderStatus
    created_ms: int
    updated_ms: int
    source_ref: str | None = None
    assignee: str | None = None
    parts: tuple[Part, ...] = ()
    notes: str = ""
    breakdown: bool = False
    """The machine had failed: the order's downtime counts for MTBF and MTTR."""
    down_start_ms: int | None = None
    down_end_ms: int | None = None
    started_ms: int | None = None
    completed_ms: int | None = None
    schedule_id: int | None = None

    @property
    def downtime_ms(self) -> int | None:
        if self.down_start_ms is None or self.down_end_ms is None:
            return None
        return max(0, self.down_end_ms - self.down_start_ms)


@dataclass(frozen=True, slots=True)
class Schedule:
    """Preventive maintenance of one machine every ``interval`` days, run hours or counts."""

    id: int
    machine_id: str
    title: str
    basis: ScheduleBasis
    interval: float
    created_ms: int
    last_done_ms: int
    last_done_meter: float = 0.0
    """The meter reading (run hours or count) when it was last done; unused for calendar."""
    signal: str | None = None
    """The machine's counter signal for COUNT (and optionally RUN_HOURS)."""
    lead: float = 0.1
    """Share of the interval before the due point when it is reported as due soon."""
    active: bool = True


@dataclass(frozen=True, slots=True)
class Due:
    """Where a schedule stands: how much of the interval is used and what is left."""

    schedule_id: int
    status: str
    """``ok``, ``due_soon`` or ``overdue`` (at or past the due point)."""
    used: float
    """Share of the interval used, 1.0 at the due point."""
    remaining: float
    """Days, run hours or counts left (negative when overdue)."""
    unit: str
    meter: float | None
    """The current meter reading; None when it is unknown (no data yet)."""


@dataclass(frozen=True, slots=True)
class Reliability:
    """MTBF and MTTR of one machine over ``[start_ms, end_ms)``."""

    machine_id: str
    start_ms: int
    end_ms: int
    failures: int
    downtime_h: float
    operating_h: float
    mtbf_h: float | None
    """Operating hours per failure; None without failures."""
    mttr_h: float | None
    """Mean hours to repair; None without failures."""
    availability: float | None


@dataclass(frozen=True, slots=True)
class Contribution:
    signal: str
    share: float
    """Share of the anomaly score from this signal (the shares of one score add up to 1)."""


@dataclass(frozen=True, slots=True)
class HealthReading:
    """A machine's health at one instant: 100 is like its learned normal, 0 far from it."""

    machine_id: str
    ts: int
    index: float
    score: float
    """Smoothed anomaly score; 1.0 is the detector's threshold."""
    trend_per_day: float | None
    """Change of the index per day, from the recent history; None with too little history."""
    alarm: bool
    contributions: tuple[Contribution, ...] = field(default_factory=tuple)
