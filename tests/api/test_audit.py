from __future__ import annotations

import csv
import io
import sqlite3

import httpx
import pytest

from karkhana.runtime import Runtime
from karkhana.security.users import Role
from tests.conftest import ADMIN_PASSWORD

pytestmark = pytest.mark.anyio
CLIENT = "127.0.0.1"  # the address httpx's ASGI transport reports


async def events(rt: Runtime, action: str | None = None) -> list[dict[str, object]]:
    return [e.as_dict() for e in await rt.audit.events(action=action)]


def table_text(rt: Runtime) -> str:
    rows = rt.db.read(lambda c: c.execute("SELECT * FROM audit_log").fetchall())
    return "\n".join(repr(r) for r in rows)


async def login(client: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    return await client.post(
        "/api/v1/auth/login", json={"username": username, "password": password}
    )


async def test_logins_are_recorded_with_the_source(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    assert (await login(client, "admin", "wrong-password-1")).status_code == 401
    assert (await login(client, "ghost", "wrong-password-1")).status_code == 401
    assert (await login(client, "admin", ADMIN_PASSWORD)).status_code == 200
    got = [
        (e["actor"], e["outcome"], e["source"], (e["after"] or {}).get("known_user"))
        for e in await events(runtime, "auth.login")
    ]
    assert got == [
        ("admin", "failed", CLIENT, True),
        ("ghost", "failed", CLIENT, False),
        ("admin", "ok", CLIENT, None),
    ]


async def test_logout_is_recorded(admin: httpx.AsyncClient, runtime: Runtime) -> None:
    assert (await admin.post("/api/v1/auth/logout")).status_code == 204
    [e] = await events(runtime, "auth.logout")
    assert (e["actor"], e["target"], e["source"]) == ("admin", "user:admin", CLIENT)


async def test_device_changes_name_the_acting_user(
    admin: httpx.AsyncClient, runtime: Runtime
) -> None:
    r = await admin.post("/api/v1/devices", json={"id": "press-1", "name": "Press"})
    assert r.status_code == 201
    assert (await admin.post("/api/v1/devices/press-1/rotate-token")).status_code == 200
    assert (await admin.delete("/api/v1/devices/press-1?purge=true")).status_code == 204
    got = await events(runtime, "device.*")
    assert [(e["action"], e["actor"], e["target"], e["source"]) for e in got] == [
        ("device.create", "admin", "device:press-1", CLIENT),
        ("device.rotate_token", "admin", "device:press-1", CLIENT),
        ("device.delete", "admin", "device:press-1", CLIENT),
    ]
    create, rotate, delete = got
    assert create["before"] is None and create["after"]["name"] == "Press"  # type: ignore[index]
    assert rotate["before"]["id"] == rotate["after"]["id"] == "press-1"  # type: ignore[index]
    assert delete["before"]["name"] == "Press" and delete["after"] is None  # type: ignore[index]
    assert [e["action"] for e in await events(runtime, "telemetry.purge")] == ["telemetry.purge"]
    # a refused change leaves no "ok" row
    assert (await admin.post("/api/v1/devices/press-1/rotate-token")).status_code == 404
    assert len(await events(runtime, "device.*")) == 3


async def test_asset_changes_keep_before_and_after(
    admin: httpx.AsyncClient, runtime: Runtime
) -> None:
    for path, body in [
        ("/api/v1/sites", {"id": "s1", "name": "Mill"}),
        ("/api/v1/areas", {"id": "a1", "site_id": "s1", "name": "Weaving"}),
        ("/api/v1/lines", {"id": "l1", "area_id": "a1", "name": "Line 1"}),
        (
            "/api/v1/machines",
            {
                "id": "m1",
                "line_id": "l1",
                "name": "Loom 1",
                "template": "power_loom",
                "device_id": "d1",
            },
        ),
    ]:
        assert (await admin.post(path, json=body)).status_code == 201, path
    assert (await admin.delete("/api/v1/machines/m1")).status_code == 204
    assert (await admin.delete("/api/v1/sites/s1")).status_code == 204
    got = {e["action"]: e for e in await events(runtime)}
    assert got["site.create"]["after"] == {"id": "s1", "name": "Mill", "timezone": "Asia/Karachi"}
    assert got["machine.create"]["after"]["signals"]  # type: ignore[index]
    assert got["machine.delete"]["before"]["name"] == "Loom 1"  # type: ignore[index]
    site_before = got["site.delete"]["before"]
    assert site_before["areas"][0]["lines"][0]["id"] == "l1"  # type: ignore[index]
    assert got["site.delete"]["actor"] == "admin" and got["site.delete"]["source"] == CLIENT


async def test_wrong_device_token_is_recorded_once_a_minute(
    admin: httpx.AsyncClient, runtime: Runtime
) -> None:
    assert (await admin.post("/api/v1/devices", json={"id": "meter-1"})).status_code == 201
    for _ in range(10):
        r = await admin.post(
            "/api/v1/telemetry/meter-1",
            json={"values": {"kw": 1}},
            headers={"Authorization": "Bearer kd_wrong"},
        )
        assert r.status_code == 401
    [e] = await events(runtime, "device.auth")
    assert (e["actor"], e["outcome"], e["source"], e["after"]) == (
        "meter-1",
        "failed",
        CLIENT,
        {"transport": "http"},
    )


async def test_no_secret_reaches_the_audit_log(admin: httpx.AsyncClient, runtime: Runtime) -> None:
    first = (await admin.post("/api/v1/devices", json={"id": "loom-1"})).json()["token"]
    second = (await admin.post("/api/v1/devices/loom-1/rotate-token")).json()["token"]
    await runtime.users.create("asma", "asma-password-1", Role.VIEWER, actor="admin")
    assert (await login(admin, "asma", "asma-password-1")).status_code == 200
    assert (await login(admin, "asma", "asma-password-2")).status_code == 401
    await runtime.users.set_password("asma", "asma-password-3")
    login_token = admin.headers["Authorization"].split()[1]
    text = table_text(runtime)
    assert len(await events(runtime)) >= 7
    for secret in (
        first,
        second,
        login_token,
        ADMIN_PASSWORD,
        "asma-password-1",
        "asma-password-3",
    ):
        assert secret not in text
    assert "$argon2" not in text


async def test_only_admins_read_the_audit_log(client: httpx.AsyncClient, runtime: Runtime) -> None:
    for role in (Role.VIEWER, Role.ENGINEER, Role.MANAGER):
        await runtime.users.create(f"u-{role}", "role-password-1", role)
        token = (await login(client, f"u-{role}", "role-password-1")).json()["token"]
        headers = {"Authorization": f"Bearer {token}"}
        for path in ("/api/v1/audit", "/api/v1/audit/verify", "/api/v1/audit?format=csv"):
            r = await client.get(path, headers=headers)
            assert r.status_code == 403, (role, path)
    assert (await client.get("/api/v1/audit")).status_code == 401


async def test_admin_lists_exports_and_verifies(admin: httpx.AsyncClient, runtime: Runtime) -> None:
    await admin.post("/api/v1/devices", json={"id": "d1"})
    await admin.post("/api/v1/devices", json={"id": "d2"})
    r = await admin.get("/api/v1/audit", params={"action": "device.create"})
    assert r.status_code == 200
    assert [e["target"] for e in r.json()] == ["device:d1", "device:d2"]
    r = await admin.get("/api/v1/audit", params={"actor": "admin", "limit": 1})
    assert [e["action"] for e in r.json()] == ["device.create"]
    assert (await admin.get("/api/v1/audit", params={"start": "2030-01-01T00:00:00Z"})).json() == []
    r = await admin.get("/api/v1/audit", params={"format": "csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [row["action"] for row in rows][-2:] == ["device.create", "device.create"]
    assert rows[-1]["source"] == CLIENT and len(rows[-1]["hash"]) == 64
    assert (await events(runtime, "audit.export"))[0]["actor"] == "admin"

    r = await admin.get("/api/v1/audit/verify")
    assert r.json()["ok"] is True and r.json()["first_bad_seq"] is None

    conn = sqlite3.connect(runtime.db.path, isolation_level=None)
    conn.execute("DROP TRIGGER audit_log_no_update")
    conn.execute("UPDATE audit_log SET actor = 'someone' WHERE target = 'device:d2'")
    conn.close()
    seq = next(e["seq"] for e in await events(runtime) if e["target"] == "device:d2")
    r = await admin.get("/api/v1/audit/verify")
    assert r.json()["ok"] is False and r.json()["first_bad_seq"] == seq


async def test_bad_time_range_is_400(admin: httpx.AsyncClient) -> None:
    r = await admin.get("/api/v1/audit", params={"start": "2030-01-02", "end": "2030-01-01"})
    assert r.status_code == 400
