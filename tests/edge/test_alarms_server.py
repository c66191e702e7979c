"""Edge alarms end to end with the in-process server: rules fetched by the gateway, an alarm
raised on the edge while the link is down, and the server showing it once afterwards, whether
the edge sends it twice or the server also evaluates the forwarded samples."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from karkhana.api.app import create_app
from karkhana.edge.agent import EdgeAgent
from karkhana.edge.config import EdgeSettings
from karkhana.runtime import Runtime
from tests.conftest import free_port

pytestmark = pytest.mark.anyio
NOW = int(time.time() * 1000) - 60_000


class Link(httpx.AsyncBaseTransport):
    """The edge's way to the server, which the test can cut."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.up = True

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not self.up:
            raise httpx.ConnectError("cable pulled", request=request)
        return await self.inner.handle_async_request(request)


@pytest.fixture
async def plant(admin: httpx.AsyncClient, runtime: Runtime) -> str:
    """A weaving shed with loom-03 fed by device loom-03, a child of gateway gw-1; a rule on it."""
    _, token = await runtime.devices.create("gw-1")
    await runtime.devices.create("loom-03", parent_id="gw-1")
    for path, body in (
        ("/api/v1/sites", {"id": "mill-1", "name": "Mill 1"}),
        ("/api/v1/areas", {"id": "shed", "site_id": "mill-1", "name": "Weaving"}),
        ("/api/v1/lines", {"id": "line-1", "area_id": "shed", "name": "Line 1"}),
        (
            "/api/v1/machines",
            {
                "id": "loom-03",
                "line_id": "line-1",
                "name": "Loom 3",
                "template": "power_loom",
                "device_id": "loom-03",
            },
        ),
        (
            "/api/v1/rules",
            {
                "id": "hot-bearing",
                "name": "Loom bearing hot",
                "severity": "critical",
                "machine_id": "loom-03",
                "condition": {
                    "type": "threshold",
                    "signal": "bearing_temp_c",
                    "op": ">",
                    "value": 70,
                    "deadband": 2,
                },
                "for_s": 2,
            },
        ),
    ):
        r = await admin.post(path, json=body)
        assert r.status_code == 201, (path, r.text)
    await runtime.alarms.refresh_machines(force=True)
    return token


@pytest.fixture
async def edge(
    runtime: Runtime, plant: str, tmp_path: Path
) -> AsyncIterator[tuple[EdgeAgent, Link]]:
    link = Link(httpx.ASGITransport(app=create_app(runtime)))
    settings = EdgeSettings(
        server="http://server",
        gateway_id="gw-1",
        token=plant,
        data_dir=tmp_path / "edge",
        http_host="127.0.0.1",
        http_port=free_port(),
        mqtt_port=0,
        fsync="NORMAL",
    )
    agent = EdgeAgent(settings, transport=link)
    assert agent.alarms is not None
    agent.buffer.on_put(agent.alarms.feed)
    yield agent, link
    await agent.stop()


async def put(agent: EdgeAgent, temps: list[float], start: int) -> None:
    from karkhana.core.model import Sample

    await agent.buffer.put(
        [Sample("loom-03", "bearing_temp_c", start + 1000 * i, t) for i, t in enumerate(temps)]
    )


async def server_alarms(admin: httpx.AsyncClient) -> list[dict[str, Any]]:
    r = await admin.get("/api/v1/alarms", params={"state": "all"})
    assert r.status_code == 200, r.text
    alarms: list[dict[str, Any]] = r.json()["alarms"]
    return alarms


async def test_offline_edge_alarm_reaches_the_server_once(
    runtime: Runtime, admin: httpx.AsyncClient, edge: tuple[EdgeAgent, Link]
) -> None:
    agent, link = edge
    alarms = agent.alarms
    assert alarms is not None
    assert await alarms.fetch_rules()
    assert alarms.stats["rules"] == 1

    link.up = False  # the 4G modem drops
    await put(agent, [65.0, 71.0, 72.5, 73.0, 74.0], NOW)
    for _ in range(100):
        if alarms.stats["raised"]:
            break
        await asyncio.sleep(0.02)
    assert alarms.stats["raised"] == 1 and alarms.stats["unsent"] == 1
    assert await server_alarms(admin) == []

    link.up = True
    assert await alarms.send() == 1
    assert await alarms.send() == 0
    # the same event again, as after an answer lost on the way back: nothing new
    alarms._db.execute("UPDATE outbox SET sent = 0")
    assert await alarms.send() == 1
    # the backlog reaches the server too; its own evaluation must not make a second alarm
    for _ in range(5):
        await agent.forwarder.step()
    (alarm,) = await server_alarms(admin)
    assert alarm["machine_id"] == "loom-03" and alarm["rule_id"] == "hot-bearing"
    assert alarm["state"] == "raised" and alarm["raised_ms"] == NOW + 3000, alarm
    assert alarm["count"] == 1, alarm
    assert "Loom 3" in alarm["message"]["en"] or "loom" in alarm["message"]["en"].lower()

    # cleared on the edge, reported, and the server's alarm is cleared
    await put(agent, [66.0], NOW + 10_000)
    for _ in range(100):
        if alarms.stats["cleared"]:
            break
        await asyncio.sleep(0.02)
    assert await alarms.send() == 1
    (alarm,) = await server_alarms(admin)
    assert alarm["state"] == "cleared"


async def test_gateways_see_only_their_machines_and_need_their_token(
    runtime: Runtime, plant: str, client: httpx.AsyncClient
) -> None:
    headers = {"X-Karkhana-Gateway": "gw-1", "Authorization": f"Bearer {plant}"}
    r = await client.get("/api/v1/edge/rules", headers=headers)
    assert r.status_code == 200
    (rule,) = r.json()["rules"]
    assert rule["signals"]["bearing_temp_c"]["device_id"] == "loom-03"

    _, other = await runtime.devices.create("gw-2")
    r = await client.get(
        "/api/v1/edge/rules",
        headers={"X-Karkhana-Gateway": "gw-2", "Authorization": f"Bearer {other}"},
    )
    assert r.json()["rules"] == []
    event = {
        "id": "x" * 24,
        "kind": "raised",
        "rule_id": "hot-bearing",
        "machine_id": "loom-03",
        "ts": NOW,
        "severity": "critical",
        "signal": "bearing_temp_c",
        "message": "above",
        "value": 80.0,
        "limit": 70.0,
        "unit": "°C",
        "origin": "edge",
    }
    r = await client.post(
        "/api/v1/edge/alarms",
        json={"events": [event]},
        headers={"X-Karkhana-Gateway": "gw-2", "Authorization": f"Bearer {other}"},
    )
    assert r.status_code == 403 and "does not feed" in r.json()["detail"]
    wrong = {**headers, "Authorization": "Bearer kd_wrong"}
    assert (await client.get("/api/v1/edge/rules", headers=wrong)).status_code == 401
    r = await client.post("/api/v1/edge/alarms", json={"events": [{"id": 1}]}, headers=headers)
    assert r.status_code in (400, 422)
    assert json.dumps(r.json())
