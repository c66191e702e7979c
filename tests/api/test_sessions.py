from __future__ import annotations

import httpx
import pytest

from karkhana.security.users import LoginThrottle
from tests.conftest import ADMIN_PASSWORD

pytestmark = pytest.mark.anyio


async def test_browser_session_cookie_needs_csrf_for_changes(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/api/v1/auth/login",
        json={"username": "admin", "password": ADMIN_PASSWORD, "session": True},
    )
    assert r.status_code == 200
    body = r.json()
    assert body["token"] is None and body["csrf_token"]
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert (await client.get("/api/v1/auth/me")).json()["username"] == "admin"
    r = await client.post("/api/v1/devices", json={"id": "d1"})
    assert r.status_code == 403 and "CSRF" in r.json()["detail"]
    r = await client.post("/api/v1/devices", json={"id": "d1"}, headers={"X-CSRF-Token": "f" * 64})
    assert r.status_code == 403
    r = await client.post(
        "/api/v1/devices", json={"id": "d1"}, headers={"X-CSRF-Token": body["csrf_token"]}
    )
    assert r.status_code == 201
    r = await client.post("/api/v1/auth/logout", headers={"X-CSRF-Token": body["csrf_token"]})
    assert r.status_code == 204
    client.cookies.clear()
    assert (await client.get("/api/v1/auth/me")).status_code == 401


async def test_repeated_wrong_passwords_lock_the_account(client: httpx.AsyncClient) -> None:
    for _ in range(5):
        r = await client.post(
            "/api/v1/auth/login", json={"username": "admin", "password": "wrong-password!"}
        )
        assert r.status_code == 401
    r = await client.post(
        "/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
    )
    assert r.status_code == 429
    assert int(r.headers["retry-after"]) >= 1


def test_throttle_backs_off_and_forgives() -> None:
    t = LoginThrottle(free=3, base_ms=1000, cap_ms=5000)
    for _ in range(3):
        t.check("Ali", 0)
        t.failed("ali", 0)
    with pytest.raises(Exception, match="try again in 1 s"):
        t.check("ALI", 10)
    t.check("ali", 1000)
    t.failed("ali", 1000)  # 4th failure: 2 s
    with pytest.raises(Exception, match="try again in 2 s"):
        t.check("ali", 1000)
    for _ in range(10):
        t.failed("ali", 2000)
    with pytest.raises(Exception, match="try again in 5 s"):
        t.check("ali", 2000)  # capped
    t.succeeded("ali")
    t.check("ali", 2000)
