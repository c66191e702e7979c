"""Machines of an auto-parts plant: presses, CNC machining centres, injection moulding."""

from __future__ import annotations

from karkhana.sim.device import MINUTE_MS, Environment, Readings, lag, rng_for
from karkhana.sim.machine import BearingWear, Constraints, CycleCounter, Machine, StopCause


class MechanicalPress(Machine):
    """A flywheel press stamping one part per stroke in continuous mode."""

    causes = (
        StopCause("misfeed", "stopped", every_min=50, shortest_min=1, longest_min=4),
        StopCause("coil_change", "idle", every_min=120, shortest_min=5, longest_min=12),
        StopCause("die_change", "idle", every_min=360, shortest_min=20, longest_min=45),
        StopCause("breakdown", "fault", every_min=5760, shortest_min=60, longest_min=180),
    )
    air_m3_min = 0.3

    def __init__(
        self, device_id: str, name: str, seed: int, start_ms: int, constraints: Constraints
    ) -> None:
        super().__init__(device_id, name, "mechanical_press", seed, start_ms, constraints)
        spec = rng_for(seed, device_id, "spec")
        self.cycles = CycleCounter(seed, device_id, 60.0 / spec.uniform(24.0, 30.0), 0.02)
        self.rated_t = spec.choice((60.0, 80.0, 100.0))
        self.die_load = spec.uniform(0.55, 0.72)
        self.motor_kw = self.rated_t / 10.0
        self.tonnage = 0.0

    def produce(self, span_ms: int) -> None:
        self.cycles.run(span_ms)

    def read(self, env: Environment) -> Readings:
        running = self.state == "running"
        if running:
            spm = self.jitter(60.0 / self.cycles.last_s, 0.2)
            self.tonnage = self.jitter(self.rated_t * self.die_load, 0.8)
            power = self.jitter(self.motor_kw, 0.3)
        else:
            spm = 0.0
            flywheel = self.switched_on and self.powered(env)
            power = self.jitter(0.4 * self.motor_kw, 0.1) if flywheel else 0.0
        self._load_kw = max(power, 0.0)
        return {
            "state": self.state,
            "stroke_count": self.cycles.count,
            "strokes_per_min": round(spm, 1),
            "tonnage_t": round(self.tonnage, 1),
            "cycle_time_s": round(self.cycles.last_s, 2),
        }


class CncMachine(Machine):
    """A CNC machining centre: load a part, cut it, repeat; spindle load grows as the tool wears."""

    causes = (
        StopCause(
            "tool_change", "stopped", every_min=240, shortest_min=3, longest_min=8, periodic=True
        ),
        StopCause("waiting_material", "idle", every_min=150, shortest_min=5, longest_min=25),
        StopCause("alarm", "fault", every_min=4320, shortest_min=20, longest_min=120),
    )
    air_m3_min = 0.1
    LOADING_SHARE = 0.15

    def __init__(
        self,
        device_id: str,
        name: str,
        seed: int,
        start_ms: int,
        constraints: Constraints,
        wear: BearingWear | None = None,
    ) -> None:
        super().__init__(device_id, name, "cnc_machine", seed, start_ms, constraints)
        spec = rng_for(seed, device_id, "spec")
        self.cycles = CycleCounter(seed, device_id, spec.uniform(95.0, 140.0), 0.03)
        self.spindle_rpm = spec.uniform(3000.0, 6500.0)
        self.base_load_pct = spec.uniform(32.0, 48.0)
        self.base_vibration = spec.uniform(0.7, 1.3)
        self.wear = wear
        self.spindle_temp_c = 30.0

    def produce(self, span_ms: int) -> None:
        self.cycles.run(span_ms)

    def read(self, env: Environment) -> Readings:
        severity = 0.0 if self.wear is None else self.wear.severity(self.t_ms)
        cutting = self.state == "running" and self.cycles.phase >= self.LOADING_SHARE
        tool = self.causes[0]
        tool_wear = 1.0 - max(0.0, self.countdown[tool.name]) / (tool.every_min * MINUTE_MS)
        if cutting:
            rpm = self.jitter(self.spindle_rpm, 15.0)
            load = self.jitter(self.base_load_pct * (1.0 + 0.35 * max(tool_wear, 0.0)), 1.5)
            vibration = self.jitter(self.base_vibration, 0.08) + 7.0 * severity * (
                1.0 + self.noise.gauss(0.0, 0.08)
            )
            power = 2.0 + 15.0 * load / 100.0
        else:
            rpm = load = 0.0
            vibration = abs(self.jitter(0.1, 0.03))
            on = self.switched_on and self.powered(env)
            power = (2.0 if self.state == "running" else 1.4) if on else 0.0
        heat = (14.0 + 26.0 * severity) * self.running_share
        self.spindle_temp_c = lag(
            self.spindle_temp_c, env.ambient_c + heat, self.step_ms, 20 * MINUTE_MS
        )
        power = max(0.0, self.jitter(power, 0.1)) if power > 0 else 0.0
        self._load_kw = power
        return {
            "state": self.state,
            "spindle_speed_rpm": round(rpm),
            "spindle_load_pct": round(max(load, 0.0), 1),
            "part_count": self.cycles.count,
            "cycle_time_s": round(self.cycles.last_s, 1),
            "power_kw": round(power, 2),
            "vibration_rms_mm_s": round(max(vibration, 0.0), 2),
            "spindle_temp_c": round(self.jitter(self.spindle_temp_c, 0.15), 1),
        }


