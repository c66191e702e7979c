"""The energy page in headless Chromium against `karkhana demo` and its real energy API: cost
tiles, power source, idle machines, advice, the hourly chart, meters, outages, the month's bill
compared with an actual bill, report downloads, base load and peak-demand events, cost per shift,
energy per unit produced, Urdu right to left, and a phone's screen."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from tests.browser.conftest import PASSWORD, Server, new_driver, shot
from tests.browser.test_dashboard import errors, sign_in, wait

pytestmark = pytest.mark.timeout(180)

KPIS = ["kpi-cost", "kpi-peak", "kpi-offpeak", "kpi-kwh", "kpi-demand", "kpi-pf"]
SOURCE_KPIS = ["kpi-grid", "kpi-generator", "kpi-none", "kpi-outages"]
AMOUNT = re.compile(r"^PKR -?\d[\d,]*(\.\d+)?$")


def energy_site(server: Server) -> str:
    """The demo mill's site, once the energy API answers for it (skipped where it is not
    installed)."""
    with server.api() as api:
        tree = api.get("/api/v1/assets").json()
        # the simulated mill's site (tests add sites of their own)
        site: str = next(
            s["id"]
            for s in tree
            if any(
                m["id"] == "tx-meter-main"
                for a in s["areas"]
                for ln in a["lines"]
                for m in ln["machines"]
            )
        )
        r = api.get(f"/api/v1/energy/sites/{site}/summary")
    if r.status_code == 404 and r.json().get("detail") == "Not Found":
        pytest.skip("the energy module is not installed in this build")
    assert r.status_code == 200, r.text
    return site


def api_get(server: Server, path: str, **params: Any) -> Any:
    with server.api() as api:
        r = api.get(path, params=params)
    assert r.status_code == 200, (path, r.text)
    return r.json()


def number(shown: str) -> float:
    """The first number in a tile's text ("PKR 1,234", "3.5 kWh", "33.4 kW · 10:00 PM")."""
    found = re.search(r"-?\d[\d,]*(\.\d+)?", shown)
    assert found, shown
    return float(found.group().replace(",", ""))


