from __future__ import annotations

import httpx
import pytest

from tests.conftest import ADMIN_PASSWORD

pytestmark = pytest.mark.anyio


async def test_login_wrong_password_is_401(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/api/v1/auth/login", json={"username": "admin", "password": "nope-nope-nope"}
    )
    assert r.status_code == 401
    assert r.json()["reason"] == "unauthorized"
    r = await client.post(
        "/api/v1/auth/login", json={"username": "ghost", "password": ADMIN_PASSWORD}
    )
    assert r.status_code == 401


async def test_api_needs_a_token(client: httpx.AsyncClient) -> None:
    for path in ["/api/v1/devices", "/api/v1/telemetry/x/latest", "/api/v1/assets"]:
        r = await client.get(path)
        assert r.status_code == 401, path
    r = await client.get("/api/v1/devices", headers={"Authorization": "Bearer kt_forged"})
    assert r.status_code == 401


async def test_logout_revokes_token(admin: httpx.AsyncClient) -> None:
    assert (await admin.get("/api/v1/auth/me")).json() == {
        "username": "admin",
        "role": "admin",
        "sites": [],
    }
    assert (await admin.post("/api/v1/auth/logout")).status_code == 204
    assert (await admin.get("/api/v1/auth/me")).status_code == 401


async def test_device_lifecycle(admin: httpx.AsyncClient) -> None:
    r = await admin.post("/api/v1/devices", json={"id": "press-1", "template": "mechanical_press"})
    assert r.status_code == 201
    first = r.json()["token"]
    assert (await admin.post("/api/v1/devices", json={"id": "press-1"})).status_code == 409
    assert (await admin.post("/api/v1/devices", json={"id": "bad id!"})).status_code == 400
    assert (
        await admin.post("/api/v1/devices", json={"id": "x", "template": "warp_drive"})
    ).status_code == 404
    devices = (await admin.get("/api/v1/devices")).json()
    assert [d["id"] for d in devices] == ["press-1"]
    assert "token" not in devices[0] and "token_hash" not in devices[0]

    second = (await admin.post("/api/v1/devices/press-1/rotate-token")).json()["token"]
    assert second != first
    send = {"values": {"strokes_per_min": 30}}
    old = await admin.post(
        "/api/v1/telemetry/press-1", json=send, headers={"Authorization": f"Bearer {first}"}
    )
    assert old.status_code == 401
    new = await admin.post(
        "/api/v1/telemetry/press-1", json=send, headers={"Authorization": f"Bearer {second}"}
    )
    assert new.status_code == 200

    assert (await admin.delete("/api/v1/devices/press-1?purge=true")).status_code == 204
    assert (await admin.get("/api/v1/devices/press-1")).status_code == 404
    assert (await admin.delete("/api/v1/devices/press-1")).status_code == 404


async def test_device_with_a_gateway(admin: httpx.AsyncClient) -> None:
    assert (await admin.post("/api/v1/devices", json={"id": "gw-1"})).status_code == 201
    r = await admin.post("/api/v1/devices", json={"id": "plc-1", "parent_id": "gw-1"})
    assert r.status_code == 201
    assert (await admin.get("/api/v1/devices/plc-1")).json()["parent_id"] == "gw-1"
    r = await admin.post("/api/v1/devices", json={"id": "plc-2", "parent_id": "nobody"})
    assert r.status_code == 404
    assert (await admin.get("/api/v1/devices/gw-1")).json()["parent_id"] is None
