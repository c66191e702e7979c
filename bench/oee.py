"""OEE benchmark: one machine over 30 days, and the production overview of 100 machines.

1. OEE of one loom over 30 days (``ProductionService.oee``: stored state intervals and per-minute
   counts read from SQLite, then the pure calculation), against the naive way: read the raw state
   and counter samples of the same 30 days from the store, derive intervals and counts from them,
   then calculate. Both answers are checked to agree. Target: the service at most 200 ms.
2. ``GET /api/v1/production/overview`` for 100 looms in the middle of a shift (state, speed,
   this shift's output and OEE of each), through the FastAPI app (httpx ASGITransport: routing,
   auth and JSON, no sockets), against ``GET /api/v1/assets`` (the asset tree of the same
   machines) in the same process as a baseline.

The samples are written through ``rt.store.write`` and the service derives its tables from them
(``rebuild``), so the stored intervals are the ones the server would keep.

Run: ``.venv/bin/python bench/oee.py`` (about a minute; ``--days`` and ``--machines`` to vary).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, percentile, table

ADMIN_PASSWORD = "bench-admin-password"
START_MS = 1_780_426_800_000  # 2026-06-03 00:00 in Karachi (a Wednesday)
DAY_MS = 86_400_000
M = 60_000
TARGET_MS = 200.0


def loom_day(seed: int, start: int, end: int, step_ms: int) -> list[Any]:
    """A loom's samples: warp and weft breaks every ~20 minutes, a longer stop twice a day."""
    import random

    from karkhana.core.model import Sample

    rng = random.Random(seed)
    out: list[Sample] = []
    picks = 0.0
    t = start
    device = f"loom-{seed:03d}"
    state = "running"
    change = t + rng.randint(5, 40) * M
    while t < end:
        if t >= change:
            if state == "running":
                state = rng.choice(["stopped", "stopped", "stopped", "idle", "fault"])
                minutes = rng.uniform(0.5, 4) if state == "stopped" else rng.uniform(10, 60)
            else:
                state, minutes = "running", rng.uniform(5, 40)
            change = t + int(minutes * M)
        if state == "running":
            picks = (picks + 500 * step_ms / M) % 65536  # a 16-bit counter that wraps
        out += [
            Sample(device, "state", t, state),
            Sample(device, "pick_count", t, picks),
            Sample(device, "picks_per_min", t, 500.0 if state == "running" else 0.0),
        ]
        t += step_ms
    return out


async def build(workdir: Path, machines: int, days: int, step_ms: int) -> Any:
    from karkhana.core.clock import FakeClock
    from karkhana.core.config import Settings
    from karkhana.runtime import Runtime

    end = START_MS + days * DAY_MS + 11 * 3_600_000  # 11:00 on the last day, shift A
    settings = Settings(
        data_dir=workdir / "data",
        admin_password=ADMIN_PASSWORD,
        sqlite_synchronous="NORMAL",
        raw_retention_days=0,
    )
    rt = Runtime(settings, FakeClock(end))
    await rt.start(mqtt=False)
    a = rt.assets
    await a.create_site("mill", "Bench mill")
    await a.create_area("weaving", "mill", "Weaving")
    await a.create_line("shed", "weaving", "Shed")
    for i in range(machines):
        await a.create_machine(f"L{i:03d}", "shed", f"Loom {i}", "power_loom", f"loom-{i:03d}")
    await rt.production.refresh()
    for i in range(machines):
        # machine 0 has the whole range; the others the current shift (the overview's need)
        first = START_MS if i == 0 else end - 5 * 3_600_000
        samples = loom_day(i, first, end, step_ms)
        for n in range(0, len(samples), 30_000):
            await rt.store.write(samples[n : n + 30_000])
    await asyncio.sleep(1.0)
    for i in range(machines):
        await rt.production.rebuild(f"L{i:03d}", START_MS if i == 0 else end - 5 * 3_600_000)
    return rt, end


