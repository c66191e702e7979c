"""How simulated devices reach a server: MQTT (one connection per device), HTTP, or memory.

Each device authenticates as itself (MQTT username = device id, password = device token; HTTP
bearer token), exactly as a real device would, so the server's per-device security is exercised.
Errors of paho, httpx and sockets are translated here into domain errors.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from karkhana.core.errors import ConfigError, InvalidPayload, KarkhanaError, Unauthorized
from karkhana.sim.device import SimDevice
from karkhana.sim.payload import http_path, topic

log = logging.getLogger("karkhana.sim")

_AUTH_REFUSALS = {134, 135}
"""CONNACK reason codes for a bad user name or password and for not authorised."""


class TransportError(KarkhanaError):
    """The server or broker cannot be reached or does not accept messages."""

    reason = "transport_error"


class DeviceRefused(Unauthorized):
    """The server refused these devices' credentials (stale tokens, unknown devices)."""

    def __init__(self, message: str, device_ids: Sequence[str]) -> None:
        super().__init__(message)
        self.device_ids = tuple(device_ids)


class Transport(Protocol):
    async def open(self, devices: Sequence[SimDevice]) -> None: ...

    async def send(self, device_id: str, payload: bytes) -> None: ...

    async def close(self) -> None: ...


class MemoryTransport:
    """Keeps every message in order, for tests and dry runs."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.opened: tuple[str, ...] = ()
        self.closed = False

    async def open(self, devices: Sequence[SimDevice]) -> None:
        self.opened = tuple(d.device_id for d in devices)

    async def send(self, device_id: str, payload: bytes) -> None:
        self.messages.append((device_id, payload))

    async def close(self) -> None:
        self.closed = True

    def by_device(self) -> dict[str, list[bytes]]:
        out: dict[str, list[bytes]] = {}
        for device_id, payload in self.messages:
            out.setdefault(device_id, []).append(payload)
        return out


def _tokens(credentials: Mapping[str, str], device_ids: Iterable[str]) -> dict[str, str]:
    ids = list(device_ids)
    missing = [d for d in ids if d not in credentials]
    if missing:
        raise ConfigError(f"no token for device(s) {', '.join(missing)}")
    return {d: credentials[d] for d in ids}


class MqttTransport:
    """QoS 1 publishing with paho-mqtt, one client (and network thread) per device."""

    def __init__(
        self,
        host: str,
        port: int,
        credentials: Mapping[str, str],
        tls: bool = False,
        *,
        ca_file: Path | None = None,
        keepalive_s: int = 30,
        connect_timeout_s: float = 10.0,
        max_unacked: int = 1000,
        drain_timeout_s: float = 10.0,
    ) -> None:
        self.host = host
        self.port = port
        self.credentials = dict(credentials)
        self.tls = tls
        self.ca_file = ca_file
        self.keepalive_s = keepalive_s
        self.connect_timeout_s = connect_timeout_s
        self.max_unacked = max_unacked
        self.drain_timeout_s = drain_timeout_s
        self._clients: dict[str, mqtt.Client] = {}
        self._unacked: dict[str, list[mqtt.MQTTMessageInfo]] = {}

    async def open(self, devices: Sequence[SimDevice]) -> None:
        tokens = _tokens(self.credentials, (d.device_id for d in devices))
        results = await asyncio.gather(
            *(self._connect(device_id, token) for device_id, token in tokens.items()),
            return_exceptions=True,
        )
        refused = [
            device_id
            for device_id, result in zip(tokens, results, strict=True)
            if isinstance(result, Unauthorized)
        ]
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            await self.close()
            if refused:
                raise DeviceRefused(
                    f"MQTT broker {self.host}:{self.port} refused the credentials of "
                    f"{len(refused)} device(s): {', '.join(refused)}",
                    refused,
                )
            raise failures[0]

    async def _connect(self, device_id: str, token: str) -> None:
        loop = asyncio.get_running_loop()
        connack: asyncio.Future[ReasonCode] = loop.create_future()

        def resolve(code: ReasonCode) -> None:
            if not connack.done():
                connack.set_result(code)
            elif code.is_failure:
                log.warning("MQTT broker refused %s on reconnect: %s", device_id, code)

        established = threading.Event()

        def on_connect(
            client: mqtt.Client, userdata: Any, flags: Any, code: ReasonCode, props: Any
        ) -> None:
            if code.is_failure and not established.is_set():
                client.disconnect()
            elif not code.is_failure:
                established.set()
            if not loop.is_closed():
                loop.call_soon_threadsafe(resolve, code)

        def on_disconnect(
            client: mqtt.Client, userdata: Any, flags: Any, code: ReasonCode, props: Any
        ) -> None:
            if code.value != 0 and established.is_set():
                log.warning("MQTT connection of %s lost (%s); reconnecting", device_id, code)

        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv311
        )
        client.username_pw_set(device_id, token)
        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.reconnect_delay_set(1, 30)
        client.max_queued_messages_set(0)
        where = f"MQTT broker {self.host}:{self.port}"
        try:
            if self.tls:
                client.tls_set(ca_certs=None if self.ca_file is None else str(self.ca_file))
            await asyncio.to_thread(client.connect, self.host, self.port, self.keepalive_s)
        except OSError as exc:
            raise TransportError(f"cannot connect to {where} as {device_id}: {exc}") from None
        client.loop_start()
        try:
            code = await asyncio.wait_for(connack, self.connect_timeout_s)
        except TimeoutError:
            await asyncio.to_thread(_stop, client)
            raise TransportError(
                f"{where} did not answer the connection of {device_id} within "
                f"{self.connect_timeout_s:g} s"
            ) from None
        if code.is_failure:
            await asyncio.to_thread(_stop, client)
            if code.value in _AUTH_REFUSALS:
                raise Unauthorized(f"{where} refused {device_id}: {code}")
            raise TransportError(f"{where} refused {device_id}: {code}")
        self._clients[device_id] = client
        self._unacked[device_id] = []

    async def send(self, device_id: str, payload: bytes) -> None:
        client = self._clients.get(device_id)
        if client is None:
            raise TransportError(f"device {device_id} is not connected")
        info = client.publish(topic(device_id), payload, qos=1)
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            raise TransportError(f"MQTT queue of {device_id} is full")
        pending = self._unacked[device_id]
        pending.append(info)
        if len(pending) > self.max_unacked:
            await self._drain(device_id, self.max_unacked // 2)

    async def _drain(self, device_id: str, allowed: int) -> None:
        """Wait until at most ``allowed`` messages of the device await a PUBACK."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.drain_timeout_s
        while True:
            pending = [i for i in self._unacked[device_id] if not i.is_published()]
            self._unacked[device_id] = pending
            if len(pending) <= allowed:
                return
            if loop.time() > deadline:
                raise TransportError(
                    f"MQTT broker {self.host}:{self.port} has not acknowledged "
                    f"{len(pending)} messages of {device_id} for {self.drain_timeout_s:g} s"
                )
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        """Wait (bounded) for outstanding PUBACKs, then disconnect every device."""
        try:
            results = await asyncio.gather(
                *(self._drain(device_id, 0) for device_id in self._clients),
                return_exceptions=True,
            )
        finally:
            clients = list(self._clients.values())
            self._clients.clear()
            self._unacked.clear()
            await asyncio.gather(*(asyncio.to_thread(_stop, c) for c in clients))
        for result in results:
            if isinstance(result, TransportError):
                log.warning("%s", result)
            elif isinstance(result, BaseException):
                raise result


