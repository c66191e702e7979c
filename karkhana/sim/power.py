"""Load shedding and the standby generator: the power supply every machine depends on.

Pakistani distribution companies cut industrial feeders in scheduled blocks of one or two hours,
several times a day. The changeover panel starts the generator after a short delay; when the
generator does not start (no diesel, fault, or the owner saves fuel) the plant has no power.
"""

from __future__ import annotations

from dataclasses import dataclass

from karkhana.sim.device import (
    HOUR_MS,
    SECOND_MS,
    Environment,
    Readings,
    SimDevice,
    Source,
    local_day,
    local_day_start,
    rng_for,
)
from karkhana.sim.faults import FaultRecord


@dataclass(frozen=True, slots=True)
class Outage:
    """One load-shedding block; ``generator_ms`` is when the generator took the load, if it did."""

    start_ms: int
    end_ms: int
    generator_ms: int | None

    def source_at(self, t_ms: int) -> Source:
        if self.generator_ms is not None and t_ms >= self.generator_ms:
            return "generator"
        return "none"


class PowerSchedule:
    """A deterministic load-shedding timetable, drawn per local day from the seed."""

    def __init__(
        self,
        seed: int,
        *,
        blocks_per_day: tuple[int, int] = (2, 4),
        generator_reliability: float = 0.65,
        enabled: bool = True,
    ) -> None:
        self._seed = seed
        self._blocks = blocks_per_day
        self._reliability = generator_reliability
        self._enabled = enabled
        self._days: dict[int, tuple[Outage, ...]] = {}

    def outages(self, day: int) -> tuple[Outage, ...]:
        cached = self._days.get(day)
        if cached is not None:
            return cached
        outages: list[Outage] = []
        if self._enabled:
            rng = rng_for(self._seed, "load-shedding", day)
            wanted = rng.randint(*self._blocks)
            taken: list[tuple[int, int]] = []
            for hour in rng.sample(range(24), 24):
                if len(taken) == wanted:
                    break
                hours = rng.choice((1, 1, 2))
                if hour + hours > 24:
                    continue
                if any(hour < end + 1 and start < hour + hours + 1 for start, end in taken):
                    continue
                taken.append((hour, hour + hours))
            day_start = local_day_start(day)
            for start_h, end_h in sorted(taken):
                start = day_start + start_h * HOUR_MS
                generator = None
                if rng.random() < self._reliability:
                    generator = start + rng.randint(20, 90) * SECOND_MS
                outages.append(Outage(start, day_start + end_h * HOUR_MS, generator))
        result = tuple(outages)
        self._days[day] = result
        return result

    def outage_at(self, t_ms: int) -> Outage | None:
        for outage in self.outages(local_day(t_ms)):
            if outage.start_ms <= t_ms < outage.end_ms:
                return outage
        return None

    def source_at(self, t_ms: int) -> Source:
        outage = self.outage_at(t_ms)
        return "grid" if outage is None else outage.source_at(t_ms)

    def next_change(self, t_ms: int) -> int:
        day = local_day(t_ms)
        for outage in self.outages(day):
            for edge in (outage.start_ms, outage.generator_ms, outage.end_ms):
                if edge is not None and edge > t_ms:
                    return edge
        return local_day_start(day + 1)

    def records(self, device_id: str, start_ms: int, until_ms: int) -> list[FaultRecord]:
        out: list[FaultRecord] = []
        for day in range(local_day(start_ms), local_day(until_ms) + 1):
            for o in self.outages(day):
                if o.end_ms > start_ms and o.start_ms < until_ms:
                    out.append(
                        FaultRecord(
                            "load_shedding",
                            device_id,
                            o.start_ms,
                            o.end_ms,
                            details={
                                "generator": o.generator_ms is not None,
                                "generator_ms": o.generator_ms,
                            },
                        )
                    )
        return out


class PowerSourceDevice(SimDevice):
    """The changeover panel: which source feeds the plant, and the generator's diesel tank."""

    stage = 0
    BURN_PCT_PER_H = 7.0
    REFILL_BELOW_PCT = 45.0

    def __init__(
        self, device_id: str, name: str, seed: int, start_ms: int, schedule: PowerSchedule
    ) -> None:
        super().__init__(device_id, name, "power_source", seed, start_ms)
        self.schedule = schedule
        self.fuel_pct = 60.0 + 40.0 * rng_for(seed, device_id, "fuel").random()

    def advance(self, t_ms: int, env: Environment) -> Readings:
        t = self.t_ms
        while t < t_ms:
            end = min(t_ms, self.schedule.next_change(t))
            if self.schedule.source_at(t) == "generator":
                self.fuel_pct -= self.BURN_PCT_PER_H * (end - t) / HOUR_MS
            t = end
        self.t_ms = t_ms
        source = self.schedule.source_at(t_ms)
        if source == "grid" and self.fuel_pct < self.REFILL_BELOW_PCT:
            self.fuel_pct = 100.0
        self.fuel_pct = max(self.fuel_pct, 0.0)
        return {
            "source": source,
            "grid_ok": source == "grid",
            "generator_running": source == "generator",
            "generator_fuel_pct": round(self.fuel_pct, 1),
        }
