"""The demo's simulated weaving shed appears in the production overview with states and OEE."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from karkhana.api.app import create_app
from karkhana.demo import run_demo
from karkhana.runtime import Runtime
from tests.conftest import ADMIN_PASSWORD, make_settings

pytestmark = pytest.mark.anyio


async def test_demo_looms_have_states_and_oee(tmp_path: Path) -> None:
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
            deadline = time.monotonic() + 30
            looms: dict[str, dict[str, Any]] = {}
            while time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                body = (await api.get("/api/v1/production/overview")).json()
                looms = {
                    m["machine_id"]: m for m in body["machines"] if m["template"] == "power_loom"
                }
                if len(looms) == 3 and all(m["oee"] is not None for m in looms.values()):
                    break
            assert set(looms) == {"tx-loom-01", "tx-loom-02", "tx-loom-03"}
            for loom in looms.values():
                assert loom["state"] in ("running", "idle", "stopped", "fault")
                assert loom["shift"] is not None  # the demo shed runs around the clock
                assert loom["oee"] is not None and 0 <= loom["oee"]["oee"] <= 1
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await rt.stop()
