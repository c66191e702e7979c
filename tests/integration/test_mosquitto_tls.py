"""The server subscribed to a Mosquitto broker over TLS, its certificate from the local CA."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from karkhana.core.errors import ConfigError
from karkhana.ingest.mqtt import BrokerAddress, MqttListener
from karkhana.runtime import Runtime
from karkhana.security import tls
from tests.conftest import free_port, make_settings, mosquitto_binary, need, port_open

pytestmark = pytest.mark.anyio
NOW = int(time.time() * 1000)


@pytest.fixture
def mosquitto_tls(tmp_path: Path) -> Iterator[tuple[int, tls.TlsPaths]]:
    binary = mosquitto_binary()
    need(binary is not None, "mosquitto is not installed (scripts/install-system-deps.sh)")
    assert binary is not None
    broker_dir = tmp_path / "broker"
    tls.init(broker_dir, hostname="broker-host")
    paths = tls.TlsPaths.of(broker_dir)
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        f"certfile {paths.server_cert}\nkeyfile {paths.server_key}\n"
        # as root, mosquitto would switch to a user that cannot read the 0600 key
        + ("user root\n" if os.geteuid() == 0 else "")
    )
    proc = subprocess.Popen([binary, "-c", str(conf)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while not port_open("127.0.0.1", port):
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else "mosquitto exited"
        assert time.monotonic() < deadline, "mosquitto did not start"
        time.sleep(0.05)
    yield port, paths
    proc.terminate()
    proc.wait(10)


def publish(port: int, ca: Path, topic: str, payload: str) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="publisher")
    client.tls_set(ca_certs=str(ca))
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


async def test_mqtt_ca_file_lets_the_server_trust_a_local_ca(
    tmp_path: Path, mosquitto_tls: tuple[int, tls.TlsPaths]
) -> None:
    port, paths = mosquitto_tls
    url = f"mqtts://127.0.0.1:{port}"
    settings = make_settings(tmp_path, mqtt_url=url, tls="off")

    untrusting = Runtime(settings)
    try:
        with pytest.raises(
            ConfigError, match=r"cannot reach MQTT broker.*(?i:certificate verify failed)"
        ):
            await untrusting.start()
    finally:
        await untrusting.stop()

    rt = Runtime(settings.replace(mqtt_ca_file=str(paths.ca_cert)))
    await rt.start()
    try:
        await rt.devices.create("meter-1")
        payload = f'{{"ts": {NOW}, "values": {{"kw": 4.5}}}}'
        await asyncio.to_thread(publish, port, paths.ca_cert, "karkhana/meter-1/telemetry", payload)
        deadline = time.monotonic() + 10
        while not await rt.store.latest("meter-1"):
            assert time.monotonic() < deadline, "sample not stored"
            await asyncio.sleep(0.05)
        assert [x.value for x in await rt.store.latest("meter-1")] == [4.5]
    finally:
        await rt.stop()


def test_ca_file_needs_an_mqtts_url(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not an mqtts"):
        MqttListener(BrokerAddress.parse("mqtt://127.0.0.1"), None, ca_file="ca.pem")  # type: ignore[arg-type]
