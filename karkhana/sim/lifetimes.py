"""Run-to-failure lives of simulated looms, for training remaining-life models without waiting
for real failures.

Each life is one loom of the textile profile with its own seed, power cuts and weather, from a
healthy start through the growth of a main-shaft bearing defect to the failure (the same
``BearingWear`` the demo plant's worn loom has). The readings are what the loom's device would
send, at a coarse period; the failure time is the ground truth. Pure: no I/O, no wall clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from karkhana.sim.device import DAY_MS, HOUR_MS, MINUTE_MS, Environment, Readings, Weather, rng_for
from karkhana.sim.machine import BearingWear, Constraints
from karkhana.sim.power import PowerSchedule
from karkhana.sim.textile import Loom

PERIOD_MS = MINUTE_MS
"""One reading a minute: hourly means of a minute's readings are as steady as of 30 s ones."""


@dataclass(frozen=True, slots=True)
class Life:
    """One loom from ``start_ms`` until its bearing fails at ``failure_ms``."""

    device_id: str
    start_ms: int
    onset_ms: int
    failure_ms: int
    seed: int

    def readings(self, period_ms: int = PERIOD_MS) -> Iterator[tuple[int, Readings]]:
        """The loom's readings every ``period_ms`` from the start up to (not including) the
        failure, in time order."""
        power = PowerSchedule(self.seed)
        wear = BearingWear(self.onset_ms, self.failure_ms, self.failure_ms + 8 * HOUR_MS)
        essential = rng_for(self.seed, "life", "essential").random() < 0.5
        loom = Loom(
            self.device_id,
            "Loom",
            self.seed,
            self.start_ms,
            Constraints(power, essential=essential, wear=wear),
            wear,
        )
        env = Environment(power, Weather(self.seed))
        t = self.start_ms
        while t < self.failure_ms:
            env.begin(t)
            yield t, loom.advance(t, env)
            t += period_ms


def loom_lives(count: int, seed: int, start_ms: int) -> list[Life]:
    """``count`` lives with different seeds: healthy for 1 to 12 days, then a bearing defect
    that grows to failure over 3 to 5 days (the demo plant draws 3.5 to 4.5)."""
    if count < 1:
        raise ValueError("count must be at least 1")
    lives = []
    for i in range(count):
        rng = rng_for(seed, "lives", i)
        onset = start_ms + int(rng.uniform(1.0, 12.0) * DAY_MS)
        failure = onset + int(rng.uniform(3.0, 5.0) * DAY_MS)
        lives.append(Life(f"life-{i + 1:03d}", start_ms, onset, failure, seed * 1000 + i))
    return lives
