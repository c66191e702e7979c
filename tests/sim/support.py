"""Helpers shared by the simulator tests."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
from amqtt.broker import Broker
from paho.mqtt.enums import CallbackAPIVersion

from karkhana.core.clock import FakeClock

MONDAY_MS = 1_704_067_200_000
"""2024-01-01T00:00:00Z, a Monday (05:00 in Pakistan)."""
HOUR_MS = 3_600_000
DAY_MS = 86_400_000


def fake_sleep(clock: FakeClock) -> Callable[[float], Awaitable[None]]:
    """A sleep that moves the fake clock instead of waiting."""

    async def sleep(seconds: float) -> None:
        clock.advance(max(1, round(seconds * 1000)))
        await asyncio.sleep(0)

    return sleep


def entries(payload: bytes) -> list[dict[str, Any]]:
    """The samples of one message, checking the documented wire format on the way."""
    doc = json.loads(payload)
    items = doc if isinstance(doc, list) else [doc]
    assert items, "empty batch"
    for item in items:
        assert set(item) == {"ts", "values"}
        assert isinstance(item["ts"], int) and not isinstance(item["ts"], bool)
        assert isinstance(item["values"], dict) and item["values"]
        for value in item["values"].values():
            assert isinstance(value, int | float | bool | str)
    return items


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def start_broker(port: int, password_file: Path | None = None) -> Broker:
    if password_file is None:
        auth: dict[str, Any] = {
            "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
        }
    else:
        auth = {
            "amqtt.plugins.authentication.FileAuthPlugin": {"password_file": str(password_file)}
        }
    broker = Broker(
        {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
            "plugins": auth,
        }
    )
    await broker.start()
    return broker


class Subscriber:
    def __init__(self, port: int) -> None:
        self.port = port
        self.messages: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-subscriber")
        self.client.on_connect = self.on_connect
        self.client.on_subscribe = self.on_subscribe
        self.client.on_message = self.on_message

    def on_connect(self, client: mqtt.Client, *args: Any) -> None:
        client.subscribe("karkhana/+/telemetry", qos=1)

    def on_subscribe(self, *args: Any) -> None:
        self.subscribed.set()

    def on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((message.topic, bytes(message.payload)))

    async def start(self) -> None:
        await asyncio.to_thread(self.client.connect, "127.0.0.1", self.port)
        self.client.loop_start()
        await wait_for(self.subscribed.is_set)

    async def stop(self) -> None:
        self.client.disconnect()
        await asyncio.to_thread(self.client.loop_stop)

    def count(self) -> int:
        with self.lock:
            return len(self.messages)


async def wait_for(condition: Any, timeout_s: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.02)


class StandIn:
    """Just enough of the server: login, device registration, token rotation, telemetry."""

    def __init__(self, password: str = "s3cret", existing: tuple[str, ...] = ()) -> None:
        self.password = password
        self.devices: dict[str, dict[str, str]] = {
            d: {"name": d, "template": "x", "token": f"old-{d}"} for d in existing
        }
        self.telemetry: list[tuple[str, bytes]] = []
        self.requests: list[str] = []
        self.issued = 0

    def token(self) -> str:
        self.issued += 1
        return f"tok-{self.issued}"

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.requests.append(f"{request.method} {path}")
        auth = request.headers.get("authorization", "")
        if path == "/api/v1/auth/login":
            body = json.loads(request.content)
            if body != {"username": "admin", "password": self.password}:
                return httpx.Response(401, json={"detail": "bad credentials"})
            return httpx.Response(200, json={"token": "session-1"})
        if path.startswith("/api/v1/telemetry/"):
            device_id = path.rsplit("/", 1)[1]
            if (
                device_id not in self.devices
                or auth != f"Bearer {self.devices[device_id]['token']}"
            ):
                return httpx.Response(401, json={"detail": "unknown device or token"})
            assert request.headers["content-type"] == "application/json"
            self.telemetry.append((device_id, request.content))
            return httpx.Response(202, json={"accepted": len(entries(request.content))})
        if auth != "Bearer session-1":
            return httpx.Response(401)
        if path == "/api/v1/devices":
            body = json.loads(request.content)
            assert set(body) == {"id", "name", "template"}
            if body["id"] in self.devices:
                return httpx.Response(409, json={"detail": "exists"})
            token = self.token()
            self.devices[body["id"]] = {**body, "token": token}
            return httpx.Response(201, json={"id": body["id"], "token": token})
        if path.endswith("/rotate-token"):
            device_id = path.split("/")[-2]
            token = self.token()
            self.devices[device_id]["token"] = token
            return httpx.Response(200, json={"id": device_id, "token": token})
        return httpx.Response(404)