async def naive_oee(rt: Any, start: int, end: int) -> Any:
    """OEE from raw samples: every state and counter reading of the range, read and derived."""
    from karkhana.production import oee as oee_calc
    from karkhana.production.counts import bucket, merge_buckets
    from karkhana.production.state import derive

    m = rt.production.machine("L000")
    assert m.template is not None
    states = await rt.store.query("loom-000", "state", start, end)
    counter = await rt.store.query("loom-000", "pick_count", start, end)
    intervals = derive(
        m.template.state_rules,
        [(p.ts, "state", p.value) for p in states],
        rt.production.profiles.no_data_timeout_ms,
        end,
    )
    before = await rt.store.query("loom-000", "pick_count", start - 3_600_000, start)
    prev = float(before[-1].value) if before else None
    per_minute, _ = bucket([(p.ts, float(p.value)) for p in counter], prev)
    return oee_calc.compute(
        intervals,
        rt.production.planned("mill", start, end),
        merge_buckets(per_minute, {}),
        m.template.ideal_cycle_time_s,
        start,
        end,
        quality_measured=False,
        params=rt.production.params,
    )


async def timed(fn: Any, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--machines", type=int, default=100)
    parser.add_argument("--step-s", type=float, default=10.0, help="sample interval")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import httpx

    from karkhana.api.app import create_app

    workdir = Path(tempfile.mkdtemp(prefix="karkhana-bench-oee-"))
    try:
        t0 = time.perf_counter()
        rt, now = await build(workdir, args.machines, args.days, int(args.step_s * 1000))
        setup_s = time.perf_counter() - t0
        service = rt.production
        machine = service.machine("L000")
        start = now - args.days * DAY_MS
        result = await service.oee([machine], start, now)
        naive = await naive_oee(rt, start, now)
        assert result.run_ms == naive.run_ms, (result.run_ms, naive.run_ms)
        assert result.total_count == naive.total_count, (result.total_count, naive.total_count)
        intervals = len((await service.intervals(["L000"], start, now))["L000"])
        fast = await timed(lambda: service.oee([machine], start, now), args.repeat)
        slow = await timed(lambda: naive_oee(rt, start, now), max(3, args.repeat // 4))

        transport = httpx.ASGITransport(app=create_app(rt))
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as api:
            login = await api.post(
                "/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
            )
            api.headers["Authorization"] = f"Bearer {login.json()['token']}"
            body = (await api.get("/api/v1/production/overview")).json()
            assert len(body["machines"]) == args.machines
            assert all(m["oee"] is not None for m in body["machines"])

            async def overview() -> None:
                r = await api.get("/api/v1/production/overview")
                assert r.status_code == 200

            async def assets() -> None:
                r = await api.get("/api/v1/assets")
                assert r.status_code == 200

            over = await timed(overview, args.repeat)
            tree = await timed(assets, args.repeat)
        await rt.stop()

        figures = {
            "days": args.days,
            "intervals": intervals,
            "samples_per_key": args.days * DAY_MS // int(args.step_s * 1000),
            "oee_p50_ms": statistics.median(fast),
            "oee_p95_ms": percentile(fast, 95),
            "naive_p50_ms": statistics.median(slow),
            "overview_machines": args.machines,
            "overview_p50_ms": statistics.median(over),
            "overview_p95_ms": percentile(over, 95),
            "assets_p50_ms": statistics.median(tree),
            "setup_s": setup_s,
            "availability": result.availability,
            "oee": result.oee,
        }
        if args.json:
            print(json.dumps(figures, indent=2))
            return
        info = machine_info(workdir)
        print(table(["fact", "value"], list(info.items())))
        print()
        print(
            table(
                ["measure", "p50 ms", "p95 ms", "note"],
                [
                    (
                        f"OEE, 1 machine, {args.days} days (service)",
                        f"{statistics.median(fast):.1f}",
                        f"{percentile(fast, 95):.1f}",
                        f"{intervals} intervals; target <= {TARGET_MS:.0f} ms",
                    ),
                    (
                        "  naive: from raw samples",
                        f"{statistics.median(slow):.1f}",
                        f"{percentile(slow, 95):.1f}",
                        f"{figures['samples_per_key']} samples per key",
                    ),
                    (
                        f"GET /production/overview, {args.machines} machines",
                        f"{statistics.median(over):.1f}",
                        f"{percentile(over, 95):.1f}",
                        "state, speed, shift output and OEE of each",
                    ),
                    (
                        "  baseline: GET /assets (same machines)",
                        f"{statistics.median(tree):.1f}",
                        f"{percentile(tree, 95):.1f}",
                        "",
                    ),
                ],
            )
        )
        ok = statistics.median(fast) <= TARGET_MS
        print(
            f"\nOEE over {args.days} days: {'meets' if ok else 'MISSES'} the {TARGET_MS:.0f} ms target"
            f" ({statistics.median(slow) / statistics.median(fast):.0f}x faster than naive)"
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
