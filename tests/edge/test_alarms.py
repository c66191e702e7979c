"""Alarms on the edge: rules bound from the server's JSON, raised offline into a durable outbox,
a local webhook and a Modbus relay coil, kept open across a restart, sent once the link is up."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from karkhana.core.errors import ConfigError
from karkhana.core.model import Sample
from karkhana.edge.alarms import Coil, EdgeAlarms, bind_rules, modbus_coil
from tests.conftest import free_port

pytestmark = pytest.mark.anyio
NOW = int(time.time() * 1000)

RULES = {
    "rules": [
        {
            "rule": {
                "id": "hot-bearing",
                "name": "Bearing hot",
                "severity": "critical",
                "machine_id": "loom-03",
                "condition": {
                    "type": "threshold",
                    "signal": "bearing_temp_c",
                    "op": ">",
                    "value": 70,
                    "deadband": 2,
                },
                "for_s": 2,
            },
            "machine_id": "loom-03",
            "machine_name": "Loom 3",
            "site_id": "mill-1",
            "template": "power_loom",
            "timezone": "Asia/Karachi",
            "signals": {
                "bearing_temp_c": {"device_id": "loom-03", "key": "bearing_temp_c", "unit": "°C"}
            },
        },
        {"rule": {"id": "broken"}, "machine_id": "x", "signals": {}},
    ]
}


def temps(values: list[float], start: int = NOW, step_ms: int = 1000) -> list[Sample]:
    return [
        Sample("loom-03", "bearing_temp_c", start + i * step_ms, v) for i, v in enumerate(values)
    ]


class Server:
    """The server's two edge routes, answering as configured; records what it got."""

    def __init__(self) -> None:
        self.up = True
        self.events: list[dict[str, Any]] = []

    def app(self) -> Starlette:
        async def rules(request: Request) -> JSONResponse:
            return JSONResponse(RULES)

        async def alarms(request: Request) -> JSONResponse:
            body = await request.json()
            new = [e for e in body["events"] if e not in self.events]
            self.events += new
            return JSONResponse({"received": len(body["events"]), "new": len(new)})

        return Starlette(
            routes=[
                Route("/api/v1/edge/rules", rules),
                Route("/api/v1/edge/alarms", alarms, methods=["POST"]),
            ]
        )

    def transport(self) -> httpx.AsyncBaseTransport:
        inner = httpx.ASGITransport(app=self.app())
        server = self

        class Switch(httpx.AsyncBaseTransport):
            async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
                if not server.up:
                    raise httpx.ConnectError("link down", request=request)
                return await inner.handle_async_request(request)

        return Switch()


@pytest.fixture
def server() -> Server:
    return Server()


@pytest.fixture
async def client(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=server.transport(), base_url="http://server") as c:
        yield c


def test_rules_bind_from_the_servers_json_and_bad_ones_are_skipped() -> None:
    (rule,) = bind_rules(RULES)
    assert rule.key == ("hot-bearing", "loom-03")
    assert rule.origin == "edge" and rule.machine_name == "Loom 3"
    assert rule.sources[0].device_id == "loom-03"
    with pytest.raises(Exception, match="rules"):
        bind_rules({"nope": 1})


def test_coil_address_is_checked() -> None:
    assert Coil.parse("192.168.1.60:502/1/0") == Coil("192.168.1.60", 502, 1, 0)
    for bad in ("192.168.1.60", "h:502/1", "h:70000/1/0", "h:502/300/0"):
        with pytest.raises(ConfigError, match="alarm_coil"):
            Coil.parse(bad)


