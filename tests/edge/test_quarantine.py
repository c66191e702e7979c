"""Quarantined samples: listed by device and reason, released once the cause is mended, sent.

End to end with the in-process server: a server that refuses unregistered children makes the
edge quarantine a new device's samples; once the device is registered, releasing them sends them.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from karkhana.api.app import create_app
from karkhana.core.clock import FakeClock
from karkhana.core.model import Sample
from karkhana.edge.agent import EdgeAgent
from karkhana.edge.buffer import Buffer
from karkhana.edge.cli import format_quarantine
from karkhana.edge.config import EdgeSettings
from karkhana.runtime import Runtime
from tests.conftest import free_port, make_settings

pytestmark = pytest.mark.anyio
NOW = int(time.time() * 1000)


@pytest.fixture
async def buffer(tmp_path: Path) -> AsyncIterator[Buffer]:
    b = Buffer.open(tmp_path / "buffer.db", synchronous="OFF", cap_points=10, clock=FakeClock(NOW))
    yield b
    b.close()


def samples(device: str, n: int, key: str = "v") -> list[Sample]:
    return [Sample(device, key, NOW - 1000 * (n - i), float(i)) for i in range(n)]


async def test_release_moves_samples_back_behind_the_backlog_as_room_allows(
    buffer: Buffer, tmp_path: Path
) -> None:
    await buffer.put(samples("loom-1", 3) + samples("loom-2", 2))
    ids = [e.id for e in await buffer.peek(10)]
    await buffer.quarantine(ids[:3], "refused by the server (403): unknown device loom-1")
    await buffer.quarantine(ids[3:], "timestamp outside the window")
    groups = {(g.device_id, g.reason[:20]): g.points for g in await buffer.quarantine_summary()}
    assert groups == {("loom-1", "refused by the serve"): 3, ("loom-2", "timestamp outside th"): 2}

    await buffer.put(samples("press-1", 8, "w"))  # 8 of 10: room for 2
    assert await buffer.release(device_id="loom-2", reason_contains="nothing like it") == 0
    assert await buffer.release(reason_contains="(403)") == 2
    assert await buffer.release(device_id="loom-1") == 0  # full
    queued = await buffer.peek(100, live_first=False)
    assert [e.sample.device_id for e in queued][-2:] == ["loom-1", "loom-1"]
    assert [e.sample.value for e in queued][-2:] == [0.0, 1.0]  # oldest first, values kept
    assert buffer.stats().released_points == 2

    await buffer.ack(e.id for e in queued)
    assert await buffer.release() == 3  # the last loom-1 sample and both loom-2 ones
    assert await buffer.quarantine_summary() == []
    buffer.close()
    again = Buffer.open(tmp_path / "buffer.db", synchronous="OFF", cap_points=10)
    try:
        assert again.stats().released_points == 5  # counters survive a restart
        assert again.stats().points == 3
    finally:
        again.close()


def test_quarantine_listing_for_the_cli() -> None:
    assert format_quarantine([]) == "nothing is quarantined"
    text = format_quarantine(
        [
            {"device_id": "loom-1", "reason": "refused", "points": 7},
            {"device_id": "m", "reason": "x", "points": 3},
        ]
    )
    assert "loom-1" in text and "10  in all" in text


@pytest.fixture
async def strict(tmp_path: Path) -> AsyncIterator[Runtime]:
    rt = Runtime(make_settings(tmp_path, edge_create_children="off"))
    await rt.start(mqtt=False)
    yield rt
    await rt.stop()


async def test_refused_then_registered_then_released_then_sent(
    strict: Runtime, tmp_path: Path
) -> None:
    _, token = await strict.devices.create("gw-1")
    settings = EdgeSettings(
        server="http://server",
        gateway_id="gw-1",
        token=token,
        data_dir=tmp_path / "edge",
        http_host="127.0.0.1",
        http_port=free_port(),
        mqtt_port=0,
        fsync="NORMAL",
    )
    agent = EdgeAgent(settings, transport=httpx.ASGITransport(app=create_app(strict)))
    local = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=agent.app, client=("127.0.0.1", 40000)),
        base_url="http://edge",
    )
    outsider = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=agent.app, client=("192.168.1.77", 40000)),
        base_url="http://edge",
    )
    try:
        body = json.dumps([{"ts": NOW - 5000, "values": {"rpm": 480}}]).encode()
        assert (await local.post("/api/v1/telemetry/loom-9", content=body)).status_code == 200
        await agent.forwarder.step()
        groups = (await local.get("/quarantine")).json()["groups"]
        assert [(g["device_id"], g["points"]) for g in groups] == [("loom-9", 1)]
        assert "edge_create_children" in groups[0]["reason"]
        assert await strict.store.latest("loom-9") == []

        # from another machine on the LAN: refused
        assert (await outsider.get("/quarantine")).status_code == 403
        r = await outsider.post("/quarantine/release", json={})
        assert r.status_code == 403

        await strict.devices.create("loom-9", parent_id="gw-1")
        bad = await local.post("/quarantine/release", json={"device_id": 5})
        assert bad.status_code == 400
        r = await local.post("/quarantine/release", json={"device_id": "loom-9"})
        assert r.json() == {"released": 1}
        await agent.forwarder.step()
        assert [(x.key, x.value) for x in await strict.store.latest("loom-9")] == [("rpm", 480.0)]
        health = (await local.get("/health")).json()
        assert (health["quarantined_points"], health["released_points"]) == (1, 1)
        assert (await local.get("/quarantine")).json()["groups"] == []
    finally:
        await local.aclose()
        await outsider.aclose()
        await agent.stop()
