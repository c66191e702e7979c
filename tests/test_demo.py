"""The demo end to end: a simulated mill publishes over MQTT to the embedded broker."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from pathlib import Path

import httpx
import pytest

from karkhana.api.app import create_app
from karkhana.demo import STARTER_RULES, run_demo, starter_rules
from karkhana.runtime import Runtime
from tests.conftest import ADMIN_PASSWORD, make_settings

pytestmark = pytest.mark.anyio


async def test_demo_mill_data_flows_to_the_api(tmp_path: Path) -> None:
    rt = Runtime(make_settings(tmp_path))
    await rt.start()
    args = argparse.Namespace(profile="textile", devices=3, rate=2.0, speedup=1.0, seed=1)
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
