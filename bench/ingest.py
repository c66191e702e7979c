"""Ingest benchmark: karkhana behind a real MQTT broker against a raw paho + sqlite3 baseline.

Every run starts a fresh Mosquitto (or, without one, karkhana's embedded broker), one server
process (karkhana's Runtime, or the raw baseline subscriber) and publisher processes, so that the
server's memory can be measured and the load generator does not share its interpreter.

Scenarios
  batched   each message carries one device's ``--keys`` values at one timestamp (100 points);
            ``--devices`` x ``--keys`` distinct signals (1,000 by default)
  single    each message carries one value (QoS 1), cycling over the same signals
  latency   the batched and single loads paced at half of karkhana's sustained rate; a reader
            process polls SQLite for the probe device's samples and records when each becomes
            visible to a query; latency = that moment - the publisher's clock at publish()

"Sustained" is the rate of points *committed* to the store over a steady window, counted after
each commit, while the publishers keep a bounded backlog (``--outstanding`` points published but
not yet committed) so that the server never waits for work and the publishers do not burn the
CPUs the server needs. The backlog is checked: a window in which it ran dry is flagged.

Run: ``.venv/bin/python bench/ingest.py`` (about 5 minutes); ``--help`` lists the options.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import queue
import random
import resource
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    Mosquitto,
    fmt_int,
    free_port,
    machine_info,
    mosquitto_binary,
    percentile,
    table,
)

TOPIC = "karkhana/{}/telemetry"
KARKHANA = "karkhana"
BASELINE = "baseline"
CTX = mp.get_context("spawn")
Counter = Any  # a multiprocessing RawValue/RawArray of int64


# --------------------------------------------------------------------------------------------
# specifications handed to the child processes (picklable)


@dataclass(frozen=True)
class ServerSpec:
    kind: str  # KARKHANA or BASELINE
    sync: str  # SQLite synchronous: NORMAL or FULL
    broker: str  # "mosquitto" or "embedded"
    port: int
    data_dir: str
    devices: tuple[str, ...]
    writer_max_batch: int
    baseline_batch: int
    baseline_flush_ms: int
    profile: str | None  # folder for per-thread cProfile dumps, or None
    switch_interval: float  # sys.setswitchinterval in the server (diagnostics); 0 = default


@dataclass(frozen=True)
class PubSpec:
    index: int
    port: int
    devices: tuple[str, ...]
    keys: tuple[str, ...]
    mode: str  # "batched" or "single"
    rate: float  # points/s for this publisher; 0 = closed loop (keep the backlog full)
    outstanding: int  # closed loop: most points published but not committed, all publishers
    probe: str | None  # device whose publish times are recorded for the latency figure
    tokens: dict[str, str] = field(default_factory=dict)  # embedded broker: device -> token


@dataclass
class CpuUse:
    """CPU use over the steady window, in percent of one CPU."""

    server: float = 0.0
    threads: dict[str, float] = field(default_factory=dict)
    publishers_etc: float = 0.0  # publishers, reader, broker, this process
    background: float = 0.0  # everything else on the machine

    def name_threads(self, names: dict[int, str]) -> None:
        named: dict[str, float] = {}
        for tid, pct in self.threads.items():
            role = names.get(int(tid), "other")
            named[role] = named.get(role, 0.0) + pct
        self.threads = named

    def describe(self) -> str:
        parts = ", ".join(f"{k} {v:.0f}%" for k, v in sorted(self.threads.items()) if v >= 1)
        return (
            f"server CPU {self.server:.0f}% ({parts}), load generator {self.publishers_etc:.0f}%,"
            f" other processes {self.background:.0f}%"
        )


@dataclass
class RunResult:
    scenario: str
    target: str
    offered: float  # points/s asked of the publishers (0 = closed loop)
    rate: float  # points/s committed over the steady window
    min_rate_1s: float
    published: int
    committed: int
    starved: bool  # the backlog ran dry during the window: publisher-bound, not server-bound
    peak_rss: int  # bytes, server process
    ready_rss: int  # bytes, server process once started, before any load
    latencies_ms: list[float]
    latency_series: list[tuple[float, float]]  # (publish time - start of window s, latency ms)
    probes_published: int
    cpu: CpuUse
    commits: int
    rejected: int
    seconds: float


# --------------------------------------------------------------------------------------------
# the server processes


def _profile_threads(folder: str) -> Callable[[], None]:
    """Profile every thread started from now on (and this one); returns the dump function."""
    import cProfile
    import pstats

    profiles: list[cProfile.Profile] = []
    lock = threading.Lock()
    original = threading.Thread.run

    def run(self: threading.Thread) -> None:
        prof = cProfile.Profile()
        with lock:
            profiles.append(prof)
        prof.enable()
        try:
            original(self)
        finally:
            prof.disable()

    threading.Thread.run = run  # type: ignore[method-assign]
    main = cProfile.Profile()
    profiles.append(main)
    main.enable()

    def dump() -> None:
        main.disable()
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        with lock:
            stats = pstats.Stats(*profiles)
        stats.dump_stats(str(path / "server.prof"))

    return dump


def _thread_names() -> dict[int, str]:
    """Native thread id -> a short role name, for the per-thread CPU figures."""
    names = {}
    for t in threading.enumerate():
        if t.native_id is None:
            continue
        name = t.name
        if t is threading.main_thread():
            name = "main"
        elif name.startswith("paho-mqtt-client"):
            name = "mqtt"
        elif name == "karkhana-writer":
            name = "writer"
        names[t.native_id] = name
    return names


def serve(spec: ServerSpec, committed: Counter, out: Any, stop: Any) -> None:
    """Entry point of the server process: karkhana or the baseline, until ``stop`` is set."""
    dump = _profile_threads(spec.profile) if spec.profile else None
    if spec.switch_interval:
        sys.setswitchinterval(spec.switch_interval)
    if spec.kind == KARKHANA:
        extra = _serve_karkhana(spec, committed, out, stop)
    else:
        extra = _serve_baseline(spec, committed, out, stop)
    if dump is not None:
        dump()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out.put(("done", {"peak_rss": peak, **extra}))


def _serve_karkhana(spec: ServerSpec, committed: Counter, out: Any, stop: Any) -> dict[str, int]:
    import asyncio
    import logging

    from karkhana.core.config import Settings
    from karkhana.core.model import Sample
    from karkhana.runtime import Runtime

    logging.basicConfig(level=logging.WARNING)

    async def main() -> dict[str, int]:
        settings = Settings(
            data_dir=Path(spec.data_dir),
            admin_password="bench-admin-password",
            sqlite_synchronous=spec.sync,
            writer_max_batch=spec.writer_max_batch,
            device_max_msgs_per_s=0,  # a benchmark floods on purpose
            mqtt_url=f"mqtt://127.0.0.1:{spec.port}" if spec.broker == "mosquitto" else "",
            mqtt_host="127.0.0.1",
            mqtt_port=spec.port,
        )
        rt = Runtime(settings)

        def count(samples: list[Sample]) -> None:  # on the writer thread, after COMMIT
            committed.value += len(samples)

        rt.store.on_commit(count)
        await rt.start()
        tokens = {}
        for device in spec.devices:
            _, tokens[device] = await rt.devices.create(device)
        out.put(("ready", tokens, _thread_names()))
        await asyncio.to_thread(stop.wait)
        await rt.stop()
        rejected = 0
        for stats in rt.ingestor.snapshot().values():
            counts: Any = stats["rejected"]
            rejected += int(sum(counts.values()))
        return {"commits": rt.db.commits, "rejected": rejected}

    return asyncio.run(main())


def _serve_baseline(spec: ServerSpec, committed: Counter, out: Any, stop: Any) -> dict[str, int]:
    """The raw baseline: paho (auto ack, QoS 1) -> json.loads -> sqlite3 executemany.

    Rows are buffered and committed every ``baseline_batch`` rows or ``baseline_flush_ms``,
    whichever comes first; only the ``samples`` table is written (no rollups, no latest values,
    no deduplication bookkeeping), and messages are acknowledged before they are committed.
    """
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    from karkhana.store.migrations import migrate

    path = Path(spec.data_dir) / "baseline.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={spec.sync}")
    migrate(conn)
    insert = "INSERT OR IGNORE INTO samples (series_id, ts, value, text) VALUES (?, ?, ?, ?)"
    series: dict[tuple[str, str], int] = {}
    rows: list[tuple[int, int, float, None]] = []
    lock = threading.Lock()
    stats = {"commits": 0, "rejected": 0}

    def sid(device: str, key: str) -> int:
        found = series.get((device, key))
        if found is None:
            cur = conn.execute("INSERT INTO series (device_id, key) VALUES (?, ?)", (device, key))
            found = series[(device, key)] = int(cur.lastrowid or 0)
        return found

    def flush() -> None:  # with the lock held
        nonlocal rows
        if not rows:
            return
        batch, rows = rows, []
        conn.execute("BEGIN")
        conn.executemany(insert, batch)
        conn.execute("COMMIT")
        stats["commits"] += 1
        committed.value += len(batch)

    def on_message(_c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        device = msg.topic.split("/")[1]
        try:
            doc = json.loads(msg.payload)
        except ValueError:
            stats["rejected"] += 1
            return
        entries = doc if isinstance(doc, list) else [doc]
        with lock:
            for entry in entries:
                ts = entry["ts"]
                for key, value in entry["values"].items():
                    rows.append((sid(device, key), ts, float(value), None))
            if len(rows) >= spec.baseline_batch:
                flush()

    connected = threading.Event()
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=f"baseline-{os.getpid()}", protocol=paho.MQTTv5
    )
    client.on_message = on_message

    def on_connect(c: paho.Client, *_: object) -> None:
        c.subscribe("karkhana/+/telemetry", qos=1)
        connected.set()

    client.on_connect = on_connect
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.ReceiveMaximum = 1000  # the same window as karkhana's listener
    client.connect("127.0.0.1", spec.port, keepalive=30, clean_start=True, properties=props)
    client.loop_start()
    if not connected.wait(10):
        raise RuntimeError("baseline subscriber could not connect")
    time.sleep(0.2)  # let the SUBACK arrive
    out.put(("ready", {}, _thread_names()))
    while not stop.wait(spec.baseline_flush_ms / 1000):
        with lock:
            flush()
    client.disconnect()
    client.loop_stop()
    with lock:
        flush()
    conn.close()
    return stats


# --------------------------------------------------------------------------------------------
# publishers and the latency reader


def publish(spec: PubSpec, published: Counter, committed: Counter, start: Any, out: Any) -> None:
    """Entry point of a publisher process: paho, QoS 1, until the deadline it is given."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    rnd = random.Random(spec.index)
    clients: dict[str, paho.Client] = {}
    names = spec.devices if spec.tokens else ("*",)
    for name in names:
        client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{spec.index}-{name}-{os.getpid()}"
        )
        client.max_inflight_messages_set(1000)
        if spec.tokens:
            client.username_pw_set(name, spec.tokens[name])
        client.connect("127.0.0.1", spec.port, keepalive=60)
        client.loop_start()
        clients[name] = client

    # payloads are built from pre-rendered value strings: the publishers must stay cheap
    pool = [f"{rnd.uniform(0, 1000):.3f}" for _ in range(997)]
    if spec.mode == "batched":
        per_msg = len(spec.keys)
        bodies = {
            d: [
                ",".join(f'"{k}":{pool[(i * 31 + j) % len(pool)]}' for j, k in enumerate(spec.keys))
                for i in range(17)
            ]
            for d in spec.devices
        }
        plan: list[tuple[str, str | None]] = [(d, None) for d in spec.devices]
    else:
        per_msg = 1
        plan = [(d, k) for k in spec.keys for d in spec.devices]
    last_ts = dict.fromkeys(spec.devices, 0)
    probes: list[tuple[int, float]] = []
    n_pub = len(published)

    out.put(("connected", spec.index))
    start.wait()
    t0, t_end = float(start.t0.value), float(start.t_end.value)
    interval = per_msg / spec.rate if spec.rate > 0 else 0.0
    sent = 0
    info = None
    step = 0
    while True:
        now = time.time()
        if now >= t_end:
            break
        if interval:
            due = t0 + sent * interval
            if due > now:
                time.sleep(due - now)
        elif sum(published[i] for i in range(n_pub)) - committed.value >= spec.outstanding:
            time.sleep(0.0005)
            continue
        device, key = plan[step % len(plan)]
        step += 1
        ts = max(int(time.time() * 1000), last_ts[device] + 1)  # unique and rising per device
        last_ts[device] = ts
        body = bodies[device][step % 17] if key is None else f'"{key}":{pool[step % len(pool)]}'
        payload = f'{{"ts":{ts},"values":{{{body}}}}}'
        client = clients[device] if spec.tokens else clients["*"]
        if device == spec.probe:
            probes.append((ts, time.time()))
        info = client.publish(TOPIC.format(device), payload, qos=1)
        sent += 1
        published[spec.index] += per_msg
    if info is not None:
        with contextlib.suppress(Exception):
            info.wait_for_publish(30)
    for client in clients.values():
        client.disconnect()
        client.loop_stop()
    out.put(("published", spec.index, probes))


