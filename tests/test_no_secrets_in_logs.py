"""A realistic session against `karkhana serve`, every logger at DEBUG: no secret in any log line.

First start (the generated admin password is printed once, in the banner on stdout, and
nowhere else), logins by token and by browser session, a device created and its token rotated,
MQTT with a wrong and a right token, HTTP ingestion with good and bad tokens, users, API tokens
and the audit log. Every secret that went over the wire is then looked for in every log record
(message, arguments and traceback) and in everything written to stdout and stderr.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from karkhana import cli
from karkhana.core.config import Settings
from tests.conftest import make_settings
from tests.ingest.test_broker import Device

pytestmark = pytest.mark.anyio
NOW = int(time.time() * 1000)


class Everything(logging.Handler):
    """Keeps the full text of every record: message, arguments and traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        # this test's own HTTP client traces the responses it receives, cookies included
        if not record.name.startswith("httpcore"):
            self.texts.append(f"{self.format(record)} {record.args!r} {record.__dict__!r}")


@pytest.fixture
def everything() -> Iterator[Everything]:
    handler = Everything()
    root = logging.getLogger()
    saved = {
        name: lg.level
        for name, lg in logging.root.manager.loggerDict.items()
        if isinstance(lg, logging.Logger)
    }
    old_root = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(old_root)
    for name, lg in list(logging.root.manager.loggerDict.items()):
        if isinstance(lg, logging.Logger):
            lg.setLevel(saved.get(name, logging.NOTSET))
            if handler in lg.handlers:
                lg.removeHandler(handler)


def everything_at_debug(handler: Everything) -> None:
    """Every logger at DEBUG, and the handler also on loggers that do not pass records up."""
    for lg in list(logging.root.manager.loggerDict.values()):
        if isinstance(lg, logging.Logger):
            lg.setLevel(logging.DEBUG)
            if not lg.propagate and handler not in lg.handlers:
                lg.addHandler(handler)


async def test_no_secret_reaches_a_log(
    tmp_path: Path,
    everything: Everything,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings: Settings = make_settings(tmp_path, admin_password="", tls="off")
    servers: list[uvicorn.Server] = []

    class Recorded(uvicorn.Server):
        def __init__(self, config: uvicorn.Config) -> None:
            super().__init__(config)
            servers.append(self)

    monkeypatch.setattr(uvicorn, "Server", Recorded)
    task = asyncio.create_task(cli.serve(settings))
    for _ in range(500):
        if servers and servers[0].started:
            break
        assert not task.done(), task
        await asyncio.sleep(0.02)
    everything_at_debug(everything)
    banner = capsys.readouterr()
    found = re.search(r"login     : admin / (\S+)   \(shown only now", banner.out)
    assert found, banner.out
    admin_password = found.group(1)
    secrets = {"admin password": admin_password}
    base = f"http://127.0.0.1:{settings.http_port}"
    try:
        async with httpx.AsyncClient(base_url=base) as http:
            wrong = {"username": "admin", "password": admin_password[::-1]}
            assert (await http.post("/api/v1/auth/login", json=wrong)).status_code == 401
            secrets["wrong password"] = wrong["password"]
            r = await http.post(
                "/api/v1/auth/login", json={"username": "admin", "password": admin_password}
            )
            secrets["login token"] = r.json()["token"]
            admin = {"Authorization": f"Bearer {r.json()['token']}"}

            r = await http.post(
                "/api/v1/auth/login",
                json={"username": "admin", "password": admin_password, "session": True},
            )
            secrets["session cookie"] = r.cookies["karkhana_session"]
            secrets["csrf token"] = r.json()["csrf_token"]
            r = await http.post(
                "/api/v1/devices",
                json={"id": "loom-01"},
                headers={"X-CSRF-Token": r.json()["csrf_token"]},
            )
            assert r.status_code == 201
            secrets["device token"] = first = r.json()["token"]
            http.cookies.clear()

            r = await http.post(
                "/api/v1/users",
                json={"username": "asha", "password": "asha-password-1", "role": "engineer"},
                headers=admin,
            )
            assert r.status_code == 201
            secrets["user password"] = "asha-password-1"
            r = await http.post(
                "/api/v1/tokens", json={"name": "erp", "scopes": ["read"]}, headers=admin
            )
            secrets["api token"] = r.json()["token"]
            assert (
                await http.get(
                    "/api/v1/devices", headers={"Authorization": f"Bearer {r.json()['token']}"}
                )
            ).status_code == 200
            assert (
                await http.delete(f"/api/v1/tokens/{r.json()['id']}", headers=admin)
            ).status_code == 204

            bad = Device(settings.mqtt_port, "loom-01", first[:-4] + "AAAA")
            secrets["wrong mqtt token"] = first[:-4] + "AAAA"
            await asyncio.to_thread(bad.answered.wait, 10)
            assert not bad.connected.is_set()
            bad.close()
            good = Device(settings.mqtt_port, "loom-01", first)
            await asyncio.to_thread(good.answered.wait, 10)
            assert good.connected.is_set()
            await asyncio.to_thread(
                good.publish, "karkhana/loom-01/telemetry", f'{{"ts": {NOW}, "values": {{"t": 1}}}}'
            )

            r = await http.post("/api/v1/devices/loom-01/rotate-token", headers=admin)
            secrets["rotated device token"] = second = r.json()["token"]
            await asyncio.to_thread(good.disconnected.wait, 10)
            good.close()
            send = {"ts": NOW + 1, "values": {"t": 2}}
            for token, status in [(first, 401), (second, 200), ("kd_made-up-token", 401)]:
                r = await http.post(
                    "/api/v1/telemetry/loom-01",
                    json=send,
                    headers={"Authorization": f"Bearer {token}"},
                )
                assert r.status_code == status, (token, r.text)
            secrets["made-up device token"] = "kd_made-up-token"

            audit = await http.get("/api/v1/audit", params={"limit": 1000}, headers=admin)
            assert audit.status_code == 200 and len(audit.json()) > 5
            assert (await http.get("/api/v1/audit/verify", headers=admin)).json()["ok"]
            assert (await http.post("/api/v1/auth/logout", headers=admin)).status_code == 204
    finally:
        servers[0].should_exit = True
        await task
    output = capsys.readouterr()

    assert len(everything.texts) > 50  # DEBUG really was on
    for name, secret in secrets.items():
        assert len(secret) >= 10
        leaks = [t for t in everything.texts if secret in t]
        assert not leaks, f"{name} in a log record: {leaks[0][:300]}"
        assert secret not in output.out + output.err, f"{name} written to stdout or stderr"
        assert secret not in audit.text, f"{name} in the audit log"
    assert banner.out.count(admin_password) == 1 and admin_password not in banner.err