def text(driver: WebDriver, css: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def test_energy_page_shows_cost_supply_and_bill_and_compares_a_bill(
    browser: WebDriver, server: Server
) -> None:
    site = energy_site(server)
    base = f"/api/v1/energy/sites/{site}"
    # asked before the page: today's figures only grow, so the page shows at least these
    summary = api_get(server, f"{base}/summary")
    shifts = api_get(server, f"{base}/series", bucket="shift")
    sign_in(browser, server, f"#/energy/{site}")
    assert "active" in (
        browser.find_element(By.CSS_SELECTOR, "#nav a[data-page=energy]").get_attribute("class")
        or ""
    )
    wait(browser).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#energy-kpis .kpi")) == 6)
    assert [
        k.get_attribute("id") for k in browser.find_elements(By.CSS_SELECTOR, "#energy-kpis .kpi")
    ] == KPIS
    # today's cost in rupees, split into peak and off-peak (or flat), energy as kWh
    assert AMOUNT.match(text(browser, "#kpi-cost b")), text(browser, "#kpi-cost b")
    assert text(browser, "#kpi-cost span") == "Energy cost today"
    periods = {p["period"] for p in summary["by_period"]}
    if "peak" in periods:
        assert text(browser, "#kpi-peak b").startswith("PKR ")
    assert text(browser, "#kpi-offpeak b").startswith("PKR ") or not periods - {"peak"}
    assert re.search(r"\d kWh$", text(browser, "#kpi-kwh b")), text(browser, "#kpi-kwh b")
    # the demo keeps no history: once its meters have sent for a few minutes (after the other
    # browser tests) the tiles show what they measured
    if summary["energy_kwh"] > 0:
        assert number(text(browser, "#kpi-kwh b")) > 0
        assert number(text(browser, "#kpi-cost b")) > 0
        assert number(text(browser, "#kpi-demand b")) > 0
    # the demo keeps no history: its meters cover only the minutes since it started today
    if summary["coverage"] < 0.5:
        warning = browser.find_element(By.ID, "energy-coverage")
        assert warning.is_displayed() and "%" in warning.text

    for kpi in SOURCE_KPIS:
        assert browser.find_element(By.ID, kpi).text.strip()
    assert re.search(r"\d", text(browser, "#kpi-outages b"))
    if summary["generator"] is not None:
        assert browser.find_element(By.ID, "kpi-diesel-cost").text.startswith("PKR ")
    else:
        assert browser.find_element(By.ID, "no-generator").is_displayed()

    # idle machines worst first, each a link to its machine page
    rows = browser.find_elements(By.CSS_SELECTOR, "#idle-machines tbody tr")
    if rows:
        assert {r.get_attribute("data-machine") for r in rows} == {
            m["machine_id"] for m in summary["idle"]["machines"]
        }
        link = rows[0].find_element(By.TAG_NAME, "a").get_attribute("href") or ""
        assert link.endswith(f"#/machine/{rows[0].get_attribute('data-machine')}")

    # meters: the demo's main incomer and its shed feeders, with the unmetered remainder last
    meters = api_get(server, f"{base}/meters")
    shown = wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, "table.meters tbody tr"))
    assert shown[0].get_attribute("data-role") == "main"
    assert sorted(r.get_attribute("data-meter") or "" for r in shown) == sorted(
        m["machine_id"] or "" for m in meters
    )
    if any(m["role"] == "unmetered" for m in meters):
        assert shown[-1].get_attribute("data-role") == "unmetered"
    assert browser.find_elements(By.CSS_SELECTOR, "#energy-chart .uplot canvas")
    wait(browser).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#energy-outages table, #energy-outages .hint")
    )
    wait(browser).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#energy-advice ol.advice, #energy-advice .hint")
    )
    # base load and peak-demand events: a tile, and a row per event or a line saying none
    assert browser.find_element(By.ID, "kpi-base-load").text.strip()
    if summary["base_load_kw"] is not None:
        assert number(text(browser, "#kpi-base-load b")) >= 0
    peaks = browser.find_elements(By.CSS_SELECTOR, "#peak-events tbody tr")
    if summary["peak_events"]:
        assert len(peaks) >= 1
    else:
        assert peaks or browser.find_element(By.ID, "peaks-none").is_displayed()
    # cost per shift of today's calendar: the shifts the API had begun, in order, in rupees
    wait(browser).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#shift-costs, #energy-shifts .hint")
    )
    rows = browser.find_elements(By.CSS_SELECTOR, "#shift-costs tbody tr")
    assert [r.get_attribute("data-shift") for r in rows][: len(shifts)] == [
        x["shift_id"] for x in shifts
    ]
    for r in rows:
        assert AMOUNT.match(r.find_elements(By.TAG_NAME, "td")[-1].text), r.text
    # energy per unit: today's shifts, machine rows and their line's total
    wait(browser).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#intensity, #energy-intensity .hint")
    )
    table = browser.find_elements(By.ID, "intensity")
    if table:
        assert table[0].get_attribute("data-by") == "shift"
        levels = {
            r.get_attribute("data-level")
            for r in table[0].find_elements(By.CSS_SELECTOR, "tbody tr")
        }
        assert "machine" in levels
    for details in browser.find_elements(By.CSS_SELECTOR, "#energy-advice details"):
        details.find_element(By.TAG_NAME, "summary").click()
        assert details.get_attribute("open") is not None

    # the month's bill: the API's lines, a total, and the downloads of the monthly report
    bill = api_get(server, f"{base}/bill")
    table = wait(browser).until(lambda d: d.find_element(By.CSS_SELECTOR, "table.bill"))
    assert table.get_attribute("data-month") == bill["month"]
    assert [
        r.get_attribute("data-item") for r in table.find_elements(By.CSS_SELECTOR, "tbody tr")
    ] == [line["item"] for line in bill["lines"]]
    assert AMOUNT.match(text(browser, "#bill-total")), text(browser, "#bill-total")
    assert browser.find_element(By.NAME, "month").get_attribute("value") == bill["month"]
    links = browser.find_elements(By.CSS_SELECTOR, "#energy-downloads a.dl")
    assert {a.get_attribute("data-report") for a in links} == {"report.csv", "report.pdf"}
    for a in links:
        href = a.get_attribute("href") or ""
        assert f"month={bill['month']}" in href
        status, kind = browser.execute_async_script(
            "const done = arguments[1];"
            "fetch(arguments[0]).then((r) => done([r.status, r.headers.get('content-type')]));",
            href,
        )
        assert status == 200, href
        assert ("pdf" if href.split("?")[0].endswith(".pdf") else "csv") in kind, (href, kind)

    # an actual bill of PKR 1,000: the page shows the API's difference (estimate minus actual)
    form = browser.find_element(By.ID, "bill-compare")
    form.find_element(By.NAME, "actual_total").send_keys("1000")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    result = wait(browser).until(
        lambda d: d.find_element(By.CSS_SELECTOR, "#bill-result[data-difference]")
    )
    assert text(browser, "#cmp-actual b") == "PKR 1,000"
    estimate = number(text(browser, "#cmp-estimate b"))
    difference = float(result.get_attribute("data-difference") or "nan")
    assert abs(estimate - 1000 - difference) <= 1, (estimate, difference)
    shot(browser, "energy")

    # seven days: the buttons say which range is shown, and the address keeps it
    button = browser.find_element(By.CSS_SELECTOR, "[data-range='7d']")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", button)
    button.click()
    wait(browser).until(
        lambda d: (
            d.find_element(By.CSS_SELECTOR, "[data-range='7d']").get_attribute("aria-pressed")
            == "true"
        )
    )
    wait(browser).until(lambda d: text(d, "#kpi-cost span") == "Energy cost in this period")
    assert browser.current_url.endswith(f"#/energy/{site}/7d")
    asked = (
        "return performance.getEntriesByType('resource').map((e) => new URL(e.name))"
        ".filter((u) => u.pathname.endsWith('/series') && u.searchParams.get('start'))"
        ".map((u) => [u.searchParams.get('end') - u.searchParams.get('start'),"
        " u.searchParams.get('bucket')])"
    )
    spans = wait(browser).until(lambda d: d.execute_script(asked))
    assert [7 * 86_400_000, "hour"] in spans, spans
    # the chosen range's energy per unit comes per day
    wait(browser).until(
        lambda d: d.find_elements(
            By.CSS_SELECTOR, "#intensity[data-by='day'], #energy-intensity .hint"
        )
    )
    assert errors(browser) == []