def read_latency(db_path: str, device: str, poll_ms: float, stop: Any, out: Any) -> None:
    """Entry point of the reader: note when each of ``device``'s timestamps becomes queryable."""
    while not Path(db_path).exists():
        time.sleep(0.01)
    conn = sqlite3.connect(db_path, timeout=30)
    conn.execute("PRAGMA busy_timeout=30000")
    sids: list[int] = []
    seen: list[tuple[int, float]] = []
    mark = 0
    last_lookup = 0.0
    while not stop.is_set():
        now = time.time()
        if now - last_lookup > 0.5:  # series appear as the first samples arrive
            sids = [
                r[0] for r in conn.execute("SELECT id FROM series WHERE device_id = ?", (device,))
            ]
            last_lookup = now
        if sids:
            marks = ",".join("?" * len(sids))
            rows = conn.execute(
                f"SELECT DISTINCT ts FROM samples WHERE series_id IN ({marks}) AND ts > ?",
                (*sids, mark),
            ).fetchall()
            t_seen = time.time()
            for (ts,) in rows:
                seen.append((ts, t_seen))
                mark = max(mark, ts)
        time.sleep(poll_ms / 1000)
    conn.close()
    out.put(("seen", seen))


# --------------------------------------------------------------------------------------------
# one run


class StartGate:
    """A start signal carrying the shared start and end times (wall clock)."""

    def __init__(self) -> None:
        self._event = CTX.Event()
        self.t0: Synchronized[float] = CTX.Value("d", 0.0)
        self.t_end: Synchronized[float] = CTX.Value("d", 0.0)

    def open(self, t0: float, t_end: float) -> None:
        self.t0.value = t0
        self.t_end.value = t_end
        self._event.set()

    def wait(self) -> None:
        self._event.wait()


