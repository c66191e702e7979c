"""The dashboard in headless Chromium against `karkhana demo`: sign in, the simulated mill live on
the overview and a machine page, reasons for stops changing OEE and the Pareto, Urdu."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.browser.conftest import PASSWORD, Server, shot

pytestmark = pytest.mark.timeout(180)


def wait(driver: WebDriver, seconds: float = 15) -> WebDriverWait[WebDriver]:
    """Pages redraw parts of themselves: an element found a moment ago may be gone."""
    return WebDriverWait(
        driver, seconds, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,)
    )


def sign_in(
    driver: WebDriver,
    server: Server,
    hash_: str = "",
    user: str = "admin",
    password: str = PASSWORD,
) -> None:
    driver.get(f"{server.url}/{hash_}")
    wait(driver).until(lambda d: d.find_element(By.ID, "login").is_displayed())
    driver.find_element(By.NAME, "username").send_keys(user)
    driver.find_element(By.NAME, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()
    wait(driver).until(lambda d: d.find_element(By.ID, "nav").is_displayed())


def machines(server: Server) -> dict[str, dict[str, Any]]:
    with server.api() as api:
        tree = api.get("/api/v1/assets").json()
    return {
        m["id"]: m for s in tree for a in s["areas"] for ln in a["lines"] for m in ln["machines"]
    }


def simulated_loom(server: Server) -> str:
    """A loom of the simulated mill (which keeps sending), not one a test made."""
    return next(
        m
        for m, info in machines(server).items()
        if info["template"] == "power_loom" and m.startswith("tx-")
    )


def has_production(server: Server) -> bool:
    with server.api() as api:
        return api.get("/api/v1/production/reasons").status_code == 200


def errors(driver: WebDriver) -> list[str]:
    """Script errors in the page (failed optional requests are the page's own business)."""
    return [
        e["message"]
        for e in driver.get_log("browser")  # type: ignore[attr-defined]
        if e["level"] == "SEVERE" and e["source"] != "network"
    ]


def test_wrong_password_is_refused(browser: WebDriver, server: Server) -> None:
    browser.get(server.url)
    wait(browser).until(lambda d: d.find_element(By.ID, "login").is_displayed())
    browser.find_element(By.NAME, "username").send_keys("admin")
    browser.find_element(By.NAME, "password").send_keys("not-the-password")
    browser.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()
    wait(browser).until(lambda d: d.find_element(By.ID, "login-error").text)
    assert not browser.find_element(By.ID, "nav").is_displayed()


def test_sign_in_and_see_the_mill_live(browser: WebDriver, server: Server) -> None:
    expected = machines(server)
    sign_in(browser, server)
    wait(browser).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".tile")) == len(expected))
    shown = {
        t.get_attribute("data-machine") for t in browser.find_elements(By.CSS_SELECTOR, ".tile")
    }
    assert shown == set(expected)
    # live samples from the simulator reach the tiles (SSE)
    wait(browser, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".tile.live"))
    if has_production(server):
        # the production module picks up new machines every 30 s
        wait(browser, 45).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, ".tile:not([data-state=no_data])")
        )
    shot(browser, "overview")
    # times are the plant's (Asia/Karachi), whatever the browser's zone (UTC here)
    with server.api() as api:
        plant = api.get("/api/v1/production/overview").json()["machines"]
    shift = next((m["shift"] for m in plant if m["shift"]), None)
    if shift is not None:
        start = datetime.fromtimestamp(shift["start_ms"] / 1000, ZoneInfo("Asia/Karachi"))
        text = wait(browser).until(lambda d: d.find_element(By.ID, "shift").text)
        assert start.strftime("%I:%M %p") in text, text
    # the session survives a reload (cookie), and a new tab gets its CSRF token from the server
    browser.refresh()
    wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".tile"))
    assert "admin" in browser.find_element(By.ID, "who").text
    assert errors(browser) == []