def test_energy_page_in_urdu_is_right_to_left(browser: WebDriver, server: Server) -> None:
    site = energy_site(server)
    sign_in(browser, server, f"#/energy/{site}")
    wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#energy-kpis .kpi"))
    Select(browser.find_element(By.ID, "lang")).select_by_value("ur")
    try:
        wait(browser).until(lambda d: text(d, "#page h1") == "توانائی اور بجلی کی لاگت")
        assert browser.find_element(By.TAG_NAME, "html").get_attribute("dir") == "rtl"
        assert text(browser, "#nav a[data-page=energy]") == "توانائی"
        wait(browser).until(lambda d: "روپے" in text(d, "#kpi-cost b"))
        assert text(browser, "#kpi-cost span") == "آج بجلی کی لاگت"
        direction = browser.execute_script(
            "return getComputedStyle(document.querySelector('#energy-kpis')).direction"
        )
        assert direction == "rtl"
        # the tiles run from the right: the first (today's cost) stands right of the second
        first, second = browser.find_elements(By.CSS_SELECTOR, "#energy-kpis .kpi")[:2]
        assert first.location["x"] > second.location["x"]
        wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, "table.bill"))
        assert text(browser, "#bill-compare button") == "موازنہ کریں"
        shot(browser, "energy-urdu")
    finally:
        Select(browser.find_element(By.ID, "lang")).select_by_value("en")
        wait(browser).until(
            lambda d: d.find_element(By.TAG_NAME, "html").get_attribute("dir") == "ltr"
        )
    assert errors(browser) == []


