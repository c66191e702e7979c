"""A small weaving shed with a known day, written as committed samples."""

from __future__ import annotations

import asyncio
from datetime import datetime
from zoneinfo import ZoneInfo

from karkhana.core.model import Sample
from karkhana.runtime import Runtime

PKT = ZoneInfo("Asia/Karachi")
S = 1000
M = 60_000


def pkt(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> int:
    return int(datetime(y, mo, d, h, mi, tzinfo=PKT).timestamp() * 1000)


SHIFT_A = pkt(2026, 6, 3, 6)  # a Wednesday; shift A runs 06:00-14:00, tea break 10:00-10:30
NOW = pkt(2026, 6, 3, 9)
OUTAGE = (pkt(2026, 6, 3, 7), pkt(2026, 6, 3, 7, 20))
MICRO = (pkt(2026, 6, 3, 8), pkt(2026, 6, 3, 8, 1))
FAULT = (pkt(2026, 6, 3, 8, 30), pkt(2026, 6, 3, 8, 40))
STEP = 30 * S
PICKS_PER_STEP = 250


def loom_state(t: int) -> str:
    if OUTAGE[0] <= t < OUTAGE[1] or MICRO[0] <= t < MICRO[1]:
        return "stopped"
    if FAULT[0] <= t < FAULT[1]:
        return "fault"
    return "running"


async def build_mill(rt: Runtime) -> None:
    """Site mill (loom L1 and the changeover panel) and site other (loom L9)."""
    a = rt.assets
    for site in ("mill", "other"):
        await a.create_site(site, site.title())
        await a.create_area(f"{site}-weaving", site, "Weaving")
        await a.create_line(f"{site}-shed", f"{site}-weaving", "Shed")
    await a.create_machine("L1", "mill-shed", "Loom 1", "power_loom", "loom-1")
    await a.create_machine("PW", "mill-shed", "Changeover panel", "power_source", "panel")
    await a.create_machine("L9", "other-shed", "Loom 9", "power_loom", "loom-9")
    await rt.production.refresh()


def day_samples(end: int = NOW) -> tuple[list[Sample], int]:
    """Samples of shift A until ``end``, and the picks the service should count."""
    samples: list[Sample] = []
    picks = 0.0
    counted = 0.0
    first = True
    for t in range(SHIFT_A, end, STEP):
        state = loom_state(t)
        if state == "running":
            picks += PICKS_PER_STEP
            counted += 0 if first else PICKS_PER_STEP
        first = False
        samples += [
            Sample("loom-1", "state", t, state),
            Sample("loom-1", "fault", t, state == "fault"),
            Sample("loom-1", "pick_count", t, picks),
            Sample("loom-1", "picks_per_min", t, 500.0 if state == "running" else 0.0),
            Sample("panel", "source", t, "none" if OUTAGE[0] <= t < OUTAGE[1] else "grid"),
            Sample("loom-9", "state", t, "idle"),
        ]
    return samples, counted


async def settle(rt: Runtime, machine: str, ts: int) -> None:
    """Wait until the service has seen ``ts`` from ``machine``, then write what it holds."""
    for _ in range(2000):  # up to 20 s on a busy machine
        tracker = rt.production.trackers.get(machine)
        if tracker is not None and tracker.last_seen is not None and tracker.last_seen >= ts:
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError(f"the production service never saw {machine} at {ts}")
    await rt.production.flush()
