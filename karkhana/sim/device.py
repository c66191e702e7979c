"""What every simulated device shares: seeds, simulated time, the plant environment, readings."""

from __future__ import annotations

import hashlib
import math
import random
from abc import ABC, abstractmethod
from typing import ClassVar, Literal, Protocol

from karkhana.core.model import Value

SECOND_MS = 1_000
MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
PKT_OFFSET_MS = 5 * HOUR_MS
"""Pakistan Standard Time is UTC+5 all year; shifts and load shedding follow local clocks."""

Readings = dict[str, Value]
Source = Literal["grid", "generator", "none"]


def derive_seed(master: int, *parts: str | int) -> int:
    """A stable seed for one part of the plant (hash() is salted per process, sha256 is not)."""
    text = "\x1f".join(str(p) for p in (master, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def rng_for(master: int, *parts: str | int) -> random.Random:
    return random.Random(derive_seed(master, *parts))


def local_day(t_ms: int, offset_ms: int = PKT_OFFSET_MS) -> int:
    return (t_ms + offset_ms) // DAY_MS


def local_day_start(day: int, offset_ms: int = PKT_OFFSET_MS) -> int:
    return day * DAY_MS - offset_ms


def local_hour(t_ms: int, offset_ms: int = PKT_OFFSET_MS) -> float:
    return ((t_ms + offset_ms) % DAY_MS) / HOUR_MS


def lag(current: float, target: float, dt_ms: int, tau_ms: float) -> float:
    """First-order lag: exact for a target held constant over ``dt_ms``."""
    if dt_ms <= 0:
        return current
    return target + (current - target) * math.exp(-dt_ms / tau_ms)


class PowerSupply(Protocol):
    def source_at(self, t_ms: int) -> Source: ...

    def next_change(self, t_ms: int) -> int:
        """A time after ``t_ms`` before which the source does not change."""
        ...


class Weather:
    """Outdoor temperature: a daily swing (hottest mid-afternoon) plus a per-day offset."""

    def __init__(self, seed: int, mean_c: float = 30.0, swing_c: float = 6.0) -> None:
        self._seed = seed
        self._mean = mean_c
        self._swing = swing_c
        self._offsets: dict[int, float] = {}

    def ambient_c(self, t_ms: int) -> float:
        day = local_day(t_ms)
        offset = self._offsets.get(day)
        if offset is None:
            offset = rng_for(self._seed, "weather", day).uniform(-2.5, 2.5)
            self._offsets[day] = offset
        hour = local_hour(t_ms)
        return self._mean + offset + self._swing * math.sin(2 * math.pi * (hour - 9.0) / 24.0)


class Environment:
    """What devices share within one plant step: time, power, weather and compressed-air demand."""

    def __init__(self, power: PowerSupply, weather: Weather) -> None:
        self.power = power
        self.weather = weather
        self.t_ms = 0
        self.source: Source = "grid"
        self.ambient_c = weather.ambient_c(0)
        self.air_demand_m3_min = 0.0

    def begin(self, t_ms: int) -> None:
        self.t_ms = t_ms
        self.source = self.power.source_at(t_ms)
        self.ambient_c = self.weather.ambient_c(t_ms)
        self.air_demand_m3_min = 0.0

    def powered(self, essential: bool) -> bool:
        """Grid feeds everything; the generator feeds only the essential circuits."""
        return self.source == "grid" or (self.source == "generator" and essential)


class SimDevice(ABC):
    """One simulated device. ``advance`` moves it to a later simulated time and reads it there.

    Devices are advanced in ``stage`` order within a step so that consumers (compressors,
    meters) see the demand of the machines advanced before them.
    """

    stage: ClassVar[int] = 1

    def __init__(self, device_id: str, name: str, template: str, seed: int, start_ms: int) -> None:
        self.device_id = device_id
        self.name = name
        self.template = template
        self.t_ms = start_ms
        self.noise = rng_for(seed, device_id, "noise")

    @abstractmethod
    def advance(self, t_ms: int, env: Environment) -> Readings: ...

    def load_kw(self) -> float:
        """Mean electrical load over the last step (0 for devices that are not loads)."""
        return 0.0

    def jitter(self, value: float, sigma: float) -> float:
        return value + self.noise.gauss(0.0, sigma)
