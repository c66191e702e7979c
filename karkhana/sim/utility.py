"""Plant utilities: compressed air, energy metering and room climate."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from karkhana.sim.device import (
    HOUR_MS,
    MINUTE_MS,
    Environment,
    Readings,
    SimDevice,
    lag,
    local_hour,
    rng_for,
)


@dataclass(frozen=True, slots=True)
class AirLeak:
    start_ms: int
    m3_min: float


class AirCompressor(SimDevice):
    """A screw compressor with load/unload control, simulated exactly between samples.

    Loaded, pressure rises at (capacity - demand) / receiver; unloaded it falls at demand /
    receiver. A leak adds demand, so the compressor is loaded longer and recovers pressure slower.
    """

    stage = 2
    BASE_DEMAND_M3_MIN = 0.3

    def __init__(
        self,
        device_id: str,
        name: str,
        seed: int,
        start_ms: int,
        *,
        capacity_m3_min: float = 6.0,
        rated_kw: float = 37.0,
        receiver_m3: float = 3.0,
        low_bar: float = 6.5,
        high_bar: float = 7.5,
        leak: AirLeak | None = None,
        essential: bool = True,
    ) -> None:
        super().__init__(device_id, name, "air_compressor", seed, start_ms)
        self.capacity = capacity_m3_min
        self.rated_kw = rated_kw
        self.receiver = receiver_m3
        self.low = low_bar
        self.high = high_bar
        self.leak = leak
        self.essential = essential
        self.pressure = (low_bar + high_bar) / 2
        self.loaded = True
        self.run_hours = rng_for(seed, device_id, "spec").uniform(8000.0, 30000.0)
        self.discharge_c = 40.0
        self._load_kw = 0.0

    def demand(self, env: Environment, t_ms: int) -> float:
        leak = self.leak.m3_min if self.leak is not None and t_ms >= self.leak.start_ms else 0.0
        return self.BASE_DEMAND_M3_MIN + env.air_demand_m3_min + leak

    def advance(self, t_ms: int, env: Environment) -> Readings:
        dt_ms = max(0, t_ms - self.t_ms)
        self.t_ms = t_ms
        demand = self.demand(env, t_ms)
        running = env.powered(self.essential)
        if running:
            loaded_ms = self._cycle(dt_ms / MINUTE_MS, demand) * MINUTE_MS
            self.run_hours += dt_ms / HOUR_MS
        else:
            loaded_ms = 0.0
            self.loaded = False
            self.pressure = max(0.0, self.pressure - demand / self.receiver * dt_ms / MINUTE_MS)
        unloaded_kw = 0.32 * self.rated_kw
        if running and dt_ms > 0:
            share = loaded_ms / dt_ms
            self._load_kw = share * self.rated_kw + (1.0 - share) * unloaded_kw
        else:
            self._load_kw = 0.0
        if not running:
            power, flow, target = 0.0, 0.0, env.ambient_c
        elif self.loaded:
            power = self.jitter(self.rated_kw * 0.98, 0.4)
            flow = self.jitter(self.capacity, 0.05)
            target = env.ambient_c + 55.0
        else:
            power = self.jitter(unloaded_kw, 0.3)
            flow = 0.0
            target = env.ambient_c + 42.0
        self.discharge_c = lag(self.discharge_c, target, dt_ms, 4 * MINUTE_MS)
        return {
            "running": running,
            "loaded": running and self.loaded,
            "pressure_bar": round(max(0.0, self.jitter(self.pressure, 0.01)), 3),
            "power_kw": round(power, 2),
            "flow_m3_min": round(max(flow, 0.0), 2),
            "run_hours": round(self.run_hours, 3),
            "discharge_temp_c": round(self.jitter(self.discharge_c, 0.2), 1),
        }

    def _cycle(self, minutes: float, demand: float) -> float:
        """Run load/unload control for ``minutes``; returns the minutes spent loaded."""
        loaded_min = 0.0
        left = minutes
        for _ in range(100_000):
            if left <= 0:
                break
            if self.loaded:
                rate = (self.capacity - demand) / self.receiver
                if rate > 0 and self.pressure + rate * left >= self.high:
                    spent = max(0.0, (self.high - self.pressure) / rate)
                    self.pressure = self.high
                    self.loaded = False
                else:
                    spent = left
                    floor = min(self.pressure, 3.0)
                    self.pressure = max(floor, self.pressure + rate * left)
                loaded_min += spent
            else:
                rate = demand / self.receiver
                if rate > 0 and self.pressure - rate * left <= self.low:
                    spent = max(0.0, (self.pressure - self.low) / rate)
                    self.pressure = self.low
                    self.loaded = True
                else:
                    spent = left
                    self.pressure -= rate * left
            left -= spent
        return loaded_min

    def load_kw(self) -> float:
        return self._load_kw


class EnergyMeter(SimDevice):
    """A three-phase meter summing the loads behind it plus a fixed base load (lights, fans)."""

    stage = 3
    GENERATOR_BASE_SHARE = 0.5
    """Share of the base load (humidification, lights) kept on when running on the generator."""

    def __init__(
        self,
        device_id: str,
        name: str,
        seed: int,
        start_ms: int,
        *,
        members: Sequence[SimDevice],
        base_kw: float,
        rated_kw: float,
    ) -> None:
        super().__init__(device_id, name, "energy_meter_3ph", seed, start_ms)
        spec = rng_for(seed, device_id, "spec")
        self.members = tuple(members)
        self.base_kw = base_kw
        self.rated_kw = rated_kw
        self.energy_kwh = spec.uniform(10_000.0, 900_000.0)
        self.imbalance = tuple(spec.uniform(0.96, 1.04) for _ in range(3))
        self.phase_offset_v = tuple(spec.uniform(-2.0, 2.0) for _ in range(3))

    def advance(self, t_ms: int, env: Environment) -> Readings:
        dt_ms = max(0, t_ms - self.t_ms)
        self.t_ms = t_ms
        if env.source == "none":
            power, volts, freq = 0.0, [0.0, 0.0, 0.0], 0.0
        else:
            base = self.base_kw * (1.0 if env.source == "grid" else self.GENERATOR_BASE_SHARE)
            base *= 1.0 + self.noise.gauss(0.0, 0.02)
            power = max(0.0, sum(m.load_kw() for m in self.members) + base)
            if env.source == "grid":
                hour = local_hour(t_ms)
                sag = 9.0 if 18.0 <= hour < 23.0 else 0.0
                volts = [self.jitter(229.0 - sag + off, 1.2) for off in self.phase_offset_v]
                freq = self.jitter(50.0, 0.04)
            else:
                volts = [self.jitter(226.0 + off, 3.0) for off in self.phase_offset_v]
                freq = self.jitter(50.0, 0.18)
        self.energy_kwh += power * dt_ms / HOUR_MS
        if power > 0:
            pf = min(
                0.99, 0.8 + 0.13 * min(1.0, power / self.rated_kw) + self.noise.gauss(0, 0.004)
            )
            currents = [
                power * 1000.0 / (3.0 * v * pf) * k
                for v, k in zip(volts, self.imbalance, strict=True)
            ]
        else:
            pf = 0.0
            currents = [0.0, 0.0, 0.0]
        phase_kw = [v * a * pf / 1000.0 for v, a in zip(volts, currents, strict=True)]
        return {
            "power_kw": round(power, 2),
            "power_l1_kw": round(phase_kw[0], 2),
            "power_l2_kw": round(phase_kw[1], 2),
            "power_l3_kw": round(phase_kw[2], 2),
            "energy_kwh": round(self.energy_kwh, 3),
            # nothing is exported (no solar behind this meter): imported energy is all of it
            "energy_import_kwh": round(self.energy_kwh, 3),
            "power_factor": round(pf, 3),
            "voltage_l1_v": round(volts[0], 1),
            "voltage_l2_v": round(volts[1], 1),
            "voltage_l3_v": round(volts[2], 1),
            "current_l1_a": round(currents[0], 2),
            "current_l2_a": round(currents[1], 2),
            "current_l3_a": round(currents[2], 2),
            "frequency_hz": round(freq, 3),
        }


class HumiditySensor(SimDevice):
    """Room climate of a humidified shed: the humidification plant holds RH near its target
    and cools the air by evaporation; without power RH sinks towards the dry outdoor air."""

    def __init__(
        self, device_id: str, name: str, seed: int, start_ms: int, *, target_pct: float = 70.0
    ) -> None:
        super().__init__(device_id, name, "humidity_sensor", seed, start_ms)
        self.target = target_pct
        self.rh = target_pct
        self.temp_c = 30.0
        self._started = False

    def advance(self, t_ms: int, env: Environment) -> Readings:
        dt_ms = max(0, t_ms - self.t_ms)
        self.t_ms = t_ms
        humidified = env.source != "none"
        if humidified:
            temp_target = env.ambient_c - 2.5
            rh_target = self.target
        else:
            temp_target = env.ambient_c + 1.5
            rh_target = 45.0 + 0.3 * (35.0 - env.ambient_c)
        if not self._started:
            self.temp_c, self.rh, self._started = temp_target, rh_target, True
        self.temp_c = lag(self.temp_c, temp_target, dt_ms, 30 * MINUTE_MS)
        self.rh = lag(self.rh, rh_target, dt_ms, 20 * MINUTE_MS)
        wobble = 1.5 * math.sin(2 * math.pi * t_ms / (47 * MINUTE_MS))
        return {
            "humidity_pct": round(min(100.0, self.jitter(self.rh + wobble, 0.4)), 1),
            "temperature_c": round(self.jitter(self.temp_c, 0.1), 1),
        }
