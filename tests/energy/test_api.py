"""The energy routes over HTTP: the contract's fields, errors and who may call them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from karkhana.api.app import create_app
from karkhana.core.clock import FakeClock
from karkhana.runtime import Runtime
from karkhana.security.policy import Role
from tests.conftest import ADMIN_PASSWORD, make_settings
from tests.energy.support import DAY1, DAY3, NOW, OUTAGE, SPIKE, load, pkt, write_config

pytestmark = pytest.mark.anyio
PASSWORD = "a-long-enough-password"
RANGE = {"start": str(DAY1), "end": str(DAY3)}
SUMMARY_FIELDS = {
    "site_id",
    "start_ms",
    "end_ms",
    "timezone",
    "currency",
    "tariff",
    "energy_kwh",
    "cost",
    "by_period",
    "demand_kw_max",
    "demand_max_at_ms",
    "power_factor",
    "sources",
    "outages",
    "generator",
    "idle",
    "unmetered_kwh",
    "coverage",
    "base_load_kw",
    "peak_events",
}


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def api(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(tmp_path_factory.mktemp("energy-api"))
    write_config(settings.data_dir)
    with (settings.data_dir / "energy.toml").open("a") as f:
        f.write('flexible = ["SHED"]\n')  # the shed feeder's load can move out of the peak
    rt = Runtime(settings, FakeClock(NOW))
    await rt.start(mqtt=False)
    try:
        await load(rt)
        await rt.users.create("viewer-mill", PASSWORD, Role.VIEWER, ["mill"])
        await rt.users.create("operator-mill", PASSWORD, Role.OPERATOR, ["mill"])
        transport = httpx.ASGITransport(app=create_app(rt))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            c.headers["Authorization"] = await _token(c, "admin", ADMIN_PASSWORD)
            yield c
    finally:
        await rt.stop()


async def _token(c: httpx.AsyncClient, user: str, password: str) -> str:
    r = await c.post("/api/v1/auth/login", json={"username": user, "password": password})
    assert r.status_code == 200, r.text
    return f"Bearer {r.json()['token']}"


async def test_summary_has_the_contract_fields(api: httpx.AsyncClient) -> None:
    r = await api.get("/api/v1/energy/sites/mill/summary", params=RANGE)
    assert r.status_code == 200, r.text
    s = r.json()
    assert s.keys() >= SUMMARY_FIELDS
    assert s["currency"] == "PKR" and s["timezone"] == "Asia/Karachi"
    assert s["tariff"]["id"] == "nepra_b2b_tou_example"
    periods = {p["period"]: p for p in s["by_period"]}
    assert periods["peak"]["kwh"] == pytest.approx(1225.0)
    assert periods["peak"]["rate"] == 46.50
    assert periods["off_peak"]["kwh"] == pytest.approx(4000.0)
    assert sum(p["cost"] for p in s["by_period"]) == pytest.approx(s["cost"])
    assert s["outages"] == {"count": 1, "hours": pytest.approx(1.0), "open": False}
    assert {x["source"] for x in s["sources"]} == {"grid", "generator", "none"}
    gen = s["generator"]
    assert gen["rated_kva"] == 250 and gen["diesel_price_per_litre"] == 300.0
    assert gen["cost"] == pytest.approx(gen["litres"] * 300.0)
    loom = next(m for m in s["idle"]["machines"] if m["machine_id"] == "L1")
    assert {"machine_id", "name", "kwh", "cost", "idle_hours"} <= loom.keys()
    assert s["unmetered_kwh"] == pytest.approx(5225.0 - 2880.0)


async def test_default_range_is_today_from_local_midnight(api: httpx.AsyncClient) -> None:
    r = await api.get("/api/v1/energy/sites/mill/summary")
    assert r.status_code == 200, r.text
    # the fake clock stands at midnight: today has not begun, so the last 24 hours are shown
    assert r.json()["end_ms"] == NOW and r.json()["start_ms"] == NOW - 86_400_000
    iso = await api.get(
        "/api/v1/energy/sites/mill/summary",
        params={"start": "2026-01-05T00:00:00+05:00", "end": "2026-01-06T00:00:00+05:00"},
    )
    assert iso.json()["energy_kwh"] == pytest.approx(2625.0)


async def test_meters_series_outages_intensity(api: httpx.AsyncClient) -> None:
    meters = (await api.get("/api/v1/energy/sites/mill/meters", params=RANGE)).json()
    roles = {m["name"]: (m["role"], m["parent"]) for m in meters}
    assert roles == {
        "Main incomer": ("main", None),
        "Shed 1 feeder": ("sub", "MAIN"),
        "unmetered": ("unmetered", "MAIN"),
    }
    for m in meters:
        assert {"kwh", "cost", "kw_now", "power_factor"} <= m.keys()
        assert {"voltage_imbalance_pct", "current_imbalance_pct"} <= m.keys()
    series = (
        await api.get("/api/v1/energy/sites/mill/series", params={**RANGE, "bucket": "day"})
    ).json()
    assert [row["period"] for row in series] == ["mixed", "mixed"]
    assert {"ts", "kwh", "cost", "period", "demand_kw", "source"} <= series[0].keys()
    outages = (await api.get("/api/v1/energy/sites/mill/outages", params=RANGE)).json()
    # the compressor's unloaded spells that began in the outage, labelled by production
    assert outages[0].pop("stops_labelled") > 0
    assert outages == [
        {
            "start_ms": OUTAGE[0],
            "end_ms": OUTAGE[1],
            "last_seen_ms": OUTAGE[1],
            "minutes": 60.0,
            "kind": "grid_out",
            "covered_by": "generator",
            "generator_minutes": 59.0,
            "unpowered_minutes": 1.0,
            "open": False,
        }
    ]
    rows = (await api.get("/api/v1/energy/sites/mill/intensity", params=RANGE)).json()
    assert {"machine_id", "name", "kwh", "units", "unit", "kwh_per_unit"} <= rows[0].keys()


async def test_base_load_peak_events_and_shifts(api: httpx.AsyncClient) -> None:
    s = (await api.get("/api/v1/energy/sites/mill/summary", params=RANGE)).json()
    assert s["base_load_kw"] is None  # loom 2 counts as running (test_service explains)
    assert s["peak_events"] == [
        {
            "start_ms": SPIKE[0],
            "end_ms": SPIKE[1],
            "kw": pytest.approx(200.0),
            "month_max_kw": pytest.approx(200.0),
            "running": ["Loom 1", "Loom 2"],
            "starting": [],
        }
    ]
    r = await api.get("/api/v1/energy/sites/mill/series", params={**RANGE, "bucket": "shift"})
    assert r.status_code == 200, r.text
    shifts = r.json()
    assert [(x["day"], x["shift_id"]) for x in shifts[:2]] == [
        ("2026-01-05", "A"),
        ("2026-01-05", "B"),
    ]
    evening = shifts[1]
    assert evening["ts"] == pkt(2026, 1, 5, 14) and evening["end_ms"] == pkt(2026, 1, 5, 22)
    assert evening["kwh_peak"] == pytest.approx(625.0)
    assert evening["kwh_off_peak"] == pytest.approx(400.0)
    assert evening["cost_peak"] == pytest.approx(625.0 * 50.0)
    assert evening["cost"] == pytest.approx(625.0 * 50.0 + 400.0 * 42.0)
    bad = await api.get("/api/v1/energy/sites/mill/series", params={**RANGE, "bucket": "week"})
    assert bad.status_code in (400, 422)


async def test_intensity_per_shift_and_day(api: httpx.AsyncClient) -> None:
    url = "/api/v1/energy/sites/mill/intensity"
    rows = (await api.get(url, params={**RANGE, "by": "shift"})).json()
    morning = next(r for r in rows if r["machine_id"] == "L1" and r["shift_id"] == "A")
    assert morning.keys() >= {
        "level",
        "machine_id",
        "line_id",
        "name",
        "start_ms",
        "end_ms",
        "shift_id",
        "shift_name",
        "day",
        "kwh",
        "units",
        "unit",
        "kwh_per_unit",
        "coverage",
    }
    assert morning["day"] == "2026-01-05" and morning["unit"] == "picks"
    assert morning["units"] == pytest.approx(48_000.0)
    assert morning["kwh_per_unit"] == pytest.approx(morning["kwh"] / 48_000.0)
    night = next(r for r in rows if r["machine_id"] == "L1" and r["shift_id"] == "C")
    assert night["kwh_per_unit"] is None
    assert {r["level"] for r in rows} == {"machine", "line"}
    days = (await api.get(url, params={**RANGE, "by": "day"})).json()
    assert sorted({r["day"] for r in days}) == ["2026-01-05", "2026-01-06"]
    bad = await api.get(url, params={**RANGE, "by": "week"})
    assert bad.status_code in (400, 422)


async def test_bill_compare_and_advice(api: httpx.AsyncClient) -> None:
    r = await api.get("/api/v1/energy/sites/mill/bill", params={"month": "2026-01"})
    assert r.status_code == 200, r.text
    bill = r.json()
    assert bill["month"] == "2026-01"
    items = [line["item"] for line in bill["lines"]]
    assert items[:3] == ["energy_peak", "energy_off_peak", "meter_rent"]
    assert "mdi" in items and "gst" in items
    assert {"item", "label", "quantity", "unit", "rate", "amount"} <= bill["lines"][0].keys()
    assert bill["total"] == pytest.approx(sum(line["amount"] for line in bill["lines"]))
    assert any("covers" in note for note in bill["notes"])
    c = await api.post(
        "/api/v1/energy/sites/mill/bill/compare",
        json={"month": "2026-01", "actual_total": 400_000.0},
    )
    assert c.status_code == 200, c.text
    got = c.json()
    assert got["estimate"] == pytest.approx(bill["total"])
    assert got["difference"] == pytest.approx(bill["total"] - 400_000.0)
    assert got["percent"] == pytest.approx(got["difference"] / 4000.0)
    advice = (await api.get("/api/v1/energy/sites/mill/advice", params=RANGE)).json()
    kinds = [a["kind"] for a in advice]
    assert {"off_peak", "air_leak", "idle"} <= set(kinds)
    savings = [a["saving_per_month"] for a in advice]
    assert savings == sorted(savings, reverse=True)
    moves = [a for a in advice if a["kind"] == "off_peak"]
    assert [a["id"] for a in moves] == ["off_peak:SHED"]
    assert moves[0]["evidence"]["source"] == "SHED energy_kwh"
    assert moves[0]["evidence"]["window_count"] == 2
    assert "17:00-21:00" in moves[0]["text"]["en"]
    leak = advice[kinds.index("air_leak")]
    assert leak["id"] == "air_leak:C1" and leak["currency"] == "PKR"
    assert leak["title"]["en"].startswith("Fix the compressed-air leaks")
    assert leak["title"]["ur"] and leak["text"]["ur"]
    assert any(f["key"] == "leak_kw" for f in leak["evidence"]["figures"])


async def test_reports(api: httpx.AsyncClient) -> None:
    csv = await api.get("/api/v1/energy/sites/mill/report.csv", params={"month": "2026-01"})
    assert csv.status_code == 200, csv.text
    assert csv.headers["content-type"].startswith("text/csv")
    assert "Bill estimate" in csv.text and "بل کا تخمینہ" in csv.text
    pdf = await api.get("/api/v1/energy/sites/mill/report.pdf", params={"month": "2026-01"})
    assert pdf.status_code == 200
    assert pdf.headers["content-type"] == "application/pdf" and pdf.content[:5] == b"%PDF-"


async def test_errors(api: httpx.AsyncClient) -> None:
    assert (await api.get("/api/v1/energy/sites/nowhere/summary")).status_code == 404
    bad = await api.get("/api/v1/energy/sites/mill/bill", params={"month": "January"})
    assert bad.status_code == 400 and "YYYY-MM" in bad.text
    backwards = await api.get(
        "/api/v1/energy/sites/mill/summary", params={"start": str(DAY3), "end": str(DAY1)}
    )
    assert backwards.status_code == 400 and "before end" in backwards.text
    garbage = await api.get("/api/v1/energy/sites/mill/summary", params={"start": "yesterday"})
    assert garbage.status_code == 400
    week = await api.get("/api/v1/energy/sites/mill/series", params={"bucket": "week"})
    assert week.status_code == 400
    negative = await api.post(
        "/api/v1/energy/sites/mill/bill/compare", json={"month": "2026-01", "actual_total": -1}
    )
    assert negative.status_code in (400, 422)


async def test_site_scope_and_operate_to_compare(api: httpx.AsyncClient) -> None:
    viewer = {"Authorization": await _token(api, "viewer-mill", PASSWORD)}
    operator = {"Authorization": await _token(api, "operator-mill", PASSWORD)}
    own = await api.get("/api/v1/energy/sites/mill/bill", headers=viewer)
    assert own.status_code == 200
    other = await api.get("/api/v1/energy/sites/other/summary", headers=viewer)
    assert other.status_code == 403
    body = {"month": "2026-01", "actual_total": 1.0}
    url = "/api/v1/energy/sites/mill/bill/compare"
    assert (await api.post(url, json=body, headers=viewer)).status_code == 403
    assert (await api.post(url, json=body, headers=operator)).status_code == 200
    unknown = await api.get("/api/v1/energy/sites/nowhere/summary", headers=viewer)
    assert unknown.status_code in (403, 404)
