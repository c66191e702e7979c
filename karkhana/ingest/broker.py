"""The embedded MQTT broker (amqtt), so that a factory needs nothing else installed.

Devices connect with username = device id and password = device token. A device may publish
only under ``karkhana/<its id>/`` and subscribe only there. Telemetry is stored before the
broker answers PUBACK, so a QoS 1 publisher that got its PUBACK knows the data is committed;
a message that cannot be stored is never acknowledged and the device sends it again.

amqtt has no hook between receiving a PUBLISH and sending its PUBACK, so this module subclasses
its protocol handler; the amqtt version is pinned in pyproject.toml for that reason.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import Session

from karkhana.core.errors import KarkhanaError, StoreUnavailable
from karkhana.ingest.service import Ingestor, device_of_topic

log = logging.getLogger(__name__)


class _IngestingHandler(BrokerProtocolHandler):  # type: ignore[misc]
    ingestor: Ingestor

    async def handle_publish(self, publish_packet: Any) -> None:
        session = self.session
        topic = publish_packet.topic_name
        device_id = device_of_topic(topic) if topic else None
        if (
            session is not None
            and device_id is not None
            and session.username == device_id
            and publish_packet.data is not None
        ):
            try:
                await self.ingestor.ingest(device_id, bytes(publish_packet.data))
            except StoreUnavailable as exc:
                # Not acknowledged: the device keeps the message and sends it again.
                log.error("not storing message from %s: %s", device_id, exc.message)
                return
            except KarkhanaError:
                pass  # counted and logged by the ingestor; acknowledged so it is not resent
        await super().handle_publish(publish_packet)


def _allowed(session: Session, topic: str) -> bool:
    username = session.username
    return bool(username) and (
        topic == f"karkhana/{username}" or topic.startswith(f"karkhana/{username}/")
    )


class EmbeddedBroker(Broker):  # type: ignore[misc]
    def __init__(
        self, ingestor: Ingestor, host: str, port: int, max_connections: int = 2000
    ) -> None:
        config: dict[str, Any] = {
            "listeners": {
                "default": {
                    "type": "tcp",
                    "bind": f"{host}:{port}",
                    "max_connections": max_connections,
                }
            },
            "plugins": {},
            "timeout_disconnect_delay": 0,
        }
        super().__init__(config, loop=asyncio.get_running_loop())
        self.ingestor = ingestor
        ingestor.devices.on_revoked(self._revoked)

    async def _initialize_client_session(self, *args: Any, **kwargs: Any) -> tuple[Any, Session]:
        handler, session = await super()._initialize_client_session(*args, **kwargs)
        # amqtt builds its handler through a classmethod of the base class; give it ours.
        handler.__class__ = _IngestingHandler
        handler.ingestor = self.ingestor
        return handler, session

    async def _authenticate(self, session: Session, _: Any) -> bool:
        ok = bool(session.username) and self.ingestor.devices.verify(
            session.username, session.password
        )
        if not ok:
            log.warning("MQTT login refused for %r", (session.username or "")[:64])
        return ok

    async def _topic_filtering(self, session: Session, topic: str, action: Action) -> bool:
        return _allowed(session, topic)

    def _revoked(self, device_id: str) -> None:
        """Close connections that used a token that was just rotated or deleted."""
        for session, handler in list(self._sessions.values()):
            if session.username == device_id and handler is not None:
                asyncio.get_running_loop().create_task(handler.stop())
