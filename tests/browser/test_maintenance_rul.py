"""The remaining-life panel of the maintenance page, on a loom with days of wearing history."""

from __future__ import annotations

import time

import httpx
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from karkhana.sim.lifetimes import Life
from tests.browser.conftest import PASSWORD, Server, shot

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
PERIOD_MS = 5 * 60_000


def wearing_loom(api: httpx.Client, url: str) -> tuple[str, float]:
    """A new loom on the demo's shed whose device sends 60 hours of history (the simulator's
    loom, its bearing wearing out); returns its id and the true hours left."""
    r = api.post("/api/v1/devices", json={"id": "rul-loom-dev", "site_id": "demo-mill"})
    assert r.status_code == 201, r.text
    token = r.json()["token"]
    r = api.post(
        "/api/v1/machines",
        json={
            "id": "rul-loom",
            "line_id": "shed-a",
            "name": "Loom RUL",
            "template": "power_loom",
            "device_id": "rul-loom-dev",
        },
    )
    assert r.status_code == 201, r.text
    now = int(time.time() * 1000)
    failure = now + 30 * HOUR_MS
    life = Life("rul-loom-dev", now - 60 * HOUR_MS, failure - 4 * DAY_MS, failure, 7)
    entries = [
        {"ts": ts, "values": readings} for ts, readings in life.readings(PERIOD_MS) if ts < now
    ]
    with httpx.Client(base_url=url, timeout=30) as device:
        for i in range(0, len(entries), 100):
            r = device.post(
                "/api/v1/telemetry/rul-loom-dev",
                json=entries[i : i + 100],
                headers={"Authorization": f"Bearer {token}"},
            )
            assert r.status_code == 200, r.text
            time.sleep(0.06)  # within the device's message rate
    return "rul-loom", (failure - now) / HOUR_MS


def test_remaining_life_is_shown_charted_and_raises_a_work_order(
    browser: WebDriver, server: Server
) -> None:
    with server.api() as api:
        loom, truth = wearing_loom(api, server.url)
        r = api.post(
            "/api/v1/maintenance/models/power_loom/train",
            json={"kind": "rul", "source": "simulated", "lives": 4, "holdout": 0},
            timeout=300,
        )
        assert r.status_code == 201, r.text
        estimate = api.get(f"/api/v1/maintenance/machines/{loom}/rul").json()
    assert 0 < estimate["rul"] < 72, (estimate, truth)

    browser.get(f"{server.url}/#/maintenance/{loom}")
    wait = WebDriverWait(browser, 20)
    wait.until(lambda d: d.find_element(By.ID, "login").is_displayed())
    browser.find_element(By.NAME, "username").send_keys("admin")
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#rul .rul-estimate"))
    panel = browser.find_element(By.ID, "rul")
    assert "about" in panel.text and "interval" in panel.text
    assert "Failure expected around" in panel.text
    assert "power_loom v1" in panel.text
    shown = browser.find_element(By.CSS_SELECTOR, "#rul .rul-estimate")
    hours = float(shown.get_attribute("data-hours") or "nan")
    assert abs(hours - estimate["rul"]) < 2
    # the hourly estimates since the history began are charted
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#rul-chart canvas"))
    assert browser.find_element(By.ID, "rul-chart").is_displayed()
    shot(browser, "maintenance-rul")

    browser.find_element(By.ID, "rul-order").click()
    wait.until(lambda d: "h of life left" in d.find_element(By.ID, "rul-message").text)
    wait.until(
        lambda d: any(
            "h of life left" in row.text for row in d.find_elements(By.CSS_SELECTOR, "#wo-list tr")
        )
    )
    with server.api() as api:
        orders = api.get(f"/api/v1/maintenance/machines/{loom}/work-orders").json()
        chosen = [o for o in orders if o["source"] == "prediction"]
        assert chosen and chosen[0]["kind"] == "predictive"
        assert chosen[0]["source_ref"].startswith("rul:power_loom:v1:")
        events = api.get("/api/v1/audit", params={"action": "work_order.create"}).json()
        assert any(e["target"] == f"work_order:{chosen[0]['id']}" for e in events)
    errors = [
        e["message"]
        for e in browser.get_log("browser")  # type: ignore[attr-defined]
        if e["level"] == "SEVERE" and e["source"] != "network"
    ]
    assert errors == []
