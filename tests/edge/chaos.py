"""Support for the chaos tests: a real server and edge as processes, a TCP proxy that can cut the
link, and devices that feed numbered samples and remember which ones were acknowledged."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import ADMIN_PASSWORD, free_port, port_open

T0 = int(time.time() * 1000) - 3_600_000
"""Sample n of a device is stamped T0 + 10 n ms: unique per series, in the recent past."""


def wait_for(what: str, check: Any, timeout: float = 60.0, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


class Process:
    """A karkhana command as a child process, its output in a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path, port: int) -> None:
        self.args, self.env, self.log, self.port = args, env, log, port
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, health: str) -> None:
        self.starts += 1
        with self.log.open("ab") as out:
            out.write(f"\n--- start {self.starts}\n".encode())
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "karkhana", *self.args],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        url = f"http://127.0.0.1:{self.port}{health}"

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.args[0]} exited: {self.log.read_text()[-3000:]}")
            try:
                return httpx.get(url, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(f"{self.args[0]} to answer", up, 60, 0.1)

    def kill(self) -> None:
        """kill -9: no chance to flush or close anything."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)


def server_process(root: Path) -> Process:
    port = free_port()
    env = {
        **os.environ,
        "KARKHANA_DATA_DIR": str(root / "server"),
        "KARKHANA_HTTP_HOST": "127.0.0.1",
        "KARKHANA_HTTP_PORT": str(port),
        "KARKHANA_MQTT_HOST": "127.0.0.1",
        "KARKHANA_MQTT_PORT": str(free_port()),
        "KARKHANA_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "KARKHANA_TLS": "off",
        "KARKHANA_DEVICE_MAX_MSGS_PER_S": "0",
    }
    return Process(["serve"], env, root / "server.log", port)


def create_gateway(server: Process, gateway_id: str) -> str:
    base = f"http://127.0.0.1:{server.port}"
    r = httpx.post(
        f"{base}/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
    )
    r.raise_for_status()
    r = httpx.post(
        f"{base}/api/v1/devices",
        json={"id": gateway_id},
        headers={"Authorization": f"Bearer {r.json()['token']}"},
    )
    r.raise_for_status()
    return str(r.json()["token"])


def edge_process(root: Path, server_url: str, token: str, *extra: str) -> Process:
    port = free_port()
    args = [
        "edge",
        "--server",
        server_url,
        "--gateway-id",
        "gw-1",
        "--data-dir",
        str(root / "edge"),
        "--http-host",
        "127.0.0.1",
        "--http-port",
        str(port),
        "--mqtt-port",
        "0",
        "--status-interval-s",
        "1",
        "--timeout-s",
        "3",
        *extra,
    ]
    env = {**os.environ, "KARKHANA_EDGE_TOKEN": token}
    return Process(args, env, root / "edge.log", port)


@dataclass
class Feeder:
    """Devices posting numbered samples to the edge, one message at a time, each retried until
    acknowledged (or, with ``give_up_on_503``, counted as refused and skipped)."""

    edge_port: int
    devices: tuple[str, ...] = ("loom-1", "loom-2", "press-1")
    pause_s: float = 0.03
    give_up_on_503: bool = False
    acked: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    refused: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    failures: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for device in self.devices:
            t = threading.Thread(target=self._run, args=(device,), daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)

    @property
    def total(self) -> int:
        return sum(len(v) for v in self.acked.values())

    def _run(self, device: str) -> None:
        url = f"http://127.0.0.1:{self.edge_port}/api/v1/telemetry/{device}"
        seq = 0
        with httpx.Client(timeout=5) as client:
            while not self._stop.is_set():
                body = {"ts": T0 + 10 * seq, "values": {"seq": seq, "half": seq / 2}}
                try:
                    r = client.post(url, json=body)
                except httpx.HTTPError:
                    self.failures += 1
                    time.sleep(0.05)
                    continue
                if r.status_code == 200:
                    self.acked[device].append(seq)
                    seq += 1
                elif r.status_code == 503 and self.give_up_on_503:
                    self.refused[device].append(seq)
                    seq += 1
                else:
                    self.failures += 1
                    time.sleep(0.05)
                    continue
                time.sleep(self.pause_s)


@dataclass
class MqttFeeder(Feeder):
    """Devices publishing numbered samples (QoS 1) to the edge's local MQTT broker, one at a time;
    a sample counts as acknowledged only once its PUBACK came. Without one in ``ack_timeout_s``
    (the broker was killed, the connection is gone) the device connects again and publishes the
    same sample again, as a careful device does; a copy that was stored but not acknowledged
    arrives twice at the edge and once at the server (it de-duplicates)."""

    mqtt_port: int = 0
    ack_timeout_s: float = 3.0
    republished: int = 0

    def _run(self, device: str) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        seq = 0
        client: paho.Client | None = None
        while not self._stop.is_set():
            if client is None:
                client = paho.Client(CallbackAPIVersion.VERSION2, client_id=device)
                try:
                    client.connect("127.0.0.1", self.mqtt_port, keepalive=5)
                except OSError:
                    client = None
                    self.failures += 1
                    time.sleep(0.1)
                    continue
                client.loop_start()
            body = json.dumps({"ts": T0 + 10 * seq, "values": {"seq": seq, "half": seq / 2}})
            info = client.publish(f"karkhana/{device}/telemetry", body, qos=1)
            acked = False
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout=self.ack_timeout_s)
                acked = info.is_published()
            if acked:
                self.acked[device].append(seq)
                seq += 1
                time.sleep(self.pause_s)
                continue
            self.republished += 1
            client.loop_stop()
            with contextlib.suppress(Exception):
                client.disconnect()
            client = None
        if client is not None:
            client.loop_stop()
            client.disconnect()


def edge_health(edge: Process) -> dict[str, Any]:
    try:
        body: dict[str, Any] = httpx.get(f"http://127.0.0.1:{edge.port}/health", timeout=3).json()
    except httpx.HTTPError:
        return {}
    return body


def server_series(server: Process, device: str, key: str) -> list[tuple[int, float]]:
    base = f"http://127.0.0.1:{server.port}"
    r = httpx.post(
        f"{base}/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
    )
    token = r.json()["token"]
    r = httpx.get(
        f"{base}/api/v1/telemetry/{device}/{key}",
        params={"start": T0 - 1, "end": T0 + 10**9, "limit": 100_000},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    r.raise_for_status()
    return [(int(ts), float(v)) for ts, v in r.json()["points"]]


class Proxy:
    """A TCP proxy in front of the server that can pass, refuse or black-hole connections."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.port = free_port()
        self.mode = "pass"
        self._sock = socket.create_server(("127.0.0.1", self.port))
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def set(self, mode: str) -> None:
        """pass | refuse (close at once) | blackhole (accept, never answer); cuts open links."""
        self.mode = mode
        if mode != "pass":
            with self._lock:
                for c in self._conns:
                    _close(c)
                self._conns.clear()

    def close(self) -> None:
        self._stop.set()
        self.set("refuse")
        self._sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            if self.mode == "refuse":
                _close(client)
                continue
            with self._lock:
                self._conns.append(client)
            if self.mode == "blackhole":
                threading.Thread(target=_swallow, args=(client,), daemon=True).start()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._conns.append(upstream)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


def _close(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)
    s.close()


def _swallow(s: socket.socket) -> None:
    try:
        while s.recv(65536):
            pass
    except OSError:
        pass


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        _close(dst)
        _close(src)


def assert_exactly_once(server: Process, feeder: Feeder) -> int:
    """Every acknowledged sample is on the server once, in order, with its value; returns how
    many samples were checked."""
    checked = 0
    for device in feeder.devices:
        acked = feeder.acked[device]
        assert acked == list(range(len(acked))) or feeder.give_up_on_503
        for key, scale in (("seq", 1.0), ("half", 0.5)):
            stored = server_series(server, device, key)
            expected = [(T0 + 10 * n, n * scale) for n in acked]
            assert stored == expected, (
                f"{device}/{key}: {len(stored)} stored, {len(expected)} acknowledged;"
                f" missing {sorted(set(expected) - set(stored))[:5]},"
                f" unexpected {sorted(set(stored) - set(expected))[:5]}"
            )
            checked += len(stored)
    return checked


def port_is_open(port: int) -> bool:
    return port_open("127.0.0.1", port)
