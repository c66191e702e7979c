"""Rule engine throughput and alarm latency.

Throughput: 1,000 rules on 250 simulated devices (threshold with deadband, threshold held for
30 s, deviation from a rolling baseline, machine state in fault for 10 minutes), fed
``--samples`` committed samples in one Python thread (one core) through ``RuleSet.feed``, which
indexes rules by device key. Baseline in the same run: the naive loop that offers every sample
to every rule through the same ``evaluate``.

Latency: a real server runtime (SQLite with fsync per commit) with ``--machines`` looms, a
template rule and a webhook channel to a local HTTP receiver. Each loom posts a message with
nine signals ``--rate`` times a second, its bearing temperature alternating hot and cool, so
every other message raises a new alarm. Measured per alarm: from the commit of the triggering
sample (the store's commit hook) to the webhook's arrival at the receiver. Baseline in the same
run: a bare POST to the same receiver.

    python bench/rules.py [--samples 400000] [--seconds 20] [--machines 20] [--rate 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import fmt_int, free_port, machine_info, percentile, table

from karkhana.alarms.engine import BoundRule, RuleSet, RuleState, Source, bind, evaluate
from karkhana.alarms.model import parse_rule
from karkhana.core.model import Sample

T0 = 1_764_000_000_000
KEYS = ("temp", "current", "vib", "state")


def make_rules(n: int) -> list[BoundRule]:
    conditions: list[tuple[dict[str, Any], int]] = [
        ({"type": "threshold", "signal": "temp", "op": ">", "value": 80, "deadband": 2}, 0),
        ({"type": "threshold", "signal": "current", "op": ">", "value": 12}, 30),
        ({"type": "deviation", "signal": "vib", "window_s": 600, "sigma": 4}, 0),
        ({"type": "state", "in": ["fault"]}, 600),
    ]
    rules = []
    for i in range(n):
        condition, for_s = conditions[i % 4]
        device = f"dev-{i // 4}"
        body = {
            "name": f"r{i}",
            "machine_id": f"m-{i // 4}",
            "condition": condition,
            "for_s": for_s,
        }
        signals = {k: Source(device, k) for k in KEYS}
        bound = bind(parse_rule(body, f"r{i}"), f"m-{i // 4}", signals)
        assert bound is not None
        rules.append(bound)
    return rules


def make_samples(n: int, devices: int, seed: int = 1) -> list[Sample]:
    rnd = random.Random(seed)
    out: list[Sample] = []
    level = {d: 70.0 for d in range(devices)}
    tick = 0
    while len(out) < n:
        ts = T0 + tick * 1000
        for d in range(devices):
            level[d] += rnd.gauss(0, 1.5)
            level[d] = min(95.0, max(50.0, level[d]))
            dev = f"dev-{d}"
            out.append(Sample(dev, "temp", ts, round(level[d], 2)))
            out.append(Sample(dev, "current", ts, round(rnd.uniform(8, 13), 2)))
            out.append(Sample(dev, "vib", ts, round(rnd.gauss(2.0, 0.2), 3)))
            out.append(Sample(dev, "state", ts, "fault" if rnd.random() < 0.01 else "running"))
        tick += 1
    return out[:n]


def throughput(samples: int, rules_n: int, naive_samples: int) -> list[list[object]]:
    rules = make_rules(rules_n)
    data = make_samples(samples, rules_n // 4)
    rs = RuleSet(rules)
    started = time.perf_counter()
    events = rs.feed(data)
    took = time.perf_counter() - started
    rate = samples / took

    states: list[RuleState | None] = [None] * len(rules)
    naive_events = 0
    started = time.perf_counter()
    for sample in data[:naive_samples]:
        for i, rule in enumerate(rules):
            states[i], found = evaluate(rule, states[i], sample)
            naive_events += len(found)
    naive_took = time.perf_counter() - started
    naive_rate = naive_samples / naive_took
    return [
        [
            "indexed RuleSet.feed",
            fmt_int(samples),
            f"{took:.2f}",
            fmt_int(rate),
            fmt_int(len(events)),
        ],
        [
            "baseline: every rule per sample",
            fmt_int(naive_samples),
            f"{naive_took:.2f}",
            fmt_int(naive_rate),
            fmt_int(naive_events),
        ],
        ["ratio", "", "", f"{rate / naive_rate:.0f}x", ""],
    ]


class Receiver:
    def __init__(self) -> None:
        self.port = free_port()
        self.arrivals: list[tuple[float, dict[str, Any]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                outer.arrivals.append((time.perf_counter(), json.loads(body) if body else {}))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def latency(workdir: Path, seconds: float, machines: int, rate: float) -> list[list[object]]:
    import httpx

    from karkhana.core.config import Settings
    from karkhana.runtime import Runtime

    receiver = Receiver()
    settings = Settings(data_dir=workdir / "data", admin_password="bench-admin-password",
                        device_max_msgs_per_s=0)  # fmt: skip
    rt = Runtime(settings)
    await rt.start(mqtt=False)
    commits: dict[tuple[str, int], float] = {}

    def on_commit(samples: list[Sample]) -> None:
        now = time.perf_counter()
        for s in samples:
            if s.key == "bearing_temp_c":
                commits[(s.device_id, s.ts)] = now

    rt.store.on_commit(on_commit)
    try:
        await rt.assets.create_site("mill", "Mill")
        await rt.assets.create_area("weaving", "mill", "Weaving")
        await rt.assets.create_line("shed", "weaving", "Shed")
        tokens = {}
        for i in range(machines):
            _, tokens[f"loom-{i}"] = await rt.devices.create(f"loom-{i}", site_id="mill")
            await rt.assets.create_machine(f"L{i}", "shed", f"Loom {i}", "power_loom", f"loom-{i}")
        await rt.alarms.put_channel("hook", {"kind": "webhook", "url": receiver.url}, "bench")
        await rt.alarms.put_recipient(
            "desk", {"name": "Desk", "role": "operator", "channels": ["hook"]}, "bench"
        )
        await rt.alarms.create_rule(
            {"id": "hot", "name": "hot", "template": "power_loom", "repeat_window_s": 0,
             "condition": {"type": "threshold", "signal": "bearing_temp_c", "op": ">", "value": 80, "deadband": 2}},
            "bench", None,
        )  # fmt: skip

        async def loom(i: int) -> None:
            device = f"loom-{i}"
            n = 0
            next_at = time.perf_counter() + random.random() / rate
            end = time.perf_counter() + seconds
            while next_at < end:
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
                hot = n % 2 == 0
                values = {"bearing_temp_c": 90.0 if hot else 60.0, "picks_per_min": 600.0 + n % 7,
                          "pick_count": float(n), "motor_current_a": 9.5, "vibration_rms_mm_s": 2.1,
                          "state": "running", "fault": False, "warp_breaks": 0.0, "weft_breaks": 0.0}  # fmt: skip
                body = json.dumps({"ts": int(time.time() * 1000), "values": values}).encode()
                await rt.ingestor.ingest(device, body, token=tokens[device])
                n += 1
                next_at += 1 / rate

        started = time.perf_counter()
        await asyncio.gather(*(loom(i) for i in range(machines)))
        await asyncio.sleep(2)
        took = time.perf_counter() - started
        delays = []
        for arrived, payload in receiver.arrivals:
            alarm = payload["alarm"]
            device = f"loom-{alarm['machine_id'][1:]}"
            committed = commits.get((device, alarm["raised_ms"]))
            if committed is not None:
                delays.append((arrived - committed) * 1000)
        raised = len(await rt.alarms.list_alarms(None, state="all", limit=100_000))
        distinct = len({p["alarm"]["id"] for _, p in receiver.arrivals})
        print(f"{raised} alarms raised in {took:.1f} s; {len(receiver.arrivals)} webhooks received"
              f" for {distinct} distinct alarms")  # fmt: skip

        bare = []
        async with httpx.AsyncClient() as client:
            for _ in range(300):
                t = time.perf_counter()
                await client.post(receiver.url, json={"alarm": {}})
                bare.append((time.perf_counter() - t) * 1000)
        rows: list[list[object]] = [
            ["sample commit -> webhook arrival", fmt_int(len(delays)), f"{percentile(delays, 50):.1f}",
             f"{percentile(delays, 99):.1f}", f"{max(delays):.1f}"],
            ["baseline: bare POST to the receiver", "300", f"{percentile(bare, 50):.1f}",
             f"{percentile(bare, 99):.1f}", f"{max(bare):.1f}"],
        ]  # fmt: skip
        print(f"samples evaluated by the alarm service: {fmt_int(rt.alarms.samples_seen)}")
        return rows
    finally:
        await rt.stop()
        receiver.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=400_000)
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--naive-samples", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--machines", type=int, default=20)
    parser.add_argument("--rate", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="karkhana-bench-rules-") as tmp:
        workdir = Path(tmp)
        for key, value in machine_info(workdir).items():
            print(f"{key}: {value}")
        print()
        print(f"## Throughput: {args.rules} rules, one Python thread\n")
        print(table(["path", "samples", "seconds", "samples/s", "events"],
                    throughput(args.samples, args.rules, args.naive_samples)))  # fmt: skip
        print(f"\n## Alarm latency: {args.machines} looms x {args.rate:g} msg/s x 9 signals, "
              f"{args.seconds:g} s, fsync per commit\n")  # fmt: skip
        rows = asyncio.run(latency(workdir, args.seconds, args.machines, args.rate))
        print(table(["path", "alarms", "p50 ms", "p99 ms", "max ms"], rows))


if __name__ == "__main__":
    main()
