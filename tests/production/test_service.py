"""The production service against a real store: live states, counts, outages, rebuilds."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from karkhana.core.clock import FakeClock
from karkhana.core.errors import StoreUnavailable
from karkhana.core.model import Sample
from karkhana.runtime import Runtime
from tests.conftest import make_settings
from tests.production.support import (
    FAULT,
    MICRO,
    NOW,
    OUTAGE,
    SHIFT_A,
    STEP,
    build_mill,
    day_samples,
    settle,
)

pytestmark = pytest.mark.anyio
M = 60_000


async def test_live_states_from_committed_samples(mill: Runtime) -> None:
    states = await mill.production.states("L1", SHIFT_A, NOW)
    assert [(i["start_ms"], i["end_ms"], i["state"]) for i in states] == [
        (SHIFT_A, OUTAGE[0], "running"),
        (OUTAGE[0], OUTAGE[1], "stopped"),
        (OUTAGE[1], MICRO[0], "running"),
        (MICRO[0], MICRO[1], "stopped"),
        (MICRO[1], FAULT[0], "running"),
        (FAULT[0], FAULT[1], "fault"),
        (FAULT[1], NOW, "running"),
    ]


async def test_a_stop_in_a_grid_outage_is_labelled_load_shedding(mill: Runtime) -> None:
    stops = await mill.production.stops([mill.production.machine("L1")], SHIFT_A, NOW)
    by_start = {s.start_ms: s for s in stops}
    assert by_start[OUTAGE[0]].reason_id == "power_outage" and by_start[OUTAGE[0]].auto
    assert by_start[MICRO[0]].reason_id is None and not by_start[MICRO[0]].auto
    assert by_start[FAULT[0]].reason_id is None


async def test_oee_of_the_shift_so_far(mill: Runtime) -> None:
    _, picks = day_samples()
    r = await mill.production.oee([mill.production.machine("L1")], SHIFT_A, NOW)
    assert r.planned_ms == 180 * M
    assert r.losses.small_stops_ms == 1 * M
    assert r.losses.breakdowns_ms == 30 * M  # the 20 min outage and the 10 min fault
    assert r.run_ms == 150 * M
    assert r.total_count == picks
    assert r.availability == pytest.approx(150 / 180)
    assert r.performance == pytest.approx(picks * 0.1 * 1000 / (150 * M))
    assert r.quality == 1.0 and not r.quality_measured


async def test_rebuild_from_stored_telemetry_matches_live(mill: Runtime) -> None:
    service = mill.production
    live = await service.states("L1", SHIFT_A, NOW)
    stops = await service.stops([service.machine("L1")], SHIFT_A, NOW)
    fault = next(s for s in stops if s.start_ms == FAULT[0])
    await service.set_reason(fault.id, "electrical.motor")
    before = await service.oee([service.machine("L1")], SHIFT_A, NOW)
    await service.rebuild("L1", SHIFT_A + 30 * M)
    assert await service.states("L1", SHIFT_A, NOW) == [
        {**i, "reason_id": "electrical.motor" if i["start_ms"] == FAULT[0] else i["reason_id"]}
        for i in live
    ]
    again = await service.stops([service.machine("L1")], SHIFT_A, NOW)
    kept = next(s for s in again if s.start_ms == FAULT[0])
    assert (kept.id, kept.reason_id) == (fault.id, "electrical.motor")  # same stop, same reason
    assert next(s for s in again if s.start_ms == OUTAGE[0]).reason_id == "power_outage"
    after = await service.oee([service.machine("L1")], SHIFT_A, NOW)
    assert after == before


async def test_late_samples_trigger_a_rebuild(mill: Runtime, clock: FakeClock) -> None:
    clock.set(NOW + 10 * M)
    live = [
        Sample("loom-1", "state", t, "running")
        for t in range(NOW, NOW + 10 * M, STEP)
        if not NOW + 2 * M <= t < NOW + 4 * M
    ]
    await mill.store.write(live)
    await settle(mill, "L1", live[-1].ts)
    gap = [
        (i["start_ms"], i["state"]) for i in await mill.production.states("L1", NOW, NOW + 10 * M)
    ]
    assert gap == [(NOW, "running"), (NOW + 90 * 1000, "no_data"), (NOW + 4 * M, "running")]
    # the edge agent's backlog arrives: the machine was stopped in the gap
    late = [Sample("loom-1", "state", t, "stopped") for t in range(NOW + 2 * M, NOW + 4 * M, STEP)]
    await mill.store.write(late)
    for _ in range(2000):  # until the service has seen them and marked the loom
        if "L1" in mill.production._dirty:
            break
        await asyncio.sleep(0.01)
    await mill.production.tick()
    states = await mill.production.states("L1", NOW, NOW + 10 * M)
    assert [(i["start_ms"], i["state"]) for i in states] == [
        (NOW, "running"),
        (NOW + 2 * M, "stopped"),
        (NOW + 4 * M, "running"),
    ]


async def test_silence_becomes_no_data(mill: Runtime, clock: FakeClock) -> None:
    clock.advance(10 * M)
    await mill.production.tick()
    overview = {m["machine_id"]: m for m in await mill.production.overview(None)}
    assert overview["L1"]["state"] == "no_data"
    assert overview["L1"]["speed"] is None  # the last speed is no longer news
    last = NOW - STEP
    assert overview["L1"]["state_since_ms"] == last
    states = await mill.production.states("L1", NOW - 5 * M, NOW + 10 * M)
    assert states[-1] == {
        "start_ms": last,
        "end_ms": NOW + 10 * M,
        "state": "no_data",
        "reason_id": None,
    }


async def test_counter_reset_keeps_counting(mill: Runtime, clock: FakeClock) -> None:
    _, picks = day_samples()
    await mill.store.write([Sample("loom-1", "pick_count", NOW, 120.0)])  # reset to 0, then 120
    await mill.store.write([Sample("loom-1", "state", NOW, "running")])
    await settle(mill, "L1", NOW)
    await mill.production.flush()
    clock.advance(M)
    r = await mill.production.oee([mill.production.machine("L1")], SHIFT_A, NOW + M)
    assert r.total_count == picks + 120


async def test_shift_reports_are_written_once(mill: Runtime, clock: FakeClock) -> None:
    clock.set(SHIFT_A + 8 * 60 * M + 5 * M)  # 14:05, shift A has ended
    written = await mill.production.write_due_reports()
    names = sorted(p.name for p in written)
    assert "2026-06-03-shift-A.csv" in names and "2026-06-03-shift-A.pdf" in names
    csv = (mill.settings.data_dir / "reports" / "mill" / "2026-06-03-shift-A.csv").read_text()
    assert "Loom 1" in csv and "Power outage (load-shedding)" in csv
    assert not any(
        p.name.startswith("2026-06-03-shift-A") for p in await mill.production.write_due_reports()
    )


async def test_a_restart_continues_states_and_counts(tmp_path: Path, clock: FakeClock) -> None:
    samples, picks = day_samples()
    half = [s for s in samples if s.ts < OUTAGE[0] + 10 * M]
    rt = Runtime(make_settings(tmp_path), clock)
    await rt.start(mqtt=False)
    try:
        await build_mill(rt)
        await rt.store.write(half)
        await settle(rt, "L1", half[-1].ts)
    finally:
        await rt.stop()
    rt = Runtime(make_settings(tmp_path), clock)
    await rt.start(mqtt=False)
    try:
        rest = samples[len(half) :]
        await rt.store.write(rest)
        await settle(rt, "L1", rest[-1].ts)
        r = await rt.production.oee([rt.production.machine("L1")], SHIFT_A, NOW)
        assert r.total_count == picks and r.run_ms == 150 * M
        stops = await rt.production.stops([rt.production.machine("L1")], SHIFT_A, NOW)
        assert [(s.start_ms, s.end_ms, s.reason_id) for s in stops] == [
            (OUTAGE[0], OUTAGE[1], "power_outage"),
            (MICRO[0], MICRO[1], None),
            (FAULT[0], FAULT[1], None),
        ]
    finally:
        await rt.stop()


async def test_a_failed_write_is_rebuilt_from_telemetry(
    mill: Runtime, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = mill.production
    clock.set(NOW + 5 * M)
    fresh = [Sample("loom-1", "state", t, "stopped") for t in range(NOW, NOW + 5 * M, STEP)]
    real = service.db.execute_write_fn

    async def disk_full(fn: object) -> None:
        raise StoreUnavailable("storage failure: disk is full", reason="disk_full")

    monkeypatch.setattr(service.db, "execute_write_fn", disk_full)
    await mill.store.write(fresh)
    for _ in range(2000):
        if service.trackers["L1"].last_seen == fresh[-1].ts:
            break
        await asyncio.sleep(0.01)
    with contextlib.suppress(StoreUnavailable):  # unless the service's own flush failed first
        await service.flush()
    assert "L1" in service._dirty
    monkeypatch.setattr(service.db, "execute_write_fn", real)
    await service.tick()
    states = await service.states("L1", FAULT[1], NOW + 5 * M)
    assert [(i["start_ms"], i["state"]) for i in states] == [
        (FAULT[1], "running"),
        (NOW, "stopped"),
    ]


async def test_a_loom_silent_in_an_outage_is_labelled_load_shedding(
    mill: Runtime, clock: FakeClock
) -> None:
    # the loom's gateway has no UPS: it falls silent as the panel reports the grid gone
    await mill.store.write(
        [Sample("loom-1", "state", NOW, "running"), Sample("panel", "source", NOW + 20_000, "none")]
    )
    await settle(mill, "L1", NOW)
    clock.set(NOW + 5 * M)
    await mill.production.tick()
    stops = await mill.production.stops([mill.production.machine("L1")], NOW, NOW + 5 * M)
    assert [(s.start_ms, s.state, s.reason_id, s.auto) for s in stops] == [
        (NOW, "no_data", "power_outage", True)
    ]


async def test_a_filling_line_measures_quality_and_startup_rejects(
    mill: Runtime, clock: FakeClock
) -> None:
    await mill.assets.create_machine("F1", "mill-shed", "Filler 1", "filling_machine", "filler-1")
    await mill.production.refresh()
    samples = []
    for n, t in enumerate(range(SHIFT_A, NOW, STEP)):
        samples += [
            Sample("filler-1", "state", t, "running"),
            Sample("filler-1", "bottle_count", t, 100.0 * n),  # good and rejected
            Sample("filler-1", "reject_count", t, 2.0 * n),
        ]
    await mill.store.write(samples)
    await settle(mill, "F1", samples[-1].ts)
    r = await mill.production.oee([mill.production.machine("F1")], SHIFT_A, NOW)
    assert r.quality_measured
    assert (r.total_count, r.good_count) == (35_900, 35_182)  # 359 steps of 100, 2 rejected
    assert r.quality == pytest.approx(0.98)
    # rejects in the first ten minutes after the line started are startup rejects:
    # 2 in the first minute (its first reading only sets the start), then 4 a minute
    assert r.losses.startup_rejects == 38 and r.losses.production_rejects == 680


async def test_stops_reported_after_the_outage_ended_are_still_labelled(
    mill: Runtime, clock: FakeClock
) -> None:
    clock.set(NOW + 20 * M)
    await mill.store.write(
        [
            Sample("panel", "source", NOW + M, "none"),
            Sample("panel", "source", NOW + 10 * M, "grid"),
        ]
    )
    await asyncio.sleep(0.05)
    await mill.production.flush()
    # the loom's gateway forwards its buffer only now
    loom = [
        Sample("loom-1", "state", t, "stopped" if NOW + M + 5000 <= t < NOW + 10 * M else "running")
        for t in range(NOW, NOW + 15 * M, 5000)
    ]
    await mill.store.write(loom)
    await settle(mill, "L1", loom[-1].ts)
    stops = await mill.production.stops([mill.production.machine("L1")], NOW, NOW + 15 * M)
    assert [(s.start_ms, s.end_ms, s.reason_id) for s in stops] == [
        (NOW + M + 5000, NOW + 10 * M, "power_outage")
    ]


async def test_a_rebuild_of_a_slow_reporter_keeps_its_state_at_the_start(
    mill: Runtime, clock: FakeClock
) -> None:
    # reports every 115 s, inside the 120 s timeout: never silent
    await mill.assets.create_machine("L3", "mill-shed", "Loom 3", "power_loom", "loom-3")
    await mill.production.refresh()
    times = range(SHIFT_A, NOW, 115_000)
    samples = [
        Sample("loom-3", "state", t, "stopped" if n < 6 else "running") for n, t in enumerate(times)
    ]
    await mill.store.write(samples)
    await settle(mill, "L3", samples[-1].ts)
    expected = [(SHIFT_A, "stopped"), (SHIFT_A + 6 * 115_000, "running")]
    states = await mill.production.states("L3", SHIFT_A, NOW)
    assert [(i["start_ms"], i["state"]) for i in states] == expected
    # the rebuild starts where running began and seeds from the stopped sample 115 s before
    await mill.production.rebuild("L3", SHIFT_A + 60 * M)
    states = await mill.production.states("L3", SHIFT_A, NOW)
    assert [(i["start_ms"], i["state"]) for i in states] == expected


async def test_a_site_oee_leaves_out_machines_without_an_ideal_cycle(mill: Runtime) -> None:
    await mill.assets.create_machine("R1", "mill-shed", "Ring 1", "ring_spinning_frame", "ring-1")
    await mill.production.refresh()
    await mill.store.write(
        [Sample("ring-1", "state", t, "running") for t in range(SHIFT_A, NOW, STEP)]
    )
    await settle(mill, "R1", NOW - STEP)
    service = mill.production
    ring = await service.oee([service.machine("R1")], SHIFT_A, NOW)
    assert ring.performance is None and ring.availability == 1.0
    site = await service.oee(service.scope(None, site_id="mill").machines, SHIFT_A, NOW)
    loom = await service.oee([service.machine("L1")], SHIFT_A, NOW)
    assert site.oee is not None and site.oee == pytest.approx(loom.oee)


async def test_a_machine_made_after_its_device_reported_gets_its_earlier_states(
    mill: Runtime,
) -> None:
    """Samples that came before the machine existed (or before the service's next look) are
    not lost: the machine's states are derived from what is stored."""
    samples = [
        Sample("loom-77", "state", t, "running" if t < SHIFT_A + 60 * M else "stopped")
        for t in range(SHIFT_A, NOW, STEP)
    ]
    await mill.store.write(samples)
    await mill.assets.create_machine("L77", "mill-shed", "Loom 77", "power_loom", "loom-77")
    await mill.production.refresh()
    states = await mill.production.states("L77", SHIFT_A, NOW)
    assert [i["state"] for i in states][:2] == ["running", "stopped"]
    assert states[0]["start_ms"] == SHIFT_A
    assert states[1]["start_ms"] == SHIFT_A + 60 * M
