"""The server subscribed to a real Mosquitto broker, started by the test on a free port."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from karkhana.runtime import Runtime
from tests.conftest import free_port, make_settings, mosquitto_binary, need, port_open

pytestmark = pytest.mark.anyio
NOW = int(time.time() * 1000)


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[int]:
    binary = mosquitto_binary()
    need(
        binary is not None,
        "mosquitto is not installed (scripts/install-system-deps.sh installs it)",
    )
    assert binary is not None
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen([binary, "-c", str(conf)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while not port_open("127.0.0.1", port):
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else "mosquitto exited"
        assert time.monotonic() < deadline, "mosquitto did not start"
        time.sleep(0.05)
    yield port
    proc.terminate()
    proc.wait(10)


async def start(tmp_path: Path, port: int) -> Runtime:
    rt = Runtime(make_settings(tmp_path, mqtt_url=f"mqtt://127.0.0.1:{port}"))
    await rt.start()
    return rt


def publish_all(port: int, messages: list[tuple[str, str]]) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="publisher")
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for topic, payload in messages:
            client.publish(topic, payload, qos=1).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


async def wait_for(predicate: object, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


@pytest.fixture
async def rt(tmp_path: Path, mosquitto: int) -> AsyncIterator[Runtime]:
    runtime = await start(tmp_path, mosquitto)
    yield runtime
    await runtime.stop()


async def test_telemetry_through_mosquitto_is_stored(rt: Runtime, mosquitto: int) -> None:
    await rt.devices.create("meter-1")
    msgs = [
        ("karkhana/meter-1/telemetry", f'{{"ts": {NOW + i}, "values": {{"power_kw": {i}}}}}')
        for i in range(50)
    ]
    msgs.append(("karkhana/stranger/telemetry", '{"values": {"x": 1}}'))
    msgs.append(("karkhana/meter-1/telemetry", "not json"))
    await asyncio.to_thread(publish_all, mosquitto, msgs)

    async def all_there() -> bool:
        return len(await rt.store.query("meter-1", "power_kw", NOW, NOW + 100)) == 50

    await wait_for(all_there)

    async def counted() -> bool:
        snap = rt.ingestor.snapshot()
        return snap.get("(unknown)", {}).get("rejected") == {"unauthorized": 1} and snap["meter-1"][
            "rejected"
        ] == {"invalid_payload": 1}

    await wait_for(counted)


async def test_messages_sent_while_server_is_down_arrive_after_restart(
    tmp_path: Path, mosquitto: int
) -> None:
    first = await start(tmp_path, mosquitto)
    await first.devices.create("meter-1")
    await first.stop()
    msgs = [
        ("karkhana/meter-1/telemetry", f'{{"ts": {NOW + i}, "values": {{"kwh": {i}}}}}')
        for i in range(30)
    ]
    await asyncio.to_thread(publish_all, mosquitto, msgs)
    second = await start(tmp_path, mosquitto)
    try:

        async def all_there() -> bool:
            return len(await second.store.query("meter-1", "kwh", NOW, NOW + 100)) == 30

        await wait_for(all_there)
    finally:
        await second.stop()


async def test_unreachable_broker_is_a_clear_error(tmp_path: Path) -> None:
    from karkhana.core.errors import ConfigError

    rt = Runtime(make_settings(tmp_path, mqtt_url=f"mqtt://127.0.0.1:{free_port()}"))
    try:
        with pytest.raises(ConfigError, match="cannot reach MQTT broker"):
            await rt.start()
    finally:
        await rt.stop()
