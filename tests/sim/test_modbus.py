"""The simulated Modbus meter, read by the edge's own Modbus connector through the SDM630 map."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from pymodbus.server import ModbusTcpServer

from karkhana.core.clock import FakeClock
from karkhana.core.errors import ConfigError
from karkhana.edge.clock import EdgeClock
from karkhana.edge.connectors.modbus import ModbusConnector
from karkhana.edge.modbus import load_maps
from karkhana.edge.modbus.devices import ModbusDevice
from karkhana.sim import modbus
from karkhana.sim.profiles import build_plant
from tests.conftest import free_port

pytestmark = pytest.mark.anyio


async def test_the_edge_reads_the_simulated_meter() -> None:
    start = int(time.time() * 1000) - 60_000
    now = [start + 30_000]
    plant = build_plant("textile", 4, 7, start)
    meter_id = modbus.meter_of(plant)
    sdm630 = load_maps()["eastron_sdm630"]
    registers = modbus.MeterRegisters(plant, meter_id, sdm630, lambda: now[0])
    port = free_port()
    server = ModbusTcpServer(registers.device(3), address=("127.0.0.1", port))
    await server.serve_forever(background=True)
    conn = ModbusConnector(
        EdgeClock(1, FakeClock(now[0])),
        ModbusDevice("meter-sim", "127.0.0.1", sdm630, port=port, unit=3, interval_s=0.01),
    )
    try:
        await conn.open()
        first = {s.key: s.value for s in await conn.read()}
        assert set(first) == {r.key for r in sdm630.registers}
        expected = registers.readings
        for key in ("voltage_l1_v", "frequency_hz", "power_kw", "power_factor"):
            assert first[key] == pytest.approx(expected[key], rel=1e-5), key
        assert 200 < first["voltage_l1_v"] < 250 and 49 < first["frequency_hz"] < 51
        now[0] += 60_000  # a minute later the energy counter has moved on
        second = {s.key: s.value for s in await conn.read()}
        assert second["energy_kwh"] > first["energy_kwh"]
    finally:
        await conn.close()
        await server.shutdown()


def test_a_plant_without_a_meter_and_bad_arguments_are_clear() -> None:
    plant = build_plant("textile", 1, 1, 0)
    object.__setattr__(
        plant, "devices", tuple(d for d in plant.devices if d.template != "energy_meter_3ph")
    )
    with pytest.raises(ConfigError, match="no energy meter"):
        modbus.meter_of(plant)


def test_simulate_meter_command_serves_until_stopped() -> None:
    from pymodbus.client import ModbusTcpClient

    from karkhana.edge.modbus.decode import decode_register

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "karkhana", "simulate-meter", "--port", str(port), "--unit", "2"],
        stdout=subprocess.PIPE,
        text=True,
    )
    client = ModbusTcpClient("127.0.0.1", port=port)
    try:
        assert proc.stdout is not None
        assert f"modbus tcp 127.0.0.1:{port} unit 2" in proc.stdout.readline()
        assert client.connect()
        reg = load_maps()["eastron_sdm630"].register("frequency_hz")
        started = int(time.time() * 1000)
        r = client.read_input_registers(reg.address, count=2, device_id=2)
        hz = decode_register(reg, r.registers)
        ended = int(time.time() * 1000)
        # the plant the command simulates (textile, seed 42) may be in a load-shedding block
        # with no generator: then the meter reads no voltage and no frequency
        power = build_plant("textile", None, 42, started).power
        sources = {power.source_at(started), power.source_at(ended)}
        assert hz is not None
        if sources == {"none"}:
            assert hz == 0.0
        elif "none" not in sources:
            assert 49.0 < hz < 51.0
        else:  # the supply changed while it was read
            assert hz == 0.0 or 49.0 < hz < 51.0
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)


def test_a_taken_port_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    from karkhana.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["simulate-meter", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert "the port is taken" in err and err.strip().count("\n") == 0
