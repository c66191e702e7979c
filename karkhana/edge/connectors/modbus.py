"""Modbus as an edge input: one device polled with pymodbus, decoded with its register map.

The link is Modbus TCP, RTU on a serial port of the edge box, or RTU frames over TCP
(:mod:`karkhana.edge.modbus.devices`). RTU devices on one RS485 line share its port through
:class:`SerialLines`: one pymodbus client per port, one request on the line at a time, and a
device that does not answer does not close the port for the others.

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

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.client.base import ModbusBaseClient
from pymodbus.exceptions import ModbusException

from karkhana.core.model import Sample
from karkhana.edge.clock import EdgeClock
from karkhana.edge.connectors.base import ConnectorError
from karkhana.edge.modbus.decode import CounterTracker, decode_map
from karkhana.edge.modbus.devices import ModbusDevice, SerialLine
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


class _Link:
    """One pymodbus client, used by one connector or by every device on a serial line."""

    def __init__(self, client: ModbusBaseClient) -> None:
        self.client = client
        self.turn = asyncio.Lock()
        self.users = 0


class SerialLines:
    """The serial ports of the edge box, each opened once and shared by its RTU devices."""

    def __init__(self) -> None:
        self._links: dict[str, _Link] = {}

    async def acquire(self, line: SerialLine, timeout_s: float, name: str) -> _Link:
        link = self._links.get(line.port)
        if link is None:
            client = AsyncModbusSerialClient(
                line.port,
                framer=FramerType.RTU,
                baudrate=line.baudrate,
                bytesize=line.bytesize,
                parity=line.parity,
                stopbits=line.stopbits,
                timeout=timeout_s,
                retries=0,
                reconnect_delay=0,
                name=name,
            )
            link = self._links[line.port] = _Link(client)
        async with link.turn:
            if not link.client.connected:
                await _connect(link.client, line.port)
        link.users += 1
        return link

    def release(self, line: SerialLine) -> None:
        link = self._links.get(line.port)
        if link is None:
            return
        link.users -= 1
        if link.users <= 0:
            del self._links[line.port]
            link.client.close()


async def _connect(client: ModbusBaseClient, where: str) -> None:
    try:
        connected = await client.connect()
    except (ModbusException, OSError) as exc:
        client.close()
        raise ConnectorError(f"{where}: cannot connect: {exc}") from None
    if not connected:
        client.close()
        raise ConnectorError(f"{where}: cannot connect")


class ModbusConnector:
    stamps_time = True

    def __init__(
        self,
        clock: EdgeClock,
        device: ModbusDevice,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        lines: SerialLines | None = None,
    ) -> None:
        self.name = f"modbus:{device.device_id}"
        self.clock = clock
        self.device = device
        self.sleep = sleep
        self.monotonic = monotonic
        self.plan = plan_reads(device.register_map)
        self.counters = CounterTracker()
        self.lines = lines if lines is not None else SerialLines()
        self.stats = {
            "requests": 0,
            "timeouts": 0,
            "exception_responses": 0,
            "missing_values": 0,
        }
        self._link: _Link | None = None
        self._last_poll: float | None = None

    @property
    def address(self) -> str:
        return self.device.address

    async def open(self) -> None:
        device = self.device
        if device.serial is not None:
            self._link = await self.lines.acquire(device.serial, device.timeout_s, self.name)
            return
        client = AsyncModbusTcpClient(
            device.host,
            port=device.port,
            framer=FramerType.RTU if device.transport == "rtu-over-tcp" else FramerType.SOCKET,
            timeout=device.timeout_s,
            retries=0,
            reconnect_delay=0,  # the agent reconnects, with its own back-off
            name=self.name,
        )
        await _connect(client, self.address)
        self._link = _Link(client)

    async def read(self) -> list[Sample]:
        link = self._link
        if link is None:
            raise ConnectorError(f"{self.address}: not connected")
        if self._last_poll is not None:
            wait = self._last_poll + self.device.interval_s - self.monotonic()
            await self.sleep(max(0.0, wait))
        self._last_poll = self.monotonic()
        words: dict[Function, dict[int, int]] = {"input": {}, "holding": {}}
        for function, start, count in self.plan:
            async with link.turn:
                registers = await self._request(link.client, function, start, count)
            words[function].update(zip(range(start, start + count), registers, strict=True))
        rmap = self.device.register_map
        values = decode_map(rmap, words["input"], function="input")
        values.update(decode_map(rmap, words["holding"], function="holding"))
        self.stats["missing_values"] += len(rmap.registers) - len(values)
        values = self.counters.apply(rmap, values)
        t = self.clock.now_ms()
        return [Sample(self.device.device_id, key, t, value) for key, value in values.items()]

    async def _request(
        self, client: ModbusBaseClient, function: Function, start: int, count: int
    ) -> list[int]:
        what = f"{self.address}: reading {count} {function} registers at {start:#06x}"
        call = client.read_input_registers if function == "input" else client.read_holding_registers
        self.stats["requests"] += 1
        try:
            response: Any = await call(start, count=count, device_id=self.device.unit)
        except (ModbusException, OSError, TimeoutError) as exc:
            text = str(exc).lower()
            if isinstance(exc, TimeoutError) or "timeout" in text or "no response" in text:
                self.stats["timeouts"] += 1
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
        link, self._link = self._link, None
        if link is None:
            return
        if self.device.serial is not None:
            self.lines.release(self.device.serial)
        else:
            link.client.close()
