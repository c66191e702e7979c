"""Edge benchmark: bytes on the wire, backlog drain rate, and the agent's memory and CPU.

Signals come from the simulator sampled at 1 Hz: a textile mill with 16 looms (201 signals) for
the wire and drain figures, a food plant with 30 lines (201 signals) for the agent.

wire     bytes a point of the backlog batches (``--batch-points``) and of live batches (1 s of
         data), against JSON: the messages devices send (one per device and second) and the
         same backlog batches as zlib-compressed JSON
drain    a real server process (fsync FULL) and an in-process forwarder draining a buffer of
         ``--backlog-min`` minutes; baseline in the same run: the same samples re-sent as JSON
         device messages to the server's HTTP telemetry route, one request after another
agent    ``karkhana edge`` as a process, fed by the simulator at 1 Hz and forwarding to the
         server: resident memory and CPU (share of one core) over ``--agent-s`` seconds

Run: ``.venv/bin/python bench/edge.py`` (about 3 minutes); ``--help`` lists the options.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from collections.abc import Sequence
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fmt_int, free_port, machine_info, port_open, table

from karkhana.core.model import Sample
from karkhana.edge.buffer import Buffer
from karkhana.edge.clock import EdgeClock
from karkhana.edge.encoding import encode
from karkhana.edge.forwarder import Forwarder, ForwarderConfig
from karkhana.ingest.codec import encode as json_message
from karkhana.sim.profiles import build_plant

PASSWORD = "bench-admin-password"
PROFILE, DEVICES = "textile", 16
AGENT_PROFILE, AGENT_DEVICES = "food", 30
"""The agent runs its own plant (201 signals too): the drain's devices belong to another gateway."""
HEADER_BYTES = 400
"""HTTP request and answer overhead a batch (the forwarder's own estimate), in the wire figure."""


def plant_samples(seconds: int, start_ms: int) -> list[list[Sample]]:
    """One list of samples a second, as the edge would buffer them."""
    plant = build_plant(PROFILE, DEVICES, 42, start_ms)
    out = []
    for s in range(1, seconds + 1):
        t = start_ms + s * 1000
        out.append(
            [Sample(d, k, t, v) for d, values in plant.step(t).items() for k, v in values.items()]
        )
    return out


def wire(seconds: list[list[Sample]], batch_points: int) -> tuple[list[list[object]], int]:
    flat = [s for second in seconds for s in second]
    batches = [flat[i : i + batch_points] for i in range(0, len(flat), batch_points)]
    edge = sum(len(encode(uuid.uuid4(), b)) + HEADER_BYTES for b in batches) / len(flat)
    live = sum(len(encode(uuid.uuid4(), sec)) + HEADER_BYTES for sec in seconds) / len(flat)
    messages = 0
    for second in seconds:
        by_device: dict[str, list[Sample]] = {}
        for s in second:
            by_device.setdefault(s.device_id, []).append(s)
        messages += sum(len(json_message(v)) for v in by_device.values())
    single = sum(len(json_message([s])) for s in flat[:20_000]) / min(len(flat), 20_000)
    jz = sum(
        len(
            zlib.compress(
                json.dumps(
                    [[s.device_id, s.key, s.ts, s.value] for s in b], separators=(",", ":")
                ).encode()
            )
        )
        for b in batches
    ) / len(flat)
    rows: list[list[object]] = [
        ["karkhana batch (backlog)", f"{edge:.2f}", "1.0x"],
        ["karkhana batch (live, 1 s)", f"{live:.2f}", f"{live / edge:.1f}x"],
        ["JSON zlib (same batches)", f"{jz:.2f}", f"{jz / edge:.1f}x"],
        [
            "JSON device messages",
            f"{messages / len(flat):.2f}",
            f"{messages / len(flat) / edge:.0f}x",
        ],
        ["JSON, one value a message", f"{single:.2f}", f"{single / edge:.0f}x"],
    ]
    return rows, len(flat)


class Server:
    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "KARKHANA_DATA_DIR": str(root / "server"),
            "KARKHANA_HTTP_HOST": "127.0.0.1",
            "KARKHANA_HTTP_PORT": str(self.port),
            "KARKHANA_MQTT_HOST": "127.0.0.1",
            "KARKHANA_MQTT_PORT": str(free_port()),
            "KARKHANA_ADMIN_PASSWORD": PASSWORD,
            "KARKHANA_TLS": "off",
            "KARKHANA_DEVICE_MAX_MSGS_PER_S": "0",
        }
        self.log = (root / "server.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "karkhana", "serve"], env=env, stdout=self.log, stderr=self.log
        )
        deadline = time.monotonic() + 60
        while not port_open("127.0.0.1", self.port):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"the server did not start; see {root / 'server.log'}")
            time.sleep(0.1)
        r = httpx.post(
            f"{self.url}/api/v1/auth/login", json={"username": "admin", "password": PASSWORD}
        )
        self.admin = {"Authorization": f"Bearer {r.json()['token']}"}

    def device(self, device_id: str, parent: str | None = None) -> str:
        r = httpx.post(
            f"{self.url}/api/v1/devices",
            json={"id": device_id, "parent_id": parent},
            headers=self.admin,
        )
        r.raise_for_status()
        return str(r.json()["token"])

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


