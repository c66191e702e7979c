"""The edge's local MQTT input with real MQTT clients (paho) over TCP."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
import uvicorn

from karkhana.core.model import Sample
from karkhana.edge.agent import uvicorn_config
from karkhana.edge.buffer import Buffer
from karkhana.edge.clock import EdgeClock
from karkhana.edge.mqtt import LocalMqttInput
from karkhana.runtime import Runtime
from tests.conftest import free_port
from tests.edge.test_agent import MakeAgent, make_agent
from tests.ingest.test_broker import Device

pytestmark = pytest.mark.anyio
NOW = int(time.time() * 1000)
TOKEN = "lt_local-secret"
MakeInput = Callable[..., Awaitable[LocalMqttInput]]
__all__ = ["make_agent"]  # the fixture, used by test_agent_serves_local_mqtt


@pytest.fixture
async def make_input(tmp_path: Path) -> AsyncIterator[MakeInput]:
    made: list[LocalMqttInput] = []

    async def make(
        local_token: str = "", cap_points: int = 1000, when_full: str = "drop-oldest"
    ) -> LocalMqttInput:
        buffer = Buffer.open(
            tmp_path / f"buffer-{len(made)}.db",
            cap_points=cap_points,
            when_full=when_full,
            synchronous="NORMAL",
        )
        broker = LocalMqttInput(
            buffer, EdgeClock(buffer.session), "127.0.0.1", free_port(), local_token=local_token
        )
        made.append(broker)
        await broker.start()
        return broker

    yield make
    for broker in made:
        await broker.shutdown()
        await asyncio.to_thread(broker.buffer.close)


def port_of(broker: LocalMqttInput) -> int:
    return int(broker.listeners_config["default"]["bind"].rsplit(":", 1)[1])


async def connect(broker: LocalMqttInput, username: str, password: str) -> Device:
    dev = await asyncio.to_thread(Device, port_of(broker), username, password)
    await asyncio.to_thread(dev.answered.wait, 10)
    return dev


def message(i: int) -> str:
    return json.dumps({"ts": NOW + i, "values": {"rpm": 500 + i, "running": True}})


async def test_puback_means_buffered(make_input: MakeInput) -> None:
    broker = await make_input()
    dev = await connect(broker, "esp-1", "")
    assert dev.connected.is_set()  # no local_token: anonymous devices are accepted
    try:
        for i in range(10):
            await asyncio.to_thread(dev.publish, "karkhana/esp-1/telemetry", message(i))
            # no waiting: the PUBACK itself promises the samples are in the buffer
            assert broker.buffer.stats().points == 2 * (i + 1)
        entries = await broker.buffer.peek(100, live_first=False)
        assert {
            (e.sample.device_id, e.sample.key, e.sample.ts, e.sample.value) for e in entries
        } >= {
            ("esp-1", "rpm", NOW + 9, 509.0),
            ("esp-1", "running", NOW, True),
        }
        assert broker.stats["messages"] == 10 and broker.stats["points"] == 20
    finally:
        dev.close()


async def test_bad_payload_is_acknowledged_counted_and_not_stored(make_input: MakeInput) -> None:
    broker = await make_input()
    dev = await connect(broker, "esp-1", "")
    try:
        for bad in ("{not json", '{"values": {"rpm": NaN}}', json.dumps({"values": 5})):
            await asyncio.to_thread(dev.publish, "karkhana/esp-1/telemetry", bad)  # acknowledged
        await asyncio.to_thread(dev.publish, "karkhana/esp 1/telemetry", message(0))
        await asyncio.to_thread(dev.publish, "karkhana/esp-1/other", message(0))
        assert broker.buffer.stats().points == 0
        assert broker.stats["refused"] == 5 and broker.stats["messages"] == 0
        assert broker.stats["last_reason"]
    finally:
        dev.close()


async def test_local_token_is_the_mqtt_password(make_input: MakeInput) -> None:
    broker = await make_input(local_token=TOKEN)
    wrong = await connect(broker, "esp-1", "not-the-token")
    try:
        assert not wrong.connected.is_set()
    finally:
        wrong.close()
    bad_user = await connect(broker, "not a device id", TOKEN)
    try:
        assert not bad_user.connected.is_set()
    finally:
        bad_user.close()
    assert broker.stats["refused_logins"] == 2
    dev = await connect(broker, "esp-1", TOKEN)
    assert dev.connected.is_set()
    try:
        # a device may publish only to its own topic: acknowledged, counted, not stored
        await asyncio.to_thread(dev.publish, "karkhana/esp-2/telemetry", message(0))
        assert broker.buffer.stats().points == 0 and broker.stats["refused"] == 1
        await asyncio.to_thread(dev.publish, "karkhana/esp-1/telemetry", message(1))
        assert broker.buffer.stats().points == 2
    finally:
        dev.close()


async def test_full_buffer_in_reject_new_withholds_the_puback(make_input: MakeInput) -> None:
    broker = await make_input(cap_points=2, when_full="reject-new")
    await broker.buffer.put([Sample("esp-0", "v", NOW, 1.0), Sample("esp-0", "v", NOW + 1, 2.0)])
    dev = await connect(broker, "esp-1", "")
    try:
        info = await asyncio.to_thread(
            dev.client.publish, "karkhana/esp-1/telemetry", message(0), 1
        )
        await asyncio.to_thread(info.wait_for_publish, 1.5)
        assert not info.is_published()  # no PUBACK: the device still holds the message
        b = broker.buffer.stats()
        # the connection is closed on a refusal, so the device reconnects and tries again
        assert b.points == 2 and b.rejected_messages >= 1
        assert broker.stats["unacknowledged"] == b.rejected_messages
        assert broker.stats["messages"] == 0
    finally:
        dev.close()


async def test_agent_serves_local_mqtt(runtime: Runtime, make_agent: MakeAgent) -> None:
    agent, _ = await make_agent()
    agent.settings = dataclasses.replace(
        agent.settings, mqtt_host="127.0.0.1", mqtt_port=free_port(), status_interval_s=0
    )
    server = uvicorn.Server(uvicorn_config(agent.app, agent.settings))
    task = asyncio.create_task(agent.run(server))
    try:
        for _ in range(100):
            if server.started:
                break
            await asyncio.sleep(0.05)
        assert agent.mqtt is not None
        dev = await connect(agent.mqtt, "esp-7", "")
        try:
            await asyncio.to_thread(dev.publish, "karkhana/esp-7/telemetry", message(0))
        finally:
            dev.close()
        async with httpx.AsyncClient(base_url=agent.settings.local_url) as client:
            health = (await client.get("/health")).json()
        assert health["inputs"]["mqtt"]["messages"] == 1
        assert health["inputs"]["mqtt"]["points"] == 2
        for _ in range(200):
            if await runtime.store.latest("esp-7"):
                break
            await asyncio.sleep(0.05)
        assert {x.key: x.value for x in await runtime.store.latest("esp-7")}["rpm"] == 500.0
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)
    assert agent.mqtt is None  # stopped with the agent
