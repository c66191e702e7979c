"""Weaving and spinning machines of a textile mill."""

from __future__ import annotations

import math

from karkhana.sim.device import MINUTE_MS, Environment, Readings, lag, rng_for
from karkhana.sim.machine import BearingWear, Constraints, Machine, StopCause

KW_PER_AMP = math.sqrt(3) * 0.4 * 0.85
"""Three-phase 400 V motor at power factor 0.85."""


class Loom(Machine):
    """A power loom. Warp and weft breaks stop it until a weaver mends the yarn."""

    causes = (
        StopCause("warp_break", "stopped", every_min=45, shortest_min=1, longest_min=5),
        StopCause("weft_break", "stopped", every_min=30, shortest_min=0.5, longest_min=2),
        StopCause("waiting", "idle", every_min=480, shortest_min=10, longest_min=45),
        StopCause("breakdown", "fault", every_min=7200, shortest_min=45, longest_min=240),
    )
    air_m3_min = 0.25

    def __init__(
        self,
        device_id: str,
        name: str,
        seed: int,
        start_ms: int,
        constraints: Constraints,
        wear: BearingWear | None = None,
    ) -> None:
        super().__init__(device_id, name, "power_loom", seed, start_ms, constraints)
        spec = rng_for(seed, device_id, "spec")
        self.ppm = spec.uniform(420.0, 580.0)
        self.run_current_a = 5.2 + 2.0 * (self.ppm - 420.0) / 160.0
        self.base_vibration = spec.uniform(1.3, 2.3)
        self.wear = wear
        self.picks = 0.0
        self.bearing_temp_c = 32.0

    def produce(self, span_ms: int) -> None:
        self.picks += self.ppm * span_ms / MINUTE_MS

    def read(self, env: Environment) -> Readings:
        severity = 0.0 if self.wear is None else self.wear.severity(self.t_ms)
        running = self.state == "running"
        powered = self.powered(env)
        if running:
            current = self.jitter(self.run_current_a * (1.0 + 0.08 * severity), 0.12)
            vibration = self.jitter(self.base_vibration, 0.12) + 9.0 * severity * (
                1.0 + self.noise.gauss(0.0, 0.08)
            )
            ppm = self.jitter(self.ppm, 2.0)
        else:
            current = abs(self.jitter(0.35, 0.03)) if powered else 0.0
            vibration = abs(self.jitter(0.12, 0.03))
            ppm = 0.0
        heat = (16.0 + 28.0 * severity) * self.running_share
        self.bearing_temp_c = lag(
            self.bearing_temp_c, env.ambient_c + heat, self.step_ms, 25 * MINUTE_MS
        )
        self._load_kw = KW_PER_AMP * current
        return {
            "state": self.state,
            "picks_per_min": round(ppm, 1),
            "pick_count": int(self.picks),
            "warp_breaks": self.stops["warp_break"],
            "weft_breaks": self.stops["weft_break"],
            "motor_current_a": round(current, 2),
            "vibration_rms_mm_s": round(max(vibration, 0.0), 2),
            "bearing_temp_c": round(self.jitter(self.bearing_temp_c, 0.15), 1),
            "fault": self.state == "fault",
        }


class RingFrame(Machine):
    """A ring spinning frame; it stops for a doff each time the cops are full."""

    causes = (
        StopCause("doff", "stopped", every_min=150, shortest_min=5, longest_min=10, periodic=True),
        StopCause("roving_shortage", "idle", every_min=720, shortest_min=15, longest_min=40),
        StopCause("breakdown", "fault", every_min=10080, shortest_min=60, longest_min=240),
    )

    def __init__(
        self, device_id: str, name: str, seed: int, start_ms: int, constraints: Constraints
    ) -> None:
        super().__init__(device_id, name, "ring_spinning_frame", seed, start_ms, constraints)
        spec = rng_for(seed, device_id, "spec")
        self.spindle_rpm = spec.uniform(16000.0, 18500.0)
        self.twist_per_m = spec.uniform(880.0, 1000.0)
        self.rated_kw = spec.uniform(24.0, 30.0)

    def read(self, env: Environment) -> Readings:
        running = self.state == "running"
        doff = self.causes[0]
        fill = 1.0 - max(0.0, self.countdown[doff.name]) / (doff.every_min * MINUTE_MS)
        if running:
            rpm = self.jitter(self.spindle_rpm, 40.0)
            ends_down = max(0, round(self.noise.gauss(3.0 + 7.0 * max(fill, 0.0), 1.8)))
            power = self.jitter(self.rated_kw * rpm / 18500.0, 0.3)
        else:
            rpm = 0.0
            ends_down = 0
            power = abs(self.jitter(0.6, 0.05)) if self.powered(env) else 0.0
        self._load_kw = power
        return {
            "state": self.state,
            "spindle_speed_rpm": round(rpm),
            "delivery_m_min": round(rpm / self.twist_per_m, 2),
            "ends_down": ends_down,
            "doff_count": self.stops[doff.name],
            "power_kw": round(power, 2),
        }