async def test_offline_alarm_is_kept_acted_on_and_sent_once(
    tmp_path: Path, server: Server, client: httpx.AsyncClient
) -> None:
    now = [NOW]
    switched: list[bool] = []

    async def coil(c: Coil, on: bool) -> None:
        switched.append(on)

    hooks: list[dict[str, Any]] = []

    async def hook(request: Request) -> JSONResponse:
        hooks.append(await request.json())
        return JSONResponse({})

    hook_port = free_port()
    import uvicorn

    web = uvicorn.Server(
        uvicorn.Config(
            Starlette(routes=[Route("/siren", hook, methods=["POST"])]),
            host="127.0.0.1",
            port=hook_port,
            log_level="warning",
        )
    )
    serving = asyncio.create_task(web.serve())
    for _ in range(500):
        if web.started:
            break
        await asyncio.sleep(0.01)
    alarms = EdgeAlarms(
        tmp_path,
        client=client,
        now_ms=lambda: now[0],
        webhook=f"http://127.0.0.1:{hook_port}/siren",
        coil=Coil("relay", 502, 1, 0),
        write_coil=coil,
    )
    try:
        assert await alarms.fetch_rules()
        assert alarms.stats["rules"] == 1 and (tmp_path / "rules.json").exists()
        server.up = False  # the internet goes

        # above 70 °C for 2 s: raised on the third sample
        assert alarms.feed(temps([69.0, 72.0, 73.0])) == []
        (raised,) = alarms.feed(temps([74.0], NOW + 4000))
        assert (raised.kind, raised.origin, raised.value) == ("raised", "edge", 74.0)
        assert alarms.stats["unsent"] == 1
        for _ in range(100):
            if hooks and switched:
                break
            await asyncio.sleep(0.02)
        assert hooks[0]["id"] == raised.id and hooks[0]["kind"] == "raised"
        assert "Loom 3" in hooks[0]["text"]["en"] and "70" in hooks[0]["text"]["en"]
        assert hooks[0]["text"]["ur"] and hooks[0]["text"]["ur"] != hooks[0]["text"]["en"]
        assert switched == [True]
        assert await alarms.send() == 0  # the link is down: kept
        assert alarms.stats["unsent"] == 1
        await alarms.close()

        # power cut and restart, still offline: the open alarm is not raised again
        alarms = EdgeAlarms(
            tmp_path,
            client=client,
            now_ms=lambda: now[0],
            coil=Coil("r", 502, 1, 0),
            write_coil=coil,
        )
        assert alarms.stats["rules"] == 1  # from the cached copy
        assert alarms.status()["open"] == 1
        assert alarms.feed(temps([75.0, 76.0], NOW + 10_000)) == []
        (cleared,) = alarms.feed(temps([67.0], NOW + 13_000))  # below 70 - 2 (deadband)
        assert (cleared.kind, cleared.id) == ("cleared", raised.id)
        await asyncio.sleep(0.05)
        assert switched[-1] is False

        server.up = True
        assert await alarms.send() == 2
        assert [(e["kind"], e["id"]) for e in server.events] == [
            ("raised", raised.id),
            ("cleared", raised.id),
        ]
        assert await alarms.send() == 0 and alarms.stats["unsent"] == 0
    finally:
        await alarms.close()
        web.should_exit = True
        await serving


async def test_stale_signal_fires_on_ticks_without_samples(
    tmp_path: Path, client: httpx.AsyncClient
) -> None:
    now = [NOW]
    stale = json.loads(json.dumps(RULES))
    stale["rules"][0]["rule"]["condition"] = {
        "type": "stale",
        "signal": "bearing_temp_c",
        "after_s": 30,
    }
    stale["rules"][0]["rule"]["for_s"] = 0
    (tmp_path / "rules.json").write_text(json.dumps(stale))
    alarms = EdgeAlarms(tmp_path, client=None, now_ms=lambda: now[0])
    try:
        alarms.feed(temps([50.0]))
        now[0] = NOW + 10_000
        assert alarms.tick() == []
        now[0] = NOW + 31_000
        (event,) = alarms.tick()
        assert (event.kind, event.message) == ("raised", "stale")
    finally:
        await alarms.close()


async def test_relay_coil_is_switched_on_a_real_modbus_device() -> None:
    from pymodbus.client import AsyncModbusTcpClient

    from karkhana.core.errors import KarkhanaError

    port = free_port()
    bits = [SimData(0, count=16, values=False, datatype=DataType.BITS)]
    regs = [SimData(0, count=1, values=0, datatype=DataType.REGISTERS)]
    server = ModbusTcpServer(
        SimDevice(1, simdata=(bits, bits, regs, regs)), address=("127.0.0.1", port)
    )
    await server.serve_forever(background=True)
    reader = AsyncModbusTcpClient("127.0.0.1", port=port)
    try:
        await reader.connect()
        for on in (True, False, True):
            await modbus_coil(Coil("127.0.0.1", port, 1, 3), on)
            r: Any = await reader.read_coils(0, count=8, device_id=1)
            assert r.bits[:8] == [False, False, False, on, False, False, False, False]
    finally:
        reader.close()
        await server.shutdown()
    with pytest.raises(KarkhanaError, match="cannot connect"):
        await modbus_coil(Coil("127.0.0.1", free_port(), 1, 3), True)
