"""Every route x every role x own site / other site, generated from the app's route table."""

from __future__ import annotations

import itertools
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from karkhana.api.app import create_app, route_table
from karkhana.runtime import Runtime
from karkhana.security.policy import POLICIES, Role, Scope, allowed

pytestmark = pytest.mark.anyio
PASSWORD = "role-password-123"
SITES = {"own": "site-a", "other": "site-b"}
SKIP = {("POST", "/api/v1/auth/logout")}  # revokes the token the matrix keeps using


def api_routes(rt: Runtime) -> list[tuple[str, str]]:
    return route_table(create_app(rt))


async def test_every_route_has_a_policy(runtime: Runtime) -> None:
    routes = api_routes(runtime)
    assert len(routes) > 20
    missing = [r for r in routes if r not in POLICIES]
    assert not missing, f"routes without an access policy: {missing}"
    stale = set(POLICIES) - set(routes)
    assert not stale, f"policies for routes that do not exist: {stale}"


@pytest.fixture
async def world(runtime: Runtime) -> AsyncIterator[dict[str, Any]]:
    """Two sites with an area, line, machine and device each, and a user of site A per role."""
    for tag, site in SITES.items():
        await runtime.assets.create_site(site, site)
        await runtime.assets.create_area(f"area-{tag}", site, "Area")
        await runtime.assets.create_line(f"line-{tag}", f"area-{tag}", "Line")
        await runtime.devices.create(f"dev-{tag}", site_id=site)
        await runtime.assets.create_machine(
            f"m-{tag}", f"line-{tag}", "M", "power_loom", f"dev-{tag}"
        )
        await runtime.users.create(f"staff-{tag}", PASSWORD, Role.OPERATOR, [site])
    tokens = {}
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        for role in Role:
            sites = [] if role is Role.ADMIN else [SITES["own"]]
            await runtime.users.create(f"u-{role}", PASSWORD, role, sites)
            r = await client.post(
                "/api/v1/auth/login", json={"username": f"u-{role}", "password": PASSWORD}
            )
            tokens[role] = r.json()["token"]
        yield {"client": client, "tokens": tokens}


_counter = itertools.count()


def request_for(method: str, path: str, target: str) -> tuple[str, dict[str, Any] | None]:
    """A concrete request for a route template aimed at the own or other site."""
    n = next(_counter)
    site_of_target = SITES[target]
    values = {
        "device_id": f"dev-{target}",
        "machine_id": f"m-{target}",
        "key": "bearing_temp_c",
        "key:path": "bearing_temp_c",
        "signal": "bearing_temp_c",
        "template_id": "power_loom",
        "template": "power_loom",
        "kind": "lines",
        "item_id": f"line-{target}",
        "username": f"staff-{target}",
        "token_id": "0" * 16,
        "alarm_id": "0" * 24,
        "rule_id": f"rule-{target}",
        "stop_id": "1",
        "channel_id": "channel-1",
        "recipient_id": "recipient-1",
        "site_id": site_of_target,
    }
    url = re.sub(r"\{([^}]+)\}", lambda m: values[m.group(1)], path)
    site = SITES[target]
    bodies: dict[str, dict[str, Any]] = {
        "/api/v1/devices": {"id": f"new-{n}", "site_id": site},
        "/api/v1/sites": {"id": f"site-{n}", "name": "New"},
        "/api/v1/areas": {"id": f"area-{n}", "site_id": site, "name": "A"},
        "/api/v1/lines": {"id": f"line-{n}", "area_id": f"area-{target}", "name": "L"},
        "/api/v1/machines": {
            "id": f"m-{n}",
            "line_id": f"line-{target}",
            "name": "M",
            "template": "power_loom",
        },
        "/api/v1/auth/login": {"username": "nobody", "password": "wrong-password"},
        "/api/v1/users": {
            "username": f"user-{n}",
            "password": PASSWORD,
            "role": "viewer",
            "sites": [site],
        },
        "/api/v1/users/{username}/sites": {"sites": [site]},
        "/api/v1/users/{username}/password": {"password": PASSWORD},
        "/api/v1/tokens": {"name": f"token-{n}", "scopes": ["read"]},
        "/api/v1/energy/sites/{site_id}/bill/compare": {"month": "2026-01", "actual_total": 1.0},
    }
    return url, bodies.get(path) if method in ("POST", "PUT") else None


