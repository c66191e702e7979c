"""The demo end to end: a simulated mill publishes over MQTT to the embedded broker, after
writing its history straight into the store."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import time
from pathlib import Path

import httpx
import pytest

from karkhana.api.app import create_app
from karkhana.cli import build_parser
from karkhana.core.clock import FakeClock
from karkhana.core.errors import ConfigError
from karkhana.demo import (
    MARKER,
    STARTER_RULES,
    prepare,
    read_mark,
    run_demo,
    starter_rules,
    write_mark,
)
from karkhana.maintenance.service import MaintenanceService
from karkhana.runtime import Runtime
from karkhana.sim.history import PERIOD_MS, wear_fault
from tests.conftest import ADMIN_PASSWORD, make_settings

pytestmark = pytest.mark.anyio


async def test_demo_mill_data_flows_to_the_api(tmp_path: Path) -> None:
    rt = Runtime(make_settings(tmp_path))
    await rt.start()
    args = argparse.Namespace(
        profile="textile", devices=3, rate=2.0, speedup=1.0, seed=1, history_days=0.0
    )
    task = asyncio.create_task(run_demo(rt, args))
    try:
        transport = httpx.ASGITransport(app=create_app(rt))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as api:
            login = await api.post(
                "/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
            )
            api.headers["Authorization"] = f"Bearer {login.json()['token']}"
            deadline = time.monotonic() + 20
            points: list[object] = []
            while time.monotonic() < deadline and len(points) < 3:
                await asyncio.sleep(0.5)
                r = await api.get("/api/v1/machines/tx-loom-01/signals/vibration_rms_mm_s")
                if r.status_code == 200:
                    points = r.json()["points"]
            assert len(points) >= 3, "no vibration data from the simulated loom"
            tree = (await api.get("/api/v1/assets")).json()
            machines = tree[0]["areas"][0]["lines"][0]["machines"]
            assert any(m["template"] == "power_loom" for m in machines)
            assert any(m["template"] == "energy_meter_3ph" for m in machines)
            # the starter rules are there, bound to every loom, and made only once
            rules = {r["id"] for r in (await api.get("/api/v1/rules")).json()["rules"]}
            assert {r["id"] for r in STARTER_RULES["textile"]} <= rules
            assert await starter_rules(rt, "textile") == 0
            looms = {b.machine_id for b in rt.alarms.ruleset.rules if b.template == "power_loom"}
            assert {"tx-loom-01", "tx-loom-02"} <= looms
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await rt.stop()


HOUR_MS = 3_600_000
NOW = 1_794_996_000_000
"""2026-11-18 10:00 UTC, 15:00 in Pakistan: the morning shift (06:00-14:00) ended an hour ago."""
SHIFT_A = (NOW - 9 * HOUR_MS, NOW - HOUR_MS)


def history_args(hours: float, seed: int = 3) -> argparse.Namespace:
    return argparse.Namespace(
        profile="textile", devices=2, rate=1.0, speedup=1.0, seed=seed, history_days=hours / 24
    )


async def start(tmp_path: Path, clock: FakeClock) -> Runtime:
    rt = Runtime(make_settings(tmp_path), clock=clock)
    # normal running learned from the first hour instead of a day, so that hours of history
    # are also scored
    rt.maintenance = MaintenanceService(
        rt.db, rt.store, rt.assets, clock, rt.audit, learn_ms=HOUR_MS
    )
    await rt.start(mqtt=False)
    return rt


async def count(rt: Runtime, table: str) -> int:
    n: int = await rt.db.execute_read_fn(
        lambda c: c.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    )
    return n


async def test_demo_starts_with_hours_of_history(tmp_path: Path) -> None:
    rt = await start(tmp_path, FakeClock(NOW))
    try:
        plant, _ = await prepare(rt, history_args(10))
        assert plant.now_ms == NOW
        begin = NOW - 10 * HOUR_MS
        picks = await rt.store.query("tx-loom-01", "picks_per_min", begin - 1, NOW + 1)
        assert picks[0].ts == begin and NOW - PERIOD_MS <= picks[-1].ts < NOW
        # production: states, stops, counts and OEE of the shift that ended
        machines = rt.production.production_machines(frozenset({"demo-mill"}))
        looms = [m for m in machines if m.template_id == "power_loom"]
        assert len(looms) == 2
        oee = await rt.production.oee(looms, *SHIFT_A)
        assert oee.availability is not None and 0.5 < oee.availability < 1.0
        assert oee.total_count > 0 and oee.oee is not None
        stops = await rt.production.stops(looms, *SHIFT_A)
        assert sum(1 for s in stops if s.state == "stopped") >= 5
        # ... given the reasons the weavers would have given them
        pareto = {i.key for i in await rt.production.pareto(looms, "reason", *SHIFT_A)}
        assert {"mechanical.warp_break", "mechanical.weft_break"} <= pareto
        report = rt.production.reports_dir / "demo-mill" / "2026-11-18-shift-A.csv"
        assert "Loom 01" in report.read_text(encoding="utf-8")
        # condition monitoring learned and scored over the window
        health = await rt.store.query("tx-loom-01", "health_index", begin, NOW + 1)
        assert len(health) >= 10 and health[-1].ts > NOW - HOUR_MS
        # the loom that fell silent in the history raised the starter rule's alarm, and its
        # return cleared it
        drop = next(
            f
            for f in plant.ground_truth(NOW)
            if f.kind == "sensor_dropout"
            and f.device_id.startswith("tx-loom")
            and begin < f.start_ms
        )
        assert drop.end_ms is not None
        rows = await rt.db.execute_read_fn(
            lambda c: c.execute(
                "SELECT machine_id, raised_ms, cleared_ms FROM alarms"
                " WHERE rule_id = 'demo-loom-silent'"
            ).fetchall()
        )
        assert len(rows) == 1
        machine, raised, cleared = rows[0]
        assert machine == drop.device_id
        assert drop.start_ms + 270_000 <= raised <= drop.start_ms + 330_000
        assert drop.end_ms <= cleared < drop.end_ms + PERIOD_MS
        # the worn loom, 80 % of the way to failure at the end, vibrated past zone D
        worn = wear_fault(plant)
        assert worn is not None
        vibrating = await rt.db.execute_read_fn(
            lambda c: c.execute(
                "SELECT DISTINCT machine_id FROM alarms WHERE rule_id = 'demo-loom-vibration'"
                " AND raised_ms < ?",
                (NOW,),
            ).fetchall()
        )
        assert vibrating == [(worn.device_id,)]
        # the starter rules are live from now on
        assert {r["id"] for r in STARTER_RULES["textile"]} <= set(rt.alarms.rules)
        mark = read_mark(rt.settings.data_dir / MARKER, "textile")
        assert mark is not None and mark.complete and mark.plant_start_ms == plant.start_ms
    finally:
        await rt.stop()


async def test_a_restart_does_not_write_the_history_again(tmp_path: Path) -> None:
    clock = FakeClock(NOW)
    rt = await start(tmp_path, clock)
    try:
        first, _ = await prepare(rt, history_args(2))
        samples, alarms = await count(rt, "samples"), await count(rt, "alarms")
        assert samples > 10_000
    finally:
        await rt.stop()
    clock.advance(HOUR_MS)
    rt = await start(tmp_path, clock)
    try:
        again, _ = await prepare(rt, history_args(2))
        assert again.start_ms == first.start_ms and again.now_ms == NOW + HOUR_MS
        assert await count(rt, "samples") == samples and await count(rt, "alarms") == alarms
        # a run stopped while writing its history carries on where the store ends
        path = rt.settings.data_dir / MARKER
        mark = read_mark(path, "textile")
        assert mark is not None
        write_mark(path, "textile", dataclasses.replace(mark, complete=False))
        clock.advance(HOUR_MS)
        resumed, _ = await prepare(rt, history_args(2))
        stamps = [p.ts for p in await rt.store.query("tx-loom-02", "motor_current_a", 0, 2**62)]
        assert stamps == sorted(set(stamps))
        assert stamps[-1] >= NOW + 2 * HOUR_MS - PERIOD_MS
        assert all((t - mark.history_start_ms) % PERIOD_MS == 0 for t in stamps)
        assert resumed.start_ms == first.start_ms
        assert read_mark(path, "textile") == mark
    finally:
        await rt.stop()


def test_history_days_flag() -> None:
    parse = build_parser().parse_args
    assert parse(["demo"]).history_days == 3.0
    assert parse(["demo", "--history-days", "0.5"]).history_days == 0.5
    assert parse(["demo", "--history-days", "0"]).history_days == 0.0
    for bad in ("-1", "31", "nan", "three"):
        with pytest.raises(SystemExit):
            parse(["demo", "--history-days", bad])


async def test_a_damaged_marker_is_a_clear_error_and_changes_nothing(tmp_path: Path) -> None:
    rt = await start(tmp_path, FakeClock(NOW))
    try:
        path = rt.settings.data_dir / MARKER
        path.write_text("{not json", encoding="utf-8")
        with pytest.raises(ConfigError, match=r"demo-history\.json"):
            await prepare(rt, history_args(1))
        assert path.read_text(encoding="utf-8") == "{not json"
        assert await count(rt, "samples") == 0
    finally:
        await rt.stop()
