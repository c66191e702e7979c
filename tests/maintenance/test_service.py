from __future__ import annotations

import numpy as np
import pytest

from karkhana.core.errors import Conflict, InvalidPayload, NotFound
from karkhana.core.model import Point, Sample
from karkhana.maintenance.model import (
    Part,
    Priority,
    ScheduleBasis,
    WorkOrderKind,
    WorkOrderSource,
    WorkOrderStatus,
)
from karkhana.maintenance.service import MaintenanceService, align
from karkhana.runtime import Runtime
from karkhana.sim.device import Environment, Weather
from karkhana.sim.machine import BearingWear, Constraints
from karkhana.sim.power import PowerSchedule
from karkhana.sim.textile import Loom

pytestmark = pytest.mark.anyio
HOUR_MS = 3_600_000
T0 = 1_760_000_000_000
STEP = 10_000


async def mill(rt: Runtime) -> None:
    await rt.assets.create_site("mill", "Mill")
    await rt.assets.create_area("weaving", "mill", "Weaving")
    await rt.assets.create_line("shed", "weaving", "Shed")
    await rt.devices.create("loom-1", site_id="mill")
    await rt.assets.create_machine("L1", "shed", "Loom 1", "power_loom", "loom-1")


def loom_rows(start: int, n: int, seed: int, wear: float = 0.0) -> list[Sample]:
    """A loom every 10 s: running, with a stop every 30 rows; ``wear`` raises vibration and
    bearing temperature from 0 to its value over the rows."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        ts = start + i * STEP
        w = wear * i / n
        running = i % 30 < 27
        values: dict[str, float | str | bool] = {
            "state": "running" if running else "stopped",
            "picks_per_min": float(rng.normal(500, 2)) if running else 0.0,
            "motor_current_a": float(rng.normal(6.0, 0.12)) if running else 0.35,
            "vibration_rms_mm_s": float(rng.normal(1.8, 0.12) + 9 * w) if running else 0.1,
            "bearing_temp_c": float(rng.normal(46, 0.3) + 20 * w),
            "fault": False,
        }
        out += [Sample("loom-1", k, ts, v) for k, v in values.items()]
    return out


@pytest.fixture
async def service(runtime: Runtime) -> MaintenanceService:
    await mill(runtime)
    return MaintenanceService(
        runtime.db, runtime.store, runtime.assets, runtime.clock, runtime.audit, learn_ms=HOUR_MS
    )


def test_align_joins_signals_by_time_up_to_the_slowest() -> None:
    current: dict[str, tuple[int, float | bool | str]] = {}
    rows, mark = align(
        {"a": [Point(1, 1.0), Point(2, 2.0), Point(3, 3.0)], "b": [Point(1, 10.0), Point(2, 20.0)]},
        current,
        stale_ms=100,
    )
    assert mark == 2
    assert rows == [(1, {"a": 1.0, "b": 10.0}), (2, {"a": 2.0, "b": 20.0})]
    rows, mark = align({"a": [Point(3, 3.0)], "b": [Point(500, 5.0)]}, current, stale_ms=100)
    assert mark == 500  # a stopped reporting: it no longer holds the others back
    assert rows[-1] == (500, {"a": None, "b": 5.0})


async def test_learns_then_finds_a_degrading_bearing(
    runtime: Runtime, service: MaintenanceService
) -> None:
    await runtime.store.write(loom_rows(T0, 330, seed=1))  # 55 minutes of normal running
    assert await service.update_machine("L1") is None  # still learning the first hour
    health = await service.health("L1")
    assert health.status == "learning" and health.learning_progress > 0.85
    await runtime.store.write(loom_rows(T0 + 330 * STEP, 1110, seed=2))
    update = await service.update_machine("L1")
    assert update is not None and update.index > 85 and not update.alarm
    await runtime.store.write(loom_rows(T0 + 1440 * STEP, 1080, seed=3, wear=0.6))
    update = await service.update_machine("L1")
    assert update is not None and update.alarm and update.index < 50
    health = await service.health("L1")
    assert health.status == "alarm" and health.index == pytest.approx(update.index, abs=0.01)
    assert health.contributions[0].signal in ("vibration_rms_mm_s", "bearing_temp_c")
    assert health.trend_per_day is not None and health.trend_per_day < 0
    assert health.run_hours is not None and 5.0 < health.run_hours < 7.0  # 90% of 7 hours
    # the health is telemetry of the loom's device, for charts and alarm rules
    latest = {x.key: x.value for x in await runtime.store.latest("loom-1")}
    assert latest["health_index"] == pytest.approx(update.index, abs=0.01)
    assert latest["health_alarm"] == 1.0
    # and the alarm opened one predictive work order
    orders = await service.list_work_orders(machine_id="L1")
    assert [(o.source, o.kind) for o in orders] == [
        (WorkOrderSource.HEALTH, WorkOrderKind.PREDICTIVE)
    ]
    assert [e.action for e in await runtime.audit.events()][-1] == "work_order.create"
    # a restarted server knows the alarm before its first pass, and opens no second order
    again = MaintenanceService(
        runtime.db, runtime.store, runtime.assets, runtime.clock, runtime.audit, learn_ms=HOUR_MS
    )
    assert (await again.health("L1")).status == "alarm"
    await runtime.store.write(loom_rows(T0 + 2520 * STEP, 60, seed=4, wear=0.6))
    assert (await again.update_machine("L1")) is not None
    assert len(await again.list_work_orders(machine_id="L1")) == 1


async def test_a_stopped_loom_is_not_an_anomaly(
    runtime: Runtime, service: MaintenanceService
) -> None:
    await runtime.store.write(loom_rows(T0, 1440, seed=4))
    await service.update_machine("L1")
    stopped = [
        Sample("loom-1", k, T0 + (1440 + i) * STEP, v)
        for i in range(360)
        for k, v in {
            "state": "stopped",
            "picks_per_min": 0.0,
            "motor_current_a": 0.0,
            "vibration_rms_mm_s": 0.1,
            "bearing_temp_c": 35.0,
            "fault": False,
        }.items()
    ]
    await runtime.store.write(stopped)
    await service.update_machine("L1")
    health = await service.health("L1")
    assert health.status == "ok" and health.index is not None and health.index > 85
    assert not health.settling
    # running again after an hour's stop: not judged until it is back (at least 20 minutes)
    back = T0 + (1440 + 360) * STEP
    await runtime.store.write(loom_rows(back, 20, seed=7))
    await service.update_machine("L1")
    health = await service.health("L1")
    assert health.settling and health.status == "ok"
    await runtime.store.write(loom_rows(back + 20 * STEP, 240, seed=8))
    await service.update_machine("L1")
    assert not (await service.health("L1")).settling


async def test_the_model_survives_a_restart(runtime: Runtime, service: MaintenanceService) -> None:
    await runtime.store.write(loom_rows(T0, 1440, seed=5))
    await service.update_machine("L1")
    again = MaintenanceService(
        runtime.db, runtime.store, runtime.assets, runtime.clock, runtime.audit, learn_ms=HOUR_MS
    )
    await runtime.store.write(loom_rows(T0 + 1440 * STEP, 60, seed=6))
    update = await again.update_machine("L1")
    assert update is not None  # scores at once: nothing to learn again
    await runtime.devices.create("meter-1", site_id="mill")
    await runtime.assets.create_machine("M1", "shed", "Meter", "energy_meter_3ph", "meter-1")
    assert (await again.health("M1")).status == "not_monitored"
    assert await again.update_machine("M1") is None
    await again.forget("L1")
    assert (await again.health("L1")).status in ("ok", "no_data", "learning")


async def test_work_order_lifecycle(runtime: Runtime, service: MaintenanceService) -> None:
    wo = await service.create_work_order(
        "L1",
        "Main shaft bearing noisy",
        priority=Priority.HIGH,
        breakdown=True,
        parts=[Part("6205 bearing", 2, "SKF-6205")],
        actor="amir",
    )
    assert wo.status is WorkOrderStatus.OPEN and wo.down_start_ms == wo.created_ms
    started = await service.update_work_order(
        "L1", wo.id, {"status": WorkOrderStatus.IN_PROGRESS, "assignee": "bilal"}, actor="amir"
    )
    assert started.started_ms is not None and started.assignee == "bilal"
    done = await service.update_work_order(
        "L1", wo.id, {"status": WorkOrderStatus.DONE, "notes": "replaced"}, actor="bilal"
    )
    assert done.completed_ms is not None and done.down_end_ms is not None
    assert (await service.get_work_order(wo.id, "L1")).parts == (
        Part("6205 bearing", 2, "SKF-6205"),
    )
    with pytest.raises(Conflict):
        await service.update_work_order("L1", wo.id, {"status": WorkOrderStatus.CANCELLED})
    with pytest.raises(InvalidPayload):
        await service.update_work_order("L1", wo.id, {"machine_id": "L2"})
    with pytest.raises(NotFound):
        await service.get_work_order(wo.id, "L2")
    r = await service.reliability("L1", T0, runtime.clock.now_ms() + HOUR_MS)
    assert r.failures == 1
    await service.delete_work_order("L1", wo.id, actor="amir")
    with pytest.raises(NotFound):
        await service.get_work_order(wo.id)
    actions = [e.action for e in await runtime.audit.events()]
    assert actions[-4:] == [
        "work_order.create",
        "work_order.update",
        "work_order.update",
        "work_order.delete",
    ]
    with pytest.raises(NotFound):
        await service.create_work_order("nope", "x")


async def test_schedules_fall_due_and_open_a_work_order(
    runtime: Runtime, service: MaintenanceService
) -> None:
    await runtime.store.write([Sample("loom-1", "pick_count", T0, 1_000.0)])
    count = await service.create_schedule(
        "L1", "Change the reed", ScheduleBasis.COUNT, 5_000, signal="pick_count"
    )
    assert count.last_done_meter == 1_000.0
    assert (await service.due_of(count)).status == "ok"
    await runtime.store.write([Sample("loom-1", "pick_count", T0 + 1, 6_500.0)])
    assert (await service.due_of(count)).status == "overdue"
    made = await service.open_due_work_orders()
    assert [(o.schedule_id, o.kind) for o in made] == [(count.id, WorkOrderKind.PREVENTIVE)]
    assert await service.open_due_work_orders() == []  # one open order per schedule
    await service.update_work_order("L1", made[0].id, {"status": WorkOrderStatus.DONE})
    after = await service.get_schedule(count.id)
    assert after.last_done_meter == 6_500.0 and (await service.due_of(after)).status == "ok"
    cal = await service.create_schedule("L1", "Grease", ScheduleBasis.CALENDAR, 7)
    assert (await service.due_of(cal)).unit == "days"
    hours = await service.create_schedule("L1", "Oil", ScheduleBasis.RUN_HOURS, 500)
    assert (await service.due_of(hours)).status == "unknown"  # no run hours counted yet
    with pytest.raises(InvalidPayload):
        await service.create_schedule("L1", "x", ScheduleBasis.COUNT, 10)
    with pytest.raises(InvalidPayload):
        await service.create_schedule("L1", "x", ScheduleBasis.COUNT, 10, signal="nope")
    await service.delete_schedule("L1", cal.id)
    assert [s.id for s in await service.list_schedules("L1")] == [count.id, hours.id]


async def test_the_simulated_loom_with_a_worn_bearing_loses_health(
    runtime: Runtime, service: MaintenanceService
) -> None:
    """The simulator's loom model through the store and the service, as in the demo."""
    await runtime.devices.create("loom-2", site_id="mill")
    await runtime.assets.create_machine("L2", "shed", "Loom 2", "power_loom", "loom-2")
    power = PowerSchedule(7, enabled=False)
    wear = BearingWear(T0 + 8 * HOUR_MS, T0 + 40 * HOUR_MS, T0 + 48 * HOUR_MS)
    worn = Loom("loom-1", "worn", 7, T0, Constraints(power, essential=True, wear=wear), wear)
    healthy = Loom("loom-2", "healthy", 7, T0, Constraints(power, essential=True))
    env = Environment(power, Weather(7))
    history: dict[str, list[tuple[float, float, bool]]] = {"L1": [], "L2": []}
    t = T0
    while t < T0 + 30 * HOUR_MS:
        batch = []
        for _ in range(120):  # two simulated hours a reading a minute
            t += 60_000
            env.begin(t)
            for loom in (worn, healthy):
                batch += [Sample(loom.device_id, k, t, v) for k, v in loom.advance(t, env).items()]
        await runtime.store.write(batch)
        for machine in ("L1", "L2"):
            update = await service.update_machine(machine)
            if update is not None:
                history[machine].append(((update.ts - T0) / HOUR_MS, update.index, update.alarm))
    healthy_hours = [(h, i) for h, i, _ in history["L1"] if h < 10]
    assert healthy_hours and all(i > 80 for _, i in healthy_hours)
    assert history["L1"][-1][1] < 30 and history["L1"][-1][2]
    first_alarm = min(h for h, _, alarm in history["L1"] if alarm)
    assert first_alarm < 40 - 12  # well before the failure at 40 h
    assert not any(alarm for _, _, alarm in history["L2"])
    assert min(i for _, i, _ in history["L2"]) > 60
    health = await service.health("L1")
    assert health.trend_per_day is not None and health.trend_per_day < -20
    top = {c.signal for c in health.contributions[:2]}
    assert top & {"vibration_rms_mm_s", "bearing_temp_c"}
