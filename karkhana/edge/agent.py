"""The edge agent (``karkhana edge``): inputs -> durable buffer -> forwarder -> server.

One asyncio process: the local HTTP input and /health (uvicorn), the connectors, the forwarder
and a status reporter. The buffer's writer thread is the only writer of the buffer file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
import uvicorn

from karkhana import __version__
from karkhana.core.clock import SYSTEM_CLOCK, Clock
from karkhana.core.errors import ConfigError, KarkhanaError, StoreUnavailable
from karkhana.core.model import Sample
from karkhana.edge.alarms import Coil, EdgeAlarms
from karkhana.edge.buffer import Buffer
from karkhana.edge.clock import EdgeClock
from karkhana.edge.config import EdgeSettings
from karkhana.edge.connectors.base import Connector, ConnectorError
from karkhana.edge.connectors.modbus import ModbusConnector, SerialLines
from karkhana.edge.connectors.sim import SimConnector
from karkhana.edge.forwarder import Forwarder, ForwarderConfig
from karkhana.edge.http import local_app
from karkhana.edge.mqtt import LocalMqttInput
from karkhana.edge.opcua.servers import OpcUaServer

log = logging.getLogger(__name__)
DAY_MS = 86_400_000


class EdgeAgent:
    def __init__(
        self,
        settings: EdgeSettings,
        *,
        wall: Clock = SYSTEM_CLOCK,
        monotonic: Callable[[], float] = time.monotonic,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        settings.require_link()
        self.settings = s = settings
        self.wall = wall
        self.monotonic = monotonic
        self.started = monotonic()
        self.buffer = Buffer.open(
            s.buffer_path,
            cap_points=s.buffer_cap_points,
            when_full=s.when_full,
            synchronous=s.fsync,
            live_window_s=s.live_window_s,
            clock=wall,
            monotonic=monotonic,
        )
        self.clock = EdgeClock(self.buffer.session, wall, monotonic)
        self.forwarder = Forwarder(
            self.buffer,
            self.clock,
            ForwarderConfig(
                s.server,
                s.gateway_id,
                s.token,
                batch_points=s.batch_points,
                batch_bytes=s.batch_bytes,
                bandwidth_bps=s.bandwidth_bps,
                timeout_s=s.timeout_s,
                max_age_ms=s.max_age_days * DAY_MS,
                ca_file=s.ca_file,
            ),
            transport=transport,
            monotonic=monotonic,
        )
        self.connectors: list[Connector] = []
        if s.sim_profile:
            self.connectors.append(
                SimConnector(
                    self.clock, s.sim_profile, s.sim_devices or None, interval_s=s.sim_interval_s
                )
            )
        lines = SerialLines()
        self.connectors += [ModbusConnector(self.clock, device, lines=lines) for device in s.modbus]
        if s.opcua:
            self.connectors += opcua_connectors(self.clock, s.opcua)
        self.connector_stats: dict[str, dict[str, Any]] = {}
        self.alarms: EdgeAlarms | None = None
        if s.alarms == "on":
            self.alarms = EdgeAlarms(
                s.data_dir,
                client=self.forwarder.client,
                now_ms=self.clock.now_ms,
                webhook=s.alarm_webhook,
                coil=Coil.parse(s.alarm_coil) if s.alarm_coil else None,
                link_up=lambda: self.forwarder.stats.link == "up",
            )
        self.app = local_app(
            self.buffer,
            self.clock,
            self.status,
            local_token=s.local_token,
            max_payload_bytes=s.max_payload_bytes,
        )
        self._tasks: list[asyncio.Task[None]] = []
        self.mqtt: LocalMqttInput | None = None

    async def start_mqtt(self) -> None:
        """Start the local MQTT input (embedded broker) on ``mqtt_host:mqtt_port``."""
        s = self.settings
        self.mqtt = LocalMqttInput(
            self.buffer,
            self.clock,
            s.mqtt_host,
            s.mqtt_port,
            local_token=s.local_token,
            max_payload_bytes=s.max_payload_bytes,
        )
        try:
            await self.mqtt.start()
        except Exception as exc:
            self.mqtt = None
            raise KarkhanaError(
                f"the local MQTT input cannot listen on {s.mqtt_host}:{s.mqtt_port}: {exc}",
                reason="edge_failed",
            ) from exc
        self.connector_stats["mqtt"] = self.mqtt.stats

    async def start_alarms(self) -> None:
        """Evaluate every sample the buffer commits; tick, fetch rules and send alarm events."""
        assert self.alarms is not None
        self.buffer.on_put(self.alarms.feed)
        await self.alarms.run()

    async def status(self) -> dict[str, Any]:
        """What /health shows and `karkhana edge status` prints."""
        b = self.buffer.stats()
        f = self.forwarder.status()
        now = self.wall.now_ms()
        oldest = await self.buffer.oldest_added_ms()
        last = f.pop("last_sync_ms")
        return {
            "status": "ok",
            "version": __version__,
            "gateway_id": self.settings.gateway_id,
            "server": self.settings.server,
            "uptime_s": round(self.monotonic() - self.started),
            "link": f.pop("link"),
            "last_error": f.pop("last_error"),
            "last_sync_ms": last,
            "last_sync_age_s": None if last is None else round((self.clock.now_ms() - last) / 1000),
            "backlog_points": b.points,
            "backlog_age_s": None if oldest is None else max(0, round((now - oldest) / 1000)),
            "buffer_cap_points": b.cap_points,
            "buffer_full": b.full,
            "when_full": b.when_full,
            "dropped_points": b.dropped_points,
            "rejected_points": b.rejected_points,
            "rejected_messages": b.rejected_messages,
            "quarantined_points": b.quarantined_points,
            "released_points": b.released_points,
            "salvaged_points": b.salvaged_points,
            "recoveries": b.recoveries,
            "clock": {
                "synced": self.clock.synced,
                "offset_ms": self.clock.offset_ms,
                "jumps": self.clock.jumps,
                "session": self.clock.session,
            },
            "forwarder": f,
            "inputs": self._inputs(),
            "alarms": self.alarms.status() if self.alarms is not None else None,
        }

    def _inputs(self) -> dict[str, dict[str, Any]]:
        """Each input's counters: the agent's (reads, points, errors) and the connector's own."""
        inputs = {name: dict(stats) for name, stats in self.connector_stats.items()}
        for connector in self.connectors:
            own = getattr(connector, "stats", None)
            if isinstance(own, dict):
                inputs.setdefault(connector.name, {}).update(own)
        return inputs

    def _status_samples(self, st: dict[str, Any]) -> list[Sample]:
        ts = self.clock.now_ms()
        gw = self.settings.gateway_id
        values: dict[str, float | bool] = {
            "edge.backlog_points": float(st["backlog_points"]),
            "edge.backlog_age_s": float(st["backlog_age_s"] or 0),
            "edge.dropped_points": float(st["dropped_points"]),
            "edge.rejected_points": float(st["rejected_points"]),
            "edge.quarantined_points": float(st["quarantined_points"]),
            "edge.buffer_full": bool(st["buffer_full"]),
            "edge.link_up": st["link"] == "up",
            "edge.clock_offset_ms": float(st["clock"]["offset_ms"]),
            "edge.clock_synced": bool(st["clock"]["synced"]),
            "edge.sent_points": float(st["forwarder"]["sent_points"]),
        }
        return [Sample(gw, k, ts, v) for k, v in values.items()]

    async def _report(self) -> None:
        """The agent's status as the gateway's own telemetry, through the buffer like the rest."""
        interval = self.settings.status_interval_s
        while True:
            await asyncio.sleep(interval)
            samples = self._status_samples(await self.status())
            try:
                await self.buffer.put(samples, self.clock.epoch)
            except StoreUnavailable as exc:
                log.warning("status not buffered: %s", exc.message)

    async def _pump(self, connector: Connector) -> None:
        stats = self.connector_stats.setdefault(
            connector.name, {"reads": 0, "points": 0, "lost_points": 0, "errors": 0}
        )
        failures = 0
        while True:
            try:
                await connector.open()
                while True:
                    samples = await connector.read()
                    epoch = self.clock.epoch if connector.stamps_time else 0
                    try:
                        await self.buffer.put(samples, epoch)
                    except StoreUnavailable as exc:
                        # a polled value cannot be asked for again: counted (and in the
                        # buffer's rejected counters when the buffer is full)
                        stats["lost_points"] += len(samples)
                        log.warning("%s: %d samples lost: %s", connector.name, len(samples), exc)
                        continue
                    stats["reads"] += 1
                    stats["points"] += len(samples)
                    failures = 0
            except ConnectorError as exc:
                stats["errors"] += 1
                stats["last_error"] = exc.message
                failures += 1
                log.warning("%s: %s; reconnecting", connector.name, exc.message)
            finally:
                with contextlib.suppress(KarkhanaError):
                    await connector.close()
            await asyncio.sleep(min(60.0, 2.0 ** min(failures, 6)))

    def _check_wall_clock(self) -> None:
        """A wall clock behind the last run's means the box booted with a wrong time."""
        try:
            newest = self.buffer.newest_added_ms()
        except KarkhanaError:
            return
        if newest is not None and self.wall.now_ms() < newest - 60_000:
            log.warning(
                "the wall clock (%d) is behind the last buffered sample (%d): this box may have"
                " booted with a wrong time; samples it stamps are corrected once the server is"
                " reached",
                self.wall.now_ms(),
                newest,
            )

    async def run(self, server: uvicorn.Server | None = None) -> None:
        """Run until cancelled; serves the local input on ``server`` (made here by default)."""
        self._check_wall_clock()
        if server is None:
            server = uvicorn.Server(uvicorn_config(self.app, self.settings))
        if self.settings.mqtt_port:
            try:
                await self.start_mqtt()
            except BaseException:
                await self.stop()
                raise
        jobs = [self.forwarder.run()]
        if self.alarms is not None:
            jobs.append(self.start_alarms())
        if self.settings.status_interval_s > 0:
            jobs.append(self._report())
        jobs += [self._pump(c) for c in self.connectors]
        self._tasks = [asyncio.create_task(job) for job in jobs]
        failed: list[BaseException] = []

        def watch(task: asyncio.Task[None]) -> None:
            # a part that stops by itself is a bug: stop the agent so that its supervisor
            # (systemd) restarts it, rather than accept data that is never forwarded
            if not task.cancelled() and task.exception() is not None:
                log.error("edge agent part failed", exc_info=task.exception())
                failed.append(task.exception())  # type: ignore[arg-type]
                server.should_exit = True

        for task in self._tasks:
            task.add_done_callback(watch)
        log.info(
            "karkhana edge %s: gateway %s -> %s; local input %s; local MQTT %s",
            __version__,
            self.settings.gateway_id,
            self.settings.server,
            self.settings.local_url,
            f"{self.settings.mqtt_host}:{self.settings.mqtt_port}" if self.mqtt else "off",
        )
        try:
            await server.serve()
        finally:
            await self.stop()
        if failed:
            raise KarkhanaError(f"the edge agent stopped: {failed[0]!r}", reason="edge_failed")

    async def stop(self) -> None:
        if self.mqtt is not None:
            # first: no device is acknowledged once the buffer closes
            mqtt, self.mqtt = self.mqtt, None
            await mqtt.shutdown()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self.alarms is not None:
            await self.alarms.close()
        await self.forwarder.close()
        await asyncio.to_thread(self.buffer.close)


def uvicorn_config(app: Any, settings: EdgeSettings) -> uvicorn.Config:
    from karkhana.api.server import header_timeout_protocol

    return uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_level="warning",
        lifespan="off",
        http=header_timeout_protocol(10),
        h11_max_incomplete_event_size=16 * 1024,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=5,
        limit_concurrency=500,
    )


def opcua_connectors(clock: EdgeClock, servers: tuple[OpcUaServer, ...]) -> list[Connector]:
    """The OPC UA inputs; asyncua is an optional extra, asked for only when one is configured."""
    try:
        from karkhana.edge.connectors.opcua import OpcUaConnector
    except ImportError as exc:
        raise ConfigError(
            f"[[opcua]] inputs need the opcua extra ({exc.name} is missing): "
            "pip install 'karkhana[opcua]'"
        ) from None
    return [OpcUaConnector(clock, server) for server in servers]
