"""The production API over HTTP against the real store, with site scoping."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from karkhana.api.app import create_app, route_table
from karkhana.core.clock import FakeClock
from karkhana.core.model import Sample
from karkhana.production import service as production_service
from karkhana.runtime import Runtime
from karkhana.security.policy import POLICIES, Role
from tests.conftest import ADMIN_PASSWORD, make_settings
from tests.production.support import (
    FAULT,
    MICRO,
    NOW,
    OUTAGE,
    SHIFT_A,
    day_samples,
    pkt,
    settle,
)

pytestmark = pytest.mark.anyio
PASSWORD = "production-password-1"
M = 60_000


async def as_user(api: httpx.AsyncClient, rt: Runtime, role: Role, site: str) -> dict[str, str]:
    name = f"{role}-{site}"
    await rt.users.create(name, PASSWORD, role, [site])
    r = await api.post("/api/v1/auth/login", json={"username": name, "password": PASSWORD})
    return {"Authorization": f"Bearer {r.json()['token']}"}


async def test_overview_shows_state_speed_shift_output_and_oee(api: httpx.AsyncClient) -> None:
    _, picks = day_samples()
    body = (await api.get("/api/v1/production/overview")).json()
    assert body["now_ms"] == NOW
    machines = {m["machine_id"]: m for m in body["machines"]}
    assert set(machines) == {"L1", "L9"}  # the changeover panel produces nothing
    l1 = machines["L1"]
    assert l1 | {"oee": None} == {
        "machine_id": "L1",
        "name": "Loom 1",
        "line_id": "mill-shed",
        "site_id": "mill",
        "template": "power_loom",
        "state": "running",
        "state_since_ms": FAULT[1],
        "speed": {"value": 500.0, "unit": "picks/min"},
        "shift": {"id": "A", "name": "Morning", "start_ms": SHIFT_A, "end_ms": SHIFT_A + 480 * M},
        "output": picks,
        "good": picks,
        "oee": None,
        "quality_measured": False,
    }
    assert l1["oee"]["availability"] == pytest.approx(150 / 180)
    assert 0 < l1["oee"]["oee"] <= 1
    assert machines["L9"]["state"] == "idle"


async def test_lists_are_limited_to_the_users_sites(api: httpx.AsyncClient, mill: Runtime) -> None:
    viewer = await as_user(api, mill, Role.VIEWER, "mill")
    body = (await api.get("/api/v1/production/overview", headers=viewer)).json()
    assert [m["machine_id"] for m in body["machines"]] == ["L1"]
    for url in (
        "/api/v1/production/overview?site_id=other",
        "/api/v1/production/oee?machine_id=L9",
        "/api/v1/production/oee?site_id=other",
        "/api/v1/production/stops?machine_id=L9",
        "/api/v1/production/pareto?site_id=other",
        "/api/v1/production/machines/L9/states",
        "/api/v1/production/reports/daily.csv?site_id=other",
    ):
        assert (await api.get(url, headers=viewer)).status_code == 403, url
    stops = (await api.get("/api/v1/production/stops", headers=viewer)).json()["stops"]
    assert {s["machine_id"] for s in stops} == {"L1"}
    pareto = (await api.get("/api/v1/production/pareto?by=machine", headers=viewer)).json()
    assert [i["key"] for i in pareto["items"]] == ["L1"]


async def test_states_with_iso_times_and_planned_stops(
    api: httpx.AsyncClient, mill: Runtime, clock: FakeClock
) -> None:
    start = datetime.fromtimestamp((OUTAGE[0] - 5 * M) / 1000, UTC).isoformat()
    r = await api.get(
        "/api/v1/production/machines/L1/states", params={"start": start, "end": OUTAGE[1]}
    )
    assert r.json()["intervals"] == [
        {"start_ms": OUTAGE[0] - 5 * M, "end_ms": OUTAGE[0], "state": "running", "reason_id": None},
        {
            "start_ms": OUTAGE[0],
            "end_ms": OUTAGE[1],
            "state": "stopped",
            "reason_id": "power_outage",
        },
    ]
    # stopped through the tea break (10:00-10:30): the break is a planned stop
    clock.set(NOW + 100 * M)
    await mill.store.write(
        [Sample("loom-1", "state", t, "stopped") for t in range(NOW, NOW + 100 * M, 30_000)]
    )
    await settle(mill, "L1", NOW + 100 * M - 30_000)
    r = await api.get("/api/v1/production/machines/L1/states", params={"start": NOW})
    assert [(i["start_ms"], i["end_ms"], i["state"]) for i in r.json()["intervals"]] == [
        (NOW, NOW + 60 * M, "stopped"),
        (NOW + 60 * M, NOW + 90 * M, "planned_stop"),
        (NOW + 90 * M, NOW + 100 * M, "stopped"),
    ]
    overview = (await api.get("/api/v1/production/overview")).json()["machines"]
    assert overview[0]["state"] == "stopped" and overview[0]["state_since_ms"] == NOW
    assert (await api.get("/api/v1/production/machines/nope/states")).status_code == 404


async def test_oee_of_machine_line_site_and_current_shift(api: httpx.AsyncClient) -> None:
    q = {"start": SHIFT_A, "end": NOW}
    machine = (await api.get("/api/v1/production/oee", params={**q, "machine_id": "L1"})).json()
    assert machine["planned_ms"] == 180 * M and machine["run_ms"] == 150 * M
    assert machine["losses"] == {
        "breakdowns_ms": 30 * M,
        "setup_ms": 0,
        "small_stops_ms": 1 * M,
        "reduced_speed_ms": machine["losses"]["reduced_speed_ms"],
        "startup_rejects": 0.0,
        "production_rejects": 0.0,
    }
    assert machine["oee"] == pytest.approx(
        machine["availability"] * machine["performance"] * machine["quality"]
    )
    line = (await api.get("/api/v1/production/oee", params={**q, "line_id": "mill-shed"})).json()
    assert line["run_ms"] == machine["run_ms"]  # the panel is not a production machine
    site = (await api.get("/api/v1/production/oee", params={**q, "site_id": "other"})).json()
    assert site["run_ms"] == 0 and site["availability"] == 0.0  # L9 idled all shift
    current = await api.get("/api/v1/production/oee?machine_id=L1&shift=current")
    assert current.json()["start_ms"] == SHIFT_A and current.json()["end_ms"] == NOW


async def test_bad_queries_are_clear_4xx(api: httpx.AsyncClient) -> None:
    for url, status in (
        ("/api/v1/production/oee?start=yesterday", 400),
        (f"/api/v1/production/oee?start={NOW}&end={NOW - 1}", 400),
        ("/api/v1/production/oee?machine_id=L1&line_id=mill-shed", 400),
        ("/api/v1/production/oee?machine_id=nope", 404),
        ("/api/v1/production/oee?shift=next", 422),
        ("/api/v1/production/oee?shift=current", 400),  # two sites: which shift?
        ("/api/v1/production/pareto?by=colour", 422),
        ("/api/v1/production/reports/daily.csv?site_id=mill&date=2026-13-01", 400),
        ("/api/v1/production/reports/shift.csv?site_id=mill&date=2026-06-03&shift=Z", 404),
        ("/api/v1/production/reports/daily.csv", 400),  # two sites: which one?
        ("/api/v1/production/oee?start=99999999999999999999999", 400),
        ("/api/v1/production/stops?end=0", 400),
        ("/api/v1/production/reports/daily.csv?site_id=mill&date=0001-01-01", 400),
    ):
        r = await api.get(url)
        assert r.status_code == status, (url, r.text)
        assert r.json()


async def test_operator_assigns_a_reason_and_it_is_audited(
    api: httpx.AsyncClient, mill: Runtime
) -> None:
    operator = await as_user(api, mill, Role.OPERATOR, "mill")
    stops = (
        await api.get(
            "/api/v1/production/stops",
            params={"machine_id": "L1", "start": SHIFT_A, "end": NOW},
            headers=operator,
        )
    ).json()["stops"]
    assert [(s["start_ms"], s["end_ms"], s["state"]) for s in stops] == [
        (OUTAGE[0], OUTAGE[1], "stopped"),
        (MICRO[0], MICRO[1], "stopped"),
        (FAULT[0], FAULT[1], "fault"),
    ]
    outage = stops[0]
    assert outage["auto"] and outage["reason"] == {
        "en": "Power outage (load-shedding)",
        "ur": "بجلی کی بندش (لوڈ شیڈنگ)",
    }
    newest = await api.get("/api/v1/production/stops?machine_id=L1&limit=1", headers=operator)
    assert [s["id"] for s in newest.json()["stops"]] == [stops[2]["id"]]
    fault_id = stops[2]["id"]
    r = await api.put(
        f"/api/v1/production/stops/{fault_id}/reason",
        json={"reason_id": "mechanical.warp_break"},
        headers=operator,
    )
    assert r.status_code == 200, r.text
    assert r.json()["reason"]["ur"] == "تانے کا دھاگہ ٹوٹنا" and not r.json()["auto"]
    events = await mill.audit.events(action="stop.reason")
    assert events[-1].actor == "operator-mill" and events[-1].target == f"stop:{fault_id}"
    assert events[-1].after == {"reason_id": "mechanical.warp_break", "machine_id": "L1"}

    # refused: another site's operator, a viewer; bad input changes nothing
    other = await as_user(api, mill, Role.OPERATOR, "other")
    viewer = await as_user(api, mill, Role.VIEWER, "mill")
    url = f"/api/v1/production/stops/{fault_id}/reason"
    body = {"reason_id": "electrical"}
    assert (await api.put(url, json=body, headers=other)).status_code == 403
    assert (await api.put(url, json=body, headers=viewer)).status_code == 403
    assert (await api.put(url, json={"reason_id": "nope"}, headers=operator)).status_code == 404
    assert (await api.put(url, json={"reason": 1}, headers=operator)).status_code == 422
    assert (await api.put("/api/v1/production/stops/999999/reason", json=body)).status_code == 404
    after = (await api.get("/api/v1/production/stops?machine_id=L1")).json()["stops"]
    assert next(s for s in after if s["id"] == fault_id)["reason_id"] == "mechanical.warp_break"


async def test_reason_tree_in_english_and_urdu(api: httpx.AsyncClient) -> None:
    roots = (await api.get("/api/v1/production/reasons")).json()["reasons"]
    by_id = {r["id"]: r for r in roots}
    assert by_id["power_outage"]["label"]["en"] == "Power outage (load-shedding)"
    mechanical = {c["id"]: c for c in by_id["mechanical"]["children"]}
    assert mechanical["mechanical.weft_break"]["label"] == {
        "en": "Weft break",
        "ur": "بانے کا دھاگہ ٹوٹنا",
    }


async def test_pareto_by_reason_and_machine(api: httpx.AsyncClient) -> None:
    q = {"start": SHIFT_A, "end": NOW}
    items = (await api.get("/api/v1/production/pareto", params={**q, "site_id": "mill"})).json()[
        "items"
    ]
    assert [(i["key"], i["duration_ms"], i["count"]) for i in items] == [
        ("power_outage", 20 * M, 1),
        ("unassigned", 11 * M, 2),
    ]
    assert items[1]["label"]["ur"] == "وجہ درج نہیں"
    items = (await api.get("/api/v1/production/pareto", params={**q, "by": "machine"})).json()[
        "items"
    ]
    assert [(i["key"], i["duration_ms"]) for i in items] == [("L9", 180 * M), ("L1", 31 * M)]


async def test_reports_download(api: httpx.AsyncClient) -> None:
    q = {"site_id": "mill", "date": "2026-06-03", "shift": "A"}
    r = await api.get("/api/v1/production/reports/shift.csv", params=q)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert 'filename="mill-2026-06-03-shift-A.csv"' in r.headers["content-disposition"]
    lines = r.text.splitlines()
    assert lines[0] == "Shift report 2026-06-03 shift A (Morning)"
    assert any(line.startswith("Loom 1,") for line in lines)
    assert "Power outage (load-shedding),20.0,1,بجلی کی بندش (لوڈ شیڈنگ)" in lines
    pdf = await api.get("/api/v1/production/reports/daily.pdf", params={"site_id": "mill"})
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF-")
    assert pdf.headers["content-type"] == "application/pdf"
    daily = await api.get("/api/v1/production/reports/daily.csv", params={"site_id": "mill"})
    assert daily.text.startswith("Daily report 2026-06-03")


async def test_the_shift_report_just_after_midnight_is_the_night_shift(
    api: httpx.AsyncClient, clock: FakeClock
) -> None:
    """At 00:30 no shift of the new day has begun: the report page's default (today, no shift)
    gives the night shift still running, under the day it began."""
    clock.set(pkt(2026, 6, 4, 0, 30))
    r = await api.post(
        "/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
    )  # the morning's session has expired
    api.headers["Authorization"] = f"Bearer {r.json()['token']}"
    for params in ({"site_id": "mill"}, {"site_id": "mill", "date": "2026-06-04"}):
        r = await api.get("/api/v1/production/reports/shift.csv", params=params)
        assert r.status_code == 200, r.text
        assert r.text.splitlines()[0] == "Shift report 2026-06-03 shift C (Night)"
        assert 'filename="mill-2026-06-03-shift.csv"' in r.headers["content-disposition"]
    # a day whose shifts are all to come has no report yet
    r = await api.get(
        "/api/v1/production/reports/shift.csv", params={"site_id": "mill", "date": "2026-06-05"}
    )
    assert r.status_code == 404


async def test_a_plant_with_no_site_yet_and_a_site_made_a_moment_ago(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(production_service, "LOOK_UP_S", 0.0)  # no throttle between requests
    rt = Runtime(make_settings(tmp_path), clock)
    await rt.start(mqtt=False)
    try:
        transport = httpx.ASGITransport(app=create_app(rt))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as api:
            r = await api.post(
                "/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
            )
            api.headers["Authorization"] = f"Bearer {r.json()['token']}"
            r = await api.get("/api/v1/production/reports/daily.csv")
            assert r.status_code == 404 and "no site yet" in r.json()["detail"]
            # a site made just now is found without naming it, before the next refresh
            assert (
                await api.post("/api/v1/sites", json={"id": "mill", "name": "Mill"})
            ).status_code == 201
            r = await api.get("/api/v1/production/reports/daily.csv")
            assert r.status_code == 200 and r.text.startswith("Daily report")
    finally:
        await rt.stop()


async def test_rebuild_is_for_engineers_and_audited(api: httpx.AsyncClient, mill: Runtime) -> None:
    engineer = await as_user(api, mill, Role.ENGINEER, "mill")
    operator = await as_user(api, mill, Role.OPERATOR, "mill")
    url = "/api/v1/production/machines/L1/rebuild"
    assert (await api.post(url, params={"start": SHIFT_A}, headers=operator)).status_code == 403
    r = await api.post(url, params={"start": SHIFT_A}, headers=engineer)
    assert r.status_code == 200, r.text
    assert (await mill.audit.events(action="production.rebuild"))[-1].actor == "engineer-mill"
    assert (await api.post(url, params={"start": "soon"}, headers=engineer)).status_code == 400


async def test_huge_stop_ids_are_refused(api: httpx.AsyncClient) -> None:
    r = await api.put(f"/api/v1/production/stops/{2**70}/reason", json={"reason_id": "other"})
    assert r.status_code == 422


async def test_every_production_route_has_a_policy(mill: Runtime) -> None:
    routes = [r for r in route_table(create_app(mill)) if "/production/" in r[1]]
    assert len(routes) == 13
    assert all(r in POLICIES for r in routes)


async def test_a_machine_created_a_moment_ago_is_found(
    api: httpx.AsyncClient, mill: Runtime
) -> None:
    await mill.assets.create_machine("L2", "mill-shed", "Loom 2", "power_loom", "loom-2")
    r = await api.get("/api/v1/production/oee", params={"machine_id": "L2"})
    assert r.status_code == 200, r.text
    assert r.json()["planned_ms"] == 0  # it has not reported yet


async def test_shifts_of_a_day_for_per_shift_oee(api: httpx.AsyncClient) -> None:
    body = (await api.get("/api/v1/production/shifts?site_id=mill&date=2026-06-03")).json()
    assert body["timezone"] == "Asia/Karachi" and body["calendar"]["id"] == "default"
    assert [(s["id"], s["start_ms"]) for s in body["shifts"]] == [
        ("A", SHIFT_A),
        ("B", SHIFT_A + 480 * M),
        ("C", SHIFT_A + 960 * M),
    ]
    a = body["shifts"][0]
    r = await api.get(
        "/api/v1/production/oee", params={"machine_id": "L1", "start": a["start_ms"], "end": NOW}
    )
    assert r.json()["planned_ms"] == 180 * M
    sunday = (await api.get("/api/v1/production/shifts?site_id=mill&date=2026-06-07")).json()
    assert sunday["shifts"] == []
