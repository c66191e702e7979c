"""MQTTS on the embedded broker with real paho clients: tokens, client certificates, refusals."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from karkhana.runtime import Runtime
from karkhana.security import tls
from tests.conftest import free_port, make_settings, port_open

pytestmark = pytest.mark.anyio
NOW = int(time.time() * 1000)
TOPIC = "karkhana/loom-01/telemetry"


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Runtime]:
    settings = make_settings(tmp_path, tls="on", mqtts_port=free_port())
    tls.init(settings.data_dir, hostname="test-host")
    rt = Runtime(settings)
    await rt.start()
    yield rt
    await rt.stop()


def ca_of(rt: Runtime) -> str:
    return str(tls.TlsPaths.of(rt.settings.data_dir).ca_cert)


class TlsDevice:
    """A paho client on its own thread, over TLS, with a token or a client certificate."""

    def __init__(
        self,
        port: int,
        client_id: str,
        ca: str,
        *,
        username: str | None = None,
        password: str | None = None,
        cert: tuple[str, str] | None = None,
        clean_session: bool = True,
    ) -> None:
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        certfile, keyfile = cert if cert else (None, None)
        self.client.tls_set(ca_certs=ca, certfile=certfile, keyfile=keyfile)
        self.connected = threading.Event()
        self.ended = threading.Event()

        def on_connect(c: paho.Client, u: object, f: object, reason: object, p: object) -> None:
            if getattr(reason, "is_failure", True):
                self.ended.set()
                c.disconnect()  # no reconnecting: the network thread ends at once
            else:
                self.connected.set()

        def on_disconnect(c: paho.Client, u: object, f: object, reason: object, p: object) -> None:
            self.ended.set()
            c.disconnect()

        self.client.on_connect = on_connect
        self.client.on_disconnect = on_disconnect
        try:
            self.client.connect("127.0.0.1", port)
        except (OSError, ssl.SSLError):
            self.ended.set()
            return
        self.client.loop_start()

    def wait(self) -> bool:
        """True once connected, False once refused or cut off."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.connected.is_set():
                return True
            if self.ended.is_set():
                return False
            time.sleep(0.01)
        raise AssertionError("no answer from the broker")

    def publish(self, topic: str, payload: str) -> None:
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout=10)
        assert info.is_published()

    def close(self) -> None:
        self.client.disconnect()
        if self.connected.is_set():
            self.client.loop_stop()
        # a refused client's thread ends by itself (disconnect() in the callbacks); joining it
        # would wait out paho's one-second poll


async def device(rt: Runtime, client_id: str, **kwargs: object) -> tuple[TlsDevice, bool]:
    dev = await asyncio.to_thread(
        TlsDevice,
        rt.settings.mqtts_port,
        client_id,
        kwargs.pop("ca", ca_of(rt)),  # type: ignore[arg-type]
        **kwargs,  # type: ignore[arg-type]
    )
    return dev, await asyncio.to_thread(dev.wait)


async def test_token_over_mqtts_is_stored_and_plain_mqtt_is_off(served: Runtime) -> None:
    _, token = await served.devices.create("loom-01")
    dev, ok = await device(served, "loom-01", username="loom-01", password=token)
    try:
        assert ok
        await asyncio.to_thread(dev.publish, TOPIC, f'{{"ts": {NOW}, "values": {{"rpm": 512}}}}')
        assert [x.value for x in await served.store.latest("loom-01")] == [512.0]
    finally:
        await asyncio.to_thread(dev.close)
    assert not port_open("127.0.0.1", served.settings.mqtt_port)


async def test_wrong_token_over_mqtts_is_refused(served: Runtime) -> None:
    await served.devices.create("loom-01")
    dev, ok = await device(served, "loom-01", username="loom-01", password="kd_wrong")
    await asyncio.to_thread(dev.close)
    assert not ok


async def test_client_certificate_replaces_the_token(served: Runtime) -> None:
    await served.devices.create("loom-01")
    await served.devices.create("loom-02")
    made = await asyncio.to_thread(tls.issue_device, served.settings.data_dir, "loom-01")
    cert = (str(made.cert.path), str(made.key_path))
    dev, ok = await device(served, "loom-01-esp", cert=cert)
    try:
        assert ok
        await asyncio.to_thread(dev.publish, TOPIC, f'{{"ts": {NOW}, "values": {{"rpm": 7}}}}')
        # the certificate names the device: it cannot publish as another
        await asyncio.to_thread(
            dev.publish, "karkhana/loom-02/telemetry", f'{{"ts": {NOW}, "values": {{"rpm": 8}}}}'
        )
        assert [x.value for x in await served.store.latest("loom-01")] == [7.0]
        assert await served.store.latest("loom-02") == []
    finally:
        await asyncio.to_thread(dev.close)

    # a user name, if sent, must be the certificate's device
    dev, ok = await device(served, "x", cert=cert, username="loom-02")
    await asyncio.to_thread(dev.close)
    assert not ok
    dev, ok = await device(served, "y", cert=cert, username="loom-01")
    await asyncio.to_thread(dev.close)
    assert ok

    # deleting the device revokes its certificate
    await served.devices.delete("loom-01")
    dev, ok = await device(served, "z", cert=cert)
    await asyncio.to_thread(dev.close)
    assert not ok


