"""The Modbus TCP connector against a real pymodbus server on a free port, into a real Buffer."""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from karkhana.core.clock import FakeClock
from karkhana.core.errors import ConfigError
from karkhana.edge import config
from karkhana.edge.agent import EdgeAgent
from karkhana.edge.buffer import Buffer
from karkhana.edge.clock import EdgeClock
from karkhana.edge.connectors.base import ConnectorError
from karkhana.edge.connectors.modbus import ModbusConnector, plan_reads
from karkhana.edge.modbus import load_map, load_maps
from karkhana.edge.modbus.devices import ModbusDevice, parse_devices
from tests.conftest import free_port

pytestmark = pytest.mark.anyio
NOW = int(time.time() * 1000)
UNIT = 3
SDM630 = load_maps()["eastron_sdm630"]

COUNTER_MAP = """
id = "counter_meter"
name = "Counter meter"

[[registers]]
key = "pieces"
address = 10
type = "uint16"
function = "input"
counter = true

[[registers]]
key = "speed_rpm"
address = 20
type = "int16"
function = "holding"
scale = 0.1
"""


def f32(value: float) -> list[int]:
    return list(struct.unpack(">HH", struct.pack(">f", value)))


class Meter:
    """A Modbus TCP device: input and holding registers 0..0x1FF, served from ``regs``."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.regs: dict[str, dict[int, int]] = {"input": {}, "holding": {}}
        self.requests: list[tuple[int, int, int]] = []
        self.server: ModbusTcpServer | None = None

    def set_float(self, address: int, value: float) -> None:
        self.regs["input"].update(zip((address, address + 1), f32(value), strict=True))

    async def action(
        self, fc: int, start: int, address: int, count: int, current: list[int], _: Any
    ) -> None:
        self.requests.append((fc, address, count))
        space = self.regs["input" if fc == 4 else "holding"]
        for a in range(address, address + count):
            current[a - start] = space.get(a, 0)

    async def start(self) -> None:
        def block(kind: DataType) -> list[SimData]:
            if kind == DataType.BITS:
                return [SimData(0, count=1, values=False, datatype=kind)]
            return [SimData(0, count=0x200, values=0, datatype=kind)]

        blocks = (
            block(DataType.BITS),
            block(DataType.BITS),
            block(DataType.REGISTERS),
            block(DataType.REGISTERS),
        )
        device = SimDevice(UNIT, simdata=blocks, action=self.action)
        self.server = ModbusTcpServer(device, address=("127.0.0.1", self.port))
        await self.server.serve_forever(background=True)

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.shutdown()
            self.server = None


@pytest.fixture
async def meter() -> AsyncIterator[Meter]:
    m = Meter(free_port())
    await m.start()
    yield m
    await m.stop()


@pytest.fixture
def buffer(tmp_path: Path) -> Any:
    b = Buffer.open(tmp_path / "buffer.db", synchronous="OFF")
    yield b
    b.close()


def device(port: int, register_map: Any = SDM630, **kw: Any) -> ModbusDevice:
    return ModbusDevice("meter-1", "127.0.0.1", register_map, port=port, unit=UNIT, **kw)


def connector(port: int, register_map: Any = SDM630, **kw: Any) -> ModbusConnector:
    clock = EdgeClock(1, FakeClock(NOW))
    return ModbusConnector(clock, device(port, register_map, interval_s=0.01, timeout_s=1.0, **kw))


async def buffered(buffer: Buffer) -> dict[str, float]:
    return {e.sample.key: e.sample.value for e in await buffer.peek(1000)}


async def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    for _ in range(int(timeout_s / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("timed out")


def test_plan_groups_contiguous_registers_in_requests_of_at_most_125_words(
    tmp_path: Path,
) -> None:
    assert plan_reads(SDM630) == [
        ("input", 0x00, 18),
        ("input", 0x34, 2),
        ("input", 0x3E, 2),
        ("input", 0x46, 4),
        ("input", 0x156, 2),
    ]
    regs = "".join(
        f'[[registers]]\nkey = "v{i}"\naddress = {2 * i}\ntype = "float32"\n' for i in range(100)
    )
    path = tmp_path / "big.toml"
    path.write_text(f'id = "big"\nname = "Big"\n{regs}')
    # 200 contiguous words: 62 float32 (124 words) in the first request, never half a value
    assert plan_reads(load_map(path)) == [("holding", 0, 124), ("holding", 124, 76)]


async def test_reads_an_sdm630_into_the_buffer(meter: Meter, buffer: Buffer) -> None:
    meter.set_float(0x00, 230.5)
    meter.set_float(0x06, 12.25)
    meter.set_float(0x34, 2500.0)  # W, scaled to kW
    meter.set_float(0x46, 50.0)
    meter.set_float(0x156, 1234.5)
    conn = connector(meter.port)
    await conn.open()
    try:
        samples = await conn.read()
    finally:
        await conn.close()
    assert len(meter.requests) == len(conn.plan) == 5
    assert {s.device_id for s in samples} == {"meter-1"}
    assert {s.ts for s in samples} == {NOW}
    await buffer.put(samples, conn.clock.epoch)
    values = await buffered(buffer)
    assert values["voltage_l1_v"] == 230.5
    assert values["current_l1_a"] == 12.25
    assert values["power_kw"] == 2.5
    assert values["frequency_hz"] == 50.0
    assert values["energy_kwh"] == 1234.5
    assert values["voltage_l2_v"] == 0.0
    assert len(values) == len(SDM630.registers)


async def test_counter_wrap_becomes_a_monotonic_total(
    meter: Meter, buffer: Buffer, tmp_path: Path
) -> None:
    path = tmp_path / "counter_meter.toml"
    path.write_text(COUNTER_MAP)
    conn = connector(meter.port, load_map(path))
    meter.regs["holding"][20] = (-125) & 0xFFFF
    totals = []
    await conn.open()
    try:
        for raw in (65530, 65535, 4, 10):
            meter.regs["input"][10] = raw
            samples = await conn.read()
            await buffer.put(samples, conn.clock.epoch)
            by_key = {s.key: s.value for s in samples}
            totals.append(by_key["pieces"])
            assert by_key["speed_rpm"] == -12.5
    finally:
        await conn.close()
    assert totals == [65530, 65535, 65540, 65546]
    assert conn.counters.rollovers == 1
    assert sorted(meter.requests) == sorted([(4, 10, 1), (3, 20, 1)] * 4)


async def test_reconnects_after_the_device_comes_back(meter: Meter) -> None:
    meter.set_float(0x00, 230.5)
    conn = connector(meter.port)
    await conn.open()
    assert (await conn.read())[0].value == 230.5
    await meter.stop()
    with pytest.raises(ConnectorError):
        await conn.read()
    await conn.close()
    with pytest.raises(ConnectorError, match="cannot connect"):
        await conn.open()
    meter.set_float(0x00, 231.0)
    await meter.start()
    await conn.open()
    try:
        assert (await conn.read())[0].value == 231.0
    finally:
        await conn.close()


async def test_exception_response_is_a_connector_error(meter: Meter, tmp_path: Path) -> None:
    path = tmp_path / "far.toml"
    path.write_text(
        'id = "far"\nname = "Far"\n[[registers]]\nkey = "x"\naddress = 1000\ntype = "uint16"\n'
    )
    conn = connector(meter.port, load_map(path))
    await conn.open()
    try:
        with pytest.raises(ConnectorError, match="exception 2 \\(illegal data address\\)"):
            await conn.read()
    finally:
        await conn.close()
    assert conn.stats["exception_responses"] == 1


async def test_agent_counts_an_unreachable_device_and_reconnects(tmp_path: Path) -> None:
    port = free_port()
    cfg = tmp_path / "edge.toml"
    cfg.write_text(
        'server = "http://127.0.0.1:1"\ngateway_id = "gw-1"\ntoken = "t"\nfsync = "OFF"\n'
        f'data_dir = "{tmp_path / "data"}"\n'
        f'[[modbus]]\ndevice_id = "meter-1"\nhost = "127.0.0.1"\nport = {port}\nunit = {UNIT}\n'
        "interval_s = 0.05\ntimeout_s = 1.0\n"
    )
    agent = EdgeAgent(config.load(cfg, {}))
    (conn,) = agent.connectors
    assert conn.name == "modbus:meter-1"
    pump = asyncio.create_task(agent._pump(conn))
    meter = Meter(port)
    try:
        await until(lambda: agent.connector_stats.get(conn.name, {}).get("errors", 0) > 0)
        assert not pump.done()
        meter.set_float(0x00, 230.5)
        await meter.start()
        # the agent backs off (2 s after the first failure), reopens and polls again
        await until(lambda: agent.connector_stats[conn.name]["points"] >= 2 * len(SDM630.registers))
        assert agent.connector_stats[conn.name]["errors"] >= 1
        entries = await agent.buffer.peek(1000)
        volts = [e.sample.value for e in entries if e.sample.key == "voltage_l1_v"]
        assert volts and set(volts) == {230.5}
    finally:
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump
        await meter.stop()
        await agent.stop()


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('host = "h"', "modbus\\[0\\].device_id: missing"),
        ('device_id = "m"', "modbus\\[0\\].host: missing"),
        ('device_id = "m"\nhost = "h"\nport = 70000', "port: must be between 1 and 65535"),
        ('device_id = "m"\nhost = "h"\nunit = "1"', "unit: expected an integer"),
        ('device_id = "m"\nhost = "h"\ninterval_s = 0', "interval_s: must be between"),
        ('device_id = "m"\nhost = "h"\nmap = "nope"', "no register map 'nope'"),
        ('device_id = "m"\nhost = "h"\ntransport = "ascii"', "'ascii' is not supported"),
        ('device_id = "m"\nhost = "h"\ntransport = "rtu"', "host: not used by transport 'rtu'"),
        ('device_id = "m"\ntransport = "rtu"', "serial_port: missing"),
        ('device_id = "m"\nhost = "h"\nbaudrate = 9600', "baudrate: only used by transport"),
        (
            'device_id = "m"\ntransport = "rtu"\nserial_port = "/dev/x"\nparity = "X"',
            "parity: expected N, E or O",
        ),
        (
            'device_id = "m"\ntransport = "rtu"\nserial_port = "/dev/x"\nbaudrate = 10',
            "baudrate: must be between 1200 and 921600",
        ),
        ('device_id = "m"\nhost = "h"\nslave = 1', "slave: unknown field"),
    ],
)
def test_bad_modbus_tables_are_config_errors(tmp_path: Path, table: str, message: str) -> None:
    path = tmp_path / "edge.toml"
    path.write_text(f"[[modbus]]\n{table}\n")
    with pytest.raises(ConfigError, match=message):
        config.load(path, {})


def test_modbus_tables_defaults_and_duplicates() -> None:
    (d,) = parse_devices([{"device_id": "m", "host": "gw"}], "edge.toml")
    assert (d.port, d.unit, d.map_id, d.interval_s, d.transport) == (
        502,
        1,
        "eastron_sdm630",
        5.0,
        "tcp",
    )
    with pytest.raises(ConfigError, match="polled twice"):
        parse_devices([{"device_id": "m", "host": "a"}, {"device_id": "m", "host": "b"}], "f")
    with pytest.raises(ConfigError, match="array of tables"):
        parse_devices({"device_id": "m"}, "f")
