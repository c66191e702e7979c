"""Everything `karkhana serve` runs, wired together, started and stopped in order."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from dataclasses import dataclass

from karkhana.assets.service import AssetService
from karkhana.assets.template import load_templates
from karkhana.core.bus import Bus
from karkhana.core.clock import SYSTEM_CLOCK, Clock
from karkhana.core.config import Settings
from karkhana.core.errors import ConfigError, KarkhanaError
from karkhana.ingest.broker import EmbeddedBroker
from karkhana.ingest.mqtt import BrokerAddress, MqttListener
from karkhana.ingest.service import Ingestor
from karkhana.security.devices import DeviceRegistry
from karkhana.security.users import Users
from karkhana.store.base import RetentionPolicy
from karkhana.store.database import Database
from karkhana.store.sqlite import SQLiteStore

log = logging.getLogger(__name__)
DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class StartInfo:
    generated_admin_password: str | None
    mqtt: str


class Runtime:
    def __init__(self, settings: Settings, clock: Clock = SYSTEM_CLOCK) -> None:
        self.settings = settings
        self.clock = clock
        self.db = Database(
            settings.db_path,
            synchronous=settings.sqlite_synchronous,
            max_batch=settings.writer_max_batch,
        )
        self.store = SQLiteStore(self.db)
        self.bus = Bus()
        self.store.on_commit(self.bus.publish)
        self.devices = DeviceRegistry(self.db, clock)
        self.users = Users(self.db, clock, settings.token_ttl_hours * 3_600_000)
        self.assets = AssetService(self.db, load_templates())
        self.ingestor = Ingestor(
            self.store,
            self.devices,
            max_payload_bytes=settings.max_payload_bytes,
            max_future_ms=settings.max_future_s * 1000,
            clock=clock,
        )
        self.broker: EmbeddedBroker | None = None
        self.listener: MqttListener | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def retention(self) -> RetentionPolicy:
        s = self.settings
        return RetentionPolicy(
            s.raw_retention_days * DAY_MS,
            s.rollup_1m_retention_days * DAY_MS,
            s.rollup_1h_retention_days * DAY_MS,
        )

    async def start(self, *, mqtt: bool = True) -> StartInfo:
        await self.devices.load()
        generated = await self.users.ensure_admin(self.settings.admin_password)
        mode = "off"
        if mqtt and self.settings.mqtt_url:
            address = BrokerAddress.parse(self.settings.mqtt_url)
            # a stable client id keeps the broker-side session (and its queued messages)
            # across restarts of this server
            install = hashlib.sha1(str(self.settings.data_dir.resolve()).encode()).hexdigest()[:10]
            self.listener = MqttListener(address, self.ingestor, client_id=f"karkhana-{install}")
            await asyncio.to_thread(self.listener.start)
            mode = f"external broker {address.host}:{address.port}"
        elif mqtt:
            self.broker = EmbeddedBroker(
                self.ingestor, self.settings.mqtt_host, self.settings.mqtt_port
            )
            try:
                await self.broker.start()
            except Exception as exc:
                self.broker = None
                raise ConfigError(
                    f"cannot start the MQTT broker on port {self.settings.mqtt_port}: {exc}"
                ) from None
            mode = f"embedded broker on port {self.settings.mqtt_port}"
        self._tasks.append(asyncio.create_task(self._retention_loop()))
        return StartInfo(generated, mode)

    async def _retention_loop(self) -> None:
        while True:
            try:
                result = await self.store.apply_retention(self.clock.now_ms(), self.retention)
                if result.raw_deleted or result.rollup_1m_deleted or result.rollup_1h_deleted:
                    log.info("retention removed %s", result)
            except KarkhanaError as exc:
                log.error("retention run failed: %s", exc.message)
            await asyncio.sleep(3600)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.listener is not None:
            await asyncio.to_thread(self.listener.stop)
        if self.broker is not None:
            with contextlib.suppress(Exception):
                await self.broker.shutdown()
        await asyncio.to_thread(self.db.close)
