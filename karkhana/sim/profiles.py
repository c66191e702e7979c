"""Ready-made plants: a textile mill, an auto-parts plant and a food processor.

Device ids carry a site prefix (``tx-``, ``au-``, ``fd-``) so that several profiles can feed one
server. Faults are drawn from the seed; load shedding is part of the environment and is always
on, while ``faults=False`` gives a plant without injected faults.
"""

from __future__ import annotations

from dataclasses import dataclass
from random import Random

from karkhana.core.errors import ConfigError
from karkhana.sim.auto import CncMachine, InjectionMouldingMachine, MechanicalPress
from karkhana.sim.device import DAY_MS, HOUR_MS, MINUTE_MS, SimDevice, Weather, rng_for
from karkhana.sim.faults import DeliveryPlan, FaultRecord
from karkhana.sim.food import ColdRoom, DoorEpisode, FillingMachine
from karkhana.sim.machine import BearingWear, Constraints, Machine
from karkhana.sim.plant import Plant
from karkhana.sim.power import PowerSchedule, PowerSourceDevice
from karkhana.sim.shifts import ShiftCalendar
from karkhana.sim.textile import Loom, RingFrame
from karkhana.sim.utility import AirCompressor, AirLeak, EnergyMeter, HumiditySensor

PROFILES = ("textile", "auto", "food")
DEFAULT_DEVICES = {"textile": 12, "auto": 9, "food": 4}
LOOMS_PER_SHED = 12
MAX_DEVICES = 999


@dataclass(slots=True)
class _Build:
    profile: str
    seed: int
    start_ms: int
    faults_on: bool
    rng: Random
    power: PowerSchedule
    devices: list[SimDevice]
    faults: list[FaultRecord]

    def add(self, device: SimDevice) -> SimDevice:
        self.devices.append(device)
        return device

    def bearing(self, device_id: str, component: str, signals: str) -> BearingWear | None:
        if not self.faults_on:
            return None
        onset = self.start_ms + int(self.rng.uniform(1.5, 2.5) * DAY_MS)
        failure = onset + int(self.rng.uniform(3.5, 4.5) * DAY_MS)
        repair_h = round(self.rng.uniform(4.0, 10.0), 1)
        repaired = failure + int(repair_h * HOUR_MS)
        self.faults.append(
            FaultRecord(
                "bearing_degradation",
                device_id,
                onset,
                end_ms=repaired,
                failure_ms=failure,
                details={"component": component, "signals": signals, "repair_hours": repair_h},
            )
        )
        return BearingWear(onset, failure, repaired)

    def leak(self, device_id: str, smallest: float, largest: float) -> AirLeak | None:
        if not self.faults_on:
            return None
        start = self.start_ms + int(self.rng.uniform(0.5, 2.0) * DAY_MS)
        size = round(self.rng.uniform(smallest, largest), 2)
        self.faults.append(FaultRecord("air_leak", device_id, start, details={"leak_m3_min": size}))
        return AirLeak(start, size)


