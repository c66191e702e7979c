"""Device accounts and topic ACLs on a real Mosquitto, configured only by the files that
``karkhana mosquitto init`` writes and the server keeps current."""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from karkhana.ingest.mqtt import BrokerAddress
from karkhana.runtime import Runtime
from karkhana.security import mosquitto as mq
from karkhana.security.devices import DeviceRegistry
from karkhana.store.database import Database
from tests.conftest import free_port, make_settings, mosquitto_binary, need, port_open

pytestmark = pytest.mark.anyio
NOW = int(time.time() * 1000)
NOT_AUTHORIZED = 135


class Client:
    """An MQTT 5 client on its own thread, so that a refused PUBLISH shows as PUBACK 135."""

    def __init__(self, port: int, username: str | None, password: str | None) -> None:
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"{username}-{time.monotonic_ns()}",
            protocol=paho.MQTTv5,
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        self.answered = threading.Event()
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.acks: dict[int, ReasonCode] = {}

        def on_connect(c: paho.Client, u: object, f: object, rc: ReasonCode, p: object) -> None:
            if rc.is_failure:
                c.disconnect()  # stop the thread's reconnecting now
            else:
                self.connected.set()
            self.answered.set()

        def on_disconnect(c: paho.Client, u: object, f: object, rc: object, p: object) -> None:
            self.disconnected.set()
            self.answered.set()

        def on_publish(c: paho.Client, u: object, mid: int, rc: ReasonCode, p: object) -> None:
            self.acks[mid] = rc

        self.client.reconnect_delay_set(30, 30)  # each test looks at one connection
        self.client.on_connect = on_connect
        self.client.on_disconnect = on_disconnect
        self.client.on_publish = on_publish
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.answered.wait(10)

    def publish(self, topic: str, payload: str) -> int:
        """The PUBACK's reason code: 0 accepted, 135 not authorized."""
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(10)
        deadline = time.monotonic() + 5
        while info.mid not in self.acks and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.acks[info.mid].value

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class Setup:
    rt: Runtime
    port: int
    url: str
    clients: list[Client]

    async def client(self, username: str | None, password: str | None) -> Client:
        c = await asyncio.to_thread(Client, self.port, username, password)
        self.clients.append(c)
        return c

    async def device(self, username: str, password: str) -> Client:
        """Connected; a device made a moment ago waits for Mosquitto's reload to finish."""
        deadline = time.monotonic() + 5
        while True:
            c = await self.client(username, password)
            if c.connected.is_set() or time.monotonic() > deadline:
                assert c.connected.is_set(), f"{username} could not connect"
                return c
            c.close()
            await asyncio.sleep(0.05)


def start_mosquitto(
    command: list[str], log: IO[str], port: int, pid_file: Path
) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(command, stderr=log, stdout=log)
    deadline = time.monotonic() + 10
    while not (port_open("127.0.0.1", port) and pid_file.exists()):
        assert proc.poll() is None, Path(log.name).read_text()
        assert time.monotonic() < deadline, "mosquitto did not start"
        time.sleep(0.02)
    return proc


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    binary = mosquitto_binary()
    need(binary is not None, "mosquitto is not installed (scripts/install-system-deps.sh)")
    assert binary is not None
    port = free_port()
    pid_file = tmp_path / "mosquitto.pid"
    settings = make_settings(tmp_path, mosquitto_pid_file=str(pid_file))
    db = Database(settings.db_path, synchronous="NORMAL")
    try:
        made = await mq.init(DeviceRegistry(db), settings.data_dir, port=port, bind="127.0.0.1")
    finally:
        db.close()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        f"pid_file {pid_file}\npersistence false\ninclude_dir {made.paths.root}\n"
        # as root, mosquitto would switch to a user that cannot read the 0640 files
        + ("user root\n" if os.geteuid() == 0 else "")
    )
    log = (tmp_path / "mosquitto.log").open("w")
    proc = await asyncio.to_thread(start_mosquitto, [binary, "-c", str(conf)], log, port, pid_file)
    rt = Runtime(settings.replace(mqtt_url=made.url))
    await rt.start()
    s = Setup(rt, port, made.url, [])
    try:
        yield s
    finally:
        # in parallel: a client that was disconnected takes up to a second to stop its thread
        await asyncio.gather(*(asyncio.to_thread(c.close) for c in s.clients))
        await rt.stop()
        proc.terminate()
        await asyncio.to_thread(proc.wait, 10)
        log.close()