def test_machine_page_updates_live_and_draws_history(browser: WebDriver, server: Server) -> None:
    loom = simulated_loom(server)
    sign_in(browser, server, f"#/machine/{loom}")
    row = "tr[data-signal='bearing_temp_c']"
    wait(browser).until(lambda d: d.find_element(By.CSS_SELECTOR, row).get_attribute("data-ts"))
    first = int(browser.find_element(By.CSS_SELECTOR, row).get_attribute("data-ts") or 0)
    wait(browser, 5).until(
        lambda d: int(d.find_element(By.CSS_SELECTOR, row).get_attribute("data-ts") or 0) > first
    )
    assert browser.find_elements(By.CSS_SELECTOR, "#live-chart .uplot canvas")
    assert browser.find_elements(By.CSS_SELECTOR, "#hist-chart .uplot canvas")
    browser.find_element(By.CSS_SELECTOR, "[data-range='1h']").click()
    wait(browser).until(
        lambda d: (
            d.find_element(By.CSS_SELECTOR, "[data-range='1h']").get_attribute("aria-pressed")
            == "true"
        )
    )
    if has_production(server):
        wait(browser, 45).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, "#timeline .timeline span")
        )
    shot(browser, "machine")
    assert errors(browser) == []


def test_urdu_is_right_to_left_and_remembered(browser: WebDriver, server: Server) -> None:
    sign_in(browser, server)
    Select(browser.find_element(By.ID, "lang")).select_by_value("ur")
    html = browser.find_element(By.TAG_NAME, "html")
    wait(browser).until(lambda d: html.get_attribute("dir") == "rtl")
    assert html.get_attribute("lang") == "ur"
    nav = browser.find_element(By.CSS_SELECTOR, "#nav a[data-page=overview]")
    assert nav.text == "جائزہ"
    wait(browser).until(
        lambda d: d.find_element(By.CSS_SELECTOR, "#page h1").text == "کارخانے کا جائزہ"
    )
    wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".tile"))
    font = browser.execute_script("return getComputedStyle(document.body).fontFamily")
    assert "Nastaliq" in font
    shot(browser, "overview-urdu")
    browser.refresh()
    wait(browser).until(lambda d: d.find_element(By.TAG_NAME, "html").get_attribute("dir") == "rtl")
    wait(browser).until(lambda d: d.find_element(By.ID, "nav").is_displayed())
    assert browser.find_element(By.ID, "logout").text == "سائن آؤٹ"
    Select(browser.find_element(By.ID, "lang")).select_by_value("en")
    wait(browser).until(lambda d: d.find_element(By.TAG_NAME, "html").get_attribute("dir") == "ltr")
    assert browser.find_element(By.ID, "logout").text == "Sign out"


def test_sign_out_ends_the_session(browser: WebDriver, server: Server) -> None:
    sign_in(browser, server)
    browser.find_element(By.ID, "logout").click()
    wait(browser).until(lambda d: d.find_element(By.ID, "login").is_displayed())
    browser.refresh()
    wait(browser).until(lambda d: d.find_element(By.ID, "login").is_displayed())
    assert not browser.find_element(By.ID, "nav").is_displayed()


