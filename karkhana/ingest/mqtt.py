"""Subscribes to an external MQTT broker (Mosquitto in production) and stores its telemetry.

The listener keeps a persistent session and acknowledges each message only after the writer has
committed it (paho's manual acknowledgement), so the broker holds on to anything not yet stored
and delivers it again after a crash or restart of the server.
"""

from __future__ import annotations

import logging
import ssl
import threading
import uuid
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from karkhana.core.errors import ConfigError, KarkhanaError, StoreUnavailable
from karkhana.ingest.service import TELEMETRY_FILTER, Ingestor, device_of_topic
from karkhana.store.base import WriteResult

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    username: str | None
    password: str | None
    tls: bool

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        parts = urlsplit(url)
        if parts.scheme not in {"mqtt", "mqtts", "tcp", "ssl"}:
            raise ConfigError(
                f"mqtt url must start with mqtt:// or mqtts://, got {url.split(':')[0]!r}"
            )
        if not parts.hostname:
            raise ConfigError("mqtt url has no host")
        tls = parts.scheme in {"mqtts", "ssl"}
        try:
            port = parts.port or (8883 if tls else 1883)
        except ValueError:
            raise ConfigError("mqtt url has an invalid port") from None
        return cls(
            parts.hostname,
            port,
            unquote(parts.username) if parts.username else None,
            unquote(parts.password) if parts.password else None,
            tls,
        )


class MqttListener:
    """A paho client on its own network thread feeding the ingestor."""

    def __init__(
        self,
        address: BrokerAddress,
        ingestor: Ingestor,
        client_id: str | None = None,
        receive_maximum: int = 1000,
        ca_file: str | None = None,
    ) -> None:
        """``ca_file``: the CA that signed an mqtts:// broker's certificate (a local CA)."""
        self.address = address
        self.ingestor = ingestor
        self.connected = threading.Event()
        self.failure: str | None = None
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"karkhana-server-{uuid.uuid4().hex[:8]}",
            protocol=paho.MQTTv5,
            manual_ack=True,
        )
        self._receive_maximum = receive_maximum
        if address.username:
            self._client.username_pw_set(address.username, address.password)
        if ca_file and not address.tls:
            raise ConfigError("mqtt_ca_file is set but mqtt_url is not an mqtts:// URL")
        if address.tls:
            try:
                self._client.tls_set(ca_certs=ca_file or None)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"cannot use mqtt_ca_file {ca_file}: {exc}") from None
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.on_disconnect = self._on_disconnect
        self._client.reconnect_delay_set(1, 30)

    def start(self, timeout: float = 10.0) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.ReceiveMaximum = self._receive_maximum
        props.SessionExpiryInterval = 7 * 24 * 3600
        try:
            self._client.connect(
                self.address.host,
                self.address.port,
                keepalive=30,
                clean_start=False,
                properties=props,
            )
        except OSError as exc:
            raise ConfigError(
                f"cannot reach MQTT broker {self.address.host}:{self.address.port}: {exc.strerror or exc}"
            ) from None
        self._client.loop_start()
        if not self.connected.wait(timeout):
            self.stop()
            raise ConfigError(
                f"MQTT broker {self.address.host}:{self.address.port} refused the connection: "
                f"{self.failure or 'no answer'}"
            )

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(
        self,
        client: paho.Client,
        _userdata: object,
        _flags: object,
        reason: ReasonCode,
        _props: object,
    ) -> None:
        if reason.is_failure:
            self.failure = str(reason)
            log.error("MQTT broker refused connection: %s", reason)
            return
        client.subscribe(TELEMETRY_FILTER, qos=1)
        log.info(
            "subscribed to %s on %s:%d", TELEMETRY_FILTER, self.address.host, self.address.port
        )
        self.connected.set()

    def _on_disconnect(
        self, _client: paho.Client, _u: object, _f: object, reason: ReasonCode, _p: object
    ) -> None:
        self.connected.clear()
        if reason.is_failure:
            log.warning("lost MQTT broker connection (%s); reconnecting", reason)

    def _on_message(self, client: paho.Client, _userdata: object, msg: paho.MQTTMessage) -> None:
        device_id = device_of_topic(msg.topic)
        mid, qos = msg.mid, msg.qos
        if device_id is None:
            client.ack(mid, qos)
            return

        def done(result: WriteResult | BaseException) -> None:
            if isinstance(result, StoreUnavailable):
                return  # not acknowledged: the broker will deliver it again
            client.ack(mid, qos)

        try:
            self.ingestor.ingest_threaded(device_id, bytes(msg.payload), done)
        except KarkhanaError as exc:
            log.error("not storing message from %s: %s", device_id, exc.message)