async def test_authorization_matrix(runtime: Runtime, world: dict[str, Any]) -> None:
    client: httpx.AsyncClient = world["client"]
    failures = []
    checked = 0
    # admin last: it may delete what the others still need to be refused
    roles = [r for r in Role if r is not Role.ADMIN] + [Role.ADMIN]
    # deletions last, so that every role meets every resource still present
    order = {"GET": 0, "POST": 1, "DELETE": 2}
    for method, path in sorted(api_routes(runtime), key=lambda r: (order.get(r[0], 1), r[1])):
        policy = POLICIES[(method, path)]
        if (method, path) in SKIP or policy.scope in (Scope.PUBLIC, Scope.DEVICE):
            continue
        for role, target in itertools.product(roles, SITES):
            url, body = request_for(method, path, target)
            r = await client.request(
                method, url, json=body, headers={"Authorization": f"Bearer {world['tokens'][role]}"}
            )
            expected = allowed(role, frozenset({SITES["own"]}), policy, SITES[target])
            got = r.status_code not in (401, 403)
            checked += 1
            if got != expected:
                failures.append(
                    f"{role:8} {target:5} {method} {url}: {r.status_code} {r.text[:80]}"
                )
    assert not failures, "\n".join(failures)
    assert checked > 100


async def test_public_and_device_routes_need_no_user(world: dict[str, Any]) -> None:
    client: httpx.AsyncClient = world["client"]
    assert (await client.get("/api/v1/health")).status_code == 200
    r = await client.post("/api/v1/telemetry/dev-own", json={"values": {"t": 1}})
    assert r.status_code == 401  # needs the device's own token, not a user


async def test_lists_show_only_own_sites(world: dict[str, Any]) -> None:
    client: httpx.AsyncClient = world["client"]
    viewer = {"Authorization": f"Bearer {world['tokens'][Role.VIEWER]}"}
    admin = {"Authorization": f"Bearer {world['tokens'][Role.ADMIN]}"}
    devices = (await client.get("/api/v1/devices", headers=viewer)).json()
    assert {d["id"] for d in devices} == {"dev-own"}
    assert {d["id"] for d in (await client.get("/api/v1/devices", headers=admin)).json()} >= {
        "dev-own",
        "dev-other",
    }
    tree = (await client.get("/api/v1/assets", headers=viewer)).json()
    assert [s["id"] for s in tree] == ["site-a"]


async def test_engineer_creates_devices_in_their_site_by_default(world: dict[str, Any]) -> None:
    client: httpx.AsyncClient = world["client"]
    engineer = {"Authorization": f"Bearer {world['tokens'][Role.ENGINEER]}"}
    r = await client.post("/api/v1/devices", json={"id": "fresh"}, headers=engineer)
    assert r.status_code == 201
    assert (await client.get("/api/v1/devices/fresh", headers=engineer)).json()[
        "site_id"
    ] == "site-a"


async def test_a_gateway_of_another_site_cannot_be_a_parent(world: dict[str, Any]) -> None:
    client: httpx.AsyncClient = world["client"]
    engineer = {"Authorization": f"Bearer {world['tokens'][Role.ENGINEER]}"}
    r = await client.post(
        "/api/v1/devices", json={"id": "child-b", "parent_id": "dev-other"}, headers=engineer
    )
    assert r.status_code == 404
    r = await client.post(
        "/api/v1/devices", json={"id": "child-a", "parent_id": "dev-own"}, headers=engineer
    )
    assert r.status_code == 201
    got = await client.get("/api/v1/devices/child-a", headers=engineer)
    assert got.json()["parent_id"] == "dev-own"
