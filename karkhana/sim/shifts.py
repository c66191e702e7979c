"""Working hours of a plant: outside them machines are switched off, in breaks they stand idle."""

from __future__ import annotations

from dataclasses import dataclass

from karkhana.sim.device import HOUR_MS, local_day, local_day_start

MachineState = str
"""One of running, idle, stopped, fault (the values of the templates' ``state`` signal)."""


@dataclass(frozen=True, slots=True)
class ShiftCalendar:
    """Daily hours in local time; ``days_off`` uses Monday = 0 (Sunday = 6)."""

    start_hour: float = 8.0
    end_hour: float = 24.0
    breaks: tuple[tuple[float, float], ...] = ((13.0, 13.75),)
    days_off: frozenset[int] = frozenset({6})

    def forced_at(self, t_ms: int) -> MachineState | None:
        day = local_day(t_ms)
        if weekday(day) in self.days_off:
            return "stopped"
        hour = (t_ms - local_day_start(day)) / HOUR_MS
        if not self.start_hour <= hour < self.end_hour:
            return "stopped"
        if any(start <= hour < end for start, end in self.breaks):
            return "idle"
        return None

    def next_change(self, t_ms: int) -> int:
        day = local_day(t_ms)
        day_start = local_day_start(day)
        edges = [self.start_hour, self.end_hour]
        for start, end in self.breaks:
            edges += [start, end]
        for hour in sorted(edges):
            edge = day_start + int(hour * HOUR_MS)
            if edge > t_ms:
                return edge
        return local_day_start(day + 1)


def weekday(day: int) -> int:
    """Monday = 0 for a day counted from 1970-01-01, which was a Thursday."""
    return (day + 3) % 7