async def drain(server: Server, root: Path, seconds: list[list[Sample]], batch: int) -> float:
    token = server.device("gw-bench")
    buffer = Buffer.open(root / "edge" / "buffer.db", cap_points=10**8)
    for i in range(0, len(seconds), 60):
        await buffer.put([s for sec in seconds[i : i + 60] for s in sec])
    points = buffer.stats().points
    clock = EdgeClock(buffer.session)
    forwarder = Forwarder(
        buffer, clock, ForwarderConfig(server.url, "gw-bench", token, batch_points=batch)
    )
    await forwarder.sync()
    started = time.perf_counter()
    while buffer.stats().points:
        await forwarder.step()
    elapsed = time.perf_counter() - started
    await forwarder.close()
    buffer.close()
    return points / elapsed


def json_baseline(server: Server, seconds: list[list[Sample]], messages: int) -> float:
    """The same kind of samples re-sent as device JSON messages (what an edge without batches
    would do), one request after another on a kept-alive connection."""
    tokens: dict[str, str] = {}
    sent = 0
    points = 0
    with httpx.Client(base_url=server.url, timeout=30) as client:
        started = time.perf_counter()
        for second in seconds:
            by_device: dict[str, list[Sample]] = {}
            for s in second:
                by_device.setdefault("j" + s.device_id, []).append(s)
            for device, samples in by_device.items():
                if device not in tokens:
                    pause = time.perf_counter()
                    tokens[device] = server.device(device)
                    started += time.perf_counter() - pause
                r = client.post(
                    f"/api/v1/telemetry/{device}",
                    content=json_message(samples),
                    headers={"Authorization": f"Bearer {tokens[device]}"},
                )
                r.raise_for_status()
                sent += 1
                points += len(samples)
                if sent >= messages:
                    return points / (time.perf_counter() - started)
    return points / (time.perf_counter() - started)


def agent(server: Server, root: Path, seconds: float) -> tuple[float, float, float, int]:
    """RSS (MB), USS (MB), CPU (% of one core) of `karkhana edge` fed by the simulator."""
    token = server.device("gw-agent")
    port = free_port()
    log = (root / "edge.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "karkhana",
            "edge",
            *("--server", server.url, "--gateway-id", "gw-agent", "--http-host", "127.0.0.1"),
            *("--data-dir", str(root / "agent"), "--http-port", str(port)),
            *("--sim-profile", AGENT_PROFILE, "--sim-devices", str(AGENT_DEVICES)),
        ],
        env={**os.environ, "KARKHANA_EDGE_TOKEN": token},
        stdout=log,
        stderr=log,
    )
    try:
        deadline = time.monotonic() + 60
        while not port_open("127.0.0.1", port):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"the edge did not start; see {root / 'edge.log'}")
            time.sleep(0.1)
        time.sleep(10)  # warm: first syncs, series created on the server
        p = psutil.Process(proc.pid)
        cpu0, t0 = p.cpu_times(), time.monotonic()
        rss = uss = 0.0
        while time.monotonic() - t0 < seconds:
            time.sleep(1)
            mem = p.memory_full_info()
            rss, uss = max(rss, mem.rss / 2**20), max(uss, mem.uss / 2**20)
        cpu1, t1 = p.cpu_times(), time.monotonic()
        cpu = 100 * ((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)) / (t1 - t0)
        health = httpx.get(f"http://127.0.0.1:{port}/health").json()
        sent = int(health["forwarder"]["sent_points"])
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
    return rss, uss, cpu, sent


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--backlog-min", type=int, default=30, help="minutes of backlog to drain")
    ap.add_argument("--batch-points", type=int, default=20_000)
    ap.add_argument("--json-messages", type=int, default=3000, help="baseline JSON messages")
    ap.add_argument("--agent-s", type=float, default=60, help="seconds the agent is measured")
    args = ap.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="karkhana-bench-edge-"))
    start = (int(time.time()) - args.backlog_min * 60 - 3600) * 1000
    seconds = plant_samples(args.backlog_min * 60, start)
    signals = len(seconds[0])
    print(
        f"{signals} signals at 1 Hz ({PROFILE}, {DEVICES} machines); backlog {args.backlog_min} min"
    )
    print("\n".join(f"  {k}: {v}" for k, v in machine_info(root).items()))

    rows, points = wire(seconds, args.batch_points)
    print(f"\nbytes on the wire per point ({fmt_int(points)} points)")
    print(table(["encoding", "bytes/point", "vs karkhana"], rows))

    server = Server(root)
    try:
        rate = asyncio.run(drain(server, root, seconds, args.batch_points))
        baseline = json_baseline(server, seconds, args.json_messages)
        live = signals  # points a second at 1 Hz
        print("\nbacklog drain (server process with fsync FULL, forwarder in this process)")
        print(
            table(
                ["path", "points/s", "x live rate"],
                [
                    ["karkhana edge batches", fmt_int(rate), f"{rate / live:.0f}x"],
                    [
                        "JSON device messages (baseline)",
                        fmt_int(baseline),
                        f"{baseline / live:.0f}x",
                    ],
                ],
            )
        )
        rss, uss, cpu, sent = agent(server, root, args.agent_s)
        print(f"\nedge agent, {signals} signals at 1 Hz from the simulator, {args.agent_s:g} s")
        print(
            table(
                ["RSS MB", "USS MB", "CPU % of one core", "points forwarded"],
                [[f"{rss:.1f}", f"{uss:.1f}", f"{cpu:.1f}", fmt_int(sent)]],
            )
        )
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
