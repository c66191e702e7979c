"""A simulated energy meter that speaks Modbus TCP, for trying the edge agent without hardware.

``karkhana simulate-meter --port 5020`` serves the simulated plant's main energy meter through
a shipped register map (an Eastron SDM630 by default): every read request steps the plant to
the present and answers with its registers, encoded as the real meter would (float32, big-endian
words). Point an edge at it with a ``[[modbus]]`` table (docs/edge.md).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from karkhana.core.errors import ConfigError
from karkhana.edge.modbus.decode import encode_register
from karkhana.edge.modbus.registermap import RegisterMap, load_maps
from karkhana.sim.plant import Plant
from karkhana.sim.profiles import PROFILES, build_plant

log = logging.getLogger(__name__)

SPACE = 0x400
"""Registers served per function (the shipped maps use addresses below 0x200)."""


def meter_of(plant: Plant) -> str:
    """The plant's main energy meter (the first device with the meter template)."""
    for device in plant.devices:
        if device.template == "energy_meter_3ph":
            return device.device_id
    raise ConfigError(f"the {plant.profile} plant has no energy meter")


class MeterRegisters:
    """Register words of one simulated meter, refreshed from the plant on demand."""

    def __init__(
        self,
        plant: Plant,
        device_id: str,
        register_map: RegisterMap,
        now_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.plant = plant
        self.device_id = device_id
        self.map = register_map
        self.now_ms = now_ms
        self.words: dict[str, dict[int, int]] = {"input": {}, "holding": {}}
        self.readings: dict[str, Any] = {}

    def refresh(self) -> None:
        now = self.now_ms()
        if now > self.plant.now_ms:
            readings = self.plant.step(now).get(self.device_id)
            if readings:
                self.readings = dict(readings)
        for reg in self.map.registers:
            value = self.readings.get(reg.key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                words = encode_register(reg, float(value))
                self.words[reg.function].update(zip(reg.addresses, words, strict=True))

    async def action(
        self, fc: int, start: int, address: int, count: int, current: list[int], _: Any
    ) -> None:
        """pymodbus's hook: fill the answer to a read of input (4) or holding (3) registers."""
        if fc not in (3, 4):
            return
        self.refresh()
        space = self.words["input" if fc == 4 else "holding"]
        for a in range(address, address + count):
            current[a - start] = space.get(a, 0)

    def device(self, unit: int) -> SimDevice:
        bits = [SimData(0, count=1, values=False, datatype=DataType.BITS)]
        regs = [SimData(0, count=SPACE, values=0, datatype=DataType.REGISTERS)]
        return SimDevice(unit, simdata=(bits, bits, regs, regs), action=self.action)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on")
    parser.add_argument("--port", type=int, default=5020, help="Modbus TCP port (default 5020)")
    parser.add_argument("--unit", type=int, default=1, help="Modbus unit id (default 1)")
    parser.add_argument(
        "--map", default="eastron_sdm630", help="shipped register map (default eastron_sdm630)"
    )
    parser.add_argument("--profile", choices=PROFILES, default="textile", help="plant to simulate")
    parser.add_argument("--seed", type=int, default=42)


def run_from_args(args: argparse.Namespace) -> int:
    maps = load_maps()
    if args.map not in maps:
        raise ConfigError(f"--map: no register map {args.map!r} (shipped: {', '.join(maps)})")
    if not 0 <= args.unit <= 247:
        raise ConfigError("--unit: must be between 0 and 247")
    now = int(time.time() * 1000)
    plant = build_plant(args.profile, None, args.seed, now - 1000)
    registers = MeterRegisters(plant, meter_of(plant), maps[args.map])

    async def serve() -> None:
        server = ModbusTcpServer(registers.device(args.unit), address=(args.host, args.port))
        try:
            await server.serve_forever(background=True)  # listening once this returns
        except RuntimeError:  # pymodbus's answer to an address in use
            raise ConfigError(
                f"cannot serve Modbus TCP on {args.host}:{args.port}: the port is taken"
            ) from None
        print(
            f"simulated {maps[args.map].name} ({registers.device_id} of the {args.profile} plant)"
            f" on modbus tcp {args.host}:{args.port} unit {args.unit}; Ctrl-C stops it",
            flush=True,
        )
        try:
            await asyncio.Event().wait()
        finally:
            await server.shutdown()  # type: ignore[no-untyped-call]

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        raise ConfigError(f"cannot serve on {args.host}:{args.port}: {exc.strerror}") from None
    return 0
