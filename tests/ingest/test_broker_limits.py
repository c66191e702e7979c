"""The embedded broker's limits: message rate per device, packet size, connections, slow clients."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from karkhana.core.clock import FakeClock
from karkhana.runtime import Runtime
from tests.conftest import make_settings
from tests.ingest.test_broker import connect

pytestmark = pytest.mark.anyio
NOW = int(time.time() * 1000)


async def served(tmp_path: Path, clock: FakeClock | None = None, **changes: object) -> Runtime:
    rt = Runtime(make_settings(tmp_path, **changes), clock or FakeClock(NOW))
    await rt.start()
    return rt


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Runtime]:
    rt = await served(tmp_path, mqtt_read_timeout_s=1, max_payload_bytes=1024)
    yield rt
    await rt.stop()


def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("!H", len(raw)) + raw


def _length(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def connect_packet(username: str, password: str, keepalive: int = 60) -> bytes:
    body = _string("MQTT") + bytes([4, 0xC2]) + struct.pack("!H", keepalive)
    body += _string(f"raw-{time.monotonic_ns()}") + _string(username) + _string(password)
    return b"\x10" + _length(len(body)) + body


def open_socket(rt: Runtime) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", rt.settings.mqtt_port), timeout=10)
    return s


def closed_within(s: socket.socket, seconds: float) -> float | None:
    """Seconds until the peer closed the socket (reading and discarding), None if it did not."""
    started = time.monotonic()
    s.settimeout(seconds)
    try:
        while s.recv(4096):
            pass
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return time.monotonic() - started


def session(rt: Runtime, device: str, token: str, keepalive: int = 60) -> socket.socket:
    s = open_socket(rt)
    s.sendall(connect_packet(device, token, keepalive))
    assert s.recv(4) == b"\x20\x02\x00\x00"  # CONNACK, accepted
    return s


async def test_flooding_device_is_dropped_and_others_keep_flowing(tmp_path: Path) -> None:
    rt = await served(tmp_path, device_max_msgs_per_s=1, device_burst_msgs=5)
    try:
        _, noisy_token = await rt.devices.create("noisy")
        _, quiet_token = await rt.devices.create("quiet")
        noisy = await connect(rt, "noisy", noisy_token)
        quiet = await connect(rt, "quiet", quiet_token)
        try:
            for i in range(30):
                # acknowledged either way, so that the device does not send it again
                payload = f'{{"ts": {NOW + i}, "values": {{"v": {i}}}}}'
                await asyncio.to_thread(noisy.publish, "karkhana/noisy/telemetry", payload)
                if i % 6 == 0:
                    payload = f'{{"ts": {NOW + i}, "values": {{"v": {i}}}}}'
                    await asyncio.to_thread(quiet.publish, "karkhana/quiet/telemetry", payload)
        finally:
            noisy.close()
            quiet.close()
        stats = rt.ingestor.snapshot()
        assert stats["noisy"]["stored"] == 5
        assert stats["noisy"]["rejected"] == {"rate_limited": 25}
        assert stats["quiet"]["stored"] == 5 and stats["quiet"]["rejected"] == {}
        assert len(await rt.store.query("quiet", "v", NOW, NOW + 100)) == 5
    finally:
        await rt.stop()


async def test_silent_connection_is_closed(broker: Runtime) -> None:
    silent = await asyncio.to_thread(open_socket, broker)
    half = await asyncio.to_thread(open_socket, broker)
    half.sendall(b"\x10")  # the first byte of a CONNECT, then nothing
    took = await asyncio.to_thread(closed_within, silent, 5)
    assert took is not None and took < 3
    assert await asyncio.to_thread(closed_within, half, 3) is not None
    silent.close()
    half.close()


async def test_stalled_packet_is_closed(broker: Runtime) -> None:
    _, token = await broker.devices.create("loom-01")
    s = await asyncio.to_thread(session, broker, "loom-01", token)
    topic = _string("karkhana/loom-01/telemetry")
    s.sendall(b"\x30" + _length(len(topic) + 100) + topic + b'{"values"')  # 90 bytes short
    took = await asyncio.to_thread(closed_within, s, 5)
    assert took is not None and took < 3
    s.close()


async def test_oversized_packet_closes_at_once(tmp_path: Path) -> None:
    rt = await served(tmp_path, mqtt_read_timeout_s=30, max_payload_bytes=1024)
    try:
        _, token = await rt.devices.create("loom-01")
        s = await asyncio.to_thread(session, rt, "loom-01", token)
        topic = _string("karkhana/loom-01/telemetry")
        s.sendall(b"\x30" + _length(len(topic) + 10_000_000) + topic + b"x" * 1000)
        took = await asyncio.to_thread(closed_within, s, 5)
        assert took is not None and took < 2
        s.close()
        # a message a little over the limit is refused and counted, and the device stays on
        dev = await connect(rt, "loom-01", token)
        await asyncio.to_thread(dev.publish, "karkhana/loom-01/telemetry", b"x" * 2000)
        assert dev.connected.is_set() and not dev.disconnected.is_set()
        dev.close()
        assert rt.ingestor.snapshot()["loom-01"]["rejected"] == {"payload_too_large": 1}
    finally:
        await rt.stop()


async def test_keepalive_expiry_closes_the_connection(broker: Runtime) -> None:
    _, token = await broker.devices.create("loom-01")
    s = await asyncio.to_thread(session, broker, "loom-01", token, 1)
    took = await asyncio.to_thread(closed_within, s, 6)
    assert took is not None and 1 <= took < 4  # one and a half keep-alive periods, rounded up
    s.close()


async def test_connections_beyond_the_limit_are_closed_at_once(tmp_path: Path) -> None:
    rt = await served(tmp_path, mqtt_max_connections=2, mqtt_read_timeout_s=30)
    try:
        _, token = await rt.devices.create("loom-01")
        first = await asyncio.to_thread(session, rt, "loom-01", token)
        second = await asyncio.to_thread(open_socket, rt)
        await asyncio.sleep(0.2)
        third = await asyncio.to_thread(open_socket, rt)
        took = await asyncio.to_thread(closed_within, third, 5)
        assert took is not None and took < 1
        assert rt.broker is not None and rt.broker.refused_full == 1
        for s in (first, second, third):
            s.close()
        await asyncio.sleep(0.5)
        again = await asyncio.to_thread(session, rt, "loom-01", token)  # slots were freed
        again.close()
    finally:
        await rt.stop()
