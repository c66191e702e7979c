"""The embedded MQTT broker (amqtt), so that a factory needs nothing else installed.

Devices connect with username = device id and password = device token. A device may publish
only under ``karkhana/<its id>/`` and subscribe only there; a gateway (the parent of other
devices in the registry) also under its children's ``karkhana/<child id>/``. Telemetry is stored before the
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
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from amqtt.adapters import StreamReaderAdapter, StreamWriterAdapter
from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.errors import AMQTTError
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import Session

from karkhana.core.errors import ConfigError, KarkhanaError, StoreUnavailable
from karkhana.ingest.service import Ingestor, device_of_topic
from karkhana.security.audit import AuditLog
from karkhana.security.devices import DeviceRegistry
from karkhana.security.tls import RevocationWatch, ServerTls, client_device_id

log = logging.getLogger(__name__)
REVOCATION_CHECK_S = 2.0
"""How often the broker looks for a changed certificate revocation list."""


class _ConnectionClosed(Exception):
    """A connection that broke a limit; amqtt ends its reader loop on an exception it does not
    know, so this is deliberately not one of amqtt's own."""


class _LimitedReader(StreamReaderAdapter):  # type: ignore[misc]
    """A connection's reads, limited: a packet larger than ``max_bytes`` closes the connection
    rather than being buffered whole, and a packet that has begun must arrive within
    ``timeout_s`` (amqtt waits for the rest of a packet forever)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        max_bytes: int,
        timeout_s: float,
    ) -> None:
        super().__init__(reader)
        self._transport = writer.transport
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    def _close(self, why: str) -> _ConnectionClosed:
        peer = self._transport.get_extra_info("peername")
        log.warning("closing MQTT connection from %s: %s", peer[0] if peer else "?", why)
        self._transport.abort()
        return _ConnectionClosed(why)

    async def read(self, n: int = -1) -> bytes:
        if n > self.max_bytes:
            raise self._close(f"a packet part of {n} bytes; the limit is {self.max_bytes}")
        # one-byte reads are packet headers, which wait up to the keep-alive time between packets
        if n <= 1 or not self.timeout_s:
            data: bytes = await super().read(n)
            return data
        try:
            async with asyncio.timeout(self.timeout_s):
                data = await super().read(n)
        except TimeoutError:
            raise self._close(f"{n} bytes not sent within {self.timeout_s:g} s") from None
        return data


StoreHook = Callable[[Session | None, str | None, bytes | None], Awaitable[bool]]
"""Called with (session, topic, payload) of every PUBLISH before amqtt answers it: True lets
the broker acknowledge (and route) the message, False withholds the PUBACK so that the device
sends it again."""


class StoringHandler(BrokerProtocolHandler):  # type: ignore[misc]
    """amqtt's handler with a :data:`StoreHook` between receiving a PUBLISH and its PUBACK."""

    store: StoreHook

    def handle_read_timeout(self) -> None:
        """The keep-alive time passed without a packet: close, as MQTT requires (amqtt only
        logs it, so that connections of devices that lost power would hold their slots)."""
        log.debug(
            "MQTT keep-alive timeout for %r", self.session.client_id if self.session else None
        )
        if self.reader is not None:
            self.reader.feed_eof()

    async def handle_publish(self, publish_packet: Any) -> None:
        data = publish_packet.data
        stored = await self.store(
            self.session, publish_packet.topic_name, None if data is None else bytes(data)
        )
        if stored:
            await super().handle_publish(publish_packet)
        elif self.reader is not None:
            # MQTT 3.1.1 clients resend an unacknowledged message only after reconnecting:
            # close, so the device sends it again as soon as storage is back.
            self.reader.feed_eof()


def _allowed(devices: DeviceRegistry, session: Session, topic: str) -> bool:
    """Under ``karkhana/<id>`` where the user is device ``id`` or its gateway."""
    parts = topic.split("/", 2)
    return (
        len(parts) >= 2
        and parts[0] == "karkhana"
        and devices.may_act_for(session.username, parts[1])
    )


