"""In-process publish/subscribe of committed samples.

The writer thread publishes after each commit; subscribers are asyncio consumers (live charts,
rules) with bounded queues, so a slow consumer loses its own oldest items and never slows the
writer or other consumers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from karkhana.core.model import Sample


class Subscription:
    def __init__(
        self,
        bus: Bus,
        loop: asyncio.AbstractEventLoop,
        maxsize: int,
        devices: frozenset[str] | None,
    ) -> None:
        self._bus = bus
        self._loop = loop
        self._queue: asyncio.Queue[list[Sample]] = asyncio.Queue(maxsize)
        self.devices = devices
        self.dropped = 0

    def _offer(self, samples: list[Sample]) -> None:
        if self._queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(samples)

    async def get(self) -> list[Sample]:
        return await self._queue.get()

    def close(self) -> None:
        self._bus._subscriptions.discard(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Bus:
    def __init__(self) -> None:
        self._subscriptions: set[Subscription] = set()

    def subscribe(self, devices: Sequence[str] | None = None, maxsize: int = 1000) -> Subscription:
        """Subscribe from a running event loop, optionally only to some devices."""
        sub = Subscription(
            self, asyncio.get_running_loop(), maxsize, frozenset(devices) if devices else None
        )
        self._subscriptions.add(sub)
        return sub

    def publish(self, samples: list[Sample]) -> None:
        """Thread-safe: hand committed samples to every subscriber's event loop."""
        for sub in list(self._subscriptions):
            wanted = (
                samples
                if sub.devices is None
                else [s for s in samples if s.device_id in sub.devices]
            )
            if wanted:
                with contextlib.suppress(RuntimeError):  # the subscriber's loop has closed
                    sub._loop.call_soon_threadsafe(sub._offer, wanted)
