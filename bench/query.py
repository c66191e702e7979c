"""Query benchmark: a 1,000-bucket chart over a one-year, 1 Hz signal.

The signal (31.5 million samples for ``--days 365``) is written through ``rt.store.write``, so
the raw table and the 1-minute and 1-hour rollups are built by the store's own write path. The
database is cached in ``--workdir`` and reused while ``--days`` and ``--interval-ms`` match.

Timed, ``--repeat`` times each, on a warm process:
  store      ``rt.store.query(start, end, bucket=nice_bucket(span, 1000), agg=avg)``
  store-edge the same with start and end off the minute grid (rollups + raw edges)
  http       ``GET /api/v1/telemetry/{device}/{key}?start&end&points=1000`` through the FastAPI
             app (httpx ASGITransport: routing, auth, validation and JSON, no sockets)
  baseline   plain SQL ``GROUP BY ts - ts % bucket`` over the raw samples of the same database

Run: ``.venv/bin/python bench/query.py`` (the first run fills the database: minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import shutil
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fmt_int, machine_info, percentile, table

DEVICE = "bench-q"
KEY = "temperature"
START_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z
DAY_MS = 86_400_000
ADMIN_PASSWORD = "bench-admin-password"
TARGET_MS = 200.0


def settings_for(workdir: Path, sync: str) -> Any:
    from karkhana.core.config import Settings

    return Settings(
        data_dir=workdir / "data",
        admin_password=ADMIN_PASSWORD,
        sqlite_synchronous=sync,
        raw_retention_days=0,  # keep everything: the data lie in the past
        rollup_1m_retention_days=0,
        rollup_1h_retention_days=0,
    )


def day_samples(day: int, interval_ms: int, rnd: random.Random) -> list[Any]:
    """One day of a plausible temperature: a daily cycle, a slow drift and noise."""
    from karkhana.core.model import Sample

    t0 = START_MS + day * DAY_MS
    out = []
    two_pi_day = 2 * math.pi / DAY_MS
    drift = 3 * math.sin(2 * math.pi * day / 365)
    for ts in range(t0, t0 + DAY_MS, interval_ms):
        value = 40 + drift + 8 * math.sin(two_pi_day * (ts - t0)) + rnd.gauss(0, 0.5)
        out.append(Sample(DEVICE, KEY, ts, round(value, 3)))
    return out


async def fill(rt: Any, days: int, interval_ms: int, in_flight: int = 3) -> float:
    """Write ``days`` days through the store, a day per write, ``in_flight`` writes queued."""
    rnd = random.Random(42)
    pending: set[asyncio.Task[Any]] = set()
    t = time.perf_counter()
    last_report = t
    for day in range(days):
        samples = day_samples(day, interval_ms, rnd)
        pending.add(asyncio.create_task(rt.store.write(samples)))
        if len(pending) >= in_flight:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        now = time.perf_counter()
        if now - last_report > 10:
            rate = (day + 1) * DAY_MS / interval_ms / (now - t)
            print(f"  filled {day + 1}/{days} days, {rate:,.0f} samples/s", flush=True)
            last_report = now
    for task in pending:
        await task
    return time.perf_counter() - t


async def timed(fn: Callable[[], Awaitable[Any]], repeat: int) -> tuple[list[float], Any]:
    """Milliseconds of each of ``repeat`` calls, and the last result."""
    times = []
    result = None
    for _ in range(repeat):
        t = time.perf_counter()
        result = await fn()
        times.append((time.perf_counter() - t) * 1000)
    return times, result


def baseline_query(db: Path, start: int, end: int, bucket: int) -> list[tuple[int, float]]:
    """The same averages straight from the raw samples, on a fresh connection."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        (sid,) = conn.execute(
            "SELECT id FROM series WHERE device_id = ? AND key = ?", (DEVICE, KEY)
        ).fetchone()
        rows = conn.execute(
            "SELECT ts - ts % ? AS ob, avg(value) FROM samples"
            " WHERE series_id = ? AND ts >= ? AND ts < ? GROUP BY ob ORDER BY ob",
            (bucket, sid, start, end),
        ).fetchall()
    finally:
        conn.close()
    return [(int(b), float(v)) for b, v in rows]


def _stats(times: list[float]) -> tuple[str, str, str]:
    return f"{percentile(times, 50):.1f}", f"{percentile(times, 95):.1f}", f"{times[0]:.1f}"


def cached(workdir: Path, want: dict[str, int]) -> dict[str, Any]:
    """The cache's description when it holds a complete database as wanted, else {} (and the
    folder emptied for a new fill)."""
    meta_path = workdir / "meta.json"
    meta: dict[str, Any] = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    if not meta.get("complete") or any(meta.get(k) != v for k, v in want.items()):
        shutil.rmtree(workdir / "data", ignore_errors=True)
        meta_path.unlink(missing_ok=True)
        meta = {}
    workdir.mkdir(parents=True, exist_ok=True)
    return meta


def duration(ms: int) -> str:
    for unit, size in (("d", DAY_MS), ("h", 3_600_000), ("min", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size} {unit}"
    return f"{ms} ms"


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file())


