"""The HTTP contract of telemetry and device registration, against a stand-in server."""

from __future__ import annotations

import asyncio
import stat
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from karkhana.core.clock import FakeClock
from karkhana.core.errors import ConfigError, Forbidden, InvalidPayload, Unauthorized
from karkhana.sim.profiles import build_plant
from karkhana.sim.provision import HttpProvisioner, StaticProvisioner, load_credentials
from karkhana.sim.runner import run
from karkhana.sim.transport import DeviceRefused, HttpTransport, TransportError
from tests.sim.support import MONDAY_MS, StandIn, entries, fake_sleep

SERVER = "http://karkhana.test"
Handler = Callable[[httpx.Request], httpx.Response]


def provisioner(server: StandIn, path: Path, password: str = "s3cret") -> HttpProvisioner:
    return HttpProvisioner(
        SERVER, "admin", password, path, http_transport=httpx.MockTransport(server.handle)
    )


def test_provisioner_registers_devices_and_reuses_saved_tokens(tmp_path: Path) -> None:
    plant = build_plant("food", 2, 1, MONDAY_MS)
    server = StandIn(existing=("fd-power",))
    creds = tmp_path / "data" / "sim-credentials.json"
    tokens = asyncio.run(provisioner(server, creds).ensure(plant.devices))
    assert set(tokens) == {d.device_id for d in plant.devices}
    assert all(tokens[d] == server.devices[d]["token"] for d in tokens)
    assert "POST /api/v1/devices/fd-power/rotate-token" in server.requests
    assert server.devices["fd-coldroom-01"]["template"] == "cold_room"
    assert server.devices["fd-coldroom-01"]["name"] == "Chiller room 01"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert load_credentials(creds, SERVER) == tokens

    server.requests.clear()
    again = asyncio.run(provisioner(server, creds, password="").ensure(plant.devices))
    assert again == tokens and server.requests == []
    assert load_credentials(creds, "http://elsewhere:8000") == {}


def test_provisioner_refreshes_tokens_the_server_forgot(tmp_path: Path) -> None:
    plant = build_plant("food", 2, 1, MONDAY_MS)
    server = StandIn()
    creds = tmp_path / "creds.json"
    tokens = asyncio.run(provisioner(server, creds).ensure(plant.devices))
    del server.devices["fd-power"]
    fresh = asyncio.run(provisioner(server, creds).refresh(plant.devices))
    assert set(fresh) == set(tokens)
    assert all(fresh[d] != tokens[d] for d in tokens)
    assert all(fresh[d] == server.devices[d]["token"] for d in tokens)
    assert load_credentials(creds, SERVER) == fresh


def test_provisioner_errors_are_clear(tmp_path: Path) -> None:
    plant = build_plant("food", 2, 1, MONDAY_MS)
    with pytest.raises(Unauthorized, match=r"login to http://karkhana\.test as 'admin' failed"):
        asyncio.run(provisioner(StandIn(), tmp_path / "a.json", "wrong").ensure(plant.devices))
    with pytest.raises(ConfigError, match="KARKHANA_ADMIN_PASSWORD"):
        asyncio.run(provisioner(StandIn(), tmp_path / "b.json", "").ensure(plant.devices))
    (tmp_path / "c.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="not a simulator credentials file"):
        asyncio.run(provisioner(StandIn(), tmp_path / "c.json").ensure(plant.devices))

    def forbidden(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/login"):
            return httpx.Response(200, json={"token": "t"})
        return httpx.Response(403)

    p = HttpProvisioner(
        SERVER, "admin", "pw", tmp_path / "d.json", http_transport=httpx.MockTransport(forbidden)
    )
    with pytest.raises(Forbidden, match="may not manage devices"):
        asyncio.run(p.ensure(plant.devices))

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    p = HttpProvisioner(
        SERVER, "admin", "pw", tmp_path / "e.json", http_transport=httpx.MockTransport(down)
    )
    with pytest.raises(TransportError, match=r"cannot reach http://karkhana\.test"):
        asyncio.run(p.ensure(plant.devices))


def test_static_provisioner() -> None:
    plant = build_plant("food", 2, 1, MONDAY_MS)
    tokens = {d.device_id: "t" for d in plant.devices}
    assert asyncio.run(StaticProvisioner(tokens).ensure(plant.devices)) == tokens
    with pytest.raises(ConfigError, match="no token"):
        asyncio.run(StaticProvisioner({}).ensure(plant.devices))


def test_runner_posts_telemetry_with_device_tokens(tmp_path: Path) -> None:
    plant = build_plant("food", 2, 1, MONDAY_MS, faults=False)
    server = StandIn()
    tokens = asyncio.run(provisioner(server, tmp_path / "c.json").ensure(plant.devices))
    transport = HttpTransport(SERVER, tokens, http_transport=httpx.MockTransport(server.handle))
    clock = FakeClock()
    report = asyncio.run(run(plant, transport, 1.0, 10.0, 3.0, clock, sleep=fake_sleep(clock)))
    assert len(server.telemetry) == report.messages
    per_device = {d: sum(len(entries(b)) for x, b in server.telemetry if x == d) for d in tokens}
    assert per_device == dict.fromkeys(tokens, 30)


def send_once(handler: Handler, retries: int = 2) -> None:
    plant = build_plant("food", 2, 1, MONDAY_MS)
    transport = HttpTransport(
        SERVER,
        {d.device_id: "tok" for d in plant.devices},
        retries=retries,
        backoff_s=0.0,
        http_transport=httpx.MockTransport(handler),
    )

    async def main() -> None:
        await transport.open(plant.devices)
        try:
            await transport.send("fd-power", b'{"ts":1,"values":{"a":1}}')
        finally:
            await transport.close()

    asyncio.run(main())


def test_http_transport_maps_answers_to_domain_errors() -> None:
    answers = iter([503, 500, 202])
    send_once(lambda request: httpx.Response(next(answers)))
    with pytest.raises(DeviceRefused) as refused:
        send_once(lambda request: httpx.Response(401))
    assert refused.value.device_ids == ("fd-power",)
    with pytest.raises(InvalidPayload, match="422"):
        send_once(lambda request: httpx.Response(422, text="bad key"))
    with pytest.raises(TransportError, match="giving up on fd-power after 3 tries"):
        send_once(lambda request: httpx.Response(503))

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    with pytest.raises(TransportError, match="cannot reach"):
        send_once(down, retries=0)