def _loom_with_a_stop(server: Server) -> tuple[str, dict[str, Any]]:
    """A loom of our own that ran, stopped for four minutes and ran again (samples sent over
    HTTP with its device token), and the stop the production module made of it."""
    with server.api() as api:
        tree = api.get("/api/v1/assets").json()
        site = tree[0]["id"]
        line = tree[0]["areas"][0]["lines"][0]["id"]
        device, machine = "bt-loom-dev", "bt-loom"
        r = api.post("/api/v1/devices", json={"id": device, "site_id": site})
        assert r.status_code == 201, r.text
        token = r.json()["token"]
        r = api.post(
            "/api/v1/machines",
            json={
                "id": machine,
                "line_id": line,
                "name": "Test loom",
                "template": "power_loom",
                "device_id": device,
            },
        )
        assert r.status_code == 201, r.text
        # the production module picks up new machines every 30 s; send once it follows this one
        deadline = time.monotonic() + 60
        while api.get(f"/api/v1/production/machines/{machine}/states").status_code != 200:
            assert time.monotonic() < deadline, "the production module did not pick up the loom"
            time.sleep(0.5)
        now = int(time.time() * 1000)
        samples = []
        for i in range(-600, 1, 5):
            stopped = -420 <= i < -180
            samples.append(
                {
                    "ts": now + i * 1000,
                    "values": {
                        "state": "stopped" if stopped else "running",
                        "picks_per_min": 0 if stopped else 500,
                        "pick_count": 1000 + (i + 600) * 8,
                    },
                }
            )
        r = httpx.post(
            f"{server.url}/api/v1/telemetry/{device}",
            json={"samples": samples},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 200, r.text
        deadline = time.monotonic() + 20
        stops: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            r = api.get(
                "/api/v1/production/stops", params={"machine_id": machine, "start": now - 900_000}
            )
            stops = r.json().get("stops", []) if r.status_code == 200 else []
            done = [s for s in stops if s["end_ms"] is not None and s["reason_id"] is None]
            if done:
                return machine, done[0]
            time.sleep(0.5)
    raise AssertionError(f"no stop appeared for {machine}: {stops}")


def test_operator_assigns_a_reason_and_oee_and_pareto_change(
    browser: WebDriver, server: Server
) -> None:
    if not has_production(server):
        pytest.skip("the production module is not installed in this build")
    machine, stop = _loom_with_a_stop(server)
    window = {
        "machine_id": machine,
        "start": stop["start_ms"] - 300_000,
        "end": stop["end_ms"] + 60_000,
    }
    with server.api() as api:
        reasons = api.get("/api/v1/production/reasons").json()["reasons"]
        before = api.get("/api/v1/production/oee", params=window).json()
    planned = next(r for r in reasons if r["label"]["en"] == "Planned maintenance")

    sign_in(browser, server, "#/operator")
    button = f"[data-stop='{stop['id']}']"
    wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, button))
    browser.find_element(By.CSS_SELECTOR, button).click()
    wait(browser).until(lambda d: d.find_element(By.ID, "reason-panel").is_displayed())
    shot(browser, "operator-reasons")
    browser.find_element(By.CSS_SELECTOR, f"#reasons [data-reason='{planned['id']}']").click()
    wait(browser).until(lambda d: "Planned maintenance" in d.find_element(By.ID, "message").text)
    shot(browser, "operator-saved")

    with server.api() as api:
        stops = api.get(
            "/api/v1/production/stops", params={"machine_id": machine, "start": window["start"]}
        ).json()["stops"]
        assert next(s for s in stops if s["id"] == stop["id"])["reason_id"] == planned["id"]
        after = api.get("/api/v1/production/oee", params=window).json()
        audit = api.get("/api/v1/audit", params={"limit": 20}).text
    # a planned stop leaves planned time: the same window has less of it and a better availability
    assert after["planned_ms"] < before["planned_ms"]
    assert after["availability"] > before["availability"]
    assert f"stop:{stop['id']}" in audit

    browser.get(f"{server.url}/#/pareto/24h")
    row = f"#by-reason .row[data-key='{planned['id']}']"
    wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, row))
    assert "Planned maintenance" in browser.find_element(By.CSS_SELECTOR, row).text
    wait(browser).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, f"#by-machine .row[data-key='{machine}']")
    )
    shot(browser, "pareto")

    browser.get(f"{server.url}/#/machine/{machine}")
    wait(browser).until(
        lambda d: d.find_element(By.ID, "kpi-oee").text.strip() not in ("", "\u2013")
    )
    shot(browser, "machine-oee")
    assert errors(browser) == []


def has_alarms(server: Server) -> bool:
    with server.api() as api:
        return api.get("/api/v1/rules").status_code == 200


