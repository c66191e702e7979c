"""The factory simulator as an edge input: a plant stepped on the edge's clock."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from karkhana.core.model import Sample
from karkhana.edge.clock import EdgeClock
from karkhana.sim.plant import Plant
from karkhana.sim.profiles import build_plant


class SimConnector:
    stamps_time = True

    def __init__(
        self,
        clock: EdgeClock,
        profile: str = "textile",
        devices: int | None = None,
        *,
        interval_s: float = 1.0,
        seed: int = 42,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.name = f"sim:{profile}"
        self.clock = clock
        self.profile = profile
        self.devices = devices
        self.interval_s = interval_s
        self.seed = seed
        self.sleep = sleep
        self._plant: Plant | None = None

    async def open(self) -> None:
        self._plant = build_plant(self.profile, self.devices, self.seed, self.clock.now_ms())

    async def read(self) -> list[Sample]:
        assert self._plant is not None, "open() first"
        await self.sleep(self.interval_s)
        t = max(self.clock.now_ms(), self._plant.now_ms)
        return [
            Sample(device_id, key, t, value)
            for device_id, values in self._plant.step(t).items()
            for key, value in values.items()
        ]

    async def close(self) -> None:
        self._plant = None
