"""The OPC UA input against a real asyncua server on a free port, into a real buffer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from asyncua import Server, ua

from karkhana.core.clock import FakeClock
from karkhana.core.errors import ConfigError
from karkhana.edge import config
from karkhana.edge.agent import EdgeAgent
from karkhana.edge.clock import EdgeClock
from karkhana.edge.connectors.base import ConnectorError
from karkhana.edge.connectors.opcua import OpcUaConnector
from karkhana.edge.opcua.servers import OpcUaServer, parse_servers
from tests.conftest import free_port

pytestmark = pytest.mark.anyio
NOW = int(time.time() * 1000)
NS = "urn:karkhana:test:press"


class Plc:
    """An OPC UA server with a press's variables: speed, stroke count, running, recipe, curve."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"opc.tcp://127.0.0.1:{port}/press/"
        self.server: Server | None = None
        self.vars: dict[str, Any] = {}
        self.ns = 0

    async def start(self) -> None:
        server = Server()
        await server.init()
        server.set_endpoint(self.url)
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        self.ns = await server.register_namespace(NS)
        press = await server.nodes.objects.add_object(self.ns, "Press")
        initial: dict[str, Any] = {
            "Press.Speed": 42.5,
            "Press.Strokes": ua.Variant(1000, ua.VariantType.UInt32),
            "Press.Running": True,
            "Press.Recipe": "bracket-7",
            "Press.Curve": [1.0, 2.0],
        }
        for name, value in initial.items():
            node = ua.NodeId(name, self.ns)
            self.vars[name] = await press.add_variable(node, name.split(".")[1], value)
        await server.start()
        self.server = server

    async def write(self, name: str, value: Any) -> None:
        await self.vars[name].write_value(value)

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None


@pytest.fixture
async def plc() -> AsyncIterator[Plc]:
    p = Plc(free_port())
    await p.start()
    yield p
    await p.stop()


def server_cfg(plc: Plc, **kw: Any) -> OpcUaServer:
    nodes = kw.pop(
        "nodes",
        (
            ("speed_spm", f"ns={plc.ns};s=Press.Speed"),
            ("strokes", f"ns={plc.ns};s=Press.Strokes"),
            ("running", f"ns={plc.ns};s=Press.Running"),
            ("recipe", f"ns={plc.ns};s=Press.Recipe"),
            ("curve", f"ns={plc.ns};s=Press.Curve"),
        ),
    )
    return OpcUaServer("press-1", plc.url, nodes, publishing_interval_ms=50, timeout_s=2.0, **kw)


async def read_until(conn: OpcUaConnector, keys: set[str]) -> dict[str, Any]:
    got: dict[str, Any] = {}
    async with asyncio.timeout(10):
        while not keys <= got.keys():
            got.update({s.key: s.value for s in await conn.read()})
    return got


async def test_subscription_delivers_initial_values_and_changes(plc: Plc) -> None:
    conn = OpcUaConnector(EdgeClock(1, FakeClock(NOW)), server_cfg(plc))
    await conn.open()
    try:
        first = await read_until(conn, {"speed_spm", "strokes", "running", "recipe"})
        assert first == {
            "speed_spm": 42.5,
            "strokes": 1000.0,
            "running": True,
            "recipe": "bracket-7",
        }
        assert conn.stats["skipped_values"] == 1  # the array
        assert conn.stats["subscribed_nodes"] == 5
        await plc.write("Press.Speed", 55.0)
        await plc.write("Press.Running", False)
        changed = await read_until(conn, {"speed_spm", "running"})
        assert changed == {"speed_spm": 55.0, "running": False}
        assert conn.stamps_time
    finally:
        await conn.close()


async def test_source_timestamps_keep_the_servers_clock(plc: Plc) -> None:
    conn = OpcUaConnector(EdgeClock(1, FakeClock(NOW)), server_cfg(plc, timestamps="source"))
    await conn.open()
    try:
        assert not conn.stamps_time
        async with asyncio.timeout(10):
            samples = await conn.read()
        # the fake edge clock says NOW; the server stamps its own (real) time
        assert all(abs(s.ts - time.time() * 1000) < 60_000 for s in samples)
    finally:
        await conn.close()


async def test_refused_nodes_are_counted_and_the_rest_go_on(
    plc: Plc, caplog: pytest.LogCaptureFixture
) -> None:
    nodes = (("speed_spm", f"ns={plc.ns};s=Press.Speed"), ("ghost", f"ns={plc.ns};s=No.Such"))
    conn = OpcUaConnector(EdgeClock(1, FakeClock(NOW)), server_cfg(plc, nodes=nodes))
    with caplog.at_level(logging.WARNING):
        await conn.open()
    try:
        assert conn.stats["refused_nodes"] == 1
        assert "'ghost' refused" in caplog.text
        assert (await read_until(conn, {"speed_spm"}))["speed_spm"] == 42.5
    finally:
        await conn.close()
    only_ghost = OpcUaConnector(EdgeClock(1, FakeClock(NOW)), server_cfg(plc, nodes=(nodes[1],)))
    with pytest.raises(ConnectorError, match="refused every node"):
        await only_ghost.open()


