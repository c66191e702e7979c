from __future__ import annotations

import asyncio
from collections import defaultdict
from itertools import pairwise

import pytest

from karkhana.core.clock import FakeClock
from karkhana.core.model import Sample
from karkhana.sim.history import (
    PERIOD_MS,
    WEAR_NOW,
    chunks,
    fast_forward,
    plant_start,
    readings,
    step_times,
    stop_reason,
    wear_fault,
)
from karkhana.sim.profiles import build_plant
from karkhana.sim.runner import run
from karkhana.sim.transport import MemoryTransport
from tests.sim.support import DAY_MS, HOUR_MS, MONDAY_MS, entries, fake_sleep


def history(seed: int = 42, hours: float = 6.0, devices: int = 2) -> list[Sample]:
    plant = build_plant("textile", devices, seed, MONDAY_MS)
    end = MONDAY_MS + round(hours * HOUR_MS)
    return [s for chunk in chunks(plant, MONDAY_MS, end) for s in chunk.samples]


def test_history_is_deterministic() -> None:
    assert history() == history()
    assert history() != history(seed=7)


def test_every_series_moves_forward_on_the_grid_and_stops_before_the_end() -> None:
    samples = history(hours=6.0)
    series: dict[tuple[str, str], list[int]] = defaultdict(list)
    for s in samples:
        series[(s.device_id, s.key)].append(s.ts)
    assert len(series) > 40
    end = MONDAY_MS + 6 * HOUR_MS
    for stamps in series.values():
        assert all(a < b for a, b in pairwise(stamps))
        assert all((t - MONDAY_MS) % PERIOD_MS == 0 and MONDAY_MS <= t < end for t in stamps)
    assert max(s.ts for s in samples) == end - PERIOD_MS
    # as ingestion stores them: integers as floats, booleans and texts as they are
    assert {type(s.value) for s in samples} <= {float, bool, str}


def test_sensor_dropouts_leave_their_samples_out() -> None:
    plant = build_plant("textile", 12, 42, MONDAY_MS)
    drop = next(
        e for day in range(3) for e in plant.delivery.window(day) if e.kind == "sensor_dropout"
    )
    assert drop.end_ms is not None
    fast_forward(plant, drop.start_ms - PERIOD_MS)
    inside = readings(plant, drop.start_ms + 1)
    assert inside and drop.device_id not in {s.device_id for s in inside}
    after = readings(plant, drop.end_ms)
    assert drop.device_id in {s.device_id for s in after}


def test_chunks_cover_the_span_once() -> None:
    plant = build_plant("textile", 1, 42, MONDAY_MS)
    end = MONDAY_MS + 2 * HOUR_MS + 5_000
    got = list(chunks(plant, MONDAY_MS, end, chunk_ms=HOUR_MS))
    assert [c.start_ms for c in got] == [MONDAY_MS, MONDAY_MS + HOUR_MS, MONDAY_MS + 2 * HOUR_MS]
    steps = [t for c in got for t in c.steps]
    assert steps == list(step_times(MONDAY_MS, end))
    assert got[-1].end_ms == steps[-1] + PERIOD_MS and plant.now_ms == steps[-1]
    with pytest.raises(ValueError, match="already past"):
        next(chunks(plant, MONDAY_MS, end))


def test_the_live_run_begins_where_the_history_ends() -> None:
    """History up to now, then the runner over the same plant: no time going back, no
    timestamp twice, counters carrying on."""
    plant = build_plant("textile", 2, 42, MONDAY_MS)
    now = MONDAY_MS + 3 * HOUR_MS + 7_000
    past = [s for chunk in chunks(plant, MONDAY_MS, now) for s in chunk.samples]
    fast_forward(plant, now)
    assert plant.now_ms == now
    transport = MemoryTransport()
    clock = FakeClock(now)
    asyncio.run(run(plant, transport, 1.0, 1.0, 5.0, clock, sleep=fake_sleep(clock)))
    live = [
        (device, e["ts"], e["values"])
        for device, messages in transport.by_device().items()
        for m in messages
        for e in entries(m)
    ]
    assert min(ts for _, ts, _ in live) == now
    last_past = {s.device_id: s.ts for s in past}
    for device, ts, _ in live:
        assert ts > last_past[device]
    picks_then = max(s.value for s in past if s.key == "pick_count" and s.device_id == "tx-loom-01")
    picks_now = min(v["pick_count"] for d, _, v in live if d == "tx-loom-01")
    assert isinstance(picks_then, float) and picks_now >= picks_then


def test_the_worn_loom_is_mid_wear_at_the_end_of_the_history() -> None:
    now = MONDAY_MS + 10 * DAY_MS
    start = plant_start("textile", None, 42, now, 3 * DAY_MS)
    assert start <= now - 3 * DAY_MS
    plant = build_plant("textile", None, 42, start)
    fault = wear_fault(plant)
    assert fault is not None and fault.failure_ms is not None
    assert fault.start_ms < now < fault.failure_ms
    share = (now - fault.start_ms) / (fault.failure_ms - fault.start_ms)
    assert share == pytest.approx(WEAR_NOW, abs=1e-6)
    # the start depends only on the seed and the time: the same plant again
    assert plant_start("textile", None, 42, now, 3 * DAY_MS) == start
    # a plant without bearing wear starts just the history's length back
    assert plant_start("food", None, 42, now, 3 * DAY_MS) == now - 3 * DAY_MS
    # a longer history than the wear needs starts the plant earlier, wear and all
    assert plant_start("textile", None, 42, now, 20 * DAY_MS) == now - 20 * DAY_MS


def test_fast_forward_keeps_counting() -> None:
    plant = build_plant("textile", 1, 42, MONDAY_MS)
    fast_forward(plant, MONDAY_MS + DAY_MS)
    assert plant.now_ms == MONDAY_MS + DAY_MS
    values = plant.step(MONDAY_MS + DAY_MS + PERIOD_MS)["tx-loom-01"]
    picks = values["pick_count"]
    assert isinstance(picks, int) and picks > 100_000


def test_past_stops_get_the_reasons_their_causes_call_for() -> None:
    loom = "power_loom"
    assert stop_reason(loom, "stopped", {"warp_breaks"}) == "mechanical.warp_break"
    assert stop_reason(loom, "stopped", {"weft_breaks"}) == "mechanical.weft_break"
    assert stop_reason(loom, "idle") == "beam_change"
    assert stop_reason(loom, "fault") == "mechanical"
    assert stop_reason(loom, "fault", failed=True) == "mechanical.bearing"
    assert stop_reason("ring_spinning_frame", "stopped") == "doffing"
    assert stop_reason(loom, "no_data") is None
    assert stop_reason("energy_meter_3ph", "stopped") is None
