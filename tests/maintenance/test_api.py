from __future__ import annotations

import math

import httpx
import numpy as np
import pytest

from karkhana.api.app import create_app, route_table
from karkhana.runtime import Runtime
from karkhana.security.policy import POLICIES, Role, Scope, allowed
from tests.conftest import ADMIN_PASSWORD

pytestmark = pytest.mark.anyio
BASE = "/api/v1/maintenance"


@pytest.fixture
async def mill(runtime: Runtime) -> dict[str, str]:
    """Two sites with a loom each; returns the device tokens."""
    tokens = {}
    for tag in ("a", "b"):
        await runtime.assets.create_site(f"site-{tag}", tag)
        await runtime.assets.create_area(f"area-{tag}", f"site-{tag}", "Area")
        await runtime.assets.create_line(f"line-{tag}", f"area-{tag}", "Line")
        _, tokens[tag] = await runtime.devices.create(f"loom-{tag}", site_id=f"site-{tag}")
        await runtime.assets.create_machine(
            f"L-{tag}", f"line-{tag}", "Loom", "power_loom", f"loom-{tag}"
        )
    return tokens


async def login(client: httpx.AsyncClient, username: str, password: str) -> dict[str, str]:
    r = await client.post("/api/v1/auth/login", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


async def test_every_maintenance_route_has_a_policy(runtime: Runtime) -> None:
    ours = [r for r in route_table(create_app(runtime)) if r[1].startswith(BASE)]
    assert len(ours) >= 14
    assert [r for r in ours if r not in POLICIES] == []


async def test_work_order_crud_is_audited(admin: httpx.AsyncClient, mill: dict[str, str]) -> None:
    r = await admin.post(
        f"{BASE}/machines/L-a/work-orders",
        json={
            "title": "Bearing noisy",
            "priority": "high",
            "breakdown": True,
            "source": "alarm",
            "source_ref": "alarm:17",
            "parts": [{"name": "6205 bearing", "quantity": 2}],
        },
    )
    assert r.status_code == 201, r.text
    wo = r.json()
    assert wo["status"] == "open" and wo["source_ref"] == "alarm:17"
    url = f"{BASE}/machines/L-a/work-orders/{wo['id']}"
    assert (await admin.get(url)).json()["parts"][0]["name"] == "6205 bearing"
    r = await admin.patch(url, json={"status": "in_progress", "assignee": "bilal"})
    assert r.status_code == 200 and r.json()["started_ms"] is not None
    r = await admin.patch(url, json={"status": "done", "notes": "replaced both"})
    assert r.json()["completed_ms"] is not None and r.json()["downtime_ms"] is not None
    assert (await admin.patch(url, json={"status": "cancelled"})).status_code == 409
    assert (await admin.patch(url, json={"status": "broken"})).status_code == 422
    assert (await admin.patch(url, json={"title": None})).status_code == 400
    listed = (await admin.get(f"{BASE}/work-orders", params={"status": "done"})).json()
    assert [o["id"] for o in listed] == [wo["id"]]
    tiny = await admin.get(f"{BASE}/machines/L-a/reliability", params={"days": 1e-300})
    assert tiny.status_code == 200
    rel = (await admin.get(f"{BASE}/machines/L-a/reliability", params={"days": 1})).json()
    assert rel["failures"] == 1 and rel["mttr_h"] is not None
    # the order belongs to L-a: under L-b it does not exist
    assert (await admin.get(f"{BASE}/machines/L-b/work-orders/{wo['id']}")).status_code == 404
    assert (await admin.delete(url)).status_code == 204
    assert (await admin.get(url)).status_code == 404
    assert (await admin.delete(url)).status_code == 404
    events = (await admin.get("/api/v1/audit", params={"limit": 100})).json()
    rows = events["events"] if isinstance(events, dict) else events
    mine = [e for e in rows if e["action"].startswith("work_order.")]
    assert {e["action"] for e in mine} == {
        "work_order.create",
        "work_order.update",
        "work_order.delete",
    }
    assert all(e["actor"] == "admin" for e in mine)


async def test_bad_work_orders_are_refused(admin: httpx.AsyncClient, mill: dict[str, str]) -> None:
    url = f"{BASE}/machines/L-a/work-orders"
    assert (await admin.post(url, json={})).status_code == 422
    assert (await admin.post(url, json={"title": "x", "priority": "whenever"})).status_code == 422
    r = await admin.post(url, json={"title": "x", "down_start_ms": 2000, "down_end_ms": 1000})
    assert r.status_code == 400
    assert (
        await admin.post(f"{BASE}/machines/nope/work-orders", json={"title": "x"})
    ).status_code == 404
    assert (await admin.get(f"{url}/abc")).status_code == 422
    assert (await admin.get(f"{url}/{2**70}")).status_code == 422
    assert (await admin.patch(f"{url}/{2**70}", json={"notes": "x"})).status_code == 422
    assert (await admin.get(url)).json() == []  # nothing was stored by the refusals


async def test_schedules(admin: httpx.AsyncClient, mill: dict[str, str]) -> None:
    url = f"{BASE}/machines/L-a/schedules"
    r = await admin.post(url, json={"title": "Grease", "basis": "calendar", "interval": 7})
    assert r.status_code == 201, r.text
    assert r.json()["due"]["status"] == "ok" and r.json()["due"]["unit"] == "days"
    r = await admin.post(url, json={"title": "Reed", "basis": "count", "interval": 1e6})
    assert r.status_code == 400  # a count schedule needs its counter
    r = await admin.post(url, json={"title": "x", "basis": "calendar", "interval": -1})
    assert r.status_code == 422
    sid = (await admin.get(url)).json()[0]["id"]
    done = await admin.post(f"{url}/{sid}/done")
    assert done.status_code == 200 and done.json()["due"]["used"] < 0.01
    assert (await admin.get(f"{BASE}/schedules/due")).json() == []
    assert (await admin.delete(f"{url}/{sid}")).status_code == 204
    assert (await admin.get(url)).json() == []
    events = (await admin.get("/api/v1/audit", params={"limit": 100})).json()
    rows = events["events"] if isinstance(events, dict) else events
    mine = [e for e in rows if e["action"].startswith("schedule.")]
    assert sorted(e["action"] for e in mine) == [
        "schedule.create",
        "schedule.delete",
        "schedule.done",
    ]  # the refused schedules left no trace
    assert all(e["actor"] == "admin" and e["target"] == f"schedule:{sid}" for e in mine)


async def test_health_of_a_machine(admin: httpx.AsyncClient, mill: dict[str, str]) -> None:
    r = await admin.get(f"{BASE}/machines/L-a/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "no_data" and body["index"] is None
    assert "vibration_rms_mm_s" in body["signals"] and body["rul"] is None
    assert (await admin.get(f"{BASE}/machines/nope/health")).status_code == 404
    overview = (await admin.get(f"{BASE}/health")).json()
    assert {h["machine_id"] for h in overview} == {"L-a", "L-b"}


async def test_sites_bound_what_a_user_sees(
    runtime: Runtime, client: httpx.AsyncClient, mill: dict[str, str]
) -> None:
    await runtime.users.create("op-a", ADMIN_PASSWORD, Role.OPERATOR, ["site-a"])
    await runtime.users.create("view-a", ADMIN_PASSWORD, Role.VIEWER, ["site-a"])
    op = await login(client, "op-a", ADMIN_PASSWORD)
    viewer = await login(client, "view-a", ADMIN_PASSWORD)
    assert (await client.get(f"{BASE}/machines/L-b/health", headers=op)).status_code == 403
    r = await client.post(f"{BASE}/machines/L-a/work-orders", json={"title": "x"}, headers=op)
    assert r.status_code == 201
    r = await client.post(f"{BASE}/machines/L-b/work-orders", json={"title": "x"}, headers=op)
    assert r.status_code == 403
    r = await client.post(f"{BASE}/machines/L-a/work-orders", json={"title": "x"}, headers=viewer)
    assert r.status_code == 403
    r = await client.post(
        f"{BASE}/machines/L-a/schedules",
        json={"title": "x", "basis": "calendar", "interval": 1},
        headers=op,
    )
    assert r.status_code == 403  # operators run the schedules, engineers make them
    await runtime.maintenance.create_work_order("L-b", "other site")
    seen = (await client.get(f"{BASE}/work-orders", headers=viewer)).json()
    assert {o["machine_id"] for o in seen} == {"L-a"}
    assert {
        h["machine_id"] for h in (await client.get(f"{BASE}/health", headers=viewer)).json()
    } == {"L-a"}


def sine_burst(rate: float = 5000.0, n: int = 4096, f: float = 120.0) -> list[float]:
    t = np.arange(n) / rate
    return list(2.0 * np.sin(2 * np.pi * f * t))


async def test_vibration_burst_from_a_device(
    runtime: Runtime, client: httpx.AsyncClient, mill: dict[str, str]
) -> None:
    url = f"{BASE}/vibration/loom-a"
    body = {
        "sample_rate_hz": 5000,
        "values": sine_burst(),
        "key": "vib.de",
        "shaft_rpm": 1480,
        "bearing": {"rolling_elements": 9, "ball_diameter": 7.94, "pitch_diameter": 39.04},
    }
    auth = {"Authorization": f"Bearer {mill['a']}"}
    assert (await client.post(url, json=body)).status_code == 401
    assert (
        await client.post(url, json=body, headers={"Authorization": "Bearer x"})
    ).status_code == 401
    wrong_device = f"{BASE}/vibration/loom-b"
    assert (await client.post(wrong_device, json=body, headers=auth)).status_code == 401
    r = await client.post(url, json=body, headers=auth)
    assert r.status_code == 200, r.text
    features = r.json()["features"]
    assert features["vib.de.rms"] == pytest.approx(2.0 / math.sqrt(2), rel=1e-3)
    assert features["vib.de.crest_factor"] == pytest.approx(math.sqrt(2), rel=1e-2)
    assert features["vib.de.iso_zone"] in "ABCD"
    assert "vib.de.bpfo" in features
    latest = {x.key: x.value for x in await runtime.store.latest("loom-a")}
    assert latest["vib.de.rms"] == pytest.approx(features["vib.de.rms"])
    assert latest["vib.de.iso_zone"] == features["vib.de.iso_zone"]
    for bad in (
        {**body, "values": [1.0] * 5},
        {**body, "sample_rate_hz": 0},
        {**body, "unit": "furlongs"},
        {**body, "key": "../x"},
        {**body, "ts": "yesterday"},
        {**body, "ts": 10},
        {**body, "values": [1e300] * 64},
        {**body, "bearing": {"rolling_elements": 9, "ball_diameter": 50, "pitch_diameter": 39}},
    ):
        assert (await client.post(url, json=bad, headers=auth)).status_code == 400, bad
    r = await client.post(url, content=b"{not json", headers=auth)
    assert r.status_code == 400
    r = await client.post(
        url, content=b'{"sample_rate_hz": 100, "values": [NaN' + b", 1.0" * 20 + b"]}", headers=auth
    )
    assert r.status_code == 400


async def test_every_maintenance_route_x_role_x_site(
    runtime: Runtime, client: httpx.AsyncClient, mill: dict[str, str]
) -> None:
    """The authorization matrix of tests/api, for these routes: every role of site A against
    the loom of site A and of site B; refused exactly when the policy table says so."""
    tokens = {}
    for role in Role:
        await runtime.users.create(
            f"m-{role}", ADMIN_PASSWORD, role, [] if role is Role.ADMIN else ["site-a"]
        )
        tokens[role] = await login(client, f"m-{role}", ADMIN_PASSWORD)
    orders = {
        tag: (await runtime.maintenance.create_work_order(f"L-{tag}", "x")).id for tag in "ab"
    }
    routes = [r for r in route_table(create_app(runtime)) if r[1].startswith(BASE)]
    order = {"GET": 0, "POST": 1, "PATCH": 1, "DELETE": 2}
    failures = []
    roles = [r for r in Role if r is not Role.ADMIN] + [Role.ADMIN]
    for method, path in sorted(routes, key=lambda r: (order[r[0]], r[1])):
        policy = POLICIES[(method, path)]
        if policy.scope is Scope.DEVICE:
            continue
        for role in roles:
            for tag in "ab":
                url = (
                    path.replace("{machine_id}", f"L-{tag}")
                    .replace("{item_id}", str(orders[tag]))
                    .replace("{device_id}", f"loom-{tag}")
                )
                r = await client.request(method, url, json=None, headers=tokens[role])
                expected = allowed(role, frozenset({"site-a"}), policy, f"site-{tag}")
                if (r.status_code not in (401, 403)) != expected:
                    failures.append(f"{role} {method} {url}: {r.status_code}")
    assert not failures, "\n".join(failures)


async def test_models_are_trained_listed_and_scored_through_the_api(
    admin: httpx.AsyncClient, mill: dict[str, str], runtime: Runtime
) -> None:
    assert (await admin.get(f"{BASE}/models")).json() == []
    assert (await admin.get(f"{BASE}/models/power_loom")).status_code == 404
    # no model yet: no remaining life
    assert (await admin.get(f"{BASE}/machines/L-a/rul")).status_code == 404
    assert (await admin.post(f"{BASE}/machines/L-a/rul/work-order")).status_code == 404
    # recorded failures: none yet, a clear refusal
    r = await admin.post(
        f"{BASE}/models/power_loom/train", json={"kind": "rul", "source": "recorded"}
    )
    assert r.status_code == 400 and "at least 2 lives" in r.json()["detail"], r.text
    r = await admin.post(
        f"{BASE}/models/power_loom/train",
        json={"kind": "rul", "source": "simulated", "lives": 3, "holdout": 0},
    )
    assert r.status_code == 201, r.text
    manifest = r.json()
    assert manifest["version"] == 1 and manifest["kind"] == "rul"
    assert manifest["data"]["source"] == "simulator" and manifest["data"]["lives"] == 3
    assert len(manifest["signals"]) == 8  # four loom signals, raw and relative
    listed = (await admin.get(f"{BASE}/models")).json()
    assert [(m["template"], m["version"]) for m in listed] == [("power_loom", 1)]
    events = (await admin.get("/api/v1/audit", params={"action": "model.train"})).json()
    assert events and events[0]["target"] == "model:power_loom:1"

    # score two runs of hourly cycles: a healthy one and one with growing vibration
    hours = 60
    healthy = [[500.0, 6.0, 1.8, 45.0, 0.0, 0.0, 0.0, 0.0] for _ in range(hours)]
    worn = [
        [
            500.0,
            6.0 + 0.5 * (h / hours) ** 2,
            1.8 + 9 * (h / hours) ** 2,
            45 + 25 * (h / hours) ** 2,
        ]
        for h in range(hours)
    ]
    worn = [[*row, row[0] - 500, row[1] - 6.0, row[2] - 1.8, row[3] - 45] for row in worn]
    r = await admin.post(
        f"{BASE}/models/power_loom/score",
        json={"runs": [{"unit": "ok", "signals": healthy}, {"unit": "worn", "signals": worn}]},
    )
    assert r.status_code == 200, r.text
    ok, bad = r.json()
    assert ok["unit"] == "ok" and bad["unit"] == "worn"
    assert bad["rul"] < ok["rul"]
    assert bad["lower"] <= bad["rul"] <= bad["upper"]
    # wrong width, NaN-like values and no runs are refused
    for body in (
        {"runs": [{"unit": "x", "signals": [[1.0, 2.0]]}]},
        {"rows": [{"a": 1.0}]},
        {"version": 9, "runs": [{"unit": "x", "signals": healthy}]},
    ):
        r = await admin.post(f"{BASE}/models/power_loom/score", json=body)
        assert r.status_code in (400, 404), (body, r.text)

    # a failure classifier from labelled rows, then scored
    rng = np.random.default_rng(3)
    rows = []
    for _ in range(200):
        temp, load = float(rng.normal(60, 8)), float(rng.normal(50, 15))
        rows.append({"temp_c": temp, "load_pct": load, "failed": float(temp + 0.3 * load > 82)})
    r = await admin.post(
        f"{BASE}/models/press/train",
        json={"kind": "failure", "source": "table", "rows": rows, "label": "failed"},
    )
    assert r.status_code == 404  # no template "press"
    r = await admin.post(
        f"{BASE}/models/cnc_machine/train",
        json={"kind": "failure", "source": "table", "rows": rows, "label": "failed"},
    )
    assert r.status_code == 201, r.text
    assert r.json()["kind"] == "failure" and r.json()["data"]["rows"] == 200
    r = await admin.post(
        f"{BASE}/models/cnc_machine/score",
        json={"rows": [{"temp_c": 95.0, "load_pct": 80.0}, {"temp_c": 50.0, "load_pct": 30.0}]},
    )
    assert r.status_code == 200, r.text
    hot, cool = r.json()
    assert hot["failure"] is True and cool["failure"] is False
    r = await admin.post(f"{BASE}/models/cnc_machine/score", json={"rows": [{"temp_c": 95.0}]})
    assert r.status_code == 400 and "load_pct" in r.text
    # a kind and source that do not go together
    r = await admin.post(
        f"{BASE}/models/cnc_machine/train", json={"kind": "failure", "source": "recorded"}
    )
    assert r.status_code == 400


async def test_a_viewer_may_not_train(
    client: httpx.AsyncClient, admin: httpx.AsyncClient, mill: dict[str, str]
) -> None:
    r = await admin.post(
        "/api/v1/users", json={"username": "vera", "password": "viewer-pass-123", "role": "viewer"}
    )
    assert r.status_code == 201, r.text
    headers = await login(client, "vera", "viewer-pass-123")
    r = await client.post(
        f"{BASE}/models/power_loom/train",
        json={"kind": "rul", "source": "simulated", "lives": 2},
        headers=headers,
    )
    assert r.status_code == 403
    assert (await client.get(f"{BASE}/models", headers=headers)).status_code == 200