class StoringBroker(Broker):  # type: ignore[misc]
    """An amqtt broker whose every PUBLISH goes through :meth:`store` before its PUBACK, with
    connection limits and read deadlines. Subclasses implement ``store``, ``_authenticate`` and
    ``_topic_filtering`` (the server's :class:`EmbeddedBroker`, the edge's local MQTT input)."""

    def __init__(
        self,
        host: str,
        port: int | None,
        max_connections: int = 2000,
        *,
        tls: ServerTls | None = None,
        tls_port: int = 8883,
        read_timeout_s: float = 10.0,
        max_read_bytes: int = 256 * 1024 + 65_536,
    ) -> None:
        """Plain MQTT on ``port`` (None: none), MQTTS on ``tls_port`` when ``tls`` is given.

        At most ``max_connections`` per listener (0: no limit); more are closed at once rather
        than left waiting. A new connection must send CONNECT within ``read_timeout_s``, and a
        packet that has begun must arrive whole within it (0: no limit). A packet part larger
        than ``max_read_bytes`` closes the connection unread.
        """
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
        self.read_timeout_s = read_timeout_s
        self.max_read_bytes = max_read_bytes
        self.refused_full = 0
        self._full_logged = -60.0

    async def store(self, session: Session | None, topic: str | None, data: bytes | None) -> bool:
        """Store one PUBLISH before it is answered; False: no PUBACK (see :data:`StoreHook`)."""
        raise NotImplementedError

    async def _initialize_client_session(
        self, reader: Any, writer: Any, remote_address: str, remote_port: int
    ) -> tuple[Any, Session]:
        try:
            async with asyncio.timeout(self.read_timeout_s or None):
                handler, session = await super()._initialize_client_session(
                    reader, writer, remote_address, remote_port
                )
        except (TimeoutError, _ConnectionClosed) as exc:
            if isinstance(exc, TimeoutError):
                log.info("no MQTT CONNECT from %s within %g s", remote_address, self.read_timeout_s)
            if isinstance(writer, StreamWriterAdapter):
                writer.is_closed = True
                writer._writer.transport.abort()
            raise AMQTTError("no CONNECT in time") from None  # amqtt frees the slot on this
        if session.keep_alive > 0:
            # MQTT: the server waits one and a half keep-alive periods before closing
            session.keep_alive += (session.keep_alive + 1) // 2
        # amqtt reuses a persistent session without updating its TLS state; the certificate
        # must be the one of this connection, never one left from an earlier connection
        session.ssl_object = writer.get_ssl_info()
        # amqtt builds its handler through a classmethod of the base class; give it ours.
        handler.__class__ = StoringHandler
        handler.store = self.store
        return handler, session

    async def stream_connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener_name: str
    ) -> None:
        server = self._servers.get(listener_name)
        if server is not None and server.semaphore is not None and server.semaphore.locked():
            self._refuse_full(writer, server.max_connections)
            return
        try:
            await self._client_connected(
                listener_name,
                _LimitedReader(reader, writer, self.max_read_bytes, self.read_timeout_s),
                StreamWriterAdapter(writer),
            )
        except (ConnectionError, ssl.SSLError) as exc:
            # a client that hangs up while being refused (usual after a TLS alert) is no error
            log.debug("MQTT connection closed by the client: %s", exc)

    def _refuse_full(self, writer: asyncio.StreamWriter, limit: int) -> None:
        """Close a connection beyond the limit at once (amqtt would hold it until a slot frees)."""
        self.refused_full += 1
        writer.transport.abort()
        now = asyncio.get_running_loop().time()
        if now - self._full_logged >= 60:
            self._full_logged = now
            log.warning(
                "MQTT connection limit (%d) reached: refusing connections (%d so far)",
                limit,
                self.refused_full,
            )


class EmbeddedBroker(StoringBroker):
    """The server's broker: device tokens or certificates, telemetry stored by the ingestor."""

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
        read_timeout_s: float = 10.0,
    ) -> None:
        super().__init__(
            host,
            port,
            max_connections,
            tls=tls,
            tls_port=tls_port,
            read_timeout_s=read_timeout_s,
            # a message a little over the limit is read, refused and counted; a far bigger one
            # closes the connection instead of being held in memory
            max_read_bytes=ingestor.max_payload_bytes + 65_536,
        )
        self.ingestor = ingestor
        self.audit = audit
        ingestor.devices.on_revoked(self._revoked)
        self.revocations = RevocationWatch(
            tls.crlfile if tls else None, tls.cafile if tls else None
        )
        self.revocations.refresh()
        self._watch: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await super().start()
        if self.revocations.crlfile is not None:
            self._watch = asyncio.create_task(self._watch_revocations())

    async def shutdown(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        await super().shutdown()

    async def _watch_revocations(self) -> None:
        """Close connections whose certificate was revoked since they logged in."""
        while True:
            await asyncio.sleep(REVOCATION_CHECK_S)
            try:
                changed = self.revocations.refresh()
            except ConfigError as exc:
                log.error("certificate revocation list not reloaded: %s", exc.message)
                continue
            if not changed:
                continue
            for session, handler in list(self._sessions.values()):
                ssl_object = getattr(session, "ssl_object", None)
                der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
                if handler is not None and self.revocations.revoked(der):
                    log.warning("closing %s: its certificate was revoked", session.username)
                    await handler.stop()

    async def store(self, session: Session | None, topic: str | None, data: bytes | None) -> bool:
        device_id = device_of_topic(topic) if topic else None
        if (
            session is not None
            and device_id is not None
            and self.ingestor.devices.may_act_for(session.username, device_id)
            and data is not None
        ):
            try:
                await self.ingestor.ingest(device_id, data)
            except StoreUnavailable as exc:
                # Not acknowledged: the device keeps the message and sends it again.
                log.error("not storing message from %s: %s", device_id, exc.message)
                return False
            except KarkhanaError:
                pass  # counted and logged by the ingestor; acknowledged so it is not resent
        return True

    async def _authenticate(self, session: Session, _: Any) -> bool:
        ssl_object = session.ssl_object
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        cert_id = client_device_id(der)
        revoked = cert_id is not None and self.revocations.revoked(der)
        if cert_id is not None:
            # the TLS layer has verified the certificate against the CA; a revoked certificate
            # or a deleted device is refused
            ok = (
                not revoked
                and self.ingestor.devices.exists(cert_id)
                and session.username in (None, "", cert_id)
            )
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
                    details={
                        "transport": "mqtt",
                        **({"certificate": "revoked"} if revoked else {}),
                    },
                )
        return ok

    async def _topic_filtering(self, session: Session, topic: str, action: Action) -> bool:
        return _allowed(self.ingestor.devices, session, topic)

    def _revoked(self, device_id: str) -> None:
        """Close connections that used a token that was just rotated or deleted."""
        for session, handler in list(self._sessions.values()):
            if session.username == device_id and handler is not None:
                asyncio.get_running_loop().create_task(handler.stop())