def test_add_a_rule_and_acknowledge_its_alarm(browser: WebDriver, server: Server) -> None:
    if not has_alarms(server):
        pytest.skip("the alarms module is not installed in this build")
    loom = simulated_loom(server)
    sign_in(browser, server, "#/alarms")
    form = wait(browser).until(lambda d: d.find_element(By.ID, "rule-form"))
    form.find_element(By.NAME, "name").send_keys("Loom bearing too hot")
    Select(form.find_element(By.NAME, "machine_id")).select_by_value(loom)
    wait(browser).until(
        lambda d: d.find_elements(
            By.CSS_SELECTOR, "#rule-form [name=signal] option[value='bearing_temp_c']"
        )
    )
    Select(form.find_element(By.NAME, "signal")).select_by_value("bearing_temp_c")
    Select(form.find_element(By.NAME, "op")).select_by_value(">")
    form.find_element(By.NAME, "value").send_keys("1")  # the simulated bearing runs at ~30 °C
    form.find_element(By.NAME, "for_min").clear()
    form.find_element(By.NAME, "for_min").send_keys("0")
    Select(form.find_element(By.NAME, "severity")).select_by_value("critical")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(browser).until(
        lambda d: "Loom bearing too hot" in d.find_element(By.ID, "rule-message").text
    )
    with server.api() as api:
        rules = api.get("/api/v1/rules", params={"machine_id": loom}).json()["rules"]
    rule = next(r for r in rules if r["name"] == "Loom bearing too hot")
    assert rule["condition"]["op"] == ">" and rule["condition"]["value"] == 1
    assert rule["condition"]["signal"] == "bearing_temp_c" and rule["for_s"] == 0
    assert rule["severity"] == "critical"

    # the next simulated sample raises it; the list refreshes itself
    alarm = "[data-alarm][data-state=raised] form.ack"
    deadline = time.monotonic() + 30
    while not browser.find_elements(By.CSS_SELECTOR, alarm):
        assert time.monotonic() < deadline, "no alarm was raised"
        browser.find_element(By.CSS_SELECTOR, "[data-which=open]").click()
        time.sleep(1)
    node = browser.find_element(By.CSS_SELECTOR, "[data-alarm][data-state=raised]")
    alarm_id = node.get_attribute("data-alarm")
    node.find_element(By.NAME, "comment").send_keys("bearing greased, watching it")
    node.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(browser).until(
        lambda d: (
            d.find_element(By.CSS_SELECTOR, f"[data-alarm='{alarm_id}']").get_attribute(
                "data-state"
            )
            == "acknowledged"
        )
    )
    shot(browser, "alarms")
    with server.api() as api:
        got = api.get(f"/api/v1/alarms/{alarm_id}").json()
        assert got["acked_by"] == "admin" and got["ack_comment"] == "bearing greased, watching it"
    # an open alarm shows on the machine's tile
    browser.get(f"{server.url}/#/")
    badge = f".tile[data-machine='{loom}'] .badge.critical"
    wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, badge))
    with server.api() as api:
        api.delete(f"/api/v1/rules/{rule['id']}")
    assert errors(browser) == []


def test_report_links_download(browser: WebDriver, server: Server) -> None:
    if not has_production(server):
        pytest.skip("the production module is not installed in this build")
    sign_in(browser, server, "#/reports")
    links = wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, "a.dl"))
    assert {a.get_attribute("data-report") for a in links} == {
        "shift.csv",
        "shift.pdf",
        "daily.csv",
        "daily.pdf",
    }
    for a in links:
        href = a.get_attribute("href")
        status, kind = browser.execute_async_script(
            "const done = arguments[1];"
            "fetch(arguments[0]).then((r) => done([r.status, r.headers.get('content-type')]));",
            href,
        )
        assert status == 200, href
        assert ("pdf" in kind) == href.split("?")[0].endswith(".pdf"), (href, kind)


def test_history_zooms_by_dragging(browser: WebDriver, server: Server) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    loom = simulated_loom(server)
    sign_in(browser, server, f"#/machine/{loom}")
    wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#hist-chart .u-over"))
    browser.find_element(By.CSS_SELECTOR, "[data-range='1h']").click()
    over = browser.find_element(By.CSS_SELECTOR, "#hist-chart .u-over")
    width = over.size["width"]
    # offsets are from the element's centre
    drag = ActionChains(browser).move_to_element_with_offset(over, -int(width * 0.2), 0)
    drag.click_and_hold().move_by_offset(int(width * 0.3), 0).release().perform()
    wait(browser).until(lambda d: d.find_element(By.ID, "unzoom").is_displayed())
    # each view asks the store for about 600 points of its rollups, the zoomed one a shorter span
    spans = browser.execute_script(
        "return performance.getEntriesByType('resource').map((e) => new URL(e.name))"
        ".filter((u) => u.pathname.includes('/signals/') && u.searchParams.get('points') === '600')"
        ".map((u) => u.searchParams.get('end') - u.searchParams.get('start'))"
    )
    assert len(spans) >= 3 and spans[-1] < 3_600_000 * 0.5, spans
    assert all(
        b.get_attribute("aria-pressed") == "false"
        for b in browser.find_elements(By.CSS_SELECTOR, "[data-range]")
    )
    browser.find_element(By.ID, "unzoom").click()
    wait(browser).until(lambda d: not d.find_element(By.ID, "unzoom").is_displayed())