async def run(args: argparse.Namespace) -> int:
    import httpx

    from karkhana.api.app import create_app
    from karkhana.core.timeutil import nice_bucket
    from karkhana.runtime import Runtime

    workdir: Path = args.workdir
    meta_path = workdir / "meta.json"
    want = {"days": args.days, "interval_ms": args.interval_ms, "start_ms": START_MS}
    meta = cached(workdir, want)
    facts = machine_info(workdir)
    samples = args.days * DAY_MS // args.interval_ms

    rt = Runtime(settings_for(workdir, args.sync))
    await rt.start(mqtt=False)
    try:
        if not meta:
            print(
                f"filling {samples:,} samples ({args.days} days at {args.interval_ms} ms)"
                f" through rt.store.write, synchronous={args.sync} ...",
                flush=True,
            )
            seconds = await fill(rt, args.days, args.interval_ms)
            await rt.devices.create(DEVICE)
            meta = {
                **want,
                "complete": True,
                "fill_seconds": round(seconds, 1),
                "fill_rate": round(samples / seconds),
                "fill_sync": args.sync,
            }
            await asyncio.to_thread(meta_path.write_text, json.dumps(meta, indent=1))
            print(f"filled in {seconds:.0f} s ({samples / seconds:,.0f} samples/s)")
        else:
            print(f"reusing the database in {workdir} (filled in {meta['fill_seconds']} s)")
        db_bytes = await asyncio.to_thread(folder_bytes, workdir / "data")

        start, end = START_MS, START_MS + args.days * DAY_MS
        bucket = nice_bucket(end - start, args.points)
        edge_start, edge_end = start + 37 * 60_000 + 13_500, end - 11 * 60_000 - 7_250
        store_times, points = await timed(
            lambda: rt.store.query(DEVICE, KEY, start, end, bucket), args.repeat
        )
        edge_times, edge_points = await timed(
            lambda: rt.store.query(DEVICE, KEY, edge_start, edge_end, bucket), args.repeat
        )

        app = create_app(rt)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            login = await client.post(
                "/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
            )
            login.raise_for_status()
            headers = {"Authorization": f"Bearer {login.json()['token']}"}
            url = f"/api/v1/telemetry/{DEVICE}/{KEY}"
            params = {"start": str(start), "end": str(end), "points": str(args.points)}

            async def http_get() -> Any:
                r = await client.get(url, params=params, headers=headers)
                r.raise_for_status()
                return r.json()

            http_times, body = await timed(http_get, args.repeat)

        db = rt.settings.db_path
        base_times = []
        expected: list[tuple[int, float]] = []
        for _ in range(args.baseline_repeat):
            t = time.perf_counter()
            expected = await asyncio.to_thread(baseline_query, db, start, end, bucket)
            base_times.append((time.perf_counter() - t) * 1000)
    finally:
        await rt.stop()

    got = [(p.ts, float(p.value)) for p in points]
    diff = max((abs(a[1] - b[1]) for a, b in zip(got, expected, strict=False)), default=math.nan)
    same_buckets = [p[0] for p in got] == [p[0] for p in expected]
    p95 = percentile(store_times, 95)
    rows: list[list[object]] = [
        [
            "rt.store.query, whole days",
            len(points),
            *_stats(store_times),
            f"≤ {TARGET_MS:.0f} ms",
            "PASS" if p95 <= TARGET_MS else "FAIL",
        ],
        [
            "rt.store.query, start/end off the minute grid",
            len(edge_points),
            *_stats(edge_times),
            f"≤ {TARGET_MS:.0f} ms",
            "PASS" if percentile(edge_times, 95) <= TARGET_MS else "FAIL",
        ],
        [
            "HTTP GET ?points=1000 (ASGI, JSON)",
            len(body["points"]),
            *_stats(http_times),
            f"≤ {TARGET_MS:.0f} ms",
            "PASS" if percentile(http_times, 95) <= TARGET_MS else "FAIL",
        ],
        [
            "baseline: SQL GROUP BY over raw samples",
            len(expected),
            *_stats(base_times),
            "-",
            "-",
        ],
    ]
    print()
    print("## Machine\n")
    print("\n".join(f"- {k}: {v}" for k, v in facts.items()))
    print(
        f"- data: {samples:,} samples ({args.days} days at {args.interval_ms} ms), database"
        f" {db_bytes / 1e9:.2f} GB, filled through rt.store.write in {meta['fill_seconds']} s"
        f" ({fmt_int(meta['fill_rate'])} samples/s, synchronous={meta['fill_sync']})"
    )
    print(
        f"- query: {duration(bucket)} buckets (nice_bucket for {args.points} points), avg;"
        f" {args.repeat} runs each, baseline {args.baseline_repeat} runs; first = first call"
    )
    print()
    print(table(["query", "points", "p50 ms", "p95 ms", "first ms", "target", "result"], rows))
    print()
    print(
        f"store result vs raw GROUP BY: same buckets {same_buckets}, largest difference of"
        f" the averages {diff:.2e}; speed-up over the raw scan"
        f" {percentile(base_times, 50) / percentile(store_times, 50):,.0f}x"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=365, help="length of the signal")
    parser.add_argument("--interval-ms", type=int, default=1000, help="sample spacing")
    parser.add_argument("--points", type=int, default=1000, help="buckets wanted in the chart")
    parser.add_argument("--repeat", type=int, default=20, help="timed queries of each kind")
    parser.add_argument("--baseline-repeat", type=int, default=3, help="timed raw scans")
    parser.add_argument(
        "--sync", default="NORMAL", choices=("NORMAL", "FULL"), help="synchronous for the fill"
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path("/tmp/karkhana-bench-query"),
        help="folder of the cached database",
    )
    args = parser.parse_args(argv)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
