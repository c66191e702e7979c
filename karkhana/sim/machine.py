"""The discrete life of a production machine: running, random stops, and stops forced on it.

Stops are events in simulated time drawn from the machine's own random stream, so the sequence of
states does not depend on how often the machine is sampled; only measurement noise does.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from karkhana.sim.device import (
    MINUTE_MS,
    Environment,
    PowerSupply,
    Readings,
    SimDevice,
    rng_for,
)
from karkhana.sim.shifts import MachineState, ShiftCalendar


@dataclass(frozen=True, slots=True)
class StopCause:
    """A reason a running machine stops: how often (in running minutes) and for how long."""

    name: str
    state: MachineState
    every_min: float
    shortest_min: float
    longest_min: float
    periodic: bool = False
    """Periodic causes (doffs, tool changes) come after a nearly fixed running time."""


@dataclass(frozen=True, slots=True)
class BearingWear:
    """A degrading bearing: severity grows from 0 at onset to 1 at failure, then a repair."""

    onset_ms: int
    failure_ms: int
    repaired_ms: int

    def severity(self, t_ms: int) -> float:
        if t_ms < self.onset_ms or t_ms >= self.repaired_ms:
            return 0.0
        if t_ms >= self.failure_ms:
            return 1.0
        return ((t_ms - self.onset_ms) / (self.failure_ms - self.onset_ms)) ** 2

    def failed(self, t_ms: int) -> bool:
        return self.failure_ms <= t_ms < self.repaired_ms


class Constraints:
    """What stops a machine regardless of its own behaviour: a failure, no power, the shift plan."""

    def __init__(
        self,
        power: PowerSupply,
        *,
        essential: bool,
        calendar: ShiftCalendar | None = None,
        wear: BearingWear | None = None,
    ) -> None:
        self.power = power
        self.essential = essential
        self.calendar = calendar
        self.wear = wear

    def forced_at(self, t_ms: int) -> MachineState | None:
        if self.wear is not None and self.wear.failed(t_ms):
            return "fault"
        source = self.power.source_at(t_ms)
        if source == "none" or (source == "generator" and not self.essential):
            return "stopped"
        if self.calendar is not None:
            return self.calendar.forced_at(t_ms)
        return None

    def next_change(self, t_ms: int) -> int:
        edges = [self.power.next_change(t_ms)]
        if self.calendar is not None:
            edges.append(self.calendar.next_change(t_ms))
        if self.wear is not None:
            edges += [e for e in (self.wear.failure_ms, self.wear.repaired_ms) if e > t_ms]
        return min(edges)


class CycleCounter:
    """Counts completed cycles of a cyclic machine from its running time."""

    def __init__(self, seed: int, device_id: str, nominal_s: float, spread: float) -> None:
        self._rng = rng_for(seed, device_id, "cycles")
        self.nominal_s = nominal_s
        self.spread = spread
        self.count = 0
        self.elapsed_ms = 0.0
        self.length_ms = self._draw()
        self.last_s = nominal_s

    def _draw(self) -> float:
        return self.nominal_s * 1000.0 * (1.0 + abs(self._rng.gauss(0.0, self.spread)))

    def run(self, span_ms: int) -> None:
        self.elapsed_ms += span_ms
        while self.elapsed_ms >= self.length_ms:
            self.elapsed_ms -= self.length_ms
            self.count += 1
            self.last_s = self.length_ms / 1000.0
            self.length_ms = self._draw()

    @property
    def phase(self) -> float:
        """Position within the current cycle, 0 to 1."""
        return self.elapsed_ms / self.length_ms


class Machine(SimDevice):
    """A machine with a state (running, idle, stopped, fault) driven by stop causes and constraints.

    Subclasses list their ``causes``, count production in ``produce`` and turn the state into
    readings in ``read``.
    """

    causes: ClassVar[tuple[StopCause, ...]] = ()
    air_m3_min: ClassVar[float] = 0.0
    """Compressed air drawn while running."""

    def __init__(
        self,
        device_id: str,
        name: str,
        template: str,
        seed: int,
        start_ms: int,
        constraints: Constraints,
    ) -> None:
        super().__init__(device_id, name, template, seed, start_ms)
        self.events = rng_for(seed, device_id, "events")
        self.constraints = constraints
        self.own: MachineState = "running"
        self.stop_left_ms = 0
        self.countdown = {c.name: self._interval(c) for c in self.causes}
        self.stops = {c.name: 0 for c in self.causes}
        self.state: MachineState = constraints.forced_at(start_ms) or self.own
        self.running_ms_in_step = 0
        self.step_ms = 0
        self._load_kw = 0.0

    def _interval(self, cause: StopCause) -> int:
        """Running milliseconds until ``cause`` next stops the machine (whole ms, so that the
        countdown comes out the same however the running time is split into steps)."""
        mean = cause.every_min * MINUTE_MS
        if cause.periodic:
            drawn = mean * self.events.uniform(0.95, 1.05)
        else:
            drawn = self.events.expovariate(1.0 / mean)
        return max(1, math.ceil(drawn))

    def _duration(self, cause: StopCause) -> int:
        span = cause.longest_min - cause.shortest_min
        return int((cause.shortest_min + span * self.events.random() ** 1.5) * MINUTE_MS)

    def move_to(self, t_ms: int) -> None:
        """Advance the discrete state to ``t_ms``, event by event."""
        self.step_ms = max(0, t_ms - self.t_ms)
        self.running_ms_in_step = 0
        while self.t_ms < t_ms:
            forced = self.constraints.forced_at(self.t_ms)
            segment_end = min(t_ms, self.constraints.next_change(self.t_ms))
            if forced is not None:
                self._spend(segment_end, forced)
            elif self.own == "running":
                self._run_until(segment_end)
            else:
                end = min(segment_end, self.t_ms + self.stop_left_ms)
                self.stop_left_ms -= end - self.t_ms
                self._spend(end, self.own)
                if self.stop_left_ms <= 0:
                    self.own = "running"
        self.state = self.constraints.forced_at(t_ms) or self.own

    def _run_until(self, segment_end: int) -> None:
        if not self.causes:
            self._spend(segment_end, "running")
            return
        cause = min(self.causes, key=lambda c: self.countdown[c.name])
        end = min(segment_end, self.t_ms + self.countdown[cause.name])
        span = end - self.t_ms
        for name in self.countdown:
            self.countdown[name] -= span
        self._spend(end, "running")
        if self.countdown[cause.name] <= 0:
            self.countdown[cause.name] = self._interval(cause)
            self.own = cause.state
            self.stop_left_ms = max(1, self._duration(cause))
            self.stops[cause.name] += 1

    def _spend(self, end_ms: int, state: MachineState) -> None:
        span = end_ms - self.t_ms
        if state == "running":
            self.running_ms_in_step += span
            self.produce(span)
        self.t_ms = end_ms

    def produce(self, span_ms: int) -> None:
        """Count production for ``span_ms`` of running."""

    @property
    def running_share(self) -> float:
        """Share of the last step spent running (the state alone misses short stops)."""
        if self.step_ms == 0:
            return 1.0 if self.state == "running" else 0.0
        return self.running_ms_in_step / self.step_ms

    def powered(self, env: Environment) -> bool:
        return env.powered(self.constraints.essential)

    @property
    def switched_on(self) -> bool:
        """On and supplied: not cut off by the shift plan, the power supply or a failure."""
        return self.constraints.forced_at(self.t_ms) in (None, "idle")

    def advance(self, t_ms: int, env: Environment) -> Readings:
        self.move_to(t_ms)
        env.air_demand_m3_min += self.air_m3_min * self.running_share
        return self.read(env)

    def load_kw(self) -> float:
        return self._load_kw

    @abstractmethod
    def read(self, env: Environment) -> Readings:
        """Readings at the current time; also sets ``_load_kw``."""
