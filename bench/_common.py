"""Helpers shared by the benchmarks: a private Mosquitto, machine facts, percentiles, tables."""

from __future__ import annotations

import os
import platform
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def mosquitto_binary() -> str | None:
    """Path of the mosquitto broker, or None when it is not installed."""
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None


class Mosquitto:
    """A private Mosquitto on a free port with a generated config; stop() ends it.

    Queues are unbounded (``max_queued_messages 0``) so that a QoS 1 subscriber that falls
    behind gets every message late rather than losing some, which would flatter its rate.
    """

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="karkhana-bench-mosquitto-"))
        conf = self._dir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "max_queued_messages 0\n"
            "max_inflight_messages 0\n"
            "log_type error\n"
        )
        self._proc = subprocess.Popen(
            [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 10
        while not port_open("127.0.0.1", self.port):
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                raise RuntimeError(f"mosquitto exited: {err}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("mosquitto did not start within 10 s")
            time.sleep(0.02)

    @property
    def pid(self) -> int:
        return self._proc.pid

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)
        shutil.rmtree(self._dir, ignore_errors=True)


def mosquitto_version(binary: str | None) -> str:
    if binary is None:
        return "not installed"
    try:
        out = subprocess.run([binary, "-h"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    for line in (out.stdout + out.stderr).splitlines():
        if "version" in line:
            return line.strip()
    return "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return 0.0


def fsync_ms(folder: Path, rounds: int = 30) -> float:
    """Median time of one 4 KiB write + fsync in ``folder``: what a FULL commit pays at least."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ".fsync-probe"
    times = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for i in range(rounds):
            os.pwrite(fd, b"x" * 4096, i * 4096)
            t = time.perf_counter()
            os.fsync(fd)
            times.append(time.perf_counter() - t)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return percentile(times, 50) * 1000


def karkhana_revision() -> str:
    """Which karkhana is measured: its folder, and its commit (read-only git) or REVISION file."""
    import importlib.util

    spec = importlib.util.find_spec("karkhana")
    if spec is None or spec.origin is None:
        return "not importable"
    root = Path(spec.origin).resolve().parent.parent
    marker = root / "REVISION"
    if marker.exists():
        return f"{marker.read_text().strip()} ({root})"
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "log", "-1", "--format=%h %cI"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "karkhana"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return f"unknown ({root})"
    changes = " + uncommitted changes in karkhana/" if dirty else ""
    return f"commit {head or 'unknown'}{changes} ({root})"


def machine_info(workdir: Path) -> dict[str, str]:
    """Facts that decide the figures: CPUs, memory, disk, Python, SQLite, Mosquitto."""
    usage = shutil.disk_usage(workdir)
    return {
        "cpus": f"{os.cpu_count()} x {_cpu_model()}",
        "memory": f"{_mem_total_gib():.1f} GiB",
        "disk": f"{usage.total / 2**30:.0f} GiB at {workdir}, fsync p50 {fsync_ms(workdir):.2f} ms",
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "mosquitto": mosquitto_version(mosquitto_binary()),
        "kernel": platform.release(),
        "karkhana": karkhana_revision(),
    }


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation; NaN for no values."""
    if not values:
        return float("nan")
    data = sorted(values)
    pos = (len(data) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table, padded so that it also reads well in a terminal."""
    cells = [[str(h) for h in headers], *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), sep, *[line(r) for r in cells[1:]]])


def fmt_int(value: float) -> str:
    return "n/a" if value != value else f"{value:,.0f}"
