from __future__ import annotations

import json
import time

import httpx
import pytest

from karkhana.runtime import Runtime

pytestmark = pytest.mark.anyio
NOW = int(time.time() * 1000)


async def make_device(admin: httpx.AsyncClient, device_id: str = "loom-01") -> str:
    r = await admin.post("/api/v1/devices", json={"id": device_id, "name": "Loom 1"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["mqtt_topic"] == f"karkhana/{device_id}/telemetry"
    return str(body["token"])


async def post(client: httpx.AsyncClient, device: str, token: str, body: object) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await client.post(
        f"/api/v1/telemetry/{device}",
        content=content,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )


async def test_health_needs_no_login(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/health")
    assert r.status_code == 200
    assert r.json()["status"] == "ok"


async def test_ingest_then_query_latest_range_and_csv(admin: httpx.AsyncClient) -> None:
    token = await make_device(admin)
    r = await post(
        admin,
        "loom-01",
        token,
        [
            {"ts": NOW - 2000, "values": {"vibration_rms_mm_s": 2.5, "state": "running"}},
            {"ts": NOW - 1000, "values": {"vibration_rms_mm_s": 3.5, "running": True}},
        ],
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"stored": 4, "duplicates": 0}

    latest = (await admin.get("/api/v1/telemetry/loom-01/latest")).json()
    assert latest["vibration_rms_mm_s"] == {"ts": NOW - 1000, "value": 3.5}
    assert latest["state"]["value"] == "running"

    r = await admin.get(
        "/api/v1/telemetry/loom-01/vibration_rms_mm_s", params={"start": NOW - 5000}
    )
    assert r.json()["points"] == [[NOW - 2000, 2.5], [NOW - 1000, 3.5]]
    assert r.json()["bucket"] is None

    r = await admin.get(
        "/api/v1/telemetry/loom-01/vibration_rms_mm_s",
        params={"start": NOW - 3_600_000, "bucket": "1h", "agg": "max"},
    )
    assert [p[1] for p in r.json()["points"]] == [3.5]

    r = await admin.get(
        "/api/v1/telemetry/loom-01/vibration_rms_mm_s",
        params={"start": NOW - 5000, "format": "csv"},
    )
    assert r.headers["content-type"].startswith("text/csv")
    lines = r.text.strip().splitlines()
    assert lines[0] == "ts_ms,time_utc,vibration_rms_mm_s"
    assert lines[1].startswith(f"{NOW - 2000},") and lines[1].endswith(",2.5")

    assert (await admin.get("/api/v1/devices/loom-01/keys")).json() == [
        "running",
        "state",
        "vibration_rms_mm_s",
    ]


async def test_duplicate_sample_is_stored_once(admin: httpx.AsyncClient) -> None:
    token = await make_device(admin)
    body = {"ts": NOW, "values": {"t": 1}}
    assert (await post(admin, "loom-01", token, body)).json() == {"stored": 1, "duplicates": 0}
    assert (await post(admin, "loom-01", token, body)).json() == {"stored": 0, "duplicates": 1}


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (b"{oops", 400, "invalid_payload"),
        (b'{"values": {"t": NaN}}', 400, "invalid_payload"),
        (b'{"values": {"t": "x"}, "ts": 99999999999999}', 400, "invalid_payload"),
        (b'{"values": {"t": {"nested": 1}}}', 400, "invalid_payload"),
    ],
)
async def test_bad_payloads_get_4xx_with_reason(
    admin: httpx.AsyncClient, body: bytes, status: int, reason: str
) -> None:
    token = await make_device(admin)
    r = await post(admin, "loom-01", token, body)
    assert r.status_code == status
    assert r.json()["reason"] == reason
    assert r.json()["detail"]


async def test_oversize_payload_is_413(admin: httpx.AsyncClient, runtime: Runtime) -> None:
    token = await make_device(admin)
    big = json.dumps({"values": {"t": "x" * 1000}}).encode() * 400
    r = await post(admin, "loom-01", token, big)
    assert r.status_code == 413
    assert r.json()["reason"] == "payload_too_large"


async def test_wrong_token_and_unknown_device_are_401(
    admin: httpx.AsyncClient, runtime: Runtime
) -> None:
    token = await make_device(admin)
    assert (await post(admin, "loom-01", "kd_wrong", {"values": {"t": 1}})).status_code == 401
    assert (await post(admin, "nobody", token, {"values": {"t": 1}})).status_code == 401
    r = await admin.post("/api/v1/telemetry/loom-01", content=b'{"values": {"t": 1}}')
    assert r.status_code == 401
    stats = (await admin.get("/api/v1/ingest/stats")).json()["devices"]
    assert stats["loom-01"]["rejected"]["unauthorized"] == 2
    assert stats["(unknown)"]["rejected"]["unauthorized"] == 1


async def test_bad_input_does_not_disturb_other_devices(admin: httpx.AsyncClient) -> None:
    good = await make_device(admin, "good")
    bad = await make_device(admin, "bad")
    for i in range(20):
        await post(admin, "bad", bad, b"\xff\xfe garbage")
        assert (
            await post(admin, "good", good, {"ts": NOW + i, "values": {"v": i}})
        ).status_code == 200
    r = await admin.get("/api/v1/telemetry/good/v", params={"start": NOW, "end": NOW + 100})
    assert len(r.json()["points"]) == 20


async def test_query_parameters_are_validated(admin: httpx.AsyncClient) -> None:
    await make_device(admin)
    for params in [
        {"bucket": "fortnight"},
        {"start": "tomorrow-ish"},
        {"start": NOW, "end": NOW - 1},
        {"agg": "median", "bucket": "1m"},
        {"start": 0, "end": NOW, "bucket": "1ms"},
    ]:
        r = await admin.get("/api/v1/telemetry/loom-01/x", params=params)
        assert 400 <= r.status_code < 500, (params, r.text)
        assert "reason" in r.json()
    assert (await admin.get("/api/v1/telemetry/ghost/x")).status_code == 404


async def test_points_picks_a_rollup_friendly_bucket(admin: httpx.AsyncClient) -> None:
    token = await make_device(admin)
    await post(admin, "loom-01", token, {"ts": NOW - 10_000, "values": {"t": 1}})
    r = await admin.get(
        "/api/v1/telemetry/loom-01/t",
        params={"start": NOW - 365 * 86_400_000, "end": NOW, "points": 1000},
    )
    assert r.json()["bucket"] == 9 * 3_600_000
    assert r.json()["agg"] == "avg"
    assert r.json()["points"][-1][1] == 1.0


async def test_full_disk_is_503_and_recovers(admin: httpx.AsyncClient, runtime: Runtime) -> None:
    token = await make_device(admin)
    assert (await post(admin, "loom-01", token, {"ts": NOW, "values": {"t": 1}})).status_code == 200
    pages = await runtime.db.execute_write_fn(
        lambda c: c.execute("PRAGMA page_count").fetchone()[0]
    )
    # SQLite reports a page cap exactly as it reports a full disk (SQLITE_FULL)
    await runtime.db.execute_write_fn(lambda c: c.execute(f"PRAGMA max_page_count = {pages}"))
    big = {
        "samples": [
            {"ts": NOW + i, "values": {f"k{j}": float(i * j) for j in range(50)}}
            for i in range(200)
        ]
    }
    r = await post(admin, "loom-01", token, big)
    assert r.status_code == 503
    assert r.json()["reason"] == "disk_full"
    await runtime.db.execute_write_fn(lambda c: c.execute("PRAGMA max_page_count = 1073741823"))
    r = await post(admin, "loom-01", token, big)
    assert r.status_code == 200 and r.json()["stored"] == 200 * 50
    r = await admin.get(
        "/api/v1/telemetry/loom-01/k7",
        params={"start": NOW, "end": NOW + 1000, "bucket": "1h", "agg": "count"},
    )
    assert [p[1] for p in r.json()["points"]] == [200.0]
