"""A gateway on the embedded broker publishes for its own children, and only for them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from karkhana.runtime import Runtime
from tests.conftest import make_settings
from tests.ingest.test_broker import connect

pytestmark = pytest.mark.anyio
NOW = int(time.time() * 1000)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Runtime]:
    rt = Runtime(make_settings(tmp_path))
    await rt.start()
    yield rt
    await rt.stop()


def telemetry(value: float) -> str:
    return f'{{"ts": {NOW + int(value)}, "values": {{"v": {value}}}}}'


async def test_gateway_publishes_for_its_children_only(served: Runtime) -> None:
    _, gw_token = await served.devices.create("gw-1")
    _, child_token = await served.devices.create("plc-1", parent_id="gw-1")
    await served.devices.create("plc-2")
    gw = await connect(served, "gw-1", gw_token)
    child = await connect(served, "plc-1", child_token)
    try:
        # PUBACK means committed on this broker, so each check can follow its publish at once
        await asyncio.to_thread(gw.publish, "karkhana/plc-1/telemetry", telemetry(1))
        assert [p.value for p in await served.store.latest("plc-1")] == [1.0]
        await asyncio.to_thread(gw.publish, "karkhana/plc-2/telemetry", telemetry(2))
        await asyncio.to_thread(child.publish, "karkhana/gw-1/telemetry", telemetry(3))
        await asyncio.to_thread(gw.publish, "karkhana/gw-1/telemetry", telemetry(4))
        assert await served.store.latest("plc-2") == []
        assert [p.value for p in await served.store.latest("gw-1")] == [4.0]

        await served.devices.delete("gw-1")  # the child stays and keeps publishing
        assert await asyncio.to_thread(gw.disconnected.wait, 10)
        await asyncio.to_thread(child.publish, "karkhana/plc-1/telemetry", telemetry(5))
        assert [p.value for p in await served.store.latest("plc-1")] == [5.0]
    finally:
        gw.close()
        child.close()
