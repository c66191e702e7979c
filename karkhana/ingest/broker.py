"""The embedded MQTT broker (amqtt), so that a factory needs nothing else installed.

Devices connect with username = device id and password = device token. A device may publish
only under ``karkhana/<its id>/`` and subscribe only there. Telemetry is stored before the
broker answers PUBACK, so a QoS 1 publisher that got its PUBACK knows the data is committed;
a message that cannot be stored is never acknowledged and the device sends it again.

With TLS on, an MQTTS listener serves beside (or instead of) plain MQTT. A device may then log in
with a client certificate signed by the local CA instead of a token: the certificate's common
name is its device id, and a user name, if it sends one, must be the same.

amqtt has no hook between receiving a PUBLISH and sending its PUBACK, so this module subclasses
its protocol handler; the amqtt version is pinned in pyproject.toml for that reason.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import Session

from karkhana.core.errors import KarkhanaError, StoreUnavailable
from karkhana.ingest.service import Ingestor, device_of_topic
from karkhana.security.audit import AuditLog
from karkhana.security.tls import ServerTls, client_device_id

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
        self,
        ingestor: Ingestor,
        host: str,
        port: int | None,
        max_connections: int = 2000,
        *,
        tls: ServerTls | None = None,
        tls_port: int = 8883,
        audit: AuditLog | None = None,
    ) -> None:
        """Plain MQTT on ``port`` (None: none), MQTTS on ``tls_port`` when ``tls`` is given."""
        listeners: list[dict[str, Any]] = []
        if port is not None:
            listeners.append({"type": "tcp", "bind": f"{host}:{port}"})
        if tls is not None:
            listeners.append(
                {
                    "type": "tcp",
                    "bind": f"{host}:{tls_port}",
                    "ssl": True,
                    "certfile": str(tls.certfile),
                    "keyfile": str(tls.keyfile),
                    # with a CA, amqtt asks for client certificates (CERT_OPTIONAL): a device
                    # may present one; one that does not verify fails the handshake
                    **({"cafile": str(tls.cafile)} if tls.cafile is not None else {}),
                }
            )
        if not listeners:
            raise ValueError("the broker needs a plain or a TLS port")
        config: dict[str, Any] = {
            # amqtt needs a listener named "default"
            "listeners": {
                name: {**listener, "max_connections": max_connections}
                for name, listener in zip(("default", "tls"), listeners, strict=False)
            },
            "plugins": {},
            "timeout_disconnect_delay": 0,
        }
        super().__init__(config, loop=asyncio.get_running_loop())
        self.ingestor = ingestor
        self.audit = audit
        ingestor.devices.on_revoked(self._revoked)

    async def _initialize_client_session(
        self, reader: Any, writer: Any, remote_address: str, remote_port: int
    ) -> tuple[Any, Session]:
        handler, session = await super()._initialize_client_session(
            reader, writer, remote_address, remote_port
        )
        # amqtt reuses a persistent session without updating its TLS state; the certificate
        # must be the one of this connection, never one left from an earlier connection
        session.ssl_object = writer.get_ssl_info()
        # amqtt builds its handler through a classmethod of the base class; give it ours.
        handler.__class__ = _IngestingHandler
        handler.ingestor = self.ingestor
        return handler, session

    async def stream_connected(self, reader: Any, writer: Any, listener_name: str) -> None:
        try:
            await super().stream_connected(reader, writer, listener_name)
        except (ConnectionError, ssl.SSLError) as exc:
            # a client that hangs up while being refused (usual after a TLS alert) is no error
            log.debug("MQTT connection closed by the client: %s", exc)

    async def _authenticate(self, session: Session, _: Any) -> bool:
        ssl_object = session.ssl_object
        cert_id = client_device_id(
            ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        )
        if cert_id is not None:
            # the TLS layer has verified the certificate against the CA; deleting the device
            # from the registry is what revokes it
            ok = self.ingestor.devices.exists(cert_id) and session.username in (None, "", cert_id)
            if ok:
                session.username = cert_id
        else:
            ok = bool(session.username) and self.ingestor.devices.verify(
                session.username, session.password
            )
        if not ok:
            log.warning("MQTT login refused for %r", (cert_id or session.username or "")[:64])
            if self.audit is not None:
                who = cert_id or session.username or "(none)"
                await self.audit.refused(
                    who,
                    "device.auth",
                    f"device:{who}",
                    source=session.remote_address,
                    details={"transport": "mqtt"},
                )
        return ok

    async def _topic_filtering(self, session: Session, topic: str, action: Action) -> bool:
        return _allowed(session, topic)

    def _revoked(self, device_id: str) -> None:
        """Close connections that used a token that was just rotated or deleted."""
        for session, handler in list(self._sessions.values()):
            if session.username == device_id and handler is not None:
                asyncio.get_running_loop().create_task(handler.stop())
