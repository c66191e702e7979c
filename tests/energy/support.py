"""A small mill with two days of known energy data, written as committed samples.

Site "mill" (Asia/Karachi): main incomer ``MAIN`` (100 kW, 150 kW in January's peak window
17:00-21:00, 200 kW from 17:00 to 17:30 on the first day), shed feeder ``SHED`` (60 kW), changeover panel ``PW`` (grid out 10:00-11:00 on the
first day, the generator carrying the plant from 10:01), loom ``L1`` (running 06:00-21:00,
100 picks in each running minute, stopped at 0.35 A otherwise) and compressor ``C1`` (the simulator's, with a 1.0 m³/min leak,
air demand 3 m³/min while the loom runs) and loom ``L2`` (short stops, 10 s samples). Site
"other" has one meter.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from karkhana.core.model import Sample
from karkhana.runtime import Runtime
from karkhana.sim.device import Environment, Weather, local_hour
from karkhana.sim.power import PowerSchedule
from karkhana.sim.utility import AirCompressor, AirLeak

PKT = ZoneInfo("Asia/Karachi")
S = 1000
M = 60_000
H = 3_600_000


def pkt(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> int:
    return int(datetime(y, mo, d, h, mi, tzinfo=PKT).timestamp() * 1000)


DAY1 = pkt(2026, 1, 5)
DAY3 = pkt(2026, 1, 7)
NOW = DAY3
OUTAGE = (pkt(2026, 1, 5, 10), pkt(2026, 1, 5, 11))
GENERATOR_FROM = pkt(2026, 1, 5, 10, 1)
LEAK_M3_MIN = 1.0
LOOM_STOPPED_A = 0.35
LOOM_RUN_A = 10.0
PICKS_PER_MIN = 100.0


SPIKE = (pkt(2026, 1, 5, 17), pkt(2026, 1, 5, 17, 30))
"""The main incomer draws 200 kW in this half hour (everything starting at once)."""


def main_kw(t: int) -> float:
    if SPIKE[0] <= t < SPIKE[1]:
        return 200.0
    return 150.0 if 17 <= local_hour(t) < 21 else 100.0


def loom_running(t: int) -> bool:
    return 6 <= local_hour(t) < 21


LOOM2 = (pkt(2026, 1, 5, 6), pkt(2026, 1, 5, 12))
"""Loom 2 reports every 10 s, 5 s past the ten, from 06:00 to 12:00 on the first day."""
LOOM2_STOPS = 36
LOOM2_STOP_MS = 40 * S


def loom2_stopped(t: int) -> bool:
    """Loom 2 stops every tenth minute from the reading 25 s past the minute to the one 65 s
    past it (40 s): the minute in which a stop ends holds only running readings."""
    return 20 * S <= (t - LOOM2[0]) % (10 * M) < 60 * S


ENERGY_TOML = """
[sites.mill]
tariff = "nepra_b2b_tou_example"
diesel_price_pkr_per_litre = 300.0
generator_kva = 250
"""


async def build(rt: Runtime) -> None:
    a = rt.assets
    for site in ("mill", "other"):
        await a.create_site(site, site.title())
        await a.create_area(f"{site}-area", site, "Area")
        await a.create_line(f"{site}-line", f"{site}-area", "Line")
    await a.create_machine("MAIN", "mill-line", "Main incomer", "energy_meter_3ph", "meter-main")
    await a.create_machine("SHED", "mill-line", "Shed 1 feeder", "energy_meter_3ph", "meter-shed")
    await a.create_machine("PW", "mill-line", "Changeover panel", "power_source", "panel")
    await a.create_machine("L1", "mill-line", "Loom 1", "power_loom", "loom-1")
    await a.create_machine("C1", "mill-line", "Compressor 1", "air_compressor", "comp-1")
    await a.create_machine("L2", "mill-line", "Loom 2", "power_loom", "loom-2")
    await a.create_machine("OM", "other-line", "Other meter", "energy_meter_3ph", "meter-o")
    await rt.production.refresh()


def samples(start: int = DAY1, end: int = DAY3) -> list[Sample]:
    """One sample a minute of the meters, panel and loom (until ``end`` inclusive), the
    compressor every 10 s."""
    out: list[Sample] = []
    main_e, shed_e = 1000.0, 500.0
    picks = 0.0
    for t in range(start, end + 1, M):
        out += [
            Sample("meter-main", "energy_kwh", t, round(main_e, 6)),
            Sample("meter-main", "power_kw", t, main_kw(t)),
            Sample("meter-main", "power_factor", t, 0.95),
            Sample("meter-shed", "energy_kwh", t, round(shed_e, 6)),
            Sample("meter-shed", "power_kw", t, 60.0),
            Sample("meter-shed", "power_factor", t, 0.85),
        ]
        main_e += main_kw(t) / 60.0
        shed_e += 60.0 / 60.0
        out_now = OUTAGE[0] <= t < OUTAGE[1]
        gen = GENERATOR_FROM <= t < OUTAGE[1]
        out += [
            Sample("panel", "grid_ok", t, not out_now),
            Sample("panel", "generator_running", t, gen),
            Sample("panel", "source", t, "generator" if gen else ("none" if out_now else "grid")),
        ]
        running = loom_running(t)
        picks += PICKS_PER_MIN if running else 0.0
        out += [
            Sample("loom-1", "pick_count", t, picks),
            Sample("loom-1", "state", t, "running" if running else "stopped"),
            Sample("loom-1", "motor_current_a", t, LOOM_RUN_A if running else LOOM_STOPPED_A),
        ]
    for t in range(LOOM2[0] + 5 * S, LOOM2[1], 10 * S):
        stopped = loom2_stopped(t)
        out += [
            Sample("loom-2", "state", t, "stopped" if stopped else "running"),
            Sample("loom-2", "motor_current_a", t, LOOM_STOPPED_A if stopped else LOOM_RUN_A),
        ]
    env = Environment(PowerSchedule(3, enabled=False), Weather(3))
    compressor = AirCompressor("comp-1", "C1", 3, start, leak=AirLeak(start, LEAK_M3_MIN))
    for t in range(start, end + 1, 10 * S):
        env.begin(t)
        if loom_running(t):
            env.air_demand_m3_min = 3.0
        for key, value in compressor.advance(t, env).items():
            out.append(Sample("comp-1", key, t, value))
    return out


async def load(rt: Runtime) -> None:
    await build(rt)
    data = samples()
    for i in range(0, len(data), 20_000):
        await rt.store.write(data[i : i + 20_000])
    for _ in range(3000):
        tracker = rt.production.trackers.get("L1")
        if tracker is not None and tracker.last_seen is not None and tracker.last_seen >= DAY3:
            break
        await asyncio.sleep(0.01)
    await rt.production.flush()


def write_config(data_dir: Path) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "energy.toml").write_text(ENERGY_TOML)
