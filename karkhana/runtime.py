"""Everything `karkhana serve` runs, wired together, started and stopped in order."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from karkhana.alarms.service import AlarmService
from karkhana.assets.service import AssetService
from karkhana.assets.template import load_templates
from karkhana.core.bus import Bus
from karkhana.core.clock import SYSTEM_CLOCK, Clock
from karkhana.core.config import Settings
from karkhana.core.errors import ConfigError, KarkhanaError
from karkhana.energy.config import FILE_NAME as ENERGY_CONFIG
from karkhana.energy.config import load_energy_config
from karkhana.energy.service import EnergyService
from karkhana.energy.tariff import load_tariffs
from karkhana.ingest.broker import EmbeddedBroker
from karkhana.ingest.mqtt import BrokerAddress, MqttListener
from karkhana.ingest.service import Ingestor
from karkhana.maintenance.prognosis import Prognosis
from karkhana.maintenance.registry import ModelRegistry
from karkhana.maintenance.service import MaintenanceService
from karkhana.production.service import ProductionService
from karkhana.security.audit import AuditLog, record_settings, settings_snapshot
from karkhana.security.devices import DeviceRegistry
from karkhana.security.mosquitto import MosquittoPaths, MosquittoSync
from karkhana.security.secrets import load_or_create_secret
from karkhana.security.tls import ServerTls, plain_mqtt, server_tls
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
        self.secret = load_or_create_secret(settings.data_dir / "secret.key")
        # kept apart from the database so that whoever edits the file cannot re-sign the chain
        self.audit = AuditLog(
            self.db, clock, load_or_create_secret(settings.data_dir / "audit.key")
        )
        self.users = Users(self.db, clock, settings.token_ttl_hours * 3_600_000, audit=self.audit)
        self.assets = AssetService(self.db, load_templates())
        self.models = ModelRegistry.of(settings.data_dir)
        self.prognosis = Prognosis(self.db, self.store, self.assets, self.models, clock)
        self.maintenance = MaintenanceService(
            self.db, self.store, self.assets, clock, self.audit, prognosis=self.prognosis
        )
        self.production = ProductionService(
            self.db, self.store, self.bus, self.assets, clock, settings.data_dir
        )
        self.alarms = AlarmService(self.db, self.assets, self.audit, clock, store=self.store)
        own_tariffs = settings.data_dir / "tariffs"
        self.energy = EnergyService(
            self.store,
            self.assets,
            self.production,
            clock,
            lambda: load_energy_config(
                settings.data_dir,
                tariff_id=settings.energy_tariff,
                diesel_price_pkr_per_litre=settings.diesel_price_pkr_per_litre,
                generator_kva=settings.generator_kva,
            ),
            load_tariffs(own_tariffs if own_tariffs.is_dir() else None),
            watch=settings.data_dir / ENERGY_CONFIG,
        )
        self.ingestor = Ingestor(
            self.store,
            self.devices,
            max_payload_bytes=settings.max_payload_bytes,
            max_future_ms=settings.max_future_s * 1000,
            clock=clock,
            max_msgs_per_s=settings.device_max_msgs_per_s,
            burst_msgs=settings.device_burst_msgs,
        )
        self.broker: EmbeddedBroker | None = None
        self.tls: ServerTls | None = None
        self.listener: MqttListener | None = None
        self.mosquitto: MosquittoSync | None = None
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
        self.tls = server_tls(self.settings.tls, self.settings.data_dir)
        await self.devices.load()
        mosquitto = MosquittoPaths.of(self.settings.data_dir)
        if mosquitto.initialised:
            # before the listener connects: its own account is in the files written here
            pid_file = self.settings.mosquitto_pid_file
            self.mosquitto = MosquittoSync(
                self.devices, mosquitto, Path(pid_file) if pid_file not in ("", "off") else None
            )
            await self.mosquitto.start()
        generated = await self.users.ensure_admin(self.settings.admin_password)
        await record_settings(self.audit, settings_snapshot(self.settings))
        await self.alarms.start(self.bus)  # subscribed before any sample can arrive
        await self.production.start()
        mode = "off"
        if mqtt and self.settings.mqtt_url:
            address = BrokerAddress.parse(self.settings.mqtt_url)
            # a stable client id keeps the broker-side session (and its queued messages)
            # across restarts of this server
            install = hashlib.sha1(str(self.settings.data_dir.resolve()).encode()).hexdigest()[:10]
            self.listener = MqttListener(
                address,
                self.ingestor,
                client_id=f"karkhana-{install}",
                ca_file=self.settings.mqtt_ca_file or None,
            )
            await asyncio.to_thread(self.listener.start)
            mode = f"external broker {address.host}:{address.port}"
        elif mqtt:
            s = self.settings
            plain = plain_mqtt(self.tls, s.mqtt_plain)
            self.broker = EmbeddedBroker(
                self.ingestor,
                s.mqtt_host,
                s.mqtt_port if plain else None,
                s.mqtt_max_connections,
                tls=self.tls,
                tls_port=s.mqtts_port,
                audit=self.audit,
                read_timeout_s=s.mqtt_read_timeout_s,
            )
            if self.tls is None:
                mode = f"embedded broker on port {s.mqtt_port}"
            else:
                mode = f"embedded broker, MQTTS on port {s.mqtts_port}" + (
                    f", plain MQTT on port {s.mqtt_port}" if plain else ", no plain MQTT"
                )
            try:
                await self.broker.start()
            except Exception as exc:
                self.broker = None
                raise ConfigError(f"cannot start the MQTT broker ({mode}): {exc}") from None
        self._tasks.append(asyncio.create_task(self._retention_loop()))
        self._tasks.append(asyncio.create_task(self._audit_head_loop()))
        self._tasks.append(asyncio.create_task(self.maintenance.run()))
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

    async def _audit_head_loop(self) -> None:
        """Write the audit chain's head to the server log: a copy of the log kept elsewhere then
        shows if the chain was later rewritten as a whole."""
        if not await self.audit.key_matches():
            log.error(
                "audit.key in %s is not the key the audit log was written with;"
                " `karkhana audit verify` will fail until the original key is restored",
                self.settings.data_dir,
            )
        while True:
            try:
                seq, digest = await self.audit.head()
                log.info("audit log head: event %d, hash %s", seq, digest)
            except KarkhanaError as exc:
                log.error("cannot read the audit log head: %s", exc.message)
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
        await self.alarms.stop()
        await self.production.stop()
        await asyncio.to_thread(self.db.close)
