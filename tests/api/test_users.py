"""Users and API tokens through the HTTP API: who may manage whom, and tokens that stop working."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from karkhana.api.app import create_app
from karkhana.core.clock import FakeClock
from karkhana.runtime import Runtime
from karkhana.security.users import Role
from tests.conftest import ADMIN_PASSWORD, make_settings

pytestmark = pytest.mark.anyio
PASSWORD = "user-password-123"
CLIENT = "127.0.0.1"


async def login(
    client: httpx.AsyncClient, username: str, password: str = PASSWORD
) -> dict[str, str]:
    r = await client.post("/api/v1/auth/login", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def sites(runtime: Runtime) -> None:
    for site in ("site-a", "site-b"):
        await runtime.assets.create_site(site, site)


@pytest.fixture
async def manager(runtime: Runtime, client: httpx.AsyncClient, sites: None) -> dict[str, str]:
    await runtime.users.create("maya", PASSWORD, Role.MANAGER, ["site-a"])
    return await login(client, "maya")


async def test_admin_manages_users(admin: httpx.AsyncClient, runtime: Runtime, sites: None) -> None:
    new = {"username": "asha", "password": PASSWORD, "role": "engineer", "sites": ["site-a"]}
    r = await admin.post("/api/v1/users", json=new)
    assert r.status_code == 201, r.text
    assert r.json() == {"username": "asha", "role": "engineer", "sites": ["site-a"]}
    assert "password" not in r.text and PASSWORD not in r.text
    assert (await admin.post("/api/v1/users", json=new)).status_code == 409
    short = {**new, "username": "bilal", "password": "short"}
    assert (await admin.post("/api/v1/users", json=short)).status_code == 422
    listed = (await admin.get("/api/v1/users")).json()
    assert [u["username"] for u in listed] == ["admin", "asha"]

    r = await admin.put("/api/v1/users/asha/sites", json={"sites": ["site-a", "site-b"]})
    assert r.json()["sites"] == ["site-a", "site-b"]
    assert (
        await admin.put("/api/v1/users/asha/sites", json={"sites": ["nowhere"]})
    ).status_code == 404

    asha = await login(admin, "asha")
    r = await admin.post("/api/v1/users/asha/password", json={"password": "a-new-password-1"})
    assert r.status_code == 204
    assert (await admin.get("/api/v1/auth/me", headers=asha)).status_code == 401
    asha = await login(admin, "asha", "a-new-password-1")
    assert (await admin.get("/api/v1/auth/me", headers=asha)).json()["sites"] == [
        "site-a",
        "site-b",
    ]

    assert (await admin.delete("/api/v1/users/asha")).status_code == 204
    assert (await admin.get("/api/v1/auth/me", headers=asha)).status_code == 401
    assert (await admin.delete("/api/v1/users/asha")).status_code == 404
    assert (await admin.delete("/api/v1/users/admin")).status_code == 409  # not oneself

    got = [
        (e.action, e.actor, e.target, e.source)
        for e in await runtime.audit.events()
        if e.action.startswith("user.")
    ]
    assert got == [
        ("user.create", "system", "user:admin", None),  # the first admin, at start
        ("user.create", "admin", "user:asha", CLIENT),
        ("user.set_sites", "admin", "user:asha", CLIENT),
        ("user.set_password", "admin", "user:asha", CLIENT),
        ("user.delete", "admin", "user:asha", CLIENT),
    ]


async def test_manager_manages_lesser_roles_in_own_sites(
    client: httpx.AsyncClient, runtime: Runtime, manager: dict[str, str]
) -> None:
    def body(
        name: str, role: str = "operator", sites: list[str] | None = None
    ) -> dict[str, object]:
        b: dict[str, object] = {"username": name, "password": PASSWORD, "role": role}
        if sites is not None:
            b["sites"] = sites
        return b

    r = await client.post("/api/v1/users", json=body("omar", sites=["site-a"]), headers=manager)
    assert r.status_code == 201, r.text
    # no sites named: the manager's only site
    r = await client.post("/api/v1/users", json=body("vera", "viewer"), headers=manager)
    assert r.json()["sites"] == ["site-a"]
    for refused in [
        body("x1", sites=["site-b"]),
        body("x2", sites=["site-a", "site-b"]),
        body("x3", "manager", ["site-a"]),
        body("x4", "admin", ["site-a"]),
    ]:
        r = await client.post("/api/v1/users", json=refused, headers=manager)
        assert r.status_code == 403, (refused, r.text)

    await runtime.users.create("bo", PASSWORD, Role.OPERATOR, ["site-b"])
    await runtime.users.create("both", PASSWORD, Role.OPERATOR, ["site-a", "site-b"])
    await runtime.users.create("mo", PASSWORD, Role.MANAGER, ["site-a"])
    listed = [u["username"] for u in (await client.get("/api/v1/users", headers=manager)).json()]
    assert listed == ["maya", "mo", "omar", "vera"]

    for name in ["bo", "both", "mo", "admin"]:
        r = await client.delete(f"/api/v1/users/{name}", headers=manager)
        assert r.status_code == 403, name
    assert (await client.delete("/api/v1/users/omar", headers=manager)).status_code == 204
    r = await client.put("/api/v1/users/vera/sites", json={"sites": ["site-a"]}, headers=manager)
    assert r.status_code == 403
    r = await client.post(
        "/api/v1/users/vera/password", json={"password": "another-pass-1"}, headers=manager
    )
    assert r.status_code == 403

    [created] = [
        e for e in await runtime.audit.events(action="user.create") if e.target == "user:omar"
    ]
    assert (created.actor, created.source) == ("maya", CLIENT)


async def test_others_cannot_manage_users(
    client: httpx.AsyncClient, runtime: Runtime, sites: None
) -> None:
    await runtime.users.create("eli", PASSWORD, Role.ENGINEER, ["site-a"])
    eli = await login(client, "eli")
    assert (await client.get("/api/v1/users", headers=eli)).status_code == 403
    new = {"username": "x", "password": PASSWORD, "role": "viewer", "sites": ["site-a"]}
    assert (await client.post("/api/v1/users", json=new, headers=eli)).status_code == 403


async def test_scoped_token_cannot_write_even_for_an_admin(admin: httpx.AsyncClient) -> None:
    r = await admin.post("/api/v1/tokens", json={"name": "dashboard", "scopes": ["read"]})
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["scopes"] == ["read"] and created["username"] == "admin"
    read_only = bearer(created["token"])
    assert (await admin.get("/api/v1/devices", headers=read_only)).status_code == 200
    r = await admin.post("/api/v1/devices", json={"id": "d1"}, headers=read_only)
    assert r.status_code == 403
    assert (await admin.get("/api/v1/audit", headers=read_only)).status_code == 403
    # a scoped token makes tokens no wider than itself
    r = await admin.post("/api/v1/tokens", json={"name": "wider"}, headers=read_only)
    assert r.status_code == 201 and r.json()["scopes"] == ["read"]
    r = await admin.post(
        "/api/v1/tokens", json={"name": "wider", "scopes": ["configure"]}, headers=read_only
    )
    assert r.status_code == 403
    listed = (await admin.get("/api/v1/tokens")).json()
    assert [t["name"] for t in listed] == ["dashboard", "wider"]
    assert all("token" not in t for t in listed)
    assert created["token"] not in (await admin.get("/api/v1/tokens")).text


async def test_scopes_cannot_exceed_the_role(
    client: httpx.AsyncClient, runtime: Runtime, sites: None
) -> None:
    await runtime.users.create("vic", PASSWORD, Role.VIEWER, ["site-a"])
    vic = await login(client, "vic")
    r = await client.post(
        "/api/v1/tokens", json={"name": "t", "scopes": ["read", "configure"]}, headers=vic
    )
    assert r.status_code == 403
    r = await client.post("/api/v1/tokens", json={"name": "t", "scopes": []}, headers=vic)
    assert r.status_code == 400
    r = await client.post("/api/v1/tokens", json={"name": "t", "scopes": ["read"]}, headers=vic)
    assert r.status_code == 201


async def test_revoked_token_fails_at_once(
    admin: httpx.AsyncClient, runtime: Runtime, sites: None
) -> None:
    await runtime.users.create("eli", PASSWORD, Role.ENGINEER, ["site-a"])
    eli = await login(admin, "eli")
    r = await admin.post("/api/v1/tokens", json={"name": "ci"}, headers=eli)
    token = r.json()
    assert token["scopes"] is None
    headers = bearer(token["token"])
    assert (await admin.get("/api/v1/devices", headers=headers)).status_code == 200

    mine = await admin.post("/api/v1/tokens", json={"name": "admin's"})
    # others' tokens are invisible and out of reach to a non-admin
    assert [t["name"] for t in (await admin.get("/api/v1/tokens", headers=eli)).json()] == ["ci"]
    r = await admin.delete(f"/api/v1/tokens/{mine.json()['id']}", headers=eli)
    assert r.status_code == 404
    assert {t["name"] for t in (await admin.get("/api/v1/tokens")).json()} == {"ci", "admin's"}

    assert (await admin.delete(f"/api/v1/tokens/{token['id']}", headers=eli)).status_code == 204
    assert (await admin.get("/api/v1/devices", headers=headers)).status_code == 401
    assert (await admin.delete(f"/api/v1/tokens/{token['id']}", headers=eli)).status_code == 404
    # an admin revokes anyone's
    r = await admin.post("/api/v1/tokens", json={"name": "ci-2"}, headers=eli)
    assert (await admin.delete(f"/api/v1/tokens/{r.json()['id']}")).status_code == 204
    assert (
        await admin.get("/api/v1/devices", headers=bearer(r.json()["token"]))
    ).status_code == 401
    revoked = [(e.actor, e.source) for e in await runtime.audit.events(action="api_token.revoke")]
    assert revoked == [("eli", CLIENT), ("admin", CLIENT)]


@pytest.fixture
async def clocked(tmp_path: Path) -> AsyncIterator[tuple[Runtime, FakeClock, httpx.AsyncClient]]:
    clock = FakeClock(int(time.time() * 1000))
    rt = Runtime(make_settings(tmp_path), clock)
    await rt.start(mqtt=False)
    transport = httpx.ASGITransport(app=create_app(rt))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield rt, clock, c
    await rt.stop()


async def test_expired_token_fails(clocked: tuple[Runtime, FakeClock, httpx.AsyncClient]) -> None:
    _, clock, client = clocked
    admin = await login(client, "admin", ADMIN_PASSWORD)
    r = await client.post("/api/v1/tokens", json={"name": "short", "ttl_days": 1}, headers=admin)
    token = bearer(r.json()["token"])
    assert r.json()["expires_ms"] == clock.now_ms() + 86_400_000
    clock.advance(86_400_000 - 1)
    assert (await client.get("/api/v1/auth/me", headers=token)).status_code == 200
    clock.advance(1)
    assert (await client.get("/api/v1/auth/me", headers=token)).status_code == 401
    admin = await login(client, "admin", ADMIN_PASSWORD)
    assert (await client.get("/api/v1/tokens", headers=admin)).json() == []


async def test_usernames_stay_addressable(admin: httpx.AsyncClient) -> None:
    for name in ["a/b", "a b", "", "x" * 65]:
        r = await admin.post("/api/v1/users", json={"username": name, "password": PASSWORD})
        assert r.status_code == 422, name
    r = await admin.post("/api/v1/users", json={"username": "عائشہ.k", "password": PASSWORD})
    assert r.status_code == 201 and r.json()["role"] == "viewer"
    assert (await admin.delete("/api/v1/users/عائشہ.k")).status_code == 204
