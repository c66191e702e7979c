"""Modbus RTU: real pymodbus serial devices on a pseudo-terminal line, and RTU frames over TCP.

Two pseudo-terminals joined back to back stand in for a USB-RS485 adapter and the line: the
devices' pymodbus serial server opens one end, the connector the other, and the bytes between
them are real RTU frames with CRCs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import sys
import time
import tty
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pymodbus import FramerType
from pymodbus.exceptions import NoSuchIdException
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from karkhana.core.clock import FakeClock
from karkhana.core.errors import ConfigError
from karkhana.edge import config
from karkhana.edge.agent import EdgeAgent
from karkhana.edge.clock import EdgeClock
from karkhana.edge.connectors.base import ConnectorError
from karkhana.edge.connectors.modbus import ModbusConnector, SerialLines
from karkhana.edge.modbus import load_maps
from karkhana.edge.modbus.devices import ModbusDevice, SerialLine, parse_devices
from tests.conftest import free_port

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX"),
]
NOW = int(time.time() * 1000)
SDM120 = load_maps()["eastron_sdm120"]
SDM630 = load_maps()["eastron_sdm630"]


def f32(value: float) -> list[int]:
    return list(struct.unpack(">HH", struct.pack(">f", value)))


class Unit:
    """One Modbus device's input registers."""

    def __init__(self, unit: int, *, silent: bool = False) -> None:
        self.unit = unit
        self.silent = silent
        self.input: dict[int, int] = {}
        self.requests = 0

    def set_float(self, address: int, value: float) -> None:
        self.input.update(zip((address, address + 1), f32(value), strict=True))

    async def action(
        self, fc: int, start: int, address: int, count: int, current: list[int], _: Any
    ) -> None:
        self.requests += 1
        if self.silent:  # powered off or miswired: the request goes unanswered
            raise NoSuchIdException(self.unit)
        for a in range(address, address + count):
            current[a - start] = self.input.get(a, 0)

    def sim(self) -> SimDevice:
        bits = [SimData(0, count=1, values=False, datatype=DataType.BITS)]
        regs = [SimData(0, count=0x200, values=0, datatype=DataType.REGISTERS)]
        return SimDevice(self.unit, simdata=(bits, bits, regs, regs), action=self.action)


class Line:
    """An RS485 line: two pseudo-terminals whose masters relay bytes to each other."""

    def __init__(self) -> None:
        self.fds: list[int] = []
        self.devices_end = self.edge_end = ""

    def open(self) -> None:
        loop = asyncio.get_running_loop()
        m1, s1 = os.openpty()
        m2, s2 = os.openpty()
        self.fds = [m1, s1, m2, s2]
        for fd in (s1, s2):
            tty.setraw(fd)
        self.devices_end, self.edge_end = os.ttyname(s1), os.ttyname(s2)

        def relay(src: int, dst: int) -> None:
            def pump() -> None:
                with contextlib.suppress(OSError):
                    os.write(dst, os.read(src, 4096))

            loop.add_reader(src, pump)

        relay(m1, m2)
        relay(m2, m1)

    def close(self) -> None:
        loop = asyncio.get_running_loop()
        for fd in self.fds[0::2]:
            loop.remove_reader(fd)
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)


@pytest.fixture
async def line() -> AsyncIterator[tuple[Line, dict[int, Unit]]]:
    wire = Line()
    wire.open()
    units = {3: Unit(3), 4: Unit(4), 9: Unit(9, silent=True)}
    server = ModbusSerialServer(
        [u.sim() for u in units.values()],
        framer=FramerType.RTU,
        port=wire.devices_end,
        baudrate=19200,
        ignore_missing_devices=True,  # a unit that does not answer stays silent
    )
    await server.serve_forever(background=True)
    try:
        yield wire, units
    finally:
        await server.shutdown()
        wire.close()


def rtu_device(port: str, unit: int, device_id: str, register_map: Any) -> ModbusDevice:
    serial = SerialLine(port, baudrate=19200)
    return ModbusDevice(
        device_id, port, register_map, unit=unit, interval_s=0.01, timeout_s=1.0,
        transport="rtu", serial=serial,
    )  # fmt: skip


async def test_two_meters_share_one_rs485_line(line: tuple[Line, dict[int, Unit]]) -> None:
    wire, units = line
    units[3].set_float(0x00, 229.5)  # SDM630 L1 voltage
    units[4].set_float(0x00, 231.25)  # SDM120 voltage
    units[4].set_float(0x0C, 1500.0)  # SDM120 active power, W
    clock = EdgeClock(1, FakeClock(NOW))
    lines = SerialLines()
    a = ModbusConnector(clock, rtu_device(wire.edge_end, 3, "meter-a", SDM630), lines=lines)
    b = ModbusConnector(clock, rtu_device(wire.edge_end, 4, "meter-b", SDM120), lines=lines)
    await a.open()
    await b.open()
    try:
        # both poll at once: the line serialises them, each answer goes to its asker
        for _ in range(3):
            got_a, got_b = await asyncio.gather(a.read(), b.read())
            va = {s.key: s.value for s in got_a}
            vb = {s.key: s.value for s in got_b}
            assert va["voltage_l1_v"] == 229.5
            assert vb["voltage_l1_v"] == 231.25
            assert vb["power_kw"] == 1.5
            assert {s.device_id for s in got_a} == {"meter-a"}
        assert a.address == f"{wire.edge_end} unit 3"
        assert units[3].requests == 3 * len(a.plan)
        assert units[4].requests == 3 * len(b.plan)
        # closing one device keeps the port open for the other
        await a.close()
        assert (await b.read())[0].device_id == "meter-b"
    finally:
        await a.close()
        await b.close()