async def test_a_lost_server_is_a_connector_error_and_reconnect_resumes(plc: Plc) -> None:
    conn = OpcUaConnector(EdgeClock(1, FakeClock(NOW)), server_cfg(plc))
    await conn.open()
    await read_until(conn, {"speed_spm"})
    await plc.stop()
    with pytest.raises(ConnectorError, match="lost"):
        async with asyncio.timeout(15):
            while True:
                await conn.read()
    await conn.close()
    with pytest.raises(ConnectorError, match="cannot connect"):
        await conn.open()
    await plc.start()
    await plc.write("Press.Speed", 61.0)
    await conn.open()
    try:
        assert (await read_until(conn, {"speed_spm"}))["speed_spm"] == 61.0
    finally:
        await conn.close()


async def test_agent_reads_opcua_from_its_config(plc: Plc, tmp_path: Path) -> None:
    cfg = tmp_path / "edge.toml"
    cfg.write_text(
        'server = "http://127.0.0.1:1"\ngateway_id = "gw-1"\ntoken = "t"\nfsync = "OFF"\n'
        f'data_dir = "{tmp_path / "data"}"\n'
        f'[[opcua]]\ndevice_id = "press-1"\nurl = "{plc.url}"\npublishing_interval_ms = 50\n'
        f'[opcua.nodes]\nspeed_spm = "ns={plc.ns};s=Press.Speed"\n'
    )
    agent = EdgeAgent(config.load(cfg, {}))
    (conn,) = agent.connectors
    pump = asyncio.create_task(agent._pump(conn))
    try:
        for _ in range(200):
            if (await agent.status())["inputs"].get("opcua:press-1", {}).get("points", 0) >= 1:
                break
            await asyncio.sleep(0.05)
        entries = await agent.buffer.peek(100)
        assert [(e.sample.device_id, e.sample.key, e.sample.value) for e in entries] == [
            ("press-1", "speed_spm", 42.5)
        ]
        assert (await agent.status())["inputs"]["opcua:press-1"]["subscribed_nodes"] == 1
    finally:
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump
        await agent.stop()


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('url = "opc.tcp://h:4840"\nnodes = {a = "ns=2;i=1"}', "device_id: missing"),
        ('device_id = "p"\nnodes = {a = "ns=2;i=1"}', "url: missing"),
        ('device_id = "p"\nurl = "http://h"\nnodes = {a = "ns=2;i=1"}', "expected opc.tcp://"),
        ('device_id = "p"\nurl = "opc.tcp://h:4840"', "nodes: missing"),
        (
            'device_id = "p"\nurl = "opc.tcp://h:4840"\nnodes = {a = "Speed"}',
            "not an OPC UA node id",
        ),
        (
            'device_id = "p"\nurl = "opc.tcp://h:4840"\nnodes = {"a b" = "i=1"}',
            "not a valid signal key",
        ),
        (
            'device_id = "p"\nurl = "opc.tcp://h:4840"\nnodes = {a = "i=1"}\ntimestamps = "plc"',
            "timestamps: expected 'edge' or 'source'",
        ),
        (
            'device_id = "p"\nurl = "opc.tcp://h:4840"\nnodes = {a = "i=1"}\nsecurity = "None"',
            "security: expected 'Policy,Mode",
        ),
        (
            'device_id = "p"\nurl = "opc.tcp://h:4840"\nnodes = {a = "i=1"}\nnode = 1',
            "node: unknown field",
        ),
    ],
)
def test_bad_opcua_tables_are_config_errors(tmp_path: Path, table: str, message: str) -> None:
    path = tmp_path / "edge.toml"
    path.write_text(f"[[opcua]]\n{table}\n")
    with pytest.raises(ConfigError, match=message):
        config.load(path, {})


def test_opcua_table_defaults_and_password_not_in_repr() -> None:
    (s,) = parse_servers(
        [
            {
                "device_id": "p",
                "url": "opc.tcp://plc:4840",
                "nodes": {"speed": "ns=2;s=Line 1.Speed", "count": "ns=3;i=1002"},
                "username": "edge",
                "password": "s3cret-pw",
                "security": "Basic256Sha256,SignAndEncrypt,cert.pem,key.pem",
            }
        ],
        "edge.toml",
    )
    assert s.nodes == (("speed", "ns=2;s=Line 1.Speed"), ("count", "ns=3;i=1002"))
    assert (s.publishing_interval_ms, s.timestamps, s.timeout_s) == (1000, "edge", 5.0)
    assert "s3cret" not in repr(s)
