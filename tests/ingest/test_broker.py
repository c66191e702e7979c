"""The embedded broker with real MQTT clients (paho) over TCP."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from karkhana.runtime import Runtime
from tests.conftest import make_settings

pytestmark = pytest.mark.anyio
NOW = int(time.time() * 1000)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Runtime]:
    rt = Runtime(make_settings(tmp_path))
    await rt.start()
    yield rt
    await rt.stop()


class Device:
    """A paho client on its own thread, as a real device would run."""

    def __init__(self, port: int, username: str, password: str) -> None:
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"{username}-{time.monotonic_ns()}"
        )
        self.client.username_pw_set(username, password)
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.answered = threading.Event()
        self.reason: object = None

        def on_connect(c: paho.Client, u: object, f: object, reason: object, p: object) -> None:
            self.reason = reason
            self.answered.set()
            if not getattr(reason, "is_failure", True):
                self.connected.set()
            else:
                self.disconnected.set()

        def on_disconnect(c: paho.Client, u: object, f: object, reason: object, p: object) -> None:
            self.disconnected.set()

        self.client.on_connect = on_connect
        self.client.on_disconnect = on_disconnect
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes | str, qos: int = 1) -> None:
        info = self.client.publish(topic, payload, qos=qos)
        info.wait_for_publish(timeout=10)
        assert info.is_published()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def connect(rt: Runtime, device_id: str, token: str) -> Device:
    dev = await asyncio.to_thread(Device, rt.settings.mqtt_port, device_id, token)
    await asyncio.to_thread(dev.answered.wait, 10)
    return dev


async def test_puback_means_committed(served: Runtime) -> None:
    _, token = await served.devices.create("loom-01")
    dev = await connect(served, "loom-01", token)
    assert dev.connected.is_set()
    try:
        for i in range(20):
            payload = f'{{"ts": {NOW + i}, "values": {{"rpm": {500 + i}}}}}'
            await asyncio.to_thread(dev.publish, "karkhana/loom-01/telemetry", payload)
            # no waiting: the PUBACK itself promises the sample is queryable
            points = await served.store.query("loom-01", "rpm", NOW, NOW + i + 1)
            assert len(points) == i + 1
    finally:
        dev.close()


async def test_wrong_token_is_refused(served: Runtime) -> None:
    await served.devices.create("loom-01")
    dev = await connect(served, "loom-01", "kd_not-the-token")
    try:
        assert not dev.connected.is_set()
    finally:
        dev.close()


async def test_device_cannot_publish_as_another(served: Runtime) -> None:
    _, token = await served.devices.create("loom-01")
    await served.devices.create("loom-02")
    dev = await connect(served, "loom-01", token)
    try:
        await asyncio.to_thread(dev.publish, "karkhana/loom-02/telemetry", '{"values": {"rpm": 1}}')
        await asyncio.to_thread(
            dev.publish, "karkhana/loom-01/telemetry", f'{{"ts": {NOW}, "values": {{"rpm": 2}}}}'
        )
        assert await served.store.latest("loom-02") == []
        assert [x.value for x in await served.store.latest("loom-01")] == [2.0]
    finally:
        dev.close()


async def test_bad_messages_are_dropped_and_counted(served: Runtime) -> None:
    _, token = await served.devices.create("loom-01")
    dev = await connect(served, "loom-01", token)
    try:
        for bad in [b"{not json", b'{"values": {"t": NaN}}', b"x" * (300 * 1024)]:
            await asyncio.to_thread(dev.publish, "karkhana/loom-01/telemetry", bad)
        await asyncio.to_thread(
            dev.publish, "karkhana/loom-01/telemetry", f'{{"ts": {NOW}, "values": {{"ok": 1}}}}'
        )
        assert [x.key for x in await served.store.latest("loom-01")] == ["ok"]
        stats = served.ingestor.snapshot()["loom-01"]
        assert stats["rejected"] == {"invalid_payload": 2, "payload_too_large": 1}
        assert stats["stored"] == 1
    finally:
        dev.close()


async def test_rotating_the_token_closes_the_connection(served: Runtime) -> None:
    _, token = await served.devices.create("loom-01")
    dev = await connect(served, "loom-01", token)
    try:
        assert dev.connected.is_set()
        await served.devices.rotate("loom-01")
        assert await asyncio.to_thread(dev.disconnected.wait, 10)
    finally:
        dev.close()
