"""GET /api/v1/live against a real uvicorn server: samples arrive as SSE, scoped to sites."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from karkhana import cli
from karkhana.api.app import create_app
from karkhana.runtime import Runtime
from karkhana.security.policy import Role
from tests.conftest import ADMIN_PASSWORD, make_settings

pytestmark = pytest.mark.anyio
PASSWORD = "live-user-password"
SSE = {"Accept": "text/event-stream"}


@dataclass
class World:
    rt: Runtime
    base: str
    device_token: str


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    settings = make_settings(tmp_path, tls="off")
    rt = Runtime(settings)
    await rt.start(mqtt=False)
    for tag in ("a", "b"):
        await rt.assets.create_site(f"site-{tag}", f"Site {tag}")
        await rt.assets.create_area(f"area-{tag}", f"site-{tag}", "Weaving")
        await rt.assets.create_line(f"line-{tag}", f"area-{tag}", "Shed")
    _, token = await rt.devices.create("loom-dev", site_id="site-a")
    await rt.devices.create("other-dev", site_id="site-b")
    await rt.assets.create_machine("loom-1", "line-a", "Loom 1", "power_loom", "loom-dev")
    await rt.assets.create_machine("loom-9", "line-b", "Loom 9", "power_loom", "other-dev")
    await rt.users.create("viewer-b", PASSWORD, Role.VIEWER, ["site-b"])
    server = uvicorn.Server(cli.uvicorn_config(create_app(rt), settings, None))
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.02)
    yield World(rt, f"http://127.0.0.1:{settings.http_port}", token)
    server.should_exit = True
    await task
    await rt.stop()


async def login(client: httpx.AsyncClient, user: str, password: str) -> dict[str, str]:
    r = await client.post("/api/v1/auth/login", json={"username": user, "password": password})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


async def next_event(lines: AsyncIterator[str]) -> tuple[str, object]:
    event = None
    async for line in lines:
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: ") and event is not None:
            return event, json.loads(line[6:])
    raise AssertionError("the stream ended")


async def test_a_posted_sample_reaches_the_stream(world: World) -> None:
    async with httpx.AsyncClient(base_url=world.base, timeout=10) as client:
        auth = await login(client, "admin", ADMIN_PASSWORD)
        async with client.stream(
            "GET", "/api/v1/live", params={"site_id": "site-a"}, headers=auth | SSE
        ) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.aiter_lines()
            assert await next_event(lines) == ("ready", {"machines": ["loom-1"]})
            posted = time.monotonic()
            r = await client.post(
                "/api/v1/telemetry/loom-dev",
                json={
                    "ts": 1_750_000_000_000,
                    "values": {"picks_per_min": 512, "state": "running"},
                },
                headers={"Authorization": f"Bearer {world.device_token}"},
            )
            assert r.status_code == 200, r.text
            event, data = await asyncio.wait_for(next_event(lines), 5)
            assert time.monotonic() - posted < 2
    assert event == "samples"
    assert isinstance(data, list)
    got = {(e["machine_id"], e["signal"], e["ts"], e["value"]) for e in data}
    assert got == {
        ("loom-1", "picks_per_min", 1_750_000_000_000, 512),
        ("loom-1", "state", 1_750_000_000_000, "running"),
    }


async def test_several_sites_share_one_stream(world: World) -> None:
    async with httpx.AsyncClient(base_url=world.base, timeout=10) as client:
        auth = await login(client, "admin", ADMIN_PASSWORD)
        params = [("site_id", "site-a"), ("site_id", "site-b")]
        async with client.stream("GET", "/api/v1/live", params=params, headers=auth | SSE) as s:
            assert await next_event(s.aiter_lines()) == (
                "ready",
                {"machines": ["loom-1", "loom-9"]},
            )
        viewer = await login(client, "viewer-b", PASSWORD)
        r = await client.get("/api/v1/live", params=params, headers=viewer | SSE)
        assert r.status_code == 403


async def test_other_sites_are_refused_and_bad_requests_explained(world: World) -> None:
    async with httpx.AsyncClient(base_url=world.base, timeout=10) as client:
        viewer = await login(client, "viewer-b", PASSWORD)
        for params in ({"machine_id": "loom-1"}, {"site_id": "site-a"}):
            r = await client.get("/api/v1/live", params=params, headers=viewer | SSE)
            assert r.status_code == 403, r.text
        r = await client.get("/api/v1/live", params={"machine_id": "nope"}, headers=viewer | SSE)
        assert r.status_code == 404
        r = await client.get("/api/v1/live", headers=viewer | SSE)
        assert r.status_code == 400 and "exactly one" in r.json()["detail"]
        r = await client.get("/api/v1/live", params={"machine_id": "loom-9"}, headers=viewer)
        assert r.status_code == 400 and "text/event-stream" in r.json()["detail"]
        r = await client.get("/api/v1/live", params={"machine_id": "loom-9"}, headers=SSE)
        assert r.status_code == 401
        async with client.stream(
            "GET", "/api/v1/live", params={"machine_id": "loom-9"}, headers=viewer | SSE
        ) as stream:
            assert stream.status_code == 200
            assert await next_event(stream.aiter_lines()) == ("ready", {"machines": ["loom-9"]})


async def test_session_gives_the_csrf_token_of_a_cookie_session(world: World) -> None:
    async with httpx.AsyncClient(base_url=world.base, timeout=10) as client:
        r = await client.post(
            "/api/v1/auth/login",
            json={"username": "viewer-b", "password": PASSWORD, "session": True},
        )
        csrf = r.json()["csrf_token"]
        me = (await client.get("/api/v1/web/session")).json()
        assert me == {
            "username": "viewer-b",
            "role": "viewer",
            "sites": ["site-b"],
            "csrf_token": csrf,
        }
        bearer = await login(client, "admin", ADMIN_PASSWORD)
        client.cookies.clear()
        got = (await client.get("/api/v1/web/session", headers=bearer)).json()
        assert got["csrf_token"] is None and got["role"] == "admin"
        assert (await client.get("/api/v1/web/session")).status_code == 401


async def test_keepalive_end_of_stream_and_no_leak(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from karkhana.api import live

    monkeypatch.setattr(live, "KEEPALIVE_S", 0.2)
    monkeypatch.setattr(live, "MAX_STREAM_S", 1.0)
    subs = world.rt.bus._subscriptions
    others = len(subs)  # the production and alarm services subscribe too
    async with httpx.AsyncClient(base_url=world.base, timeout=10) as client:
        auth = await login(client, "admin", ADMIN_PASSWORD)
        started = time.monotonic()
        async with client.stream(
            "GET", "/api/v1/live", params={"machine_id": "loom-1"}, headers=auth | SSE
        ) as stream:
            text = "".join([chunk async for chunk in stream.aiter_text()])
        # the stream ends by itself (the browser reconnects), with keep-alives while quiet
        assert time.monotonic() - started < 5
        assert text.startswith("retry: 2000\n")
        assert text.count(": keep-alive\n\n") >= 2
        assert len(subs) == others

        # a client that goes away leaves no subscription behind
        monkeypatch.setattr(live, "MAX_STREAM_S", 60.0)
        async with client.stream(
            "GET", "/api/v1/live", params={"site_id": "site-a"}, headers=auth | SSE
        ) as stream:
            await next_event(stream.aiter_lines())
            assert len(subs) == others + 1
    for _ in range(100):  # the server notices the closed connection at its next write or check
        if len(subs) == others:
            break
        await asyncio.sleep(0.05)
    assert len(subs) == others
