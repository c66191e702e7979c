from __future__ import annotations

from dataclasses import replace

import pytest

from karkhana.core.errors import Conflict
from karkhana.maintenance.model import (
    Priority,
    Schedule,
    ScheduleBasis,
    WorkOrder,
    WorkOrderKind,
    WorkOrderSource,
    WorkOrderStatus,
)
from karkhana.maintenance.workorders import DAY_MS, HOUR_MS, check_transition, due, reliability


def breakdown(down_start: int, down_end: int | None, **changes: object) -> WorkOrder:
    wo = WorkOrder(
        id=1,
        machine_id="m1",
        title="bearing seized",
        kind=WorkOrderKind.CORRECTIVE,
        source=WorkOrderSource.MANUAL,
        priority=Priority.HIGH,
        status=WorkOrderStatus.DONE,
        created_ms=down_start,
        updated_ms=down_start,
        breakdown=True,
        down_start_ms=down_start,
        down_end_ms=down_end,
    )
    return replace(wo, **changes)  # type: ignore[arg-type]


def test_mtbf_and_mttr_by_hand() -> None:
    # 10 days, three breakdowns of 2, 4 and 6 hours: 234 operating hours
    orders = [
        breakdown(1 * DAY_MS, 1 * DAY_MS + 2 * HOUR_MS),
        breakdown(4 * DAY_MS, 4 * DAY_MS + 4 * HOUR_MS),
        breakdown(8 * DAY_MS, 8 * DAY_MS + 6 * HOUR_MS),
        breakdown(5 * DAY_MS, 5 * DAY_MS + HOUR_MS, breakdown=False),  # planned work
        breakdown(6 * DAY_MS, 6 * DAY_MS + HOUR_MS, status=WorkOrderStatus.CANCELLED),
        breakdown(20 * DAY_MS, 20 * DAY_MS + HOUR_MS),  # outside the period
    ]
    r = reliability("m1", orders, 0, 10 * DAY_MS)
    assert r.failures == 3
    assert r.downtime_h == pytest.approx(12.0)
    assert r.mttr_h == pytest.approx(4.0)
    assert r.mtbf_h == pytest.approx(228.0 / 3)
    assert r.availability == pytest.approx(228.0 / 240.0)


def test_open_downtime_runs_to_the_end_and_no_failures_means_no_mtbf() -> None:
    r = reliability("m1", [breakdown(9 * DAY_MS, None)], 0, 10 * DAY_MS)
    assert r.mttr_h == pytest.approx(24.0)
    empty = reliability("m1", [], 0, DAY_MS)
    assert empty.failures == 0 and empty.mtbf_h is None and empty.availability == 1.0
    with pytest.raises(ValueError):
        reliability("m1", [], 5, 5)


def schedule(basis: ScheduleBasis, interval: float, **changes: object) -> Schedule:
    base = {
        "id": 1,
        "machine_id": "m1",
        "title": "grease",
        "basis": basis,
        "interval": interval,
        "created_ms": 0,
        "last_done_ms": 0,
        "last_done_meter": 0.0,
    }
    return Schedule(**{**base, **changes})  # type: ignore[arg-type]


def test_calendar_schedule() -> None:
    s = schedule(ScheduleBasis.CALENDAR, 30)
    assert due(s, 10 * DAY_MS, None).status == "ok"
    soon = due(s, 28 * DAY_MS, None)
    assert soon.status == "due_soon" and soon.remaining == pytest.approx(2.0)
    late = due(s, 31 * DAY_MS, None)
    assert late.status == "overdue" and late.remaining == pytest.approx(-1.0)
    assert late.unit == "days"


def test_run_hours_and_count_schedules() -> None:
    s = schedule(ScheduleBasis.RUN_HOURS, 500, last_done_meter=1200.0)
    assert due(s, 0, 1500.0).status == "ok"
    assert due(s, 0, 1660.0).status == "due_soon"
    assert due(s, 0, 1700.0).status == "overdue"
    assert due(s, 0, None).status == "unknown"
    c = schedule(ScheduleBasis.COUNT, 1_000_000, last_done_meter=5_000_000)
    assert due(c, 0, 6_100_000).remaining == pytest.approx(-100_000)
    assert due(c, 0, 10.0).status == "ok"  # the counter was reset


def test_status_transitions() -> None:
    check_transition(WorkOrderStatus.OPEN, WorkOrderStatus.IN_PROGRESS)
    check_transition(WorkOrderStatus.DONE, WorkOrderStatus.IN_PROGRESS)
    check_transition(WorkOrderStatus.DONE, WorkOrderStatus.DONE)
    with pytest.raises(Conflict):
        check_transition(WorkOrderStatus.DONE, WorkOrderStatus.CANCELLED)
    with pytest.raises(Conflict):
        check_transition(WorkOrderStatus.CANCELLED, WorkOrderStatus.DONE)


def test_a_wild_meter_reading_stays_finite() -> None:
    s = schedule(ScheduleBasis.COUNT, 0.001)
    state = due(s, 0, 1e308)
    assert state.status == "overdue" and state.used == 1e9