@pytest.mark.parametrize("size", [(390, 844), (1024, 768)], ids=["phone", "tablet"])
def test_fits_phones_and_tablets_with_big_touch_targets(
    server: Server, size: tuple[int, int]
) -> None:
    from tests.browser.conftest import new_driver

    driver = new_driver(*size)
    # a desktop window has a minimum width: emulate the device's screen instead
    driver.execute_cdp_cmd(  # type: ignore[attr-defined]
        "Emulation.setDeviceMetricsOverride",
        {"width": size[0], "height": size[1], "deviceScaleFactor": 1, "mobile": size[0] < 600},
    )
    try:
        sign_in(driver, server)
        wait(driver).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".tile"))
        for page in ("", "#/operator", "#/pareto", "#/alarms", "#/reports", "#/maintenance"):
            driver.get(f"{server.url}/{page}")
            wait(driver).until(lambda d: d.find_element(By.ID, "page").text.strip())
            time.sleep(0.5)
            overflow = driver.execute_script(
                "return document.documentElement.scrollWidth - window.innerWidth"
            )
            assert overflow <= 1, f"{page or 'overview'} is {overflow}px wider than the screen"
            small = driver.execute_script(
                "return [...document.querySelectorAll('#nav a, button, select, input, a.tile, a.dl')]"
                ".filter((e) => e.offsetParent !== null)"
                ".filter((e) => e.getBoundingClientRect().height < 40)"
                ".map((e) => e.outerHTML.slice(0, 80))"
            )
            assert small == [], small
            shot(driver, f"{size[0]}x{size[1]}-{page.strip('#/') or 'overview'}")
    finally:
        driver.quit()


def test_line_page_shows_its_machines_and_a_live_speed_chart(
    browser: WebDriver, server: Server
) -> None:
    loom = simulated_loom(server)
    line = machines(server)[loom]
    with server.api() as api:
        tree = api.get("/api/v1/assets").json()
    line_id, members = next(
        (ln["id"], {m["id"] for m in ln["machines"]})
        for s in tree
        for a in s["areas"]
        for ln in a["lines"]
        if loom in {m["id"] for m in ln["machines"]}
    )
    assert line["id"] == loom
    sign_in(browser, server, f"#/line/{line_id}")
    wait(browser).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".tile")) == len(members))
    if has_production(server):
        wait(browser, 45).until(lambda d: d.find_element(By.ID, "line-live").is_displayed())
        wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#line-oee .kpi"))
        # samples arrive: the chart's legend shows a value for a loom once the cursor is over it
        count = "return document.querySelectorAll('#line-chart .u-legend .u-series').length"
        assert browser.execute_script(count) >= 2
    shot(browser, "line")
    assert errors(browser) == []


def test_a_lost_connection_is_shown_and_recovers(browser: WebDriver, server: Server) -> None:
    sign_in(browser, server)
    wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".tile"))
    conditions = {"latency": 0, "downloadThroughput": -1, "uploadThroughput": -1}
    browser.execute_cdp_cmd("Network.enable", {})  # type: ignore[attr-defined]
    browser.execute_cdp_cmd(  # type: ignore[attr-defined]
        "Network.emulateNetworkConditions", {"offline": True, **conditions}
    )
    wait(browser, 15).until(lambda d: d.find_element(By.ID, "offline").is_displayed())
    shot(browser, "offline")
    browser.execute_cdp_cmd(  # type: ignore[attr-defined]
        "Network.emulateNetworkConditions", {"offline": False, **conditions}
    )
    wait(browser, 15).until(lambda d: not d.find_element(By.ID, "offline").is_displayed())