def keep(made: tls.DeviceCert, where: Path) -> tuple[str, str]:
    """Copies of a device's certificate and key, as the device holds them after revocation."""
    where.mkdir(exist_ok=True)
    cert, key = where / "dev.pem", where / "dev.key"
    cert.write_bytes(made.cert.path.read_bytes())
    key.write_bytes(made.key_path.read_bytes())
    return str(cert), str(key)


async def test_revoking_a_certificate_refuses_it_and_closes_its_open_connection(
    served: Runtime, tmp_path: Path
) -> None:
    await served.devices.create("loom-01")
    made = await asyncio.to_thread(tls.issue_device, served.settings.data_dir, "loom-01")
    cert = keep(made, tmp_path / "held")
    dev, ok = await device(served, "loom-01", cert=cert)
    assert ok
    try:
        # revoked by another process (karkhana certs revoke): the broker sees the list change
        await asyncio.to_thread(tls.revoke_device, served.settings.data_dir, "loom-01")
        assert await asyncio.to_thread(dev.ended.wait, 10), "the open connection was not closed"
    finally:
        await asyncio.to_thread(dev.close)
    dev, ok = await device(served, "loom-01-again", cert=cert)
    await asyncio.to_thread(dev.close)
    assert not ok
    events = await served.audit.events(action="device.auth")
    assert any((e.after or {}).get("certificate") == "revoked" for e in events)

    # a new certificate for the same device works; replacing it again revokes this one
    renewed = await asyncio.to_thread(tls.issue_device, served.settings.data_dir, "loom-01")
    second = keep(renewed, tmp_path / "second")
    dev, ok = await device(served, "loom-01", cert=second)
    await asyncio.to_thread(dev.close)
    assert ok
    await asyncio.to_thread(tls.issue_device, served.settings.data_dir, "loom-01", force=True)
    await asyncio.sleep(2.5)  # the broker's next look at the list
    dev, ok = await device(served, "loom-01", cert=second)
    await asyncio.to_thread(dev.close)
    assert not ok
    assert len(tls.revocations(served.settings.data_dir)) == 2


async def test_a_resumed_session_does_not_inherit_a_certificate(served: Runtime) -> None:
    """amqtt keeps persistent sessions between connections; the login must not come along."""
    await served.devices.create("loom-01")
    made = await asyncio.to_thread(tls.issue_device, served.settings.data_dir, "loom-01")
    cert = (str(made.cert.path), str(made.key_path))
    dev, ok = await device(served, "loom-01", cert=cert, clean_session=False)
    await asyncio.to_thread(dev.close)
    assert ok
    dev, ok = await device(served, "loom-01", clean_session=False)
    await asyncio.to_thread(dev.close)
    assert not ok


async def test_certificate_of_another_ca_is_refused(served: Runtime, tmp_path: Path) -> None:
    await served.devices.create("loom-01")
    other = tmp_path / "other"
    tls.init(other, hostname="elsewhere")
    made = tls.issue_device(other, "loom-01")
    dev, ok = await device(served, "loom-01", cert=(str(made.cert.path), str(made.key_path)))
    await asyncio.to_thread(dev.close)
    assert not ok


async def test_client_must_trust_the_ca_and_plain_tcp_gets_nothing(
    served: Runtime, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    tls.init(other, hostname="elsewhere")
    _, token = await served.devices.create("loom-01")
    dev, ok = await device(
        served,
        "loom-01",
        ca=str(tls.TlsPaths.of(other).ca_cert),
        username="loom-01",
        password=token,
    )
    await asyncio.to_thread(dev.close)
    assert not ok

    connect = bytes.fromhex("101000044d5154540402003c0004") + b"test"  # MQTT 3.1.1 CONNECT

    def plain() -> bytes:
        with socket.create_connection(("127.0.0.1", served.settings.mqtts_port), 5) as s:
            s.sendall(connect)
            try:
                return s.recv(64)
            except ConnectionResetError:
                return b""

    answer = await asyncio.to_thread(plain)
    assert not answer.startswith(b"\x20")  # no CONNACK


async def test_plain_mqtt_beside_mqtts_when_asked(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, mqtts_port=free_port(), mqtt_plain="on")
    tls.init(settings.data_dir, hostname="test-host")
    rt = Runtime(settings)
    info = await rt.start()
    try:
        assert "MQTTS on port" in info.mqtt and "plain MQTT on port" in info.mqtt
        assert port_open("127.0.0.1", settings.mqtt_port)
        assert port_open("127.0.0.1", settings.mqtts_port)
    finally:
        await rt.stop()
