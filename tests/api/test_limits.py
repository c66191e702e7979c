"""HTTP ingestion under a flooding device: it gets 429 while the others keep flowing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from karkhana.api.app import create_app
from karkhana.core.clock import FakeClock
from karkhana.runtime import Runtime
from tests.conftest import make_settings

pytestmark = pytest.mark.anyio
NOW = int(time.time() * 1000)


@pytest.fixture
async def limited(tmp_path: Path) -> AsyncIterator[tuple[Runtime, FakeClock, httpx.AsyncClient]]:
    clock = FakeClock(NOW)
    settings = make_settings(
        tmp_path, device_max_msgs_per_s=2, device_burst_msgs=5, http_body_timeout_s=1
    )
    rt = Runtime(settings, clock)
    await rt.start(mqtt=False)
    transport = httpx.ASGITransport(app=create_app(rt))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield rt, clock, c
    await rt.stop()


async def test_flooding_device_gets_429_and_others_keep_flowing(
    limited: tuple[Runtime, FakeClock, httpx.AsyncClient],
) -> None:
    rt, clock, client = limited
    _, noisy = await rt.devices.create("noisy")
    _, quiet = await rt.devices.create("quiet")

    async def send(device: str, token: str, i: int) -> httpx.Response:
        return await client.post(
            f"/api/v1/telemetry/{device}",
            json={"ts": NOW + i, "values": {"v": i}},
            headers={"Authorization": f"Bearer {token}"},
        )

    # the burst goes through, then the limit holds
    assert [(await send("noisy", noisy, i)).status_code for i in range(5)] == [200] * 5
    refused = await send("noisy", noisy, 5)
    assert refused.status_code == 429
    assert refused.json()["reason"] == "rate_limited"
    assert refused.headers["retry-after"] == "1"

    codes: dict[int, int] = {}
    for i in range(20):
        clock.advance(500)  # one message's worth of time at 2 a second
        flood = await asyncio.gather(*(send("noisy", noisy, 100 + 10 * i + j) for j in range(10)))
        for r in flood:
            codes[r.status_code] = codes.get(r.status_code, 0) + 1
        assert (await send("quiet", quiet, i)).status_code == 200
    assert codes == {200: 20, 429: 180}

    r = await client.get("/api/v1/health")
    assert r.status_code == 200
    assert len(await rt.store.query("quiet", "v", NOW, NOW + 100)) == 20
    stats = rt.ingestor.snapshot()
    assert stats["noisy"]["rejected"] == {"rate_limited": 181}
    assert stats["noisy"]["stored"] == 25
    assert stats["quiet"]["rejected"] == {}
    # a wrong token is refused before it can spend the device's allowance
    r = await send("quiet", "kd_wrong", 0)
    assert r.status_code == 401


async def test_slow_body_is_cut_off(limited: tuple[Runtime, FakeClock, httpx.AsyncClient]) -> None:
    rt, _, client = limited
    _, token = await rt.devices.create("slow")

    async def trickle() -> AsyncIterator[bytes]:
        yield b'{"values": '
        await asyncio.sleep(3)
        yield b'{"v": 1}}'

    started = time.monotonic()
    r = await client.post(
        "/api/v1/telemetry/slow",
        content=trickle(),
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 408
    assert r.json()["reason"] == "request_timeout"
    assert time.monotonic() - started < 2.5


async def test_oversized_body_is_refused_before_it_is_read(
    limited: tuple[Runtime, FakeClock, httpx.AsyncClient],
) -> None:
    rt, _, client = limited
    _, token = await rt.devices.create("big")
    r = await client.post(
        "/api/v1/telemetry/big",
        content=b"x" * (rt.settings.max_payload_bytes + 1),
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 413
