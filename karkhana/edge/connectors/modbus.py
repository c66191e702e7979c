"""Modbus TCP as an edge input: one device polled with pymodbus, decoded with its register map.

Every ``interval_s`` the connector reads the map's registers in as few requests as possible
(contiguous addresses of one function, at most 125 words a request), decodes them with
:mod:`karkhana.edge.modbus.decode`, turns counter registers into totals that never go down, and
stamps the samples with the edge's clock. A failed connect, a timeout, a lost connection or a
Modbus exception response is raised once as :class:`ConnectorError`; the agent counts it,
closes, backs off and opens again. Counter totals are kept across reconnects.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from karkhana.core.model import Sample
from karkhana.edge.clock import EdgeClock
from karkhana.edge.connectors.base import ConnectorError
from karkhana.edge.modbus.decode import CounterTracker, decode_map
from karkhana.edge.modbus.devices import ModbusDevice
from karkhana.edge.modbus.registermap import Function, RegisterMap

MAX_WORDS = 125
"""Most registers one Modbus read request may ask for."""

EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "device failure",
    5: "acknowledge",
    6: "device busy",
    10: "gateway path unavailable",
    11: "gateway target did not respond",
}


def plan_reads(
    register_map: RegisterMap, max_words: int = MAX_WORDS
) -> list[tuple[Function, int, int]]:
    """``(function, first address, count)`` requests covering every register of the map.

    Contiguous addresses of one function share a request (up to ``max_words``); gaps are not
    bridged, since a device may answer "illegal data address" for registers it does not have. A
    register is never split across two requests.
    """
    plan: list[tuple[Function, int, int]] = []
    functions: tuple[Function, ...] = ("input", "holding")
    for function in functions:
        regs = sorted(
            (r for r in register_map.registers if r.function == function), key=lambda r: r.address
        )
        start = end = -1
        for reg in regs:
            if start >= 0 and reg.address == end and reg.address + reg.words - start <= max_words:
                end = reg.address + reg.words
                continue
            if start >= 0:
                plan.append((function, start, end - start))
            start, end = reg.address, reg.address + reg.words
        if start >= 0:
            plan.append((function, start, end - start))
    return plan


class ModbusConnector:
    stamps_time = True

    def __init__(
        self,
        clock: EdgeClock,
        device: ModbusDevice,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = f"modbus:{device.device_id}"
        self.clock = clock
        self.device = device
        self.sleep = sleep
        self.monotonic = monotonic
        self.plan = plan_reads(device.register_map)
        self.counters = CounterTracker()
        self.stats = {"requests": 0, "exception_responses": 0, "missing_values": 0}
        self._client: AsyncModbusTcpClient | None = None
        self._last_poll: float | None = None

    @property
    def address(self) -> str:
        return f"{self.device.host}:{self.device.port} unit {self.device.unit}"

    async def open(self) -> None:
        client = AsyncModbusTcpClient(
            self.device.host,
            port=self.device.port,
            timeout=self.device.timeout_s,
            retries=0,
            reconnect_delay=0,  # the agent reconnects, with its own back-off
            name=self.name,
        )
        try:
            connected = await client.connect()
        except (ModbusException, OSError) as exc:
            client.close()
            raise ConnectorError(f"{self.address}: cannot connect: {exc}") from None
        if not connected:
            client.close()
            raise ConnectorError(f"{self.address}: cannot connect")
        self._client = client

    async def read(self) -> list[Sample]:
        client = self._client
        if client is None:
            raise ConnectorError(f"{self.address}: not connected")
        if self._last_poll is not None:
            wait = self._last_poll + self.device.interval_s - self.monotonic()
            await self.sleep(max(0.0, wait))
        self._last_poll = self.monotonic()
        words: dict[Function, dict[int, int]] = {"input": {}, "holding": {}}
        for function, start, count in self.plan:
            registers = await self._request(client, function, start, count)
            words[function].update(zip(range(start, start + count), registers, strict=True))
        rmap = self.device.register_map
        values = decode_map(rmap, words["input"], function="input")
        values.update(decode_map(rmap, words["holding"], function="holding"))
        self.stats["missing_values"] += len(rmap.registers) - len(values)
        values = self.counters.apply(rmap, values)
        t = self.clock.now_ms()
        return [Sample(self.device.device_id, key, t, value) for key, value in values.items()]

    async def _request(
        self, client: AsyncModbusTcpClient, function: Function, start: int, count: int
    ) -> list[int]:
        what = f"{self.address}: reading {count} {function} registers at {start:#06x}"
        call = client.read_input_registers if function == "input" else client.read_holding_registers
        self.stats["requests"] += 1
        try:
            response: Any = await call(start, count=count, device_id=self.device.unit)
        except (ModbusException, OSError, TimeoutError) as exc:
            raise ConnectorError(f"{what}: {exc or type(exc).__name__}") from None
        if response.isError():
            code = getattr(response, "exception_code", None)
            self.stats["exception_responses"] += 1
            raise ConnectorError(
                f"{what}: the device answered exception {code}"
                f" ({EXCEPTION_NAMES.get(code or 0, 'unknown')})"
            )
        registers = list(response.registers)
        if len(registers) < count:
            raise ConnectorError(f"{what}: got {len(registers)} registers")
        return registers[:count]

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()
