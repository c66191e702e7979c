"""Past readings of a simulated plant, so that a demo starts with days of history behind it.

Pure: the plant is stepped over a span at a coarse rate and its readings come out as samples in
time order, as the devices would have sent them: a sensor dropout of the plant's delivery plan
leaves its samples out, while duplicates and out-of-order delivery, which only the transport
sees, do not apply. Writing the samples is the caller's business.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass

from karkhana.core.model import Sample
from karkhana.sim.device import DAY_MS, MINUTE_MS
from karkhana.sim.faults import FaultRecord
from karkhana.sim.plant import Plant
from karkhana.sim.profiles import build_plant

PERIOD_MS = 30_000
"""One reading per device every 30 simulated seconds: a stop of a minute still shows, and three
days of the 12-loom mill are about 1.4 million samples."""
CHUNK_MS = 30 * MINUTE_MS
"""Samples are handed out (and written) half an hour of simulated time at a time."""
WEAR_NOW = 0.8
"""How far the seeded bearing wear has gone, from onset (0) to failure (1), at the end of the
history: vibration near or past ISO 10816 zone D (the starter rule's 7.1 mm/s) and the failure
most of a day away. With three days of history the wear begins about when the history does, so
the condition monitor learns from a first day with at most slight wear in it."""
FAST_FORWARD_MS = 5 * MINUTE_MS


@dataclass(frozen=True, slots=True)
class Chunk:
    """The samples of the steps in [start_ms, end_ms), in time order."""

    start_ms: int
    end_ms: int
    samples: list[Sample]
    steps: tuple[int, ...]


def wear_fault(plant: Plant) -> FaultRecord | None:
    """The plant's seeded bearing degradation, if it has one (it begins within 2.5 days of the
    plant's start)."""
    far = plant.start_ms + 30 * DAY_MS
    return next((f for f in plant.ground_truth(far) if f.kind == "bearing_degradation"), None)


def plant_start(profile: str, devices: int | None, seed: int, now_ms: int, history_ms: int) -> int:
    """When the plant starts so that ``now_ms`` is ``WEAR_NOW`` of the way through its bearing
    wear, and at least ``history_ms`` before ``now_ms``.

    The fault's times relative to the start depend only on the seed, so a plant built at any
    start shows where they fall.
    """
    earliest = now_ms - history_ms
    fault = wear_fault(build_plant(profile, devices, seed, earliest))
    if fault is None or fault.failure_ms is None:
        return earliest
    onset = fault.start_ms - earliest
    failure = fault.failure_ms - earliest
    lead = onset + round(WEAR_NOW * (failure - onset))
    return min(earliest, now_ms - lead)


def fast_forward(plant: Plant, until_ms: int, step_ms: int = FAST_FORWARD_MS) -> None:
    """Run the plant up to ``until_ms`` (not beyond) in coarse steps, reading nothing.

    Machine states and counters move event by event whatever the step, so the plant arrives in
    the same state as if it had been sampled all along; only the measurement noise differs.
    """
    t = plant.now_ms
    while t + step_ms < until_ms:
        t += step_ms
        plant.step(t)
    if until_ms > plant.now_ms:
        plant.step(until_ms)


def step_times(start_ms: int, end_ms: int, period_ms: int = PERIOD_MS) -> range:
    """Sample times on the grid ``start_ms + k * period_ms`` in [start_ms, end_ms)."""
    return range(start_ms, max(start_ms, end_ms), period_ms)


def readings(plant: Plant, t_ms: int) -> list[Sample]:
    """Step the plant to ``t_ms`` and return what its devices send then (integers as floats,
    as ingestion stores them; nothing from a device in a sensor dropout)."""
    out: list[Sample] = []
    for device_id, values in plant.step(t_ms).items():
        fault = plant.delivery_fault(device_id, t_ms)
        if fault is not None and fault.kind == "sensor_dropout":
            continue
        for key, value in values.items():
            out.append(Sample(device_id, key, t_ms, float(value) if type(value) is int else value))
    return out


def chunks(
    plant: Plant,
    start_ms: int,
    end_ms: int,
    period_ms: int = PERIOD_MS,
    chunk_ms: int = CHUNK_MS,
) -> Iterator[Chunk]:
    """The plant's readings at ``step_times(start_ms, end_ms)``, in chunks of ``chunk_ms``.

    The plant must not be past ``start_ms``; afterwards it stands at the last step.
    """
    if period_ms <= 0 or chunk_ms <= 0:
        raise ValueError("period and chunk must be positive")
    if plant.now_ms > start_ms:
        raise ValueError(f"the plant is already past {start_ms}")
    times = step_times(start_ms, end_ms, period_ms)
    per_chunk = max(1, chunk_ms // period_ms)
    for i in range(0, len(times), per_chunk):
        steps = times[i : i + per_chunk]
        samples: list[Sample] = []
        for t in steps:
            samples += readings(plant, t)
        yield Chunk(steps[0], steps[-1] + period_ms, samples, tuple(steps))


STOP_REASONS: dict[str, dict[str, str]] = {
    "power_loom": {
        "stopped": "mechanical.weft_break",
        "idle": "beam_change",
        "fault": "mechanical",
    },
    "ring_spinning_frame": {"stopped": "doffing", "idle": "yarn_shortage", "fault": "mechanical"},
    "cnc_machine": {"stopped": "tool_change", "idle": "material_shortage"},
    "injection_moulding_machine": {"stopped": "mechanical.mould_fault", "idle": "changeover"},
    "mechanical_press": {"idle": "changeover"},
    "filling_machine": {"stopped": "jam", "idle": "changeover"},
}
"""The reason a weaver or operator gives a stop of each simulated machine, by the stop's state
(see the stop causes in textile.py, auto.py and food.py); a state missing here stays without."""
COUNTED_REASONS: dict[str, tuple[tuple[str, str], ...]] = {
    "power_loom": (
        ("warp_breaks", "mechanical.warp_break"),
        ("weft_breaks", "mechanical.weft_break"),
    ),
}
"""Counters that name the cause of a stop when they step up as it begins."""


def stop_reason(
    template: str, state: str, counted: Collection[str] = (), *, failed: bool = False
) -> str | None:
    """The reason an operator would give a past stop: ``counted`` holds the counters that stepped
    up as it began, ``failed`` says it is the failure of the worn bearing."""
    if failed and state == "fault":
        return "mechanical.bearing"
    if state == "stopped":
        for key, reason in COUNTED_REASONS.get(template, ()):
            if key in counted:
                return reason
    return STOP_REASONS.get(template, {}).get(state)
