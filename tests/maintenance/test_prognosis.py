"""Remaining life of machines on the floor: hourly cycles from stored data, lives cut by
breakdown work orders, training, scoring, telemetry and predictive work orders."""

from __future__ import annotations

import numpy as np
import pytest

from karkhana.assets.template import load_templates
from karkhana.core.errors import InvalidPayload
from karkhana.core.model import Sample
from karkhana.maintenance.cycles import HOUR_MS
from karkhana.maintenance.model import WorkOrderKind, WorkOrderSource
from karkhana.maintenance.prognosis import RUL_KEY, fit_lives
from karkhana.maintenance.rul import Run
from karkhana.maintenance.train import simulated_runs
from karkhana.runtime import Runtime
from karkhana.sim.lifetimes import Life

pytestmark = pytest.mark.anyio
DAY_MS = 24 * HOUR_MS
T0 = 1_760_000_000_000 - 1_760_000_000_000 % HOUR_MS
PERIOD = 5 * 60_000
LOOM = load_templates()["power_loom"]
REPAIR_MS = 8 * HOUR_MS


def test_a_model_trained_on_simulated_lives_tracks_a_new_life() -> None:
    runs = simulated_runs(LOOM, 8, seed=11)
    train, held = runs[:6], runs[6:]
    model = fit_lives(train, seed=0, holdout=0).model
    errors = []
    for run in held:
        n = len(run)
        for left in (72, 48, 24, 12):
            cut = Run(run.unit, run.signals[: n - left])
            pred = model.predict([cut])
            errors.append(float(pred.rul[0]) - left)
            assert pred.lower[0] <= pred.rul[0] <= pred.upper[0]
        healthy = model.predict([Run(run.unit, run.signals[:30])]).rul[0]
        assert healthy > 60  # a day into a healthy life: failure is not near
    # within three days of the failure the wear shows, and the estimate follows it
    rmse = float(np.sqrt(np.mean(np.square(errors))))
    assert rmse < 15, errors


def test_fewer_than_two_failures_is_a_clear_error() -> None:
    runs = simulated_runs(LOOM, 1, seed=1)
    with pytest.raises(InvalidPayload, match="at least 2 lives"):
        fit_lives(runs)
    with pytest.raises(InvalidPayload, match="power_loom only"):
        simulated_runs(load_templates()["cnc_machine"], 2, seed=1)


async def _write_life(rt: Runtime, device: str, life: Life, seed: int) -> None:
    samples = [
        Sample(device, k, ts, v)
        for ts, readings in life.readings(PERIOD)
        for k, v in readings.items()
    ]
    await rt.store.write(samples)


async def test_trained_from_recorded_breakdowns_and_scored_live(runtime: Runtime) -> None:
    rt = runtime
    await rt.assets.create_site("mill", "Mill")
    await rt.assets.create_area("weaving", "mill", "Weaving")
    await rt.assets.create_line("shed", "weaving", "Shed")
    for n in (1, 2, 3):
        await rt.devices.create(f"loom-{n}", site_id="mill")
        await rt.assets.create_machine(f"L{n}", "shed", f"Loom {n}", "power_loom", f"loom-{n}")
    # L1 and L2 each failed twice (a breakdown work order each); L3 is wearing now
    for n, seed in ((1, 101), (2, 202)):
        first = Life(f"loom-{n}", T0, T0 + DAY_MS, T0 + 4 * DAY_MS, seed)
        start2 = first.failure_ms + REPAIR_MS
        second = Life(f"loom-{n}", start2, start2 + DAY_MS // 2, start2 + 4 * DAY_MS, seed + 1)
        for life in (first, second):
            await _write_life(rt, f"loom-{n}", life, seed)
            await rt.maintenance.create_work_order(
                f"L{n}",
                "Main shaft bearing seized",
                breakdown=True,
                down_start_ms=life.failure_ms,
                down_end_ms=life.failure_ms + REPAIR_MS,
            )
    worn = Life("loom-3", T0, T0 + DAY_MS, T0 + 5 * DAY_MS, 303)
    now = worn.failure_ms - 30 * HOUR_MS  # 30 hours before it fails
    current = Life("loom-3", T0, worn.onset_ms, worn.failure_ms, 303)
    await rt.store.write(
        [
            Sample("loom-3", k, ts, v)
            for ts, readings in current.readings(PERIOD)
            if ts < now
            for k, v in readings.items()
        ]
    )

    # no model yet: no estimate
    await rt.maintenance.update_all()
    assert await rt.prognosis.current("L3") is None
    lives = await rt.prognosis.lives("L1")
    assert [life.failed for life in lives] == [True, True]
    assert len(await rt.prognosis.cycles("L3", T0, now)) > 60  # hours of power cuts have none

    manifest = await rt.maintenance.train_rul("power_loom", holdout=0)
    assert manifest.kind == "rul" and manifest.data["lives"] == 4
    assert manifest.data["source"] == "recorded failures"

    estimate = await rt.prognosis.estimate("L3")
    assert estimate is not None
    assert estimate.ts == now - HOUR_MS  # the last complete hour (the one to now is open)
    assert 0 <= estimate.hours < 72, estimate  # truth: about 30 h
    assert estimate.lower <= estimate.hours <= estimate.upper
    health = await rt.maintenance.health("L3")
    assert health.rul is not None and health.rul["unit"] == "h"

    # the training backfilled the hourly estimates of L3's current life as telemetry
    points = await rt.store.query("loom-3", RUL_KEY, T0, now + HOUR_MS)
    assert len(points) > 60
    early = [p.value for p in points[24:48] if isinstance(p.value, float)]
    late = [p.value for p in points[-6:] if isinstance(p.value, float)]
    assert min(early) > max(late)  # the estimate falls as the bearing wears

    order = await rt.maintenance.order_from_rul(estimate, actor="planner")
    assert order is not None
    assert order.kind is WorkOrderKind.PREDICTIVE and order.source is WorkOrderSource.PREDICTION
    assert "h of life left" in order.title
    assert order.source_ref == f"rul:power_loom:v{manifest.version}:{estimate.ts}"
    # once: not a second predictive order while one is open
    assert await rt.maintenance.order_from_rul(estimate, actor="x", once=True) is None

    # the machine breaks down: no current life, no estimate until it is back
    await rt.maintenance.create_work_order("L3", "Seized", breakdown=True, down_start_ms=now)
    assert await rt.prognosis.current("L3") is None