@dataclass(frozen=True)
class Config:
    devices: int
    keys: int
    publishers: int
    warmup: float
    duration: float
    drain: float
    outstanding_batched: int
    outstanding_single: int
    poll_ms: float
    writer_max_batch: int
    baseline_batch: int
    baseline_flush_ms: int
    broker: str
    workdir: Path
    profile: Path | None
    verbose: bool
    switch_interval: float = 0.0
    quiet_below: float = 0.0
    quiet_wait: float = 0.0

    @property
    def device_ids(self) -> tuple[str, ...]:
        return tuple(f"bench-d{i:03d}" for i in range(self.devices))

    @property
    def key_names(self) -> tuple[str, ...]:
        return tuple(f"k{j:03d}" for j in range(self.keys))


def _get(q: Any, kind: str, timeout: float, proc: Any = None) -> tuple[Any, ...]:
    """The next message of ``kind`` from ``q``; fails early if ``proc`` died meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no {kind!r} message within {timeout:.0f} s")
        try:
            msg: tuple[Any, ...] = q.get(timeout=min(0.5, left))
        except queue.Empty:
            if proc is not None and not proc.is_alive():
                raise RuntimeError(
                    f"the server process exited with code {proc.exitcode} (see its traceback)"
                ) from None
            continue
        if msg[0] == kind:
            return msg


@contextlib.contextmanager
def _broker(cfg: Config) -> Iterator[Mosquitto | None]:
    if cfg.broker != "mosquitto":
        yield None
        return
    binary = mosquitto_binary()
    assert binary is not None
    broker = Mosquitto(binary)
    try:
        yield broker
    finally:
        broker.stop()


def wait_for_quiet(limit: float, most: float) -> float:
    """Wait (at most ``most`` s) until the machine's CPU use over 1 s is below ``limit`` percent
    of one CPU; between runs nothing of the benchmark runs, so this is other people's load.
    Returns the last reading."""
    deadline = time.monotonic() + most
    while True:
        busy = float(psutil.cpu_percent(interval=1.0)) * (os.cpu_count() or 1)
        if busy < limit or time.monotonic() >= deadline:
            return busy


def run_once(cfg: Config, scenario: str, target: str, rate: float = 0.0) -> RunResult:
    """One scenario against one server ("karkhana:NORMAL", "baseline:FULL", ...)."""
    if cfg.quiet_below > 0:
        busy = wait_for_quiet(cfg.quiet_below, cfg.quiet_wait)
        if busy >= cfg.quiet_below:
            print(f"  (other processes use {busy:.0f}% of a CPU; running anyway)", flush=True)
    kind, sync = target.split(":")
    mode = "single" if "single" in scenario else "batched"
    data_dir = Path(tempfile.mkdtemp(prefix=f"run-{kind}-", dir=cfg.workdir))
    db_path = data_dir / ("karkhana.db" if kind == KARKHANA else "baseline.db")
    devices = cfg.device_ids
    probe = devices[0] if rate > 0 else None
    with _broker(cfg) as broker:
        port = broker.port if broker is not None else free_port()
        spec = ServerSpec(
            kind=kind,
            sync=sync,
            broker=cfg.broker,
            port=port,
            data_dir=str(data_dir),
            devices=devices,
            writer_max_batch=cfg.writer_max_batch,
            baseline_batch=cfg.baseline_batch,
            baseline_flush_ms=cfg.baseline_flush_ms,
            profile=str(cfg.profile / f"{scenario}-{kind}-{sync}") if cfg.profile else None,
            switch_interval=cfg.switch_interval,
        )
        committed = CTX.RawValue("q", 0)
        published = CTX.RawArray("q", cfg.publishers)
        server_out, pub_out, reader_out = CTX.Queue(), CTX.Queue(), CTX.Queue()
        stop_server, stop_reader = CTX.Event(), CTX.Event()
        gate = StartGate()
        server = CTX.Process(target=serve, args=(spec, committed, server_out, stop_server))
        server.start()
        procs: list[Any] = []
        try:
            _, tokens, thread_names = _get(server_out, "ready", 60, server)
            ready_rss = psutil.Process(server.pid).memory_info().rss
            per_pub = rate / cfg.publishers if rate > 0 else 0.0
            outstanding = cfg.outstanding_single if mode == "single" else cfg.outstanding_batched
            for i in range(cfg.publishers):
                mine = devices[i :: cfg.publishers]
                pspec = PubSpec(
                    index=i,
                    port=port,
                    devices=mine,
                    keys=cfg.key_names,
                    mode=mode,
                    rate=per_pub,
                    outstanding=outstanding,
                    probe=probe if probe in mine else None,
                    tokens={d: tokens[d] for d in mine} if cfg.broker == "embedded" else {},
                )
                p = CTX.Process(target=publish, args=(pspec, published, committed, gate, pub_out))
                p.start()
                procs.append(p)
            for _ in procs:
                _get(pub_out, "connected", 60)
            reader = None
            if probe is not None:
                reader = CTX.Process(
                    target=read_latency,
                    args=(str(db_path), probe, cfg.poll_ms, stop_reader, reader_out),
                )
                reader.start()
                procs.append(reader)
            t0 = time.time() + 0.3
            t_end = t0 + cfg.warmup + cfg.duration
            gate.open(t0, t_end)
            ours = [server.pid, *(p.pid for p in procs), os.getpid()]
            if broker is not None:
                ours.append(broker.pid)
            samples, cpu = _watch(
                server.pid or 0, ours, committed, published, t0 + cfg.warmup, t_end
            )
            cpu.name_threads(thread_names)
            probe_times: dict[int, float] = {}
            for _ in range(cfg.publishers):
                msg = _get(pub_out, "published", 60)
                probe_times.update(msg[2])
            total = sum(published)
            drain_end = time.monotonic() + cfg.drain
            while committed.value < total and time.monotonic() < drain_end:
                time.sleep(0.05)
            drained = committed.value
            seen: list[tuple[int, float]] = []
            if reader is not None:
                time.sleep(0.2)
                stop_reader.set()
                seen = _get(reader_out, "seen", 30)[1]
            stop_server.set()
            _, extra = _get(server_out, "done", 120, server)
        finally:
            stop_reader.set()
            stop_server.set()
            for p in [*procs, server]:
                p.join(30)
                if p.is_alive():
                    p.kill()
                    p.join(5)
    rates = _window_rates(samples, t0 + cfg.warmup, t_end)
    peak = max([extra["peak_rss"], *(s[3] for s in samples)])
    # latency of the probes published inside the steady window only
    lo = t0 + cfg.warmup
    probe_times = {ts: t for ts, t in probe_times.items() if lo <= t <= t_end}
    series = [
        (probe_times[ts] - lo, (t - probe_times[ts]) * 1000) for ts, t in seen if ts in probe_times
    ]
    latencies = [ms for _, ms in series]
    if not cfg.verbose:
        shutil.rmtree(data_dir, ignore_errors=True)
    return RunResult(
        scenario=scenario,
        target=target,
        offered=rate,
        rate=rates[0],
        min_rate_1s=rates[1],
        published=total,
        committed=drained,
        starved=rates[2],
        peak_rss=peak,
        ready_rss=ready_rss,
        latencies_ms=latencies,
        latency_series=series,
        probes_published=len(probe_times),
        cpu=cpu,
        commits=extra.get("commits", 0),
        rejected=extra.get("rejected", 0),
        seconds=cfg.duration,
    )


Snapshot = tuple[float, float, dict[int, float], float]


def _cpu_snapshot(pids: Sequence[int | None], server: int) -> Snapshot:
    """(time, CPU seconds of ``pids``, server thread CPU seconds, machine busy seconds)."""
    total = 0.0
    threads: dict[int, float] = {}
    for pid in pids:
        if not pid:
            continue
        try:
            proc = psutil.Process(pid)
            t = proc.cpu_times()
            total += t.user + t.system
            if pid == server:
                threads = {th.id: th.user_time + th.system_time for th in proc.threads()}
        except psutil.Error:
            pass
    sys_t = psutil.cpu_times()
    busy = sum(sys_t) - sys_t.idle - getattr(sys_t, "iowait", 0.0)
    return time.time(), total, threads, busy


def _watch(
    pid: int,
    ours: Sequence[int | None],
    committed: Counter,
    published: Counter,
    lo: float,
    t_end: float,
) -> tuple[list[tuple[float, int, int, int]], CpuUse]:
    """Sample (time, committed, published, server RSS) every 0.1 s until ``t_end``, and the
    CPU use of the server, its threads, the load generator and the rest over [lo, t_end]."""
    proc = psutil.Process(pid)
    out = []
    start: Snapshot | None = None
    server_start = 0.0
    while True:
        now = time.time()
        try:
            rss = proc.memory_info().rss
            if start is None and now >= lo:
                start = _cpu_snapshot(ours, pid)
                server_start = sum(proc.cpu_times()[:2])
        except psutil.Error:
            rss = 0
        out.append((now, committed.value, sum(published), rss))
        if now >= t_end:
            break
        time.sleep(min(0.1, max(0.0, t_end - now)))
    cpu = CpuUse()
    if start is not None:
        with contextlib.suppress(psutil.Error):
            end = _cpu_snapshot(ours, pid)
            wall = end[0] - start[0]
            server = sum(proc.cpu_times()[:2]) - server_start
            cpu.server = 100 * server / wall
            cpu.publishers_etc = 100 * (end[1] - start[1] - server) / wall
            cpu.background = max(0.0, 100 * (end[3] - start[3] - (end[1] - start[1])) / wall)
            cpu.threads = {
                str(tid): 100 * (t - start[2].get(tid, 0.0)) / wall for tid, t in end[2].items()
            }
    return out, cpu


def _window_rates(
    samples: Sequence[tuple[float, int, int, int]], lo: float, hi: float
) -> tuple[float, float, bool]:
    """Committed points/s over [lo, hi], the lowest 1-second rate in it, and whether the
    backlog (published - committed) ran dry in it."""
    window = [s for s in samples if lo <= s[0] <= hi]
    if len(window) < 2:
        return float("nan"), float("nan"), False
    first, last = window[0], window[-1]
    rate = (last[1] - first[1]) / (last[0] - first[0])
    lowest = float("inf")
    j = 0
    for s in window:
        while j < len(window) and window[j][0] < s[0] + 1.0:
            j += 1
        if j < len(window):
            e = window[j]
            lowest = min(lowest, (e[1] - s[1]) / (e[0] - s[0]))
    starved = any(s[2] - s[1] <= 0 for s in window)
    return rate, (lowest if lowest != float("inf") else rate), starved


# --------------------------------------------------------------------------------------------
# the report


def _mb(n: int) -> str:
    return f"{n / 1e6:.0f} MB"


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


@dataclass
class Summary:
    """The runs of one scenario against one server, merged."""

    rates: list[float]
    starved: bool
    lost: int
    peak_rss: int
    latencies_ms: list[float]
    probes: int
    offered: float
    background: float  # median CPU % of processes other than the benchmark's

    @property
    def rate(self) -> float:
        return percentile(self.rates, 50)

    def rate_text(self) -> str:
        text = fmt_int(self.rate)
        if len(self.rates) > 1:
            text += " (" + ", ".join(fmt_int(r) for r in self.rates) + ")"
        return text + (" publisher-bound" if self.starved else "")


def summarise(results: Sequence[RunResult], scenario: str, target: str) -> Summary | None:
    runs = [r for r in results if r.scenario == scenario and r.target == target]
    if not runs:
        return None
    return Summary(
        rates=[r.rate for r in runs],
        starved=any(r.starved for r in runs),
        lost=sum(r.published - r.committed for r in runs),
        peak_rss=max(r.peak_rss for r in runs),
        latencies_ms=[ms for r in runs for ms in r.latencies_ms],
        probes=sum(r.probes_published for r in runs),
        offered=runs[0].offered,
        background=percentile([r.cpu.background for r in runs], 50),
    )


def report(cfg: Config, results: list[RunResult], facts: dict[str, str]) -> str:
    """The tables printed at the end (Markdown)."""
    lines = ["## Machine", ""]
    lines += [f"- {k}: {v}" for k, v in facts.items()]
    lines += [
        f"- load: {cfg.devices} devices x {cfg.keys} keys = {cfg.devices * cfg.keys} signals, "
        f"{cfg.publishers} publisher processes (paho, QoS 1), broker: {cfg.broker}, "
        f"window {cfg.duration:g} s after {cfg.warmup:g} s warm-up",
        "",
        "## Sustained ingest (points committed per second; median of the runs in brackets)",
        "",
    ]
    rows = []
    for scenario, label, need in (
        ("batched", "batched, 100 points/message", 0.5),
        ("single", "single sample/message (= messages/s)", 0.8),
    ):
        for sync in ("NORMAL", "FULL"):
            k = summarise(results, scenario, f"{KARKHANA}:{sync}")
            if k is None:
                continue
            b = summarise(results, scenario, f"{BASELINE}:{sync}")
            ratio = k.rate / b.rate if b is not None and b.rate else float("nan")
            if scenario == "batched":
                target = "≥ 100,000 points/s and ≥ 50% of baseline"
                ok = k.rate >= 100_000 and ratio >= need
            else:
                target = "≥ 80% of baseline"
                ok = ratio >= need
            rows.append(
                [
                    label,
                    sync,
                    k.rate_text(),
                    b.rate_text() if b is not None else "n/a",
                    f"{ratio:.0%}" if ratio == ratio else "n/a",
                    target,
                    _verdict(ok) + ("" if k.lost == 0 else f", {k.lost:,} not stored"),
                    f"{k.background:.0f}% / {b.background:.0f}%" if b else f"{k.background:.0f}%",
                ]
            )
    lines.append(
        table(
            [
                "scenario",
                "synchronous",
                "karkhana",
                "baseline",
                "ratio",
                "target",
                "result",
                "other CPU load k / b",
            ],
            rows,
        )
    )
    lines += ["", "## Publish-to-queryable latency (probes published in the window)", ""]
    rows = []
    for scenario in ("latency-batched", "latency-single"):
        for target in dict.fromkeys(r.target for r in results):
            m = summarise(results, scenario, target)
            if m is None:
                continue
            p50, p99 = percentile(m.latencies_ms, 50), percentile(m.latencies_ms, 99)
            mine = target.startswith(KARKHANA)
            rows.append(
                [
                    scenario.replace("latency-", ""),
                    target,
                    fmt_int(m.offered),
                    fmt_int(m.rate),
                    f"{p50:.1f}",
                    f"{p99:.1f}",
                    f"{len(m.latencies_ms)}/{m.probes}",
                    "p99 ≤ 500 ms" if mine else "-",
                    _verdict(p99 <= 500 and m.lost == 0) if mine else "-",
                    f"{m.background:.0f}%",
                ]
            )
    if rows:
        lines.append(
            table(
                [
                    "load",
                    "server",
                    "offered points/s",
                    "committed points/s",
                    "p50 ms",
                    "p99 ms",
                    "probes seen",
                    "target",
                    "result",
                    "other CPU load",
                ],
                rows,
            )
        )
    lines += ["", "## Server peak RSS (whole process, incl. Python and SQLite page cache)", ""]
    rows = []
    for r in results:
        rows.append(
            [
                r.scenario,
                r.target,
                _mb(r.ready_rss),
                _mb(r.peak_rss),
                f"{r.commits:,}",
                f"{r.published - r.committed:,}",
                f"{r.rejected:,}",
            ]
        )
    lines.append(
        table(
            ["run", "server", "RSS at start", "peak RSS", "commits", "not stored", "rejected"],
            rows,
        )
    )
    kpeak = max((r.peak_rss for r in results if r.target.startswith(KARKHANA)), default=0)
    if kpeak:
        lines += [
            "",
            f"karkhana peak RSS with {cfg.devices * cfg.keys} signals: {_mb(kpeak)} "
            f"(target ≤ 250 MB): {_verdict(kpeak <= 250e6)}",
        ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="steady window, s")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up before it, s")
    parser.add_argument("--drain", type=float, default=30.0, help="most wait for the backlog")
    parser.add_argument("--devices", type=int, default=10)
    parser.add_argument("--keys", type=int, default=100, help="keys per device = points/message")
    parser.add_argument("--publishers", type=int, default=2, help="publisher processes")
    parser.add_argument(
        "--scenarios",
        default="batched,single,latency",
        help="comma list of batched, single, latency (= latency-batched, latency-single)",
    )
    parser.add_argument(
        "--targets",
        default="karkhana:NORMAL,baseline:NORMAL,karkhana:FULL,baseline:FULL",
        help="servers to run, kind:synchronous (kind = karkhana or baseline)",
    )
    parser.add_argument(
        "--latency-targets",
        default="karkhana:NORMAL,baseline:NORMAL,karkhana:FULL",
        help="servers for the latency runs",
    )
    for mode in ("batched", "single"):
        parser.add_argument(
            f"--latency-rate-{mode}",
            type=float,
            default=0.0,
            help=f"points/s of the {mode} latency runs"
            " (default: half of karkhana NORMAL's sustained rate)",
        )
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs of each sustained scenario (median reported)"
    )
    parser.add_argument("--outstanding-batched", type=int, default=100_000, help="points")
    parser.add_argument("--outstanding-single", type=int, default=5_000, help="points")
    parser.add_argument("--poll-ms", type=float, default=5.0, help="latency reader poll period")
    parser.add_argument(
        "--writer-max-batch", type=int, default=None, help="default: the server setting"
    )
    parser.add_argument("--baseline-batch", type=int, default=5000, help="rows per commit")
    parser.add_argument("--baseline-flush-ms", type=int, default=20)
    parser.add_argument("--broker", choices=("auto", "mosquitto", "embedded"), default="auto")
    parser.add_argument("--workdir", type=Path, default=None, help="for the databases")
    parser.add_argument("--profile", type=Path, default=None, help="cProfile the server here")
    parser.add_argument("--keep", action="store_true", help="keep the databases")
    parser.add_argument(
        "--quiet-below",
        type=float,
        default=25.0,
        help="before each run wait until other processes use less than this %% of one CPU",
    )
    parser.add_argument("--quiet-wait", type=float, default=60.0, help="most wait for that, s")
    parser.add_argument(
        "--switch-interval",
        type=float,
        default=0.0,
        help="sys.setswitchinterval of the server process, s (diagnostics; default 0.005)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write raw results here")
    args = parser.parse_args(argv)

    broker = args.broker
    if broker == "auto":
        broker = "mosquitto" if mosquitto_binary() else "embedded"
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    latency_targets = [t.strip() for t in args.latency_targets.split(",") if t.strip()]
    if broker == "embedded":
        print("no mosquitto: karkhana's embedded broker is used and the baseline is skipped")
        targets = [t for t in targets if t.startswith(KARKHANA)]
        latency_targets = [t for t in latency_targets if t.startswith(KARKHANA)]
    scenarios = {s.strip() for s in args.scenarios.split(",")}
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="karkhana-bench-ingest-"))
    workdir.mkdir(parents=True, exist_ok=True)
    from karkhana.core.config import Settings

    cfg = Config(
        devices=args.devices,
        keys=args.keys,
        publishers=args.publishers,
        warmup=args.warmup,
        duration=args.duration,
        drain=args.drain,
        outstanding_batched=args.outstanding_batched,
        outstanding_single=args.outstanding_single,
        poll_ms=args.poll_ms,
        writer_max_batch=args.writer_max_batch or Settings().writer_max_batch,
        baseline_batch=args.baseline_batch,
        baseline_flush_ms=args.baseline_flush_ms,
        broker=broker,
        workdir=workdir,
        profile=args.profile,
        verbose=args.keep,
        switch_interval=args.switch_interval,
        quiet_below=args.quiet_below,
        quiet_wait=args.quiet_wait,
    )
    try:
        measure(args, cfg, scenarios, targets, latency_targets)
    finally:
        if args.workdir is None and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


def measure(
    args: argparse.Namespace,
    cfg: Config,
    scenarios: set[str],
    targets: list[str],
    latency_targets: list[str],
) -> None:
    """Run the scenarios, then print (and optionally save) the report."""
    workdir = cfg.workdir
    facts = machine_info(workdir)
    results: list[RunResult] = []

    def run(scenario: str, target: str, rate: float = 0.0) -> RunResult:
        r = run_once(cfg, scenario, target, rate)
        lat = ""
        if r.latencies_ms:
            lat = (
                f", latency p50 {percentile(r.latencies_ms, 50):.1f} ms"
                f" p99 {percentile(r.latencies_ms, 99):.1f} ms"
            )
        print(
            f"{scenario:>15} {target:>16}: {fmt_int(r.rate):>9} points/s committed"
            f" (lowest 1 s: {fmt_int(r.min_rate_1s)}{', backlog ran dry' if r.starved else ''}),"
            f" published {r.published:,}, stored {r.committed:,},"
            f" peak RSS {_mb(r.peak_rss)}{lat}; {r.cpu.describe()}",
            flush=True,
        )
        results.append(r)
        return r

    sustained: dict[str, list[float]] = {}
    for scenario in ("batched", "single"):
        wants_latency = "latency" in scenarios or f"latency-{scenario}" in scenarios
        fixed = getattr(args, f"latency_rate_{scenario}")
        if scenario not in scenarios and (not wants_latency or fixed):
            continue
        todo = targets if scenario in scenarios else [f"{KARKHANA}:NORMAL"]
        for _ in range(max(1, args.repeat)):  # interleaved, so that drift hits every server
            for target in todo:
                r = run(scenario, target)
                if target == f"{KARKHANA}:NORMAL":
                    sustained.setdefault(scenario, []).append(r.rate)
    for scenario in ("batched", "single"):
        if "latency" in scenarios or f"latency-{scenario}" in scenarios:
            fixed = getattr(args, f"latency_rate_{scenario}")
            rate = fixed or percentile(sustained.get(scenario, []), 50) / 2
            if rate and rate == rate:
                for target in latency_targets:
                    run(f"latency-{scenario}", target, rate)
    text = report(cfg, results, facts)
    print()
    print(text)
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {"machine": facts, "results": [asdict(r) for r in results]}, indent=1, default=str
            )
        )


if __name__ == "__main__":
    sys.exit(main())