def test_energy_page_fits_a_phone(server: Server) -> None:
    site = energy_site(server)
    driver = new_driver(390, 844)
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True},
    )
    try:
        sign_in(driver, server, f"#/energy/{site}")
        wait(driver).until(lambda d: d.find_elements(By.CSS_SELECTOR, "table.bill"))
        time.sleep(0.5)
        overflow = driver.execute_script(
            "return document.documentElement.scrollWidth - window.innerWidth"
        )
        assert overflow <= 1, f"the energy page is {overflow}px wider than the screen"
        small = driver.execute_script(
            "return [...document.querySelectorAll('#nav a, button, select, input, a.dl, summary')]"
            ".filter((e) => e.offsetParent !== null)"
            ".filter((e) => e.getBoundingClientRect().height < 40)"
            ".map((e) => e.outerHTML.slice(0, 80))"
        )
        assert small == [], small
        shot(driver, "390x844-energy")
    finally:
        driver.quit()


def test_an_unknown_site_is_explained_on_the_page(browser: WebDriver, server: Server) -> None:
    energy_site(server)
    sign_in(browser, server, "#/energy/no-such-site")
    message = wait(browser).until(lambda d: d.find_element(By.CSS_SELECTOR, "#page .error"))
    assert message.text and message.text != "Not Found"


def test_a_viewer_sees_the_bill_without_the_compare_form(
    browser: WebDriver, server: Server
) -> None:
    site = energy_site(server)
    with server.api() as api:
        r = api.post(
            "/api/v1/users",
            json={
                "username": "energy-viewer",
                "password": PASSWORD,
                "role": "viewer",
                "sites": [site],
            },
        )
        assert r.status_code == 201, r.text
        token = httpx.post(
            f"{server.url}/api/v1/auth/login",
            json={"username": "energy-viewer", "password": PASSWORD},
        ).json()["token"]
        # the API refuses a viewer's comparison all the same
        refused = api.post(
            f"/api/v1/energy/sites/{site}/bill/compare",
            json={
                "month": api_get(server, f"/api/v1/energy/sites/{site}/bill")["month"],
                "actual_total": 1,
            },
            headers={"Authorization": f"Bearer {token}"},
        )
        assert refused.status_code == 403, refused.text
    sign_in(browser, server, f"#/energy/{site}", user="energy-viewer")
    wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, "table.bill"))
    assert not browser.find_elements(By.ID, "bill-compare")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#energy-downloads a.dl")) == 2
    assert errors(browser) == []


def test_a_second_site_is_chosen_from_the_selector(browser: WebDriver, server: Server) -> None:
    first = energy_site(server)
    with server.api() as api:
        r = api.post("/api/v1/sites", json={"id": "energy-site-2", "name": "Second mill"})
        assert r.status_code in (201, 409), r.text
    sign_in(browser, server, f"#/energy/{first}")
    select = wait(browser).until(lambda d: d.find_element(By.ID, "energy-site"))
    assert Select(select).first_selected_option.get_attribute("value") == first
    Select(select).select_by_value("energy-site-2")
    wait(browser).until(lambda d: d.current_url.endswith("#/energy/energy-site-2/today"))
    # a site without meters: its tiles, no meter rows, and a bill of the monthly charges
    wait(browser).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#energy-kpis .kpi")) == 6)
    wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#energy-meters .hint"))
    assert browser.find_element(By.ID, "energy-coverage").is_displayed()
    assert (
        Select(browser.find_element(By.ID, "energy-site")).first_selected_option.get_attribute(
            "value"
        )
        == "energy-site-2"
    )
    assert errors(browser) == []