async def test_a_silent_unit_times_out_without_closing_the_line(
    line: tuple[Line, dict[int, Unit]],
) -> None:
    wire, units = line
    units[3].set_float(0x00, 229.5)
    clock = EdgeClock(1, FakeClock(NOW))
    lines = SerialLines()
    good = ModbusConnector(clock, rtu_device(wire.edge_end, 3, "meter-a", SDM630), lines=lines)
    silent = ModbusConnector(clock, rtu_device(wire.edge_end, 9, "meter-z", SDM120), lines=lines)
    await good.open()
    await silent.open()
    try:
        with pytest.raises(ConnectorError, match="unit 9"):
            await silent.read()
        assert silent.stats["timeouts"] == 1
        await silent.close()
        values = {s.key: s.value for s in await good.read()}
        assert values["voltage_l1_v"] == 229.5
    finally:
        await good.close()
        await silent.close()


async def test_missing_serial_port_is_a_connector_error(tmp_path: Path) -> None:
    clock = EdgeClock(1, FakeClock(NOW))
    conn = ModbusConnector(clock, rtu_device(str(tmp_path / "ttyUSB9"), 1, "m", SDM120))
    with pytest.raises(ConnectorError, match="cannot connect"):
        await conn.open()
    await conn.close()


async def test_rtu_frames_over_tcp() -> None:
    port = free_port()
    unit = Unit(5)
    unit.set_float(0x00, 232.0)
    server = ModbusTcpServer(unit.sim(), address=("127.0.0.1", port), framer=FramerType.RTU)
    await server.serve_forever(background=True)
    clock = EdgeClock(1, FakeClock(NOW))
    device = ModbusDevice(
        "meter-t", "127.0.0.1", SDM120, port=port, unit=5, interval_s=0.01, timeout_s=1.0,
        transport="rtu-over-tcp",
    )  # fmt: skip
    conn = ModbusConnector(clock, device)
    try:
        await conn.open()
        values = {s.key: s.value for s in await conn.read()}
        assert values["voltage_l1_v"] == 232.0
    finally:
        await conn.close()
        await server.shutdown()


async def test_agent_polls_rtu_devices_from_the_config_and_reports_counters(
    line: tuple[Line, dict[int, Unit]], tmp_path: Path
) -> None:
    wire, units = line
    units[4].set_float(0x00, 230.0)
    cfg = tmp_path / "edge.toml"
    common = f'transport = "rtu"\nserial_port = "{wire.edge_end}"\nbaudrate = 19200\n'
    cfg.write_text(
        'server = "http://127.0.0.1:1"\ngateway_id = "gw-1"\ntoken = "t"\nfsync = "OFF"\n'
        f'data_dir = "{tmp_path / "data"}"\n'
        f'[[modbus]]\ndevice_id = "meter-b"\nunit = 4\nmap = "eastron_sdm120"\n{common}'
        "interval_s = 0.05\ntimeout_s = 0.5\n"
        f'[[modbus]]\ndevice_id = "meter-z"\nunit = 9\nmap = "eastron_sdm120"\n{common}'
        "interval_s = 0.05\ntimeout_s = 0.2\n"
    )
    agent = EdgeAgent(config.load(cfg, {}))
    pumps = [asyncio.create_task(agent._pump(c)) for c in agent.connectors]
    try:
        for _ in range(500):
            inputs = (await agent.status())["inputs"]
            if (
                inputs.get("modbus:meter-b", {}).get("points", 0) >= len(SDM120.registers)
                and inputs.get("modbus:meter-z", {}).get("errors", 0) >= 1
            ):
                break
            await asyncio.sleep(0.02)
        inputs = (await agent.status())["inputs"]
        good, silent = inputs["modbus:meter-b"], inputs["modbus:meter-z"]
        assert good["points"] >= len(SDM120.registers)
        assert good["requests"] >= 1 and good["timeouts"] == 0
        assert silent["errors"] >= 1 and silent["timeouts"] >= 1
        assert "unit 9" in silent["last_error"]
        entries = await agent.buffer.peek(1000)
        assert {e.sample.value for e in entries if e.sample.key == "voltage_l1_v"} == {230.0}
    finally:
        for pump in pumps:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
        await agent.stop()


def test_serial_settings_are_parsed_and_one_line_has_one_speed() -> None:
    (d,) = parse_devices(
        [{"device_id": "m", "transport": "rtu", "serial_port": "/dev/ttyUSB0", "parity": "e"}],
        "edge.toml",
    )
    assert d.serial == SerialLine("/dev/ttyUSB0", 9600, "E", 1, 8)
    assert d.address == "/dev/ttyUSB0 unit 1"
    tables = [
        {"device_id": "a", "transport": "rtu", "serial_port": "/dev/ttyUSB0", "unit": 1},
        {"device_id": "b", "transport": "rtu", "serial_port": "/dev/ttyUSB0", "unit": 2},
    ]
    assert len(parse_devices(tables, "edge.toml")) == 2
    tables[1]["baudrate"] = 19200
    with pytest.raises(ConfigError, match="set up differently"):
        parse_devices(tables, "edge.toml")
