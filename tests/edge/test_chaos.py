"""Chaos: a real server and edge agent as processes, numbered samples through the edge's HTTP
input, and the edge killed (-9), the server stopped, the link cut and the buffer filled.

Whatever happens, every sample the edge acknowledged arrives at the server exactly once, in
order, with its value; what the edge refused is counted by it. The short variant runs with the
suite; the long ones are marked ``chaos`` (run them with ``pytest -m chaos``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.edge.chaos import (
    Feeder,
    MqttFeeder,
    Process,
    Proxy,
    assert_exactly_once,
    create_gateway,
    edge_health,
    edge_process,
    server_process,
    wait_for,
)

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for p in reversed(started):
        p.stop()


def drained(edge: Process) -> bool:
    h = edge_health(edge)
    return bool(h) and h["backlog_points"] == 0 and h["link"] == "up"


def start_world(
    root: Path, processes: list[Process], *edge_flags: str
) -> tuple[Process, Process, str]:
    server = server_process(root)
    processes.append(server)
    server.start("/api/v1/health")
    token = create_gateway(server, "gw-1")
    edge = edge_process(root, f"http://127.0.0.1:{server.port}", token, *edge_flags)
    processes.append(edge)
    edge.start("/health")
    return server, edge, token


def test_kills_and_a_server_restart_lose_nothing(tmp_path: Path, processes: list[Process]) -> None:
    """The short variant: three kill -9 of the edge (one while it drains a backlog) and the
    server stopped and started again while devices keep sending."""
    server, edge, _ = start_world(tmp_path, processes)
    feeder = Feeder(edge.port)
    feeder.start()
    try:
        wait_for("samples to flow", lambda: feeder.total >= 60)
        edge.kill()
        time.sleep(0.3)
        edge.start("/health")
        wait_for("more samples", lambda: feeder.total >= 150)

        server.stop()
        mark = feeder.total
        wait_for("samples buffered while the server is down", lambda: feeder.total >= mark + 150)
        assert edge_health(edge)["link"] != "up"
        edge.kill()  # with a backlog, before the server is back
        edge.start("/health")
        server.start("/api/v1/health")
        time.sleep(0.5)
        edge.kill()  # while it drains
        edge.start("/health")
        wait_for("more samples", lambda: feeder.total >= mark + 300)
    finally:
        feeder.stop()
    wait_for("the edge to drain", lambda: drained(edge), 60, 0.2)
    checked = assert_exactly_once(server, feeder)
    assert checked == 2 * feeder.total >= 900
    health = edge_health(edge)
    assert (health["dropped_points"], health["rejected_points"]) == (0, 0)
    assert health["quarantined_points"] == 0


def test_the_edge_broker_killed_under_mqtt_devices_loses_nothing(
    tmp_path: Path, processes: list[Process]
) -> None:
    """Devices on the edge's local MQTT broker while the edge (and with it the broker) is
    killed -9 three times, once with the server down: every sample whose PUBACK a device got
    reaches the server exactly once."""
    mqtt_port = free_port()
    server, edge, _ = start_world(
        tmp_path, processes, "--mqtt-host", "127.0.0.1", "--mqtt-port", str(mqtt_port)
    )
    feeder = MqttFeeder(edge.port, mqtt_port=mqtt_port, devices=("esp-1", "esp-2"))
    feeder.start()
    try:
        wait_for("samples to flow", lambda: feeder.total >= 60)
        for round_ in range(3):
            if round_ == 1:
                server.stop()
            mark = feeder.total
            edge.kill()
            time.sleep(0.5)
            edge.start("/health")
            wait_for("samples after the broker came back", lambda m=mark: feeder.total >= m + 60)  # type: ignore[misc]
            if round_ == 1:
                server.start("/api/v1/health")
    finally:
        feeder.stop()
    wait_for("the edge to drain", lambda: drained(edge), 60, 0.2)
    assert feeder.republished >= 1  # some PUBACKs were lost with the broker
    checked = assert_exactly_once(server, feeder)
    assert checked == 2 * feeder.total >= 480
    health = edge_health(edge)
    assert (health["dropped_points"], health["rejected_points"], health["quarantined_points"]) == (
        0,
        0,
        0,
    )


@pytest.mark.chaos
def test_long_outage_cut_links_and_many_kills(tmp_path: Path, processes: list[Process]) -> None:
    """The server away for two minutes, the link refused and black-holed by a proxy, the edge
    killed ten times: still exactly once."""
    server = server_process(tmp_path)
    processes.append(server)
    server.start("/api/v1/health")
    token = create_gateway(server, "gw-1")
    proxy = Proxy(server.port)
    edge = edge_process(tmp_path, f"http://127.0.0.1:{proxy.port}", token)
    processes.append(edge)
    edge.start("/health")
    feeder = Feeder(edge.port)
    feeder.start()
    try:
        for mode in ("blackhole", "refuse", "blackhole"):
            mark = feeder.total
            wait_for("samples", lambda m=mark: feeder.total >= m + 100)  # type: ignore[misc]
            proxy.set(mode)
            time.sleep(8)
            assert edge_health(edge)["link"] != "up"
            proxy.set("pass")
        for _ in range(10):
            mark = feeder.total
            wait_for("samples", lambda m=mark: feeder.total >= m + 40)  # type: ignore[misc]
            edge.kill()
            edge.start("/health")
        server.stop()
        time.sleep(120)
        edge.kill()
        edge.start("/health")
        server.start("/api/v1/health")
        time.sleep(1)
        for _ in range(3):
            edge.kill()
            edge.start("/health")
            time.sleep(0.5)
    finally:
        feeder.stop()
        wait_for("the edge to drain", lambda: drained(edge), 300, 0.5)
        proxy.close()
    assert_exactly_once(server, feeder)


@pytest.mark.chaos
def test_a_full_buffer_refuses_and_counts(tmp_path: Path, processes: list[Process]) -> None:
    """reject-new at a small cap while the server is down: what the edge refused (503) is
    exactly what its counters say, and everything it acknowledged arrives once."""
    server, edge, _ = start_world(
        tmp_path,
        processes,
        *("--buffer-cap-points", "600", "--when-full", "reject-new"),
        *("--status-interval-s", "0"),  # the gateway's own status would take room too
    )
    server.stop()
    feeder = Feeder(edge.port, give_up_on_503=True)
    feeder.start()
    try:
        wait_for("refusals", lambda: sum(len(v) for v in feeder.refused.values()) >= 50, 120)
        edge.kill()
        edge.start("/health")
    finally:
        feeder.stop()
    server.start("/api/v1/health")
    wait_for("the edge to drain", lambda: drained(edge), 120, 0.5)
    assert_exactly_once(server, feeder)
    refused = sum(len(v) for v in feeder.refused.values())
    health = edge_health(edge)
    # every refusal the devices saw is counted; a refusal whose answer a kill -9 cut off was
    # counted by the edge but retried by the device (at most one per kill and device)
    kills = edge.starts - 1
    assert refused <= health["rejected_messages"] <= refused + kills * len(feeder.devices)
    assert health["rejected_points"] == 2 * health["rejected_messages"]
    assert health["dropped_points"] == 0
