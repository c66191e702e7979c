"""Cold storage and a filling line of a food processor."""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from karkhana.sim.device import (
    HOUR_MS,
    MINUTE_MS,
    SECOND_MS,
    Environment,
    Readings,
    SimDevice,
    lag,
    local_day,
    local_day_start,
    rng_for,
)
from karkhana.sim.machine import Constraints, Machine, StopCause


@dataclass(frozen=True, slots=True)
class DoorEpisode:
    """The door left open from ``start_ms`` to ``end_ms`` (an injected fault)."""

    start_ms: int
    end_ms: int


class ColdRoom(SimDevice):
    """A walk-in cold room: wall losses, door openings, and a thermostat with hysteresis.

    Loading and picking open the door briefly during working hours; those openings are normal
    behaviour. A door left open is a fault: the refrigeration unit cannot keep up and the air
    warms by several degrees.
    """

    SUBSTEP_MS = 10 * SECOND_MS
    WALL_TAU_MIN = 600.0
    DOOR_TAU_MIN = 90.0

    def __init__(
        self,
        device_id: str,
        name: str,
        seed: int,
        start_ms: int,
        *,
        setpoint_c: float,
        door_fault: DoorEpisode | None = None,
        essential: bool = True,
    ) -> None:
        super().__init__(device_id, name, "cold_room", seed, start_ms)
        self.seed = seed
        self.setpoint = setpoint_c
        self.freezer = setpoint_c < -5
        self.hysteresis = 1.5 if self.freezer else 1.0
        self.cooling_c_min = 0.28 if self.freezer else 0.15
        self.compressor_kw = 6.5 if self.freezer else 4.5
        self.door_fault = door_fault
        self.essential = essential
        self.temp_c = setpoint_c
        self.rh = 86.0
        self.compressor_on = False
        self._openings: dict[int, tuple[list[int], list[int]]] = {}
        self._load_kw = 0.0

    def _day_openings(self, day: int) -> tuple[list[int], list[int]]:
        cached = self._openings.get(day)
        if cached is None:
            rng = rng_for(self.seed, self.device_id, "door", day)
            base = local_day_start(day)
            starts = sorted(
                base + int(rng.uniform(7.0, 21.0) * HOUR_MS) for _ in range(rng.randint(15, 30))
            )
            ends = [s + int(rng.uniform(0.5, 3.0) * MINUTE_MS) for s in starts]
            cached = (starts, ends)
            self._openings[day] = cached
        return cached

    def door_open(self, t_ms: int) -> bool:
        if (
            self.door_fault is not None
            and self.door_fault.start_ms <= t_ms < self.door_fault.end_ms
        ):
            return True
        starts, ends = self._day_openings(local_day(t_ms))
        i = bisect.bisect_right(starts, t_ms) - 1
        return i >= 0 and t_ms < ends[i]

    def advance(self, t_ms: int, env: Environment) -> Readings:
        powered = env.powered(self.essential)
        ambient = env.ambient_c
        running_ms = 0
        t = self.t_ms
        while t < t_ms:
            step = min(self.SUBSTEP_MS, t_ms - t)
            door = self.door_open(t)
            if not powered:
                self.compressor_on = False
            elif self.temp_c > self.setpoint + self.hysteresis:
                self.compressor_on = True
            elif self.temp_c < self.setpoint - self.hysteresis:
                self.compressor_on = False
            minutes = step / MINUTE_MS
            gain = (ambient - self.temp_c) * (
                1.0 / self.WALL_TAU_MIN + (1.0 / self.DOOR_TAU_MIN if door else 0.0)
            )
            cooling = self.cooling_c_min if self.compressor_on else 0.0
            self.temp_c += (gain - cooling) * minutes
            rh_target = 94.0 if door else (84.0 if self.compressor_on else 89.0)
            self.rh = lag(self.rh, rh_target, step, 6 * MINUTE_MS)
            if self.compressor_on:
                running_ms += step
            t += step
        dt_ms = t_ms - self.t_ms
        self.t_ms = t_ms
        fans = 0.4 if powered else 0.0
        share = running_ms / dt_ms if dt_ms > 0 else float(self.compressor_on)
        self._load_kw = fans + share * self.compressor_kw
        power = fans + (self.jitter(self.compressor_kw, 0.1) if self.compressor_on else 0.0)
        return {
            "temperature_c": round(self.jitter(self.temp_c, 0.08), 2),
            "setpoint_c": self.setpoint,
            "door_open": self.door_open(t_ms),
            "compressor_running": self.compressor_on,
            "humidity_pct": round(min(100.0, self.jitter(self.rh, 0.5)), 1),
            "power_kw": round(max(power, 0.0), 2),
        }

    def load_kw(self) -> float:
        return self._load_kw


class FillingMachine(Machine):
    """A bottle filling and capping line with a checkweigher that rejects bad fills."""

    causes = (
        StopCause("jam", "stopped", every_min=35, shortest_min=1, longest_min=5),
        StopCause("changeover", "idle", every_min=300, shortest_min=15, longest_min=30),
        StopCause(
            "cleaning", "idle", every_min=480, shortest_min=30, longest_min=45, periodic=True
        ),
        StopCause("breakdown", "fault", every_min=5760, shortest_min=30, longest_min=120),
    )
    air_m3_min = 0.4

    def __init__(
        self, device_id: str, name: str, seed: int, start_ms: int, constraints: Constraints
    ) -> None:
        super().__init__(device_id, name, "filling_machine", seed, start_ms, constraints)
        spec = rng_for(seed, device_id, "spec")
        self.bpm = spec.uniform(100.0, 118.0)
        self.reject_share = spec.uniform(0.006, 0.012)
        self.fill_bias_ml = spec.uniform(0.5, 3.0)
        self.rated_kw = spec.uniform(5.5, 8.0)
        self.bottles = 0.0
        self.fill_ml = 500.0 + self.fill_bias_ml

    def produce(self, span_ms: int) -> None:
        self.bottles += self.bpm * span_ms / MINUTE_MS

    def read(self, env: Environment) -> Readings:
        if self.state == "running":
            bpm = self.jitter(self.bpm, 1.0)
            self.fill_ml = self.jitter(500.0 + self.fill_bias_ml, 1.2)
            power = self.jitter(self.rated_kw, 0.2)
        else:
            bpm = 0.0
            on = self.switched_on and self.powered(env)
            power = self.jitter(0.2 * self.rated_kw, 0.05) if on else 0.0
        self._load_kw = max(power, 0.0)
        return {
            "state": self.state,
            "bottles_per_min": round(max(bpm, 0.0), 1),
            "bottle_count": int(self.bottles),
            "reject_count": int(self.bottles * self.reject_share),
            "fill_volume_ml": round(self.fill_ml, 1),
            "power_kw": round(max(power, 0.0), 2),
        }
