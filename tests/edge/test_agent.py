"""The edge agent in-process: local HTTP input, /health, status telemetry, settings, the CLI."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from karkhana.api.app import create_app
from karkhana.cli import main
from karkhana.core.clock import FakeClock
from karkhana.core.errors import ConfigError
from karkhana.edge import config
from karkhana.edge.agent import EdgeAgent, uvicorn_config
from karkhana.edge.cli import format_status
from karkhana.edge.config import EdgeSettings
from karkhana.edge.connectors.sim import SimConnector
from karkhana.runtime import Runtime
from tests.conftest import free_port

pytestmark = pytest.mark.anyio
NOW = int(time.time() * 1000)

MakeAgent = Callable[..., Awaitable[tuple[EdgeAgent, httpx.AsyncClient]]]


@pytest.fixture
async def make_agent(runtime: Runtime, tmp_path: Path) -> AsyncIterator[MakeAgent]:
    """Agents whose forwarder talks to the in-process server; a client for their local input."""
    _, token = await runtime.devices.create("gw-1")
    made: list[tuple[EdgeAgent, httpx.AsyncClient]] = []

    async def make(
        wall: FakeClock | None = None, **changes: Any
    ) -> tuple[EdgeAgent, httpx.AsyncClient]:
        settings = EdgeSettings(
            server="http://server",
            gateway_id="gw-1",
            token=token,
            data_dir=tmp_path / f"edge-{len(made)}",
            http_host="127.0.0.1",
            http_port=free_port(),
            mqtt_port=0,
            fsync="NORMAL",
            **changes,
        )
        kwargs: dict[str, Any] = {"transport": httpx.ASGITransport(app=create_app(runtime))}
        if wall is not None:
            kwargs["wall"] = wall
        agent = EdgeAgent(settings, **kwargs)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=agent.app), base_url="http://edge"
        )
        made.append((agent, client))
        return agent, client

    yield make
    for agent, client in made:
        await client.aclose()
        await agent.stop()


async def post(
    client: httpx.AsyncClient, device: str, body: object, **headers: str
) -> httpx.Response:
    return await client.post(
        f"/api/v1/telemetry/{device}", content=json.dumps(body).encode(), headers=headers
    )


async def test_http_input_buffers_then_forwards(runtime: Runtime, make_agent: MakeAgent) -> None:
    agent, client = await make_agent()
    r = await post(client, "loom-1", [{"ts": NOW - 1000, "values": {"rpm": 500, "on": True}}])
    assert r.status_code == 200, r.text
    assert r.json() == {"stored": 2, "duplicates": 0}
    health = (await client.get("/health")).json()
    assert (health["backlog_points"], health["link"]) == (2, "starting")
    assert health["inputs"]["http"]["points"] == 2

    await agent.forwarder.step()
    latest = {x.key: x.value for x in await runtime.store.latest("loom-1")}
    assert latest == {"rpm": 500.0, "on": True}
    health = (await client.get("/health")).json()
    assert (health["backlog_points"], health["link"], health["clock"]["synced"]) == (0, "up", True)
    assert health["last_sync_age_s"] is not None
    assert "backlog" in format_status(health)


async def test_bad_input_is_refused_with_reasons(make_agent: MakeAgent) -> None:
    _, client = await make_agent(local_token="s3cret", max_payload_bytes=1000)
    ok = {"values": {"v": 1}}
    assert (await post(client, "loom-1", ok)).status_code == 401
    r = await post(client, "loom-1", ok, Authorization="Bearer s3cret")
    assert r.status_code == 200
    auth = {"Authorization": "Bearer s3cret"}
    assert (await post(client, "bad id!", ok, **auth)).status_code == 400
    assert (await post(client, "loom-1", {"values": {"v": None}}, **auth)).status_code == 400
    assert (await post(client, "loom-1", {"values": {"x" * 2000: 1}}, **auth)).status_code == 413
    health = (await client.get("/health")).json()
    assert health["inputs"]["http"]["refused"] == 4


async def test_full_buffer_answers_503_so_devices_retry(make_agent: MakeAgent) -> None:
    _, client = await make_agent(buffer_cap_points=3, when_full="reject-new")
    assert (await post(client, "loom-1", {"values": {"a": 1, "b": 2}})).status_code == 200
    r = await post(client, "loom-1", {"values": {"a": 1, "b": 2}})
    assert r.status_code == 503
    assert r.headers["retry-after"] == "5"
    assert r.json()["reason"] == "buffer_full"
    health = (await client.get("/health")).json()
    assert (health["rejected_points"], health["buffer_full"]) == (2, True)


async def test_unchecked_clock_accepts_device_time_and_corrects_its_own(
    runtime: Runtime, make_agent: MakeAgent
) -> None:
    now = int(time.time() * 1000)
    wall = FakeClock(now - 10 * 86_400_000)  # booted ten days in the past
    agent, client = await make_agent(wall=wall)
    r = await post(client, "loom-1", [{"ts": NOW - 500, "values": {"v": 1}}, {"values": {"w": 2}}])
    assert r.status_code == 200, r.text  # the device's (right) time is not "in the future"
    await agent.forwarder.step()
    (v,) = await runtime.store.query("loom-1", "v", 0, NOW + 86_400_000)
    (w,) = await runtime.store.query("loom-1", "w", 0, NOW + 86_400_000)
    assert v.ts == NOW - 500
    assert abs(w.ts - now) < 60_000  # stamped by the edge ten days off, shifted on sync


async def test_status_goes_to_the_server_as_gateway_telemetry(
    runtime: Runtime, make_agent: MakeAgent
) -> None:
    agent, _ = await make_agent()
    await agent.buffer.put(agent._status_samples(await agent.status()))
    await agent.forwarder.step()
    latest = {x.key: x.value for x in await runtime.store.latest("gw-1")}
    assert latest["edge.link_up"] == 0.0  # not up yet when the status was taken (false)
    assert latest["edge.backlog_points"] == 0.0
    assert "edge.dropped_points" in latest


async def test_agent_runs_serves_and_stops(runtime: Runtime, make_agent: MakeAgent) -> None:
    agent, _ = await make_agent(sim_profile="food", sim_devices=1, sim_interval_s=0.2)
    server = uvicorn.Server(uvicorn_config(agent.app, agent.settings))
    task = asyncio.create_task(agent.run(server))
    try:
        async with httpx.AsyncClient(base_url=agent.settings.local_url) as client:
            for _ in range(100):
                if server.started:
                    break
                await asyncio.sleep(0.05)
            r = await post(client, "loom-9", {"values": {"v": 3}})
            assert r.status_code == 200
            for _ in range(200):
                if await runtime.store.latest("loom-9") and await runtime.store.latest("fd-power"):
                    break
                await asyncio.sleep(0.05)
            assert [x.value for x in await runtime.store.latest("loom-9")] == [3.0]
            health = (await client.get("/health")).json()
            assert health["inputs"]["sim:food"]["points"] > 0
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


async def test_sim_connector_steps_on_the_edge_clock(runtime: Runtime) -> None:
    from karkhana.edge.clock import EdgeClock

    clock = EdgeClock(1, FakeClock(NOW))
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    sim = SimConnector(clock, "textile", 1, interval_s=2.0, sleep=sleep)
    await sim.open()
    samples = await sim.read()
    assert slept == [2.0]
    assert samples and {s.ts for s in samples} == {NOW}
    assert len({s.device_id for s in samples}) > 1
    await sim.close()


# -- settings and CLI -------------------------------------------------------------------------


def test_settings_from_file_environment_and_flags(tmp_path: Path) -> None:
    path = tmp_path / "edge.toml"
    path.write_text(
        'server = "https://karkhana.local:8000"\ngateway-id = "gw-file"\ntoken = "t-file"\n'
        'http_port = 9000\nbandwidth_bps = 2000\nwhen_full = "reject-new"\n'
    )
    s = config.load(path, {"KARKHANA_EDGE_GATEWAY_ID": "gw-env"}, {"http_port": "9100"})
    assert (s.server, s.gateway_id, s.token, s.http_port) == (
        "https://karkhana.local:8000",
        "gw-env",
        "t-file",
        9100,
    )
    assert (s.bandwidth_bps, s.when_full, s.fsync) == (2000, "reject-new", "FULL")
    s.require_link()
    for bad in ("nonsense = 1\n", 'when_full = "explode"\n', "http_port = 70000\n", "[[x"):
        path.write_text(bad)
        with pytest.raises(ConfigError):
            config.load(path, {})
    with pytest.raises(ConfigError, match="no config file"):
        config.load(tmp_path / "missing.toml", {})
    with pytest.raises(ConfigError, match="--token"):
        EdgeSettings(server="http://x", gateway_id="g").require_link()
    with pytest.raises(ConfigError, match="URL"):
        EdgeSettings(server="x", gateway_id="g", token="t").require_link()


def test_cli_errors_are_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["edge", "--server", "http://x", "--gateway-id", "g"]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
    port = str(free_port())
    assert main(["edge", "status", "--http-port", port]) == 2
    assert "no edge agent answers" in capsys.readouterr().err


def test_docs_list_every_edge_setting() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "edge.md").read_text()
    assert config.describe() in doc