def _stop(client: mqtt.Client) -> None:
    client.disconnect()
    client.loop_stop()


class HttpTransport:
    """POSTs each message with the device's bearer token; retries only what may succeed later."""

    def __init__(
        self,
        base_url: str,
        credentials: Mapping[str, str],
        *,
        timeout_s: float = 10.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        http_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.credentials = dict(credentials)
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self._http_transport = http_transport
        self._client: httpx.AsyncClient | None = None
        self._tokens: dict[str, str] = {}

    async def open(self, devices: Sequence[SimDevice]) -> None:
        self._tokens = _tokens(self.credentials, (d.device_id for d in devices))
        self._client = httpx.AsyncClient(
            base_url=self.base_url, timeout=self.timeout_s, transport=self._http_transport
        )

    async def send(self, device_id: str, payload: bytes) -> None:
        if self._client is None:
            raise TransportError("HTTP transport is not open")
        token = self._tokens.get(device_id)
        if token is None:
            raise ConfigError(f"no token for device {device_id}")
        url = http_path(device_id)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        problem = ""
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                response = await self._client.post(url, content=payload, headers=headers)
            except httpx.TransportError as exc:
                problem = f"cannot reach {self.base_url}: {exc or type(exc).__name__}"
                continue
            status = response.status_code
            if status < 300:
                return
            detail = response.text[:200]
            if status in (401, 403):
                raise DeviceRefused(
                    f"{self.base_url} refused telemetry of {device_id}: {status} {detail}",
                    [device_id],
                )
            if status == 429 or status >= 500:
                problem = f"{self.base_url} answered {status} {detail}"
                continue
            raise InvalidPayload(
                f"{self.base_url} rejected telemetry of {device_id}: {status} {detail}"
            )
        raise TransportError(f"giving up on {device_id} after {self.retries + 1} tries: {problem}")

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
