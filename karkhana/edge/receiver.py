"""Server side of the edge link: authenticate the gateway, check its children, store a batch.

The answer goes back only after the batch is committed, so the edge deletes only what is durable
here. Re-sent batches are harmless twice over: the store keeps one sample per (device, key,
timestamp), and the ids of recently committed batches are remembered per gateway so that a
re-sent batch is answered at once without being decoded or written again.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict
from dataclasses import asdict, dataclass

from karkhana.core.clock import Clock
from karkhana.core.errors import Conflict, Forbidden, InvalidPayload, KarkhanaError, Unauthorized
from karkhana.core.model import Sample
from karkhana.edge.encoding import batch_id_of, decode
from karkhana.ingest.codec import EARLIEST_MS
from karkhana.ingest.service import Ingestor
from karkhana.security.audit import AuditLog
from karkhana.security.devices import DeviceRegistry
from karkhana.store.sqlite import SQLiteStore

GATEWAY_HEADER = "x-karkhana-gateway"
REMEMBERED_BATCHES = 4096
"""Batch ids remembered (across all gateways) to answer re-sends without writing again."""


@dataclass(frozen=True, slots=True)
class Receipt:
    batch_id: uuid.UUID
    stored: int
    duplicates: int
    replay: bool = False
    """True when this batch id was already committed (the samples are all duplicates)."""


class EdgeReceiver:
    def __init__(
        self,
        store: SQLiteStore,
        devices: DeviceRegistry,
        ingestor: Ingestor,
        clock: Clock,
        *,
        audit: AuditLog | None = None,
        create_children: bool = True,
        max_children: int = 1000,
    ) -> None:
        """``create_children``: register unknown devices on first sight as children of the
        gateway that sends them (in the gateway's site), up to ``max_children`` per gateway."""
        self.store = store
        self.devices = devices
        self.ingestor = ingestor
        self.clock = clock
        self.audit = audit
        self.create_children = create_children
        self.max_children = max_children
        self._recent: OrderedDict[tuple[str, uuid.UUID], int] = OrderedDict()
        self._create_lock = asyncio.Lock()

    async def receive(self, gateway_id: str, token: str, body: bytes) -> Receipt:
        """Store one batch sent by ``gateway_id``; raises a KarkhanaError (whole batch refused)."""
        try:
            if not self.devices.verify(gateway_id, token):
                raise Unauthorized("unknown gateway or wrong token")
            self.ingestor.admit(gateway_id)
            batch_id = batch_id_of(body)
            points = self._recent.get((gateway_id, batch_id))
            if points is not None:
                self._recent.move_to_end((gateway_id, batch_id))
                return Receipt(batch_id, 0, points, replay=True)
            _, samples = await asyncio.to_thread(decode, body)
            self._check_times(samples)
            await self._check_devices(gateway_id, {s.device_id for s in samples})
        except KarkhanaError as exc:
            self.ingestor.reject(gateway_id, exc)
            raise
        result = await self.store.write(samples)
        self.ingestor.accept(gateway_id, result)
        self._remember(gateway_id, batch_id, len(samples))
        return Receipt(batch_id, result.stored, result.duplicates)

    def _remember(self, gateway_id: str, batch_id: uuid.UUID, points: int) -> None:
        self._recent[(gateway_id, batch_id)] = points
        while len(self._recent) > REMEMBERED_BATCHES:
            self._recent.popitem(last=False)

    def _check_times(self, samples: list[Sample]) -> None:
        latest = self.clock.now_ms() + self.ingestor.max_future_ms
        for s in samples:
            if not EARLIEST_MS <= s.ts <= latest:
                raise InvalidPayload(
                    f"{s.device_id}/{s.key}: timestamp {s.ts} is before 2000 or too far in the"
                    " future (edge clock wrong?)"
                )

    async def _check_devices(self, gateway_id: str, device_ids: set[str]) -> None:
        """Every device must be the gateway or its child; unknown ones may become children."""
        for device_id in sorted(device_ids):
            if self.devices.may_act_for(gateway_id, device_id):
                continue
            if self.devices.exists(device_id):
                raise Forbidden(f"device {device_id} is not a child of gateway {gateway_id}")
            if not self.create_children:
                raise Forbidden(
                    f"unknown device {device_id}: register it with parent {gateway_id}"
                    " (the server does not create edge children: edge_create_children=off)"
                )
            await self._create_child(gateway_id, device_id)

    async def _create_child(self, gateway_id: str, device_id: str) -> None:
        async with self._create_lock:
            if self.devices.may_act_for(gateway_id, device_id):
                return  # another batch made it meanwhile
            children = sum(1 for d in await self.devices.list() if d.parent_id == gateway_id)
            if children >= self.max_children:
                raise Forbidden(
                    f"gateway {gateway_id} already has {children} devices (edge_max_children)"
                )
            site = await self.devices.site_of(gateway_id)
            try:
                device, _ = await self.devices.create(device_id, site_id=site, parent_id=gateway_id)
            except Conflict:
                raise Forbidden(
                    f"device {device_id} is not a child of gateway {gateway_id}"
                ) from None
            if self.audit is not None:
                await self.audit.record(
                    f"device:{gateway_id}",
                    "device.create",
                    f"device:{device_id}",
                    after=asdict(device),
                    source="edge",
                )
