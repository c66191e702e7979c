"""Energy benchmark: a month of 1-second data for 50 meters, billed through the energy service.

What is written: for each of 50 three-phase meters, 30 days (plus one hour) of readings at one
per second of ``energy_kwh`` (the counter), ``power_kw`` and ``power_factor``: 50 x 3 x 2.6 M =
389 M samples. Writing that many raw samples through the store would take hours here, so the
benchmark writes what the store would have made of them, the 1-minute and 1-hour rollup rows
(count, sum, min, max, first and last with their times), straight into the rollup tables, with
no raw samples. Each meter's power is held for a minute at a time, so that the rollups can be
computed exactly in closed form. Before the month is written, one meter-hour of the same readings
is written raw through ``store.write`` into a separate database and its rollup rows are checked
to equal the generated ones: the generator makes what the store makes.

What is timed (best of ``--runs``, ``OMP_NUM_THREADS=1``):

1. the site's bill through ``EnergyService.bill``: the main meter's energy per 30 minutes from the
   1-minute rollups (first counter reading of each half hour), its power factor, and
   ``estimate_bill``;
2. all 50 meters billed through the service: ``meter_grid`` per meter (30-minute and hourly
   buckets) and ``estimate_bills`` on the month;
3. the baseline in the same run: ``estimate_bills`` alone on the same 50 series already in
   memory (the pure part; the difference is reading the store).

Run: ``OMP_NUM_THREADS=1 .venv/bin/python bench/energy.py`` (about a minute).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import machine_info, table

START_MS = 1_767_207_600_000  # 2026-01-01 00:00 in Karachi
DAY_MS = 86_400_000
H = 3_600_000
M = 60_000
TARGET_S = 2.0
KEYS = ("energy_kwh", "power_kw", "power_factor")


def minute_profile(meter: int, minutes: int) -> tuple[np.ndarray, np.ndarray]:
    """kW and power factor of one meter per minute (held for the minute)."""
    rng = np.random.default_rng(meter)
    t = np.arange(minutes)
    hour = (t // 60 + 5) % 24  # local hour in Karachi
    base = rng.uniform(20.0, 200.0)
    kw = base * (0.6 + 0.4 * ((hour >= 7) & (hour < 22))) * rng.normal(1.0, 0.05, minutes)
    pf = np.clip(rng.normal(0.9, 0.02, minutes), 0.7, 0.99)
    return np.maximum(kw, 0.0), pf


def minute_rollups(
    start_ms: int, kw: np.ndarray, pf: np.ndarray, energy0: float
) -> dict[str, np.ndarray]:
    """The 1-minute rollup columns each key would get from one reading a second: count, sum,
    min, max, first_ts, first, last_ts, last (rows per minute)."""
    n = kw.size
    buckets = start_ms + M * np.arange(n, dtype=np.int64)
    step = kw / 3600.0  # kWh per second
    first = energy0 + np.concatenate(([0.0], np.cumsum(step * 60.0)[:-1]))
    seconds = np.arange(60, dtype=np.float64)
    out: dict[str, np.ndarray] = {"bucket": buckets}
    out["energy_kwh"] = np.column_stack(
        (
            np.full(n, 60),
            60.0 * first + step * seconds.sum(),
            first,
            first + 59 * step,
            buckets,
            first,
            buckets + 59_000,
            first + 59 * step,
        )
    )
    for key, v in (("power_kw", kw), ("power_factor", pf)):
        out[key] = np.column_stack(
            (np.full(n, 60), 60.0 * v, v, v, buckets, v, buckets + 59_000, v)
        )
    return out


def hour_rollups(minute: dict[str, np.ndarray], key: str) -> tuple[np.ndarray, np.ndarray]:
    rows = minute[key].reshape(-1, 60, 8)
    buckets = minute["bucket"].reshape(-1, 60)[:, 0]
    agg = np.column_stack(
        (
            rows[:, :, 0].sum(axis=1),
            rows[:, :, 1].sum(axis=1),
            rows[:, :, 2].min(axis=1),
            rows[:, :, 3].max(axis=1),
            rows[:, 0, 4],
            rows[:, 0, 5],
            rows[:, -1, 6],
            rows[:, -1, 7],
        )
    )
    return buckets, agg


def _insert(
    conn: sqlite3.Connection, table_name: str, sid: int, buckets: np.ndarray, rows: np.ndarray
) -> None:
    conn.executemany(
        f"INSERT INTO {table_name} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            (
                sid,
                int(b),
                int(r[0]),
                float(r[1]),
                float(r[2]),
                float(r[3]),
                int(r[4]),
                float(r[5]),
                int(r[6]),
                float(r[7]),
            )
            for b, r in zip(buckets, rows, strict=True)
        ),
    )


async def check_generator(tmp: Path) -> int:
    """One meter-hour written raw through the store: its rollups equal the generated ones."""
    from karkhana.core.clock import FakeClock
    from karkhana.core.config import Settings
    from karkhana.core.model import Sample
    from karkhana.runtime import Runtime

    kw, pf = minute_profile(7, 60)
    rt = Runtime(
        Settings(data_dir=tmp / "check", admin_password="x" * 16, sqlite_synchronous="NORMAL"),
        FakeClock(START_MS + H),
    )
    await rt.start(mqtt=False)
    try:
        samples = []
        e = 1000.0
        for i in range(3600):
            t = START_MS + i * 1000
            p = float(kw[i // 60])
            samples += [
                Sample("chk", "energy_kwh", t, e),
                Sample("chk", "power_kw", t, p),
                Sample("chk", "power_factor", t, float(pf[i // 60])),
            ]
            e += p / 3600.0
        await rt.store.write(samples)
        gen = minute_rollups(START_MS, kw, pf, 1000.0)

        def read(conn: sqlite3.Connection) -> dict[str, list[tuple[Any, ...]]]:
            out = {}
            for key in KEYS:
                out[key] = conn.execute(
                    "SELECT count, sum, min, max, first_ts, first, last_ts, last FROM rollup_1m"
                    " JOIN series ON series.id = series_id WHERE key = ? ORDER BY bucket",
                    (key,),
                ).fetchall()
                out[key + "_h"] = conn.execute(
                    "SELECT count, sum, min, max, first_ts, first, last_ts, last FROM rollup_1h"
                    " JOIN series ON series.id = series_id WHERE key = ? ORDER BY bucket",
                    (key,),
                ).fetchall()
            return out

        stored = await rt.db.execute_read_fn(read)
        for key in KEYS:
            np.testing.assert_allclose(np.array(stored[key], float), gen[key], rtol=1e-9)
            _, hour = hour_rollups(gen, key)
            np.testing.assert_allclose(np.array(stored[key + "_h"], float), hour, rtol=1e-9)
        return len(samples)
    finally:
        await rt.stop()


async def timed(fn: Callable[[], Coroutine[Any, Any, Any]], runs: int) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(runs):
        t0 = time.perf_counter()
        result = await fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


async def main(meters: int, days: int, runs: int) -> None:
    from karkhana.core.clock import FakeClock
    from karkhana.core.config import Settings
    from karkhana.energy.billing import estimate_bills
    from karkhana.runtime import Runtime

    tmp = Path(tempfile.mkdtemp(prefix="karkhana-bench-energy-"))
    try:
        checked = await check_generator(tmp)
        end = START_MS + days * DAY_MS
        minutes = (end - START_MS) // M + 60
        rt = Runtime(
            Settings(data_dir=tmp / "data", admin_password="x" * 16, sqlite_synchronous="NORMAL"),
            FakeClock(end + 2 * H),
        )
        await rt.start(mqtt=False)
        try:
            a = rt.assets
            await a.create_site("mill", "Mill")
            await a.create_area("area", "mill", "Area")
            await a.create_line("line", "area", "Line")
            for i in range(meters):
                name = "Main incomer" if i == 0 else f"Feeder {i:02d}"
                await a.create_machine(
                    f"m{i:02d}", "line", name, "energy_meter_3ph", f"meter-{i:02d}"
                )
            t0 = time.perf_counter()
            for i in range(meters):
                kw, pf = minute_profile(i, int(minutes))
                rolls = minute_rollups(START_MS, kw, pf, 10_000.0 * (i + 1))

                def write(
                    conn: sqlite3.Connection, i: int = i, rolls: dict[str, Any] = rolls
                ) -> None:
                    for key in KEYS:
                        cur = conn.execute(
                            "INSERT INTO series (device_id, key) VALUES (?, ?)",
                            (f"meter-{i:02d}", key),
                        )
                        sid = int(cur.lastrowid or 0)
                        _insert(conn, "rollup_1m", sid, rolls["bucket"], rolls[key])
                        hb, hr = hour_rollups(rolls, key)
                        _insert(conn, "rollup_1h", sid, hb, hr)

                await rt.db.execute_write_fn(write)
            write_s = time.perf_counter() - t0
            energy = rt.energy
            site = await energy.site("mill")
            assert site.meters[0].role == "main"
            label = "2026-01"

            async def site_bill() -> Any:
                return await energy.bill(site, label)

            async def all_bills(step: int) -> Any:
                _, start, stop = energy.month_range(site, label)
                grids = {}
                for role in site.meters:
                    m = site.machines[role.machine_id]
                    grids[m.id] = (await energy.meter_grid(m, start, stop, step)).series()
                return estimate_bills(site.tariff, grids, start, stop, site.tz), grids

            bill_s, (_, bill) = await timed(site_bill, runs)
            half_s, (bills, grids) = await timed(lambda: all_bills(30 * M), runs)
            hour_s, (bills_h, _) = await timed(lambda: all_bills(H), runs)
            _, start, stop = energy.month_range(site, label)
            pure_t = float("inf")
            for _ in range(runs):
                t = time.perf_counter()
                estimate_bills(site.tariff, grids, start, stop, site.tz)
                pure_t = min(pure_t, time.perf_counter() - t)
        finally:
            await rt.stop()
        # the last half hour written has no following reading to close it: it stays unbilled
        expected = sum(minute_profile(0, int(minutes))[0][: days * 1440 + 30]) / 60.0
        for k, v in machine_info(tmp).items():
            print(f"{k}: {v}")
        print(
            f"generator checked against the store: {checked:,} raw samples of one meter-hour give"
            " the same 1-minute and 1-hour rollups"
        )
        print(
            f"{meters} meters x {days} days at 1 s = "
            f"{meters * len(KEYS) * days * 86_400:,} readings as rollups; written in {write_s:.1f} s"
        )
        print(
            f"main meter: {bill.kwh:,.0f} kWh billed (generated {expected:,.0f}), "
            f"MDI {bill.mdi_kw:.1f} kW, total {bill.total:,.0f} PKR, coverage {bill.coverage:.4f}"
        )
        rows = [
            ["site bill (main meter, 30-min buckets)", f"{bill_s * 1000:.0f} ms"],
            [f"{meters} meters billed, 30-min buckets", f"{half_s * 1000:.0f} ms"],
            [f"{meters} meters billed, hourly buckets", f"{hour_s * 1000:.0f} ms"],
            [
                f"baseline: estimate_bills alone, {meters} meters in memory",
                f"{pure_t * 1000:.0f} ms",
            ],
        ]
        print(table([f"what (best of {runs})", "time"], rows))
        for what, took in (("hourly", hour_s), ("30-minute", half_s)):
            verdict = "met" if took <= TARGET_S else "missed"
            print(f"target <= {TARGET_S:.0f} s for {meters} meters, {what} buckets: {verdict}")
        assert len(bills) == len(bills_h) == meters
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--meters", type=int, default=50)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--runs", type=int, default=3)
    a = p.parse_args()
    asyncio.run(main(a.meters, a.days, a.runs))
