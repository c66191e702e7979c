"""Runs a plant against the clock and sends its readings through a transport.

Simulated time runs ``speedup`` times faster than the clock. Every device takes a sample each
1/rate simulated seconds; when that would mean more than ``max_publish_hz`` messages a second per
device, samples are batched into one JSON list rather than dropped. Delivery faults from the
plant's plan (dropouts, duplicates, out-of-order) are applied here, on the messages actually sent,
and counted into the ground truth.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from karkhana.core.clock import SYSTEM_CLOCK, Clock
from karkhana.core.errors import ConfigError
from karkhana.core.model import Value
from karkhana.sim.faults import DELIVERY_KINDS, FaultRecord
from karkhana.sim.payload import encode
from karkhana.sim.plant import Plant
from karkhana.sim.transport import Transport

log = logging.getLogger("karkhana.sim")

Sleep = Callable[[float], Awaitable[None]]
_RecordKey = tuple[str, str, int]


@dataclass(frozen=True, slots=True)
class RunReport:
    """What a run simulated and sent; ``ground_truth`` covers [start_ms, end_ms)."""

    start_ms: int
    end_ms: int
    samples: int
    """Readings taken (one per device per sample time)."""
    messages: int
    """Messages handed to the transport, duplicates included."""
    dropped: int
    """Samples never sent because their device was silent (sensor dropout)."""
    duplicates: int
    """Messages sent a second time."""
    out_of_order: int
    """Messages delivered after a newer message of the same device."""
    ground_truth: tuple[FaultRecord, ...]


def _key(record: FaultRecord) -> _RecordKey:
    return (record.kind, record.device_id, record.start_ms)


class _Delivery:
    """Turns samples into messages per device and applies the planned delivery faults."""

    def __init__(self, plant: Plant, transport: Transport, max_batch: int) -> None:
        self.plant = plant
        self.transport = transport
        self.max_batch = max_batch
        self.pending: dict[str, list[tuple[int, Mapping[str, Value]]]] = {}
        self.held: dict[str, tuple[bytes, FaultRecord, int]] = {}
        self.counts: dict[_RecordKey, dict[str, int]] = {}
        self.messages = 0
        self.dropped = 0
        self.duplicates = 0
        self.out_of_order = 0

    def _count(self, record: FaultRecord, **amounts: int) -> None:
        counts = self.counts.setdefault(_key(record), {})
        for name, amount in amounts.items():
            counts[name] = counts.get(name, 0) + amount

    def collect(self, device_id: str, t_ms: int, values: Mapping[str, Value]) -> None:
        fault = self.plant.delivery_fault(device_id, t_ms)
        if fault is not None and fault.kind == "sensor_dropout":
            self.dropped += 1
            self._count(fault, samples_dropped=1)
            return
        self.pending.setdefault(device_id, []).append((t_ms, values))

    async def flush(self) -> None:
        pending, self.pending = self.pending, {}
        results = await asyncio.gather(
            *(self._flush_device(d, s) for d, s in pending.items()), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _flush_device(
        self, device_id: str, samples: Sequence[tuple[int, Mapping[str, Value]]]
    ) -> None:
        for i in range(0, len(samples), self.max_batch):
            await self._deliver(device_id, samples[i : i + self.max_batch])

    async def _send(self, device_id: str, payload: bytes) -> None:
        await self.transport.send(device_id, payload)
        self.messages += 1

    async def _deliver(
        self, device_id: str, samples: Sequence[tuple[int, Mapping[str, Value]]]
    ) -> None:
        payload = encode(samples)
        fault = self.plant.delivery_fault(device_id, samples[0][0])
        kind = None if fault is None else fault.kind
        if fault is not None and kind == "out_of_order_messages" and device_id not in self.held:
            self.held[device_id] = (payload, fault, len(samples))
            return
        await self._send(device_id, payload)
        if fault is not None and kind == "duplicate_messages":
            await self._send(device_id, payload)
            self.duplicates += 1
            self._count(fault, messages=1, samples=len(samples))
        held = self.held.pop(device_id, None)
        if held is not None:
            late, record, count = held
            await self._send(device_id, late)
            self.out_of_order += 1
            self._count(record, messages=1, samples=count)

    async def finish(self) -> None:
        """Send what is still held back; with nothing after it, it is not out of order."""
        for device_id, (payload, _, _) in list(self.held.items()):
            await self._send(device_id, payload)
        self.held.clear()

    def truth(self, until_ms: int) -> tuple[FaultRecord, ...]:
        out = []
        for record in self.plant.ground_truth(until_ms):
            if record.kind in DELIVERY_KINDS:
                counts = self.counts.get(_key(record), {})
                names = (
                    ("samples_dropped",)
                    if record.kind == "sensor_dropout"
                    else ("messages", "samples")
                )
                details = {**record.details, **{n: counts.get(n, 0) for n in names}}
                record = dataclasses.replace(record, details=details)
            out.append(record)
        return tuple(out)


async def run(
    plant: Plant,
    transport: Transport,
    rate_hz: float,
    speedup: float,
    duration_s: float | None = None,
    clock: Clock = SYSTEM_CLOCK,
    *,
    sleep: Sleep = asyncio.sleep,
    stop: asyncio.Event | None = None,
    max_publish_hz: float = 4.0,
    max_batch: int = 200,
    progress_every_s: float = 30.0,
) -> RunReport:
    """Simulate for ``duration_s`` seconds of the clock (forever if None, or until ``stop``).

    Opens and closes ``transport``. The simulated span is ``duration_s * speedup`` seconds from
    the plant's current time; sample times are plant time + k / rate_hz.
    """
    if rate_hz <= 0 or speedup <= 0 or max_publish_hz <= 0 or max_batch < 1:
        raise ConfigError("rate, speedup, publish rate and batch size must be positive")
    if duration_s is not None and duration_s < 0:
        raise ConfigError("duration must not be negative")
    period_ms = 1000.0 / rate_hz
    sim0 = plant.now_ms
    end_ms = None if duration_s is None else sim0 + round(duration_s * 1000.0 * speedup)
    min_wait_ms = 1000.0 / max_publish_hz
    delivery = _Delivery(plant, transport, max_batch)
    samples = 0
    k = 0
    await transport.open(plant.devices)
    try:
        wall0 = clock.now_ms()
        next_progress = wall0 + progress_every_s * 1000.0
        while True:
            now = clock.now_ms()
            sim_now = sim0 + (now - wall0) * speedup
            behind = True
            for _ in range(max_batch):
                t_ms = sim0 + round(k * period_ms)
                if t_ms > sim_now or (end_ms is not None and t_ms >= end_ms):
                    behind = False
                    break
                for device_id, values in plant.step(t_ms).items():
                    delivery.collect(device_id, t_ms, values)
                    samples += 1
                k += 1
            await delivery.flush()
            next_t = sim0 + round(k * period_ms)
            if (end_ms is not None and next_t >= end_ms) or (stop is not None and stop.is_set()):
                break
            if now >= next_progress:
                next_progress = now + progress_every_s * 1000.0
                log.info(
                    "simulated up to %s UTC (%.1f h), %d messages sent",
                    datetime.fromtimestamp(plant.now_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S"),
                    (plant.now_ms - sim0) / 3_600_000,
                    delivery.messages,
                )
            if behind:
                await asyncio.sleep(0)
                continue
            due = wall0 + (next_t - sim0) / speedup
            wait_ms = max(due, now + min_wait_ms) - clock.now_ms()
            if wait_ms > 0:
                await _pause(wait_ms / 1000.0, sleep, stop)
        await delivery.finish()
    finally:
        await transport.close()
    reached = (
        sim0 + round(k * period_ms) if end_ms is None else min(end_ms, sim0 + round(k * period_ms))
    )
    return RunReport(
        start_ms=sim0,
        end_ms=reached,
        samples=samples,
        messages=delivery.messages,
        dropped=delivery.dropped,
        duplicates=delivery.duplicates,
        out_of_order=delivery.out_of_order,
        ground_truth=delivery.truth(reached),
    )


async def _pause(seconds: float, sleep: Sleep, stop: asyncio.Event | None) -> None:
    """Sleep, waking early (within a quarter second) when ``stop`` is set."""
    if stop is None:
        await sleep(seconds)
        return
    left = seconds
    while left > 0 and not stop.is_set():
        chunk = min(left, 0.25)
        await sleep(chunk)
        left -= chunk


async def run_simulation(
    plant: Plant,
    transport: Transport,
    rate_hz: float,
    speedup: float,
    duration_s: float | None = None,
    stop: asyncio.Event | None = None,
) -> RunReport:
    """Run on the system clock; the entry point for an in-process demo."""
    return await run(plant, transport, rate_hz, speedup, duration_s, SYSTEM_CLOCK, stop=stop)