def test_an_operator_sees_own_site_names_as_text_and_may_not_add_rules(
    browser: WebDriver, server: Server
) -> None:
    hostile = '<img src=x onerror="window.__xss=1">Loom'
    with server.api() as api:
        tree = api.get("/api/v1/assets").json()
        site, line = tree[0]["id"], tree[0]["areas"][0]["lines"][0]["id"]
        for path, body in (
            (
                "/api/v1/machines",
                {"id": "xss-loom", "line_id": line, "name": hostile, "template": "power_loom"},
            ),
            ("/api/v1/sites", {"id": "far-site", "name": "Far mill"}),
            ("/api/v1/areas", {"id": "far-area", "site_id": "far-site", "name": "Far"}),
            ("/api/v1/lines", {"id": "far-line", "area_id": "far-area", "name": "Far line"}),
            (
                "/api/v1/machines",
                {
                    "id": "far-loom",
                    "line_id": "far-line",
                    "name": "Far loom",
                    "template": "power_loom",
                },
            ),
            (
                "/api/v1/users",
                {"username": "op-one", "password": PASSWORD, "role": "operator", "sites": [site]},
            ),
        ):
            r = api.post(path, json=body)
            assert r.status_code == 201, (path, r.text)
    sign_in(browser, server, user="op-one")
    tile = wait(browser).until(
        lambda d: d.find_element(By.CSS_SELECTOR, ".tile[data-machine='xss-loom']")
    )
    assert tile.find_element(By.CSS_SELECTOR, ".name").text == hostile
    assert not browser.find_elements(By.CSS_SELECTOR, "#page img")
    assert browser.execute_script("return window.__xss") is None
    assert not browser.find_elements(By.CSS_SELECTOR, ".tile[data-machine='far-loom']")
    assert "operator" in browser.find_element(By.ID, "who").text

    if has_alarms(server):
        # an operator acknowledges alarms but does not change rules: no form (the API refuses too)
        browser.get(f"{server.url}/#/alarms")
        wait(browser).until(lambda d: d.find_elements(By.ID, "rule-list"))
        assert not browser.find_element(By.ID, "rule-add").is_displayed()
        with server.api() as api:
            token = httpx.post(
                f"{server.url}/api/v1/auth/login",
                json={"username": "op-one", "password": PASSWORD},
            ).json()["token"]
            r = api.post(
                "/api/v1/rules",
                json={
                    "name": "x",
                    "machine_id": "xss-loom",
                    "severity": "info",
                    "condition": {
                        "type": "threshold",
                        "signal": "bearing_temp_c",
                        "op": ">",
                        "value": 1,
                        "deadband": 0,
                    },
                    "for_s": 0,
                },
                headers={"Authorization": f"Bearer {token}"},
            )
            assert r.status_code == 403


def has_maintenance(server: Server) -> bool:
    with server.api() as api:
        return api.get("/api/v1/maintenance/health").status_code == 200