def telemetry(value: float, offset: int = 0) -> str:
    return f'{{"ts": {NOW + offset}, "values": {{"v": {value}}}}}'


async def stored(rt: Runtime, device_id: str, value: float) -> None:
    """Wait until ``value`` is the device's latest: everything it published before is in."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if [p.value for p in await rt.store.latest(device_id)] == [value]:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{value} from {device_id} was not stored")


async def test_device_cannot_publish_as_another(setup: Setup) -> None:
    rt = setup.rt
    _, token_a = await rt.devices.create("meter-a")
    await rt.devices.create("meter-b")
    a = await setup.device("meter-a", token_a)
    assert await asyncio.to_thread(a.publish, "karkhana/meter-b/telemetry", telemetry(1)) == (
        NOT_AUTHORIZED
    )
    assert await asyncio.to_thread(a.publish, "karkhana/meter-a/telemetry", telemetry(2, 1)) == 0
    await stored(rt, "meter-a", 2)
    # messages of one publisher arrive in order: meter-b's would have come first
    assert await rt.store.latest("meter-b") == []
    assert "meter-b" not in rt.ingestor.snapshot()


async def test_wrong_token_unknown_device_and_anonymous_are_refused(setup: Setup) -> None:
    _, token = await setup.rt.devices.create("meter-a")
    await setup.device("meter-a", token)  # the account exists now
    for username, password in [("meter-a", token + "x"), ("ghost", token), (None, None)]:
        c = await setup.client(username, password)
        assert c.answered.is_set() and not c.connected.is_set(), username


async def test_gateway_publishes_for_its_children_only(setup: Setup) -> None:
    rt = setup.rt
    _, gw_token = await rt.devices.create("gw-1")
    _, child_token = await rt.devices.create("plc-1", parent_id="gw-1")
    await rt.devices.create("plc-2")
    gw = await setup.device("gw-1", gw_token)
    assert await asyncio.to_thread(gw.publish, "karkhana/plc-1/telemetry", telemetry(1)) == 0
    assert await asyncio.to_thread(gw.publish, "karkhana/plc-2/telemetry", telemetry(2)) == (
        NOT_AUTHORIZED
    )
    assert await asyncio.to_thread(gw.publish, "karkhana/gw-1/telemetry", telemetry(3)) == 0
    child = await setup.device("plc-1", child_token)
    assert await asyncio.to_thread(child.publish, "karkhana/gw-1/telemetry", telemetry(4, 1)) == (
        NOT_AUTHORIZED
    )
    assert await asyncio.to_thread(child.publish, "karkhana/plc-1/telemetry", telemetry(5, 1)) == 0
    await stored(rt, "gw-1", 3)
    await stored(rt, "plc-1", 5)
    assert await rt.store.latest("plc-2") == []


async def test_rotation_and_deletion_close_the_connection_at_once(setup: Setup) -> None:
    rt = setup.rt
    _, old = await rt.devices.create("meter-a")
    _, other_token = await rt.devices.create("meter-b")
    dev = await setup.device("meter-a", old)
    bystander = await setup.device("meter-b", other_token)

    new = await rt.devices.rotate("meter-a")
    assert await asyncio.to_thread(dev.disconnected.wait, 5), "not disconnected after rotation"
    refused = await setup.client("meter-a", old)
    assert not refused.connected.is_set()
    dev = await setup.device("meter-a", new)

    await rt.devices.delete("meter-a")
    assert await asyncio.to_thread(dev.disconnected.wait, 5), "not disconnected after deletion"
    assert not (await setup.client("meter-a", new)).connected.is_set()
    # a reload leaves everyone else connected
    assert not bystander.disconnected.is_set()
    assert (
        await asyncio.to_thread(bystander.publish, "karkhana/meter-b/telemetry", telemetry(7)) == 0
    )


async def test_server_account_only_reads_telemetry(setup: Setup) -> None:
    rt = setup.rt
    _, token = await rt.devices.create("meter-a")
    address = BrokerAddress.parse(setup.url)
    assert address.username == mq.SERVER_USER
    server = await setup.client(address.username, address.password)
    assert server.connected.is_set()
    assert await asyncio.to_thread(server.publish, "karkhana/meter-a/telemetry", telemetry(1)) == (
        NOT_AUTHORIZED
    )
    dev = await setup.device("meter-a", token)
    assert await asyncio.to_thread(dev.publish, "karkhana/meter-a/telemetry", telemetry(2, 1)) == 0
    await stored(rt, "meter-a", 2)
