from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from karkhana.core.clock import FakeClock
from karkhana.core.errors import ConfigError
from karkhana.sim.faults import FaultRecord
from karkhana.sim.profiles import build_plant
from karkhana.sim.runner import RunReport, run
from karkhana.sim.transport import MemoryTransport
from tests.sim.support import DAY_MS, MONDAY_MS, entries, fake_sleep


def simulate(
    rate_hz: float,
    speedup: float,
    duration_s: float | None,
    *,
    devices: int = 2,
    faults: bool = False,
    seed: int = 42,
    stop_after_s: float | None = None,
) -> tuple[MemoryTransport, RunReport]:
    plant = build_plant("textile", devices, seed, MONDAY_MS, faults=faults)
    transport = MemoryTransport()
    clock = FakeClock(1_800_000_000_000)
    sleep = fake_sleep(clock)

    async def main() -> RunReport:
        stop = asyncio.Event() if stop_after_s is not None else None

        async def ticking(seconds: float) -> None:
            await sleep(seconds)
            elapsed_ms = clock.now_ms() - 1_800_000_000_000
            if stop is not None and stop_after_s is not None and elapsed_ms >= stop_after_s * 1000:
                stop.set()

        return await run(
            plant, transport, rate_hz, speedup, duration_s, clock, sleep=ticking, stop=stop
        )

    report = asyncio.run(main())
    return transport, report


def test_one_sample_per_message_at_real_time() -> None:
    transport, report = simulate(1.0, 1.0, 10.0)
    per_device = transport.by_device()
    assert transport.opened == tuple(per_device) and transport.closed
    assert len(per_device) == 9
    for messages in per_device.values():
        assert len(messages) == 10
        stamps = [entries(m)[0]["ts"] for m in messages]
        assert all(m.startswith(b"{") for m in messages)
        assert stamps == [MONDAY_MS + i * 1000 for i in range(10)]
    assert report.samples == 90 and report.messages == 90
    assert (report.start_ms, report.end_ms) == (MONDAY_MS, MONDAY_MS + 10_000)


def test_high_speedup_batches_samples_instead_of_dropping_them() -> None:
    transport, report = simulate(1.0, 60.0, 10.0)
    for messages in transport.by_device().values():
        assert 35 <= len(messages) <= 45
        stamps = [e["ts"] for m in messages for e in entries(m)]
        assert stamps == [MONDAY_MS + i * 1000 for i in range(600)]
        assert all(m.startswith(b"[") for m in messages[1:])
    assert report.samples == 9 * 600
    assert report.end_ms == MONDAY_MS + 600_000


def test_slow_rate_waits_for_the_next_sample() -> None:
    transport, report = simulate(0.1, 2.0, 60.0)
    for messages in transport.by_device().values():
        assert [entries(m)[0]["ts"] for m in messages] == [
            MONDAY_MS + i * 10_000 for i in range(12)
        ]
    assert report.messages == 9 * 12


def test_stop_event_ends_an_endless_run() -> None:
    transport, report = simulate(1.0, 1.0, None, stop_after_s=5.0)
    assert 5 <= len(transport.by_device()["tx-power"]) <= 7
    assert transport.closed
    assert report.end_ms > report.start_ms


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ConfigError):
        simulate(0.0, 1.0, 1.0)
    with pytest.raises(ConfigError):
        simulate(1.0, 1.0, -1.0)


def total(records: list[FaultRecord], name: str) -> int:
    counts = [r.details[name] for r in records]
    assert all(isinstance(n, int) for n in counts)
    return sum(int(n or 0) for n in counts)


def test_delivery_faults_are_sent_as_planned_and_counted_in_ground_truth() -> None:
    transport, report = simulate(1 / 60, 240.0, DAY_MS / 1000 / 240, devices=1, faults=True)
    period = 60_000
    assert report.samples == 8 * 1440
    truth = report.ground_truth
    dropouts = [r for r in truth if r.kind == "sensor_dropout"]
    duplicated = [r for r in truth if r.kind == "duplicate_messages"]
    reordered = [r for r in truth if r.kind == "out_of_order_messages"]
    assert dropouts and duplicated and reordered

    seen_duplicates = seen_late = sent_samples = 0
    for device_id, messages in transport.by_device().items():
        stamps_seen: list[int] = []
        copies = Counter(messages)
        seen_duplicates += sum(n - 1 for n in copies.values())
        newest = -1
        for message in messages:
            stamps = [e["ts"] for e in entries(message)]
            sent_samples += len(stamps)
            if stamps[0] < newest:
                seen_late += 1
            newest = max(newest, stamps[-1])
            stamps_seen += stamps
        for record in dropouts:
            if record.device_id == device_id:
                assert record.end_ms is not None
                assert not any(record.start_ms <= t < record.end_ms for t in stamps_seen)
        expected = {MONDAY_MS + i * period for i in range(1440)} - {
            MONDAY_MS + i * period
            for i in range(1440)
            for r in dropouts
            if r.device_id == device_id and r.active(MONDAY_MS + i * period)
        }
        assert set(stamps_seen) == expected, device_id

    assert seen_duplicates == report.duplicates == total(duplicated, "messages")
    assert seen_late == report.out_of_order == total(reordered, "messages")
    assert report.dropped == total(dropouts, "samples_dropped")
    assert report.duplicates > 0 and report.out_of_order > 0 and report.dropped > 0
    assert sent_samples == report.samples - report.dropped + report.duplicates
    assert len(transport.messages) == report.messages


def test_runs_are_reproducible() -> None:
    a, report_a = simulate(1 / 30, 600.0, 20.0, faults=True, seed=5)
    b, report_b = simulate(1 / 30, 600.0, 20.0, faults=True, seed=5)
    c, _ = simulate(1 / 30, 600.0, 20.0, faults=True, seed=6)
    assert a.messages == b.messages and report_a == report_b
    assert a.messages != c.messages
