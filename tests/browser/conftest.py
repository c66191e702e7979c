"""End-to-end fixtures: `karkhana demo` (server and simulated mill) in a subprocess, and headless
Chromium driven by Selenium through Debian's chromedriver. Screenshots go to test-artifacts/."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver

from tests.conftest import free_port, need

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
PASSWORD = "browser-test-password"


@dataclass(frozen=True)
class Server:
    url: str
    token: str
    data_dir: Path

    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=10
        )


def start_server(data_dir: Path, devices: int | None) -> tuple[subprocess.Popen[bytes], str]:
    """`karkhana demo` with ``devices`` simulated machines, or `karkhana serve` for None."""
    port = free_port()
    env = {
        **os.environ,
        "KARKHANA_DATA_DIR": str(data_dir),
        "KARKHANA_ADMIN_PASSWORD": PASSWORD,
        "KARKHANA_HTTP_HOST": "127.0.0.1",
        "KARKHANA_HTTP_PORT": str(port),
        "KARKHANA_MQTT_HOST": "127.0.0.1",
        "KARKHANA_MQTT_PORT": str(free_port()),
        "KARKHANA_MQTTS_PORT": str(free_port()),
        "KARKHANA_TLS": "off",
        "KARKHANA_SQLITE_SYNCHRONOUS": "NORMAL",
    }
    log = (data_dir.parent / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "karkhana", "serve"]
        if devices is None
        else [
            *(sys.executable, "-m", "karkhana", "demo", "--devices", str(devices)),
            # live data only: the tests watch what the live simulation does
            *("--history-days", "0"),
            # no remaining-life model: without history there is nothing for it to score
            *("--rul-lives", "0"),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"the karkhana server exited: {(data_dir.parent / 'server.log').read_text()}"
            )
        try:
            if httpx.get(f"{url}/api/v1/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.terminate()
    raise RuntimeError("the karkhana server did not answer within 60 s")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    need(
        CHROMIUM.exists() and CHROMEDRIVER.exists(),
        "chromium and chromium-driver are not installed (scripts/install-system-deps.sh)",
    )
    base = tmp_path_factory.mktemp("browser")
    proc, url = start_server(base / "data", devices=4)
    try:
        r = httpx.post(f"{url}/api/v1/auth/login", json={"username": "admin", "password": PASSWORD})
        ready = Server(url, r.json()["token"], base / "data")
        wait_for_machines(ready)
        yield ready
    finally:
        stop_server(proc)


def wait_for_machines(server: Server, timeout_s: float = 30) -> None:
    """Until the demo has registered its machines (it does so just after the server starts)."""
    deadline = time.monotonic() + timeout_s
    last = -1
    with server.api() as api:
        while time.monotonic() < deadline:
            tree = api.get("/api/v1/assets").json()
            count = sum(len(ln["machines"]) for s in tree for a in s["areas"] for ln in a["lines"])
            if count and count == last:
                return
            last = count
            time.sleep(1)
    raise RuntimeError("the demo registered no machines")


def new_driver(width: int = 1280, height: int = 900) -> WebDriver:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-extensions",
        "--no-first-run",
        f"--window-size={width},{height}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


@pytest.fixture
def browser(server: Server, request: pytest.FixtureRequest) -> Iterator[WebDriver]:
    driver = new_driver()
    try:
        yield driver
    finally:
        shot(driver, f"{request.node.name}-last")
        driver.quit()


def shot(driver: WebDriver, name: str) -> Path:
    """Save a screenshot under test-artifacts/browser/ (git-ignored)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    ignore = ARTIFACTS.parent / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n")
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path