def test_maintenance_page_shows_health_and_raises_a_work_order(
    browser: WebDriver, server: Server
) -> None:
    if not has_maintenance(server):
        pytest.skip("the maintenance module is not installed in this build")
    loom = simulated_loom(server)
    with server.api() as api:
        health = {h["machine_id"]: h for h in api.get("/api/v1/maintenance/health").json()}
        # a schedule every 0.01 day (14.4 min) whose last 99.9 % is "due soon": due within 1 s
        r = api.post(
            f"/api/v1/maintenance/machines/{loom}/schedules",
            json={
                "title": "Clean the loom's filters",
                "basis": "calendar",
                "interval": 0.01,
                "lead": 0.999,
            },
        )
        assert r.status_code == 201, r.text
        schedule = r.json()["id"]
        deadline = time.monotonic() + 10
        while not any(
            s["id"] == schedule for s in api.get("/api/v1/maintenance/schedules/due").json()
        ):
            assert time.monotonic() < deadline, "the schedule never became due"
            time.sleep(0.2)
    sign_in(browser, server, "#/maintenance")
    tiles = ".health .tile[data-machine]"
    wait(browser).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, tiles)) == len(health))
    shown = {
        t.get_attribute("data-machine"): t for t in browser.find_elements(By.CSS_SELECTOR, tiles)
    }
    assert set(shown) == set(health)
    # every machine says where it stands; a new demo is still learning and says so
    labels = {
        "learning": "Learning normal behaviour",
        "ok": "Healthy",
        "alarm": "Health alarm",
        "no_data": "No data",
        "not_monitored": "Not monitored",
    }
    for tile in shown.values():
        status = tile.get_attribute("data-status")
        assert status in labels, status
        assert tile.find_element(By.CSS_SELECTOR, ".status").text == labels[status]
        if status == "learning":
            assert "Learning" in tile.find_element(By.CSS_SELECTOR, ".hi").text
            assert "hb-learning" in (tile.get_attribute("class") or "")
    # a loom is monitored (no data only until the monitor's first pass)
    assert shown[loom].get_attribute("data-status") != "not_monitored"
    due = wait(browser).until(
        lambda d: d.find_element(By.CSS_SELECTOR, f"#due tr[data-schedule='{schedule}']")
    )
    assert "Clean the loom's filters" in due.text and "Due soon" in due.text
    shot(browser, "maintenance")

    # one loom: raise a work order, start it, finish it
    browser.find_element(By.CSS_SELECTOR, f".health .tile[data-machine='{loom}']").click()
    form = wait(browser).until(lambda d: d.find_element(By.ID, "wo-form"))
    wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#kpi-health[data-status]"))
    assert browser.find_elements(By.CSS_SELECTOR, "#health-chart .uplot canvas")
    kpi = browser.find_element(By.CSS_SELECTOR, "#kpi-health")
    assert kpi.get_attribute("data-status") in labels
    scheduled = wait(browser).until(
        lambda d: d.find_element(By.CSS_SELECTOR, f"#schedules tr[data-schedule='{schedule}']")
    )
    assert scheduled.get_attribute("data-due") == "due_soon" and "Every 0.01 days" in scheduled.text
    form.find_element(By.NAME, "title").send_keys("Grease the loom's main bearing")
    form.find_element(By.NAME, "assignee").send_keys("bilal")
    form.find_element(By.NAME, "notes").send_keys("warm to the touch on the morning round")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(browser).until(
        lambda d: "Grease the loom's main bearing" in d.find_element(By.ID, "wo-message").text
    )
    row = "#wo-list tr[data-order]"
    wait(browser).until(
        lambda d: any("Grease the loom" in r.text for r in d.find_elements(By.CSS_SELECTOR, row))
    )
    with server.api() as api:
        orders = api.get(f"/api/v1/maintenance/machines/{loom}/work-orders").json()
    order = next(o for o in orders if o["title"] == "Grease the loom's main bearing")
    assert order["assignee"] == "bilal" and order["status"] == "open"
    assert order["notes"] == "warm to the touch on the morning round"
    mine = f"#wo-list tr[data-order='{order['id']}']"
    for to in ("in_progress", "done"):
        browser.find_element(By.CSS_SELECTOR, f"{mine} button.advance").click()
        wait(browser).until(
            lambda d, to=to: (
                d.find_element(By.CSS_SELECTOR, mine).get_attribute("data-status") == to
            )
        )
    assert not browser.find_elements(By.CSS_SELECTOR, f"{mine} button.advance")
    shot(browser, "maintenance-machine")
    with server.api() as api:
        got = api.get(f"/api/v1/maintenance/machines/{loom}/work-orders/{order['id']}").json()
        assert got["status"] == "done" and got["completed_ms"]
        audit = api.get("/api/v1/audit", params={"action": "work_order.*", "actor": "admin"}).json()
    mine_in_audit = [e["action"] for e in audit if e["target"] == f"work_order:{order['id']}"]
    assert mine_in_audit == ["work_order.create", "work_order.update", "work_order.update"]

    # the plant page again, in Urdu
    browser.get(f"{server.url}/#/maintenance")
    wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, tiles))
    Select(browser.find_element(By.ID, "lang")).select_by_value("ur")
    wait(browser).until(
        lambda d: d.find_element(By.CSS_SELECTOR, "#page h1").text == "مشینوں کی صحت اور دیکھ بھال"
    )
    assert (
        browser.find_element(By.CSS_SELECTOR, "#nav a[data-page=maintenance]").text == "دیکھ بھال"
    )
    shot(browser, "maintenance-urdu")
    with server.api() as api:
        api.delete(f"/api/v1/maintenance/machines/{loom}/schedules/{schedule}")
    Select(browser.find_element(By.ID, "lang")).select_by_value("en")
    wait(browser).until(lambda d: d.find_element(By.TAG_NAME, "html").get_attribute("dir") == "ltr")
    assert errors(browser) == []
