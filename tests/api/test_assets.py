from __future__ import annotations

import time

import httpx
import pytest

pytestmark = pytest.mark.anyio
NOW = int(time.time() * 1000)


async def test_templates_are_listed(admin: httpx.AsyncClient) -> None:
    listed = (await admin.get("/api/v1/templates")).json()
    ids = {t["id"] for t in listed}
    counts = {t["id"]: t["count_key"] for t in listed}
    # what the dashboard tells production machines from utilities by
    assert counts["power_loom"] == "pick_count" and counts["energy_meter_3ph"] is None
    assert {
        "power_loom",
        "ring_spinning_frame",
        "air_compressor",
        "injection_moulding_machine",
        "cnc_machine",
        "cold_room",
        "energy_meter_3ph",
    } <= ids
    loom = (await admin.get("/api/v1/templates/power_loom")).json()
    keys = {s["key"]: s for s in loom["signals"]}
    assert keys["bearing_temp_c"]["unit"]
    assert loom["warm_up_min"] is None and loom["count_key"] == "pick_count"
    moulding = (await admin.get("/api/v1/templates/injection_moulding_machine")).json()
    assert moulding["warm_up_min"] == 90.0
    assert (await admin.get("/api/v1/templates/nope")).status_code == 404


async def test_build_a_mill_and_read_a_machine_signal(admin: httpx.AsyncClient) -> None:
    assert (
        await admin.post("/api/v1/sites", json={"id": "mill", "name": "Faisalabad mill"})
    ).status_code == 201
    assert (
        await admin.post(
            "/api/v1/areas", json={"id": "weaving", "site_id": "mill", "name": "Weaving"}
        )
    ).status_code == 201
    assert (
        await admin.post(
            "/api/v1/lines", json={"id": "shed-a", "area_id": "weaving", "name": "Shed A"}
        )
    ).status_code == 201
    token = (await admin.post("/api/v1/devices", json={"id": "loom-01"})).json()["token"]
    r = await admin.post(
        "/api/v1/machines",
        json={
            "id": "L01",
            "line_id": "shed-a",
            "name": "Loom 1",
            "template": "power_loom",
            "device_id": "loom-01",
            "bindings": {"fault": {"device_id": "plc-1", "key": "loom1_fault"}},
        },
    )
    assert r.status_code == 201, r.text
    machine = r.json()
    sig = {s["name"]: s for s in machine["signals"]}
    assert sig["bearing_temp_c"]["device_id"] == "loom-01" and sig["bearing_temp_c"]["unit"]

    await admin.post(
        "/api/v1/telemetry/loom-01",
        json={"ts": NOW - 1000, "values": {"bearing_temp_c": 64.5}},
        headers={"Authorization": f"Bearer {token}"},
    )
    r = await admin.get(
        "/api/v1/machines/L01/signals/bearing_temp_c", params={"start": NOW - 60_000}
    )
    assert r.json()["points"] == [[NOW - 1000, 64.5]]
    assert (await admin.get("/api/v1/machines/L01/signals/warp_speed")).status_code == 404

    tree = (await admin.get("/api/v1/assets")).json()
    assert tree[0]["areas"][0]["lines"][0]["machines"][0]["id"] == "L01"

    assert (
        await admin.post("/api/v1/lines", json={"id": "x", "area_id": "nowhere", "name": "X"})
    ).status_code == 404
    assert (
        await admin.post("/api/v1/sites", json={"id": "mill", "name": "again"})
    ).status_code == 409
    assert (
        await admin.post("/api/v1/sites", json={"id": "m2", "name": "M", "timezone": "Mars/Base"})
    ).status_code == 400
    bad = {
        "id": "L02",
        "line_id": "shed-a",
        "name": "L",
        "template": "power_loom",
        "bindings": {"no_such_signal": {"device_id": "d", "key": "k"}},
    }
    assert (await admin.post("/api/v1/machines", json=bad)).status_code == 400

    assert (await admin.delete("/api/v1/sites/mill")).status_code == 204
    assert (await admin.get("/api/v1/machines/L01")).status_code == 404
    assert (await admin.get("/api/v1/assets")).json() == []
