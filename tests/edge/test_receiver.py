"""POST /api/v1/edge/batches: gateway token, children, commit before the answer, re-sends."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from karkhana.api.app import create_app
from karkhana.core.model import Sample
from karkhana.edge.encoding import CONTENT_TYPE, encode
from karkhana.runtime import Runtime
from tests.conftest import make_settings

pytestmark = pytest.mark.anyio
NOW = int(time.time() * 1000)


def samples(device_id: str, n: int = 5, key: str = "v") -> list[Sample]:
    return [Sample(device_id, key, NOW - 10_000 + i * 1000, float(i)) for i in range(n)]


async def send(client: httpx.AsyncClient, gateway: str, token: str, body: bytes) -> httpx.Response:
    return await client.post(
        "/api/v1/edge/batches",
        content=body,
        headers={
            "Authorization": f"Bearer {token}",
            "X-Karkhana-Gateway": gateway,
            "Content-Type": CONTENT_TYPE,
        },
    )


async def make_gateway(rt: Runtime, gateway: str = "gw-1", site: str | None = None) -> str:
    if site is not None:
        await rt.assets.create_site(site, site)
    _, token = await rt.devices.create(gateway, site_id=site)
    return token


async def test_batch_for_gateway_and_new_child_is_committed(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    token = await make_gateway(runtime, site="mill-1")
    batch = samples("gw-1", 2, "backlog_points") + samples("loom-7", 5)
    bid = uuid.uuid4()
    r = await send(client, "gw-1", token, encode(bid, batch))
    assert r.status_code == 200, r.text
    assert r.json() == {"batch_id": str(bid), "stored": 7, "duplicates": 0, "replay": False}
    child = await runtime.devices.get("loom-7")
    assert (child.parent_id, child.site_id) == ("gw-1", "mill-1")
    points = await runtime.store.query("loom-7", "v", NOW - 60_000, NOW)
    assert [p.value for p in points] == [0.0, 1.0, 2.0, 3.0, 4.0]
    events = await runtime.audit.events(limit=None)
    assert any(e.action == "device.create" and e.target == "device:loom-7" for e in events)

    # the same batch again: answered from memory; the same samples in a new batch: duplicates
    r = await send(client, "gw-1", token, encode(bid, batch))
    assert r.json() == {"batch_id": str(bid), "stored": 0, "duplicates": 7, "replay": True}
    r = await send(client, "gw-1", token, encode(uuid.uuid4(), batch))
    assert (r.json()["stored"], r.json()["duplicates"], r.json()["replay"]) == (0, 7, False)


async def test_wrong_token_or_gateway_is_401_and_audited(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    token = await make_gateway(runtime)
    body = encode(uuid.uuid4(), samples("gw-1"))
    assert (await send(client, "gw-1", "kd_wrong", body)).status_code == 401
    assert (await send(client, "gw-2", token, body)).status_code == 401
    assert (await send(client, "", token, body)).status_code == 401
    assert await runtime.store.latest("gw-1") == []
    events = await runtime.audit.events(limit=None)
    assert any(e.action == "device.auth" and e.outcome == "failed" for e in events)


async def test_devices_of_others_are_refused_whole(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    token = await make_gateway(runtime)
    await make_gateway(runtime, "gw-2")
    await runtime.devices.create("plc-2", parent_id="gw-2")
    await runtime.devices.create("meter-1")
    for other in ("plc-2", "meter-1", "gw-2"):
        body = encode(uuid.uuid4(), samples("gw-1") + samples(other))
        r = await send(client, "gw-1", token, body)
        assert r.status_code == 403, r.text
        assert other in r.json()["detail"]
    assert await runtime.store.latest("gw-1") == []


async def test_bad_batches_are_400_and_413(runtime: Runtime, client: httpx.AsyncClient) -> None:
    token = await make_gateway(runtime)
    for body in (b"", b"junk", encode(uuid.uuid4(), samples("gw-1"))[:-3]):
        r = await send(client, "gw-1", token, body)
        assert r.status_code == 400, r.text
        assert r.json()["reason"] == "invalid_payload"
    for ts in (946_684_799_999, NOW + 2 * 86_400_000):
        r = await send(client, "gw-1", token, encode(uuid.uuid4(), [Sample("gw-1", "v", ts, 1.0)]))
        assert r.status_code == 400
        assert "edge clock" in r.json()["detail"]
    big = b"KKB\x01" + b"\0" * (runtime.settings.edge_max_batch_bytes + 1)
    assert (await send(client, "gw-1", token, big)).status_code == 413
    stats = (await runtime.store.latest("gw-1"), runtime.ingestor.snapshot()["gw-1"])
    assert stats[0] == []
    assert stats[1]["rejected"] == {"invalid_payload": 5}


@pytest.fixture
async def strict(tmp_path: Path) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    rt = Runtime(make_settings(tmp_path, edge_create_children="off", edge_max_children=1))
    await rt.start(mqtt=False)
    transport = httpx.ASGITransport(app=create_app(rt))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield rt, c
    await rt.stop()


async def test_children_must_be_registered_when_creation_is_off(
    strict: tuple[Runtime, httpx.AsyncClient],
) -> None:
    rt, client = strict
    token = await make_gateway(rt)
    r = await send(client, "gw-1", token, encode(uuid.uuid4(), samples("loom-1")))
    assert r.status_code == 403
    assert "edge_create_children" in r.json()["detail"]
    assert not rt.devices.exists("loom-1")
    await rt.devices.create("loom-1", parent_id="gw-1")
    r = await send(client, "gw-1", token, encode(uuid.uuid4(), samples("loom-1")))
    assert r.status_code == 200


async def test_a_gateway_creates_at_most_max_children(tmp_path: Path) -> None:
    rt = Runtime(make_settings(tmp_path, edge_max_children=2))
    await rt.start(mqtt=False)
    try:
        transport = httpx.ASGITransport(app=create_app(rt))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            token = await make_gateway(rt)
            body = encode(uuid.uuid4(), samples("c-1") + samples("c-2"))
            assert (await send(client, "gw-1", token, body)).status_code == 200
            r = await send(client, "gw-1", token, encode(uuid.uuid4(), samples("c-3")))
            assert r.status_code == 403
            assert "edge_max_children" in r.json()["detail"]
    finally:
        await rt.stop()


async def test_health_tells_the_server_time(runtime: Runtime, client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/health")
    assert abs(r.json()["time_ms"] - int(time.time() * 1000)) < 60_000