def build_plant(
    profile: str, devices: int | None, seed: int, start_ms: int, *, faults: bool = True
) -> Plant:
    """A plant of ``devices`` main machines (looms, press/CNC/moulding machines, cold rooms and
    filling lines) with its utilities, power supply and seeded faults."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown simulator profile {profile!r} (expected {', '.join(PROFILES)})")
    count = DEFAULT_DEVICES[profile] if devices is None else devices
    if not 1 <= count <= MAX_DEVICES:
        raise ConfigError(f"devices must be between 1 and {MAX_DEVICES}, got {count}")
    build = _Build(
        profile=profile,
        seed=seed,
        start_ms=start_ms,
        faults_on=faults,
        rng=rng_for(seed, profile, "faults"),
        power=PowerSchedule(seed),
        devices=[],
        faults=[],
    )
    power_id = {"textile": "tx-power", "auto": "au-power", "food": "fd-power"}[profile]
    build.add(PowerSourceDevice(power_id, "Changeover panel", seed, start_ms, build.power))
    {"textile": _textile, "auto": _auto, "food": _food}[profile](build, count)
    return Plant(
        profile=profile,
        seed=seed,
        start_ms=start_ms,
        devices=build.devices,
        power=build.power,
        power_device_id=power_id,
        weather=Weather(seed),
        faults=build.faults,
        delivery=DeliveryPlan(seed, start_ms, [d.device_id for d in build.devices], enabled=faults),
    )


def _number(i: int, count: int) -> str:
    return str(i + 1).zfill(max(2, len(str(count))))


def _essential(build: _Build, count: int) -> int:
    """How many main machines the generator can carry."""
    share = rng_for(build.seed, build.profile, "generator").uniform(0.4, 0.7)
    return max(1, round(count * share))


def _textile(build: _Build, count: int) -> None:
    seed, start = build.seed, build.start_ms
    carried = _essential(build, count)
    worn = build.rng.randrange(count)
    looms: list[Loom] = []
    for i in range(count):
        number = _number(i, count)
        device_id = f"tx-loom-{number}"
        shed = i // LOOMS_PER_SHED + 1
        wear = None
        if i == worn:
            wear = build.bearing(
                device_id, "main shaft bearing", "vibration_rms_mm_s bearing_temp_c"
            )
        constraints = Constraints(build.power, essential=i < carried, wear=wear)
        looms.append(
            Loom(device_id, f"Loom {number} (shed {shed})", seed, start, constraints, wear)
        )
    rings = [
        RingFrame(
            f"tx-ring-{n:02d}",
            f"Ring frame {n:02d}",
            seed,
            start,
            Constraints(build.power, essential=False),
        )
        for n in (1, 2)
    ]
    leak = build.leak("tx-compressor-1", 0.6, 1.2)
    compressor = AirCompressor("tx-compressor-1", "Compressor 1", seed, start, leak=leak)
    sheds = [looms[i : i + LOOMS_PER_SHED] for i in range(0, count, LOOMS_PER_SHED)]
    shed_base_kw = 10.0
    main_members: list[SimDevice] = [*looms, *rings, compressor]
    build.add(
        EnergyMeter(
            "tx-meter-main",
            "Main incomer",
            seed,
            start,
            members=main_members,
            base_kw=shed_base_kw * len(sheds) + 15.0,
            rated_kw=5.0 * count + 60.0 + 37.0 + 15.0 + shed_base_kw * len(sheds),
        )
    )
    for n, shed_looms in enumerate(sheds, start=1):
        build.add(
            EnergyMeter(
                f"tx-meter-shed{n}",
                f"Weaving shed {n} feeder",
                seed,
                start,
                members=shed_looms,
                base_kw=shed_base_kw,
                rated_kw=5.0 * len(shed_looms) + shed_base_kw,
            )
        )
    for n in range(1, len(sheds) + 1):
        build.add(HumiditySensor(f"tx-humidity-{n}", f"Weaving shed {n} climate", seed, start))
    build.add(compressor)
    for ring in rings:
        build.add(ring)
    for loom in looms:
        build.add(loom)


def _auto(build: _Build, count: int) -> None:
    seed, start = build.seed, build.start_ms
    carried = _essential(build, count)
    calendar = ShiftCalendar()
    kinds = [("press", "cnc", "imm")[i % 3] for i in range(count)]
    cncs = [i for i, kind in enumerate(kinds) if kind == "cnc"]
    worn = build.rng.choice(cncs) if cncs else None
    numbers = {"press": 0, "cnc": 0, "imm": 0}
    machines: list[Machine] = []
    for i, kind in enumerate(kinds):
        numbers[kind] += 1
        number = _number(numbers[kind] - 1, count)
        device_id = f"au-{kind}-{number}"
        wear = None
        if i == worn:
            wear = build.bearing(device_id, "spindle bearing", "vibration_rms_mm_s spindle_temp_c")
        constraints = Constraints(build.power, essential=i < carried, calendar=calendar, wear=wear)
        machine: Machine
        if kind == "press":
            machine = MechanicalPress(device_id, f"Press {number}", seed, start, constraints)
        elif kind == "cnc":
            machine = CncMachine(device_id, f"CNC {number}", seed, start, constraints, wear)
        else:
            machine = InjectionMouldingMachine(
                device_id, f"Moulding machine {number}", seed, start, constraints
            )
        machines.append(machine)
    leak = build.leak("au-compressor-1", 0.4, 0.8)
    compressor = AirCompressor(
        "au-compressor-1",
        "Compressor 1",
        seed,
        start,
        capacity_m3_min=3.6,
        rated_kw=22.0,
        receiver_m3=2.0,
        leak=leak,
    )
    build.add(
        EnergyMeter(
            "au-meter-main",
            "Main incomer",
            seed,
            start,
            members=[*machines, compressor],
            base_kw=18.0,
            rated_kw=15.0 * count + 40.0,
        )
    )
    build.add(compressor)
    for machine in machines:
        build.add(machine)


def _food(build: _Build, count: int) -> None:
    seed, start = build.seed, build.start_ms
    rooms = max(1, (count + 1) // 2)
    lines = max(1, count - rooms)
    carried = _essential(build, lines)
    door_room = build.rng.randrange(rooms)
    cold_rooms: list[ColdRoom] = []
    for i in range(rooms):
        number = _number(i, rooms)
        device_id = f"fd-coldroom-{number}"
        freezer = i % 3 == 2
        setpoint = -18.0 if freezer else round(2.0 + (i % 3), 1)
        door = None
        if build.faults_on and i == door_room:
            begin = start + int(build.rng.uniform(3.0, 20.0) * HOUR_MS)
            minutes = round(build.rng.uniform(40.0, 90.0))
            door = DoorEpisode(begin, begin + minutes * MINUTE_MS)
            build.faults.append(
                FaultRecord(
                    "door_left_open",
                    device_id,
                    door.start_ms,
                    door.end_ms,
                    details={"minutes": minutes, "setpoint_c": setpoint},
                )
            )
        kind = "Freezer" if freezer else "Chiller"
        cold_rooms.append(
            ColdRoom(
                device_id,
                f"{kind} room {number}",
                seed,
                start,
                setpoint_c=setpoint,
                door_fault=door,
            )
        )
    calendar = ShiftCalendar(start_hour=6.0, end_hour=22.0, breaks=((13.0, 13.5),))
    fillers = [
        FillingMachine(
            f"fd-filler-{_number(i, lines)}",
            f"Filling line {_number(i, lines)}",
            seed,
            start,
            Constraints(build.power, essential=i < carried, calendar=calendar),
        )
        for i in range(lines)
    ]
    compressor = AirCompressor(
        "fd-compressor-1",
        "Compressor 1",
        seed,
        start,
        capacity_m3_min=2.2,
        rated_kw=15.0,
        receiver_m3=1.5,
    )
    build.add(
        EnergyMeter(
            "fd-meter-main",
            "Main incomer",
            seed,
            start,
            members=[*cold_rooms, *fillers, compressor],
            base_kw=12.0,
            rated_kw=7.0 * rooms + 9.0 * lines + 30.0,
        )
    )
    build.add(compressor)
    for room in cold_rooms:
        build.add(room)
    for filler in fillers:
        build.add(filler)
