"""OPC UA as an edge input: a subscription to a server's nodes (asyncua, the ``opcua`` extra).

``open`` connects (user name and password or a security policy when configured), creates one
subscription at ``publishing_interval_ms`` and monitors every configured node; the server then
sends changes, and ``read`` returns what arrived since the last call (waiting for at least one).
Nodes the server refuses (unknown node id, no access) are logged and counted once per connection;
the others go on. Numbers and booleans become samples as they are, strings as text; arrays and
structures are counted and skipped. A lost connection or subscription is raised once as
:class:`ConnectorError`; the agent closes, backs off and opens again, and the server sends every
node's current value on the new subscription, so nothing is stale.

Timestamps: ``edge`` stamps each change with the edge's clock when it arrives (corrected later
if that clock was wrong); ``source`` keeps the server's source timestamp (its own clock).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from datetime import UTC, datetime
from typing import Any, cast

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.subscription import Subscription
from asyncua.ua.uaerrors import UaError

from karkhana.core.model import Sample, Value
from karkhana.edge.clock import EdgeClock
from karkhana.edge.connectors.base import ConnectorError
from karkhana.edge.opcua.servers import OpcUaServer

log = logging.getLogger(__name__)

WATCHDOG_S = 1.0
"""How often a quiet subscription checks that its connection is still up."""
MAX_TEXT = 1024
_LOST = object()
Change = tuple[str, Any, datetime | None]


class _Changes:
    """asyncua's subscription handler: every change (or a lost subscription) into one queue."""

    def __init__(self, keys: dict[str, str]) -> None:
        self.keys = keys
        self.queue: asyncio.Queue[Change | object] = asyncio.Queue()

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        key = self.keys.get(node.nodeid.to_string())
        if key is None:
            return
        stamp = None
        with contextlib.suppress(AttributeError):
            value = data.monitored_item.Value
            stamp = value.SourceTimestamp or value.ServerTimestamp
        self.queue.put_nowait((key, val, stamp))

    def status_change_notification(self, status: Any) -> None:
        self.queue.put_nowait(_LOST)


class OpcUaConnector:
    def __init__(self, clock: EdgeClock, server: OpcUaServer) -> None:
        self.name = f"opcua:{server.device_id}"
        self.clock = clock
        self.server = server
        self.stamps_time = server.timestamps == "edge"
        self.stats = {
            "changes": 0,
            "refused_nodes": 0,
            "skipped_values": 0,
            "subscribed_nodes": 0,
        }
        self._client: Client | None = None
        self._subscription: Subscription | None = None
        self._changes: _Changes | None = None

    @property
    def address(self) -> str:
        return self.server.url

    async def open(self) -> None:
        s = self.server
        client = Client(s.url, timeout=s.timeout_s, watchdog_intervall=WATCHDOG_S)
        if s.username:
            client.set_user(s.username)
            client.set_password(s.password)
        try:
            if s.security:
                await client.set_security_string(s.security)
            await client.connect()
        except (OSError, TimeoutError, UaError, ValueError) as exc:
            with contextlib.suppress(Exception):
                await client.disconnect()
            raise ConnectorError(f"{s.url}: cannot connect: {_text(exc)}") from None
        self._client = client
        try:
            await self._subscribe(client)
        except ConnectorError:
            await self.close()
            raise

    async def _subscribe(self, client: Client) -> None:
        s = self.server
        keys = {ua.NodeId.from_string(node).to_string(): key for key, node in s.nodes}
        changes = _Changes(keys)
        try:
            subscription = await client.create_subscription(s.publishing_interval_ms, changes)
            nodes = [client.get_node(node) for _, node in s.nodes]
            results = await subscription.subscribe_data_change(nodes)
        except (OSError, TimeoutError, UaError, ConnectionError) as exc:
            raise ConnectorError(f"{s.url}: cannot subscribe: {_text(exc)}") from None
        refused = [
            (key, result)
            for (key, _), result in zip(s.nodes, results, strict=True)
            if isinstance(result, ua.StatusCode)
        ]
        for key, status in refused:
            log.warning("%s: node for %r refused: %s", self.name, key, status.name)
        self.stats["refused_nodes"] = len(refused)
        self.stats["subscribed_nodes"] = len(s.nodes) - len(refused)
        if len(refused) == len(s.nodes):
            raise ConnectorError(f"{s.url}: the server refused every node")
        self._subscription, self._changes = subscription, changes

    async def read(self) -> list[Sample]:
        client, changes = self._client, self._changes
        if client is None or changes is None:
            raise ConnectorError(f"{self.server.url}: not connected")
        first: object
        while True:
            try:
                first = await asyncio.wait_for(changes.queue.get(), WATCHDOG_S)
                break
            except TimeoutError:
                try:
                    await client.check_connection()
                except (OSError, TimeoutError, UaError, ConnectionError) as exc:
                    raise ConnectorError(
                        f"{self.server.url}: connection lost: {_text(exc)}"
                    ) from None
        items = [first]
        while not changes.queue.empty():
            items.append(changes.queue.get_nowait())
        samples: list[Sample] = []
        for item in items:
            if item is _LOST:
                raise ConnectorError(f"{self.server.url}: subscription lost")
            key, raw, stamp = cast(Change, item)
            value = _value(raw)
            if value is None:
                self.stats["skipped_values"] += 1
                continue
            ts = self.clock.now_ms()
            if not self.stamps_time and isinstance(stamp, datetime):
                ts = int(stamp.replace(tzinfo=stamp.tzinfo or UTC).timestamp() * 1000)
            samples.append(Sample(self.server.device_id, key, ts, value))
        self.stats["changes"] += len(samples)
        return samples

    async def close(self) -> None:
        client, self._client = self._client, None
        subscription, self._subscription = self._subscription, None
        self._changes = None
        if client is None:
            return
        if subscription is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(subscription.delete(), self.server.timeout_s)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.disconnect(), self.server.timeout_s)


def _value(raw: Any) -> Value | None:
    """A sample value from an OPC UA variant's value, or None for what a sample cannot hold."""
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int | float):
        value = float(raw)
        return value if math.isfinite(value) else None
    if isinstance(raw, str):
        return raw[:MAX_TEXT]
    return None


def _text(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
