"""The edge's local MQTT input: an embedded broker for cheap sensors (ESP32) on the factory LAN.

Devices publish the server's JSON payload (:func:`karkhana.ingest.codec.decode`) to
``karkhana/<device_id>/telemetry``. A QoS 1 PUBLISH is answered (PUBACK) only once its samples
are in the durable buffer: a full buffer (reject-new) or a failing disk withholds the PUBACK, so
the device keeps the message and sends it again. A payload that cannot be decoded is
acknowledged (sending it again would not help), counted and never stored.

With ``local_token`` set, a device logs in with user name = its device id and password = the
token, and may publish (and subscribe) only under ``karkhana/<its id>/``. Without it, any client
on the LAN may connect and publish for any device id.

The broker is the server's :class:`~karkhana.ingest.broker.StoringBroker` (same PUBACK hook,
connection limits and read deadlines) with the edge's buffer behind it.
"""

from __future__ import annotations

import hmac
import logging
import time
from typing import Any

from amqtt.contexts import Action
from amqtt.session import Session

from karkhana.core.errors import KarkhanaError, StoreUnavailable
from karkhana.core.model import is_valid_device_id
from karkhana.edge.buffer import Buffer
from karkhana.edge.clock import EdgeClock
from karkhana.ingest.broker import StoringBroker
from karkhana.ingest.codec import decode
from karkhana.ingest.service import device_of_topic

log = logging.getLogger(__name__)
FAR_FUTURE_MS = 100 * 365 * 86_400_000
LOG_EVERY_S = 60.0


class LocalMqttInput(StoringBroker):
    def __init__(
        self,
        buffer: Buffer,
        clock: EdgeClock,
        host: str,
        port: int,
        *,
        local_token: str = "",
        max_payload_bytes: int = 256 * 1024,
        max_future_ms: int = 86_400_000,
        max_connections: int = 500,
        read_timeout_s: float = 10.0,
    ) -> None:
        """Listen on ``host:port`` once :meth:`start` is awaited (in the running loop)."""
        super().__init__(
            host,
            port,
            max_connections,
            read_timeout_s=read_timeout_s,
            max_read_bytes=max_payload_bytes + 65_536,
        )
        self.buffer = buffer
        self.clock = clock
        self.local_token = local_token
        self.max_payload_bytes = max_payload_bytes
        self.max_future_ms = max_future_ms
        self.stats: dict[str, Any] = {
            "messages": 0,
            "points": 0,
            "refused": 0,
            "unacknowledged": 0,
            "refused_logins": 0,
            "last_reason": "",
        }
        self._logged: dict[str, float] = {}

    def _log(self, kind: str, level: int, msg: str, *args: object) -> None:
        """Log at most once a minute per kind: a misbehaving device must not flood the log."""
        now = time.monotonic()
        if now - self._logged.get(kind, -LOG_EVERY_S) >= LOG_EVERY_S:
            self._logged[kind] = now
            log.log(level, msg, *args)

    def _refuse(self, device: str, reason: str) -> bool:
        """Count a message that is acknowledged but not stored."""
        self.stats["refused"] += 1
        self.stats["last_reason"] = reason
        self._log("refused", logging.WARNING, "MQTT message from %s not stored: %s", device, reason)
        return True

    def _may_use(self, session: Session, device_id: str) -> bool:
        if not is_valid_device_id(device_id):
            return False
        return not self.local_token or session.username == device_id

    async def store(self, session: Session | None, topic: str | None, data: bytes | None) -> bool:
        device_id = device_of_topic(topic) if topic else None
        if session is None or data is None:
            return True  # amqtt answers nothing for these
        if device_id is None:
            return self._refuse(str(topic)[:100], "not a karkhana/<device_id>/telemetry topic")
        if not self._may_use(session, device_id):
            return self._refuse(device_id[:64], f"{session.username!r} may not publish here")
        now = self.clock.now_ms()
        # until the clock is checked against the server, a device's own (NTP) time may be
        # right while ours is not: judge its timestamps later, against the server's time
        future = self.max_future_ms if self.clock.synced else FAR_FUTURE_MS
        try:
            samples = decode(
                data, device_id, now_ms=now, max_future_ms=future, max_bytes=self.max_payload_bytes
            )
        except KarkhanaError as exc:
            return self._refuse(device_id, exc.message)
        epoch = self.clock.epoch
        epochs = [epoch if s.ts == now else 0 for s in samples] if epoch else 0
        try:
            await self.buffer.put(samples, epochs)
        except StoreUnavailable as exc:
            # no PUBACK: the device keeps the message and sends it again
            self.stats["unacknowledged"] += 1
            self._log(
                "unacked", logging.WARNING, "MQTT message from %s not acknowledged: %s",
                device_id, exc.message,
            )  # fmt: skip
            return False
        self.stats["messages"] += 1
        self.stats["points"] += len(samples)
        return True

    async def _authenticate(self, session: Session, _: Any) -> bool:
        if not self.local_token:
            return True
        user = session.username or ""
        password = session.password or ""
        if isinstance(password, str):
            password = password.encode()
        ok = is_valid_device_id(user) and hmac.compare_digest(password, self.local_token.encode())
        if not ok:
            self.stats["refused_logins"] += 1
            self._log("login", logging.WARNING, "local MQTT login refused for %r", user[:64])
        return ok

    async def _topic_filtering(self, session: Session, topic: str, action: Action) -> bool:
        parts = topic.split("/", 2)
        return len(parts) >= 2 and parts[0] == "karkhana" and self._may_use(session, parts[1])
