"""Pure maintenance arithmetic: MTBF and MTTR from breakdowns, when a schedule falls due,
and which work-order status changes are allowed."""

from __future__ import annotations

from collections.abc import Iterable

from karkhana.core.errors import Conflict
from karkhana.maintenance.model import (
    Due,
    Reliability,
    Schedule,
    ScheduleBasis,
    WorkOrder,
    WorkOrderStatus,
)

HOUR_MS = 3_600_000
MAX_USED = 1e9
"""Share of the interval reported at most (a wild meter reading stays a finite number)."""
DAY_MS = 86_400_000

TRANSITIONS: dict[WorkOrderStatus, frozenset[WorkOrderStatus]] = {
    WorkOrderStatus.OPEN: frozenset(
        {WorkOrderStatus.IN_PROGRESS, WorkOrderStatus.DONE, WorkOrderStatus.CANCELLED}
    ),
    WorkOrderStatus.IN_PROGRESS: frozenset(
        {WorkOrderStatus.OPEN, WorkOrderStatus.DONE, WorkOrderStatus.CANCELLED}
    ),
    WorkOrderStatus.DONE: frozenset({WorkOrderStatus.IN_PROGRESS}),
    WorkOrderStatus.CANCELLED: frozenset({WorkOrderStatus.OPEN}),
}
"""Allowed status changes; a finished order may be reopened for more work."""


def check_transition(old: WorkOrderStatus, new: WorkOrderStatus) -> None:
    if old != new and new not in TRANSITIONS[old]:
        raise Conflict(f"a work order cannot go from {old} to {new}")


def reliability(
    machine_id: str, orders: Iterable[WorkOrder], start_ms: int, end_ms: int
) -> Reliability:
    """MTBF (operating hours per failure) and MTTR (mean repair hours) over ``[start, end)``.

    Failures are breakdown work orders whose downtime began in the period and was not
    cancelled; a downtime still open at ``end_ms`` runs until then.
    """
    if end_ms <= start_ms:
        raise ValueError("end must be after start")
    repairs: list[int] = []
    for wo in orders:
        if not wo.breakdown or wo.status is WorkOrderStatus.CANCELLED:
            continue
        if wo.down_start_ms is None or not start_ms <= wo.down_start_ms < end_ms:
            continue
        down_end = min(wo.down_end_ms if wo.down_end_ms is not None else end_ms, end_ms)
        repairs.append(max(0, down_end - wo.down_start_ms))
    period_h = (end_ms - start_ms) / HOUR_MS
    downtime_h = sum(repairs) / HOUR_MS
    operating_h = max(0.0, period_h - downtime_h)
    failures = len(repairs)
    return Reliability(
        machine_id=machine_id,
        start_ms=start_ms,
        end_ms=end_ms,
        failures=failures,
        downtime_h=downtime_h,
        operating_h=operating_h,
        mtbf_h=operating_h / failures if failures else None,
        mttr_h=downtime_h / failures if failures else None,
        availability=operating_h / period_h if period_h > 0 else None,
    )


def due(schedule: Schedule, now_ms: int, meter: float | None) -> Due:
    """Where ``schedule`` stands at ``now_ms`` with the machine's ``meter`` reading (run hours or
    count; ignored for calendar schedules)."""
    if schedule.basis is ScheduleBasis.CALENDAR:
        used_units = (now_ms - schedule.last_done_ms) / DAY_MS
        unit, reading = "days", None
    else:
        unit = "hours" if schedule.basis is ScheduleBasis.RUN_HOURS else "counts"
        if meter is None:
            return Due(schedule.id, "unknown", 0.0, schedule.interval, unit, None)
        # a counter reset (a new device, a replaced PLC) starts the interval again
        used_units = max(0.0, meter - schedule.last_done_meter)
        reading = meter
    used = min(used_units / schedule.interval, MAX_USED)
    if used >= 1.0:
        status = "overdue"
    elif used >= 1.0 - schedule.lead:
        status = "due_soon"
    else:
        status = "ok"
    return Due(schedule.id, status, used, schedule.interval - used_units, unit, reading)