class InjectionMouldingMachine(Machine):
    """A hydraulic moulding machine: close, inject, hold, cool and eject, one shot per cycle."""

    causes = (
        StopCause("short_shot", "stopped", every_min=180, shortest_min=2, longest_min=8),
        StopCause("mould_change", "idle", every_min=600, shortest_min=45, longest_min=90),
        StopCause("heater_fault", "fault", every_min=7200, shortest_min=60, longest_min=150),
    )
    air_m3_min = 0.15
    PHASES = ((0.10, 45.0), (0.25, 135.0), (0.55, 70.0), (1.01, 12.0))
    """(end of phase as a share of the cycle, hydraulic pressure in bar)."""

    def __init__(
        self, device_id: str, name: str, seed: int, start_ms: int, constraints: Constraints
    ) -> None:
        super().__init__(device_id, name, "injection_moulding_machine", seed, start_ms, constraints)
        spec = rng_for(seed, device_id, "spec")
        self.cycles = CycleCounter(seed, device_id, spec.uniform(28.0, 34.0), 0.02)
        self.barrel_setpoint = spec.uniform(222.0, 236.0)
        self.mould_setpoint = spec.uniform(45.0, 60.0)
        self.rated_kw = spec.uniform(22.0, 30.0)
        self.barrel_c = 30.0
        self.mould_c = 30.0
        self._started = False

    def produce(self, span_ms: int) -> None:
        self.cycles.run(span_ms)

    def read(self, env: Environment) -> Readings:
        on = self.switched_on and self.powered(env)
        running = self.state == "running"
        if not self._started:
            self._started = True
            if on:
                self.barrel_c, self.mould_c = self.barrel_setpoint, self.mould_setpoint
        barrel_target = self.barrel_setpoint if on else env.ambient_c
        self.barrel_c = lag(self.barrel_c, barrel_target, self.step_ms, 25 * MINUTE_MS)
        mould_target = self.mould_setpoint if running else env.ambient_c + 8.0
        self.mould_c = lag(self.mould_c, mould_target, self.step_ms, 30 * MINUTE_MS)
        if running:
            phase = self.cycles.phase
            pressure = next(bar for end, bar in self.PHASES if phase < end)
            pressure = self.jitter(pressure, 2.0)
            power = self.jitter(self.rated_kw * (0.45 + 0.5 * pressure / 135.0), 0.6)
        else:
            pressure = 0.0
            power = self.jitter(0.3 * self.rated_kw, 0.3) if on else 0.0
        self._load_kw = max(power, 0.0)
        return {
            "state": self.state,
            "cycle_time_s": round(self.cycles.last_s, 2),
            "shot_count": self.cycles.count,
            "barrel_temp_c": round(self.jitter(self.barrel_c, 0.3), 1),
            "mould_temp_c": round(self.jitter(self.mould_c, 0.2), 1),
            "hydraulic_pressure_bar": round(max(pressure, 0.0), 1),
            "power_kw": round(max(power, 0.0), 2),
        }
