"""`karkhana serve` with TLS: a real uvicorn server answering HTTPS, and the checks before it."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from karkhana import cli
from karkhana.api.app import create_app
from karkhana.core.errors import ConfigError
from karkhana.runtime import Runtime
from karkhana.security import tls
from tests.conftest import free_port, make_settings

pytestmark = pytest.mark.anyio


@pytest.fixture
async def https(tmp_path: Path) -> AsyncIterator[Runtime]:
    settings = make_settings(tmp_path)  # tls=auto: on because certs init ran
    tls.init(settings.data_dir, hostname="test-host")
    rt = Runtime(settings)
    await rt.start(mqtt=False)
    server = uvicorn.Server(cli.uvicorn_config(create_app(rt), settings, rt.tls))
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.02)
    yield rt
    server.should_exit = True
    await task
    await rt.stop()


async def test_health_over_https_with_the_local_ca(https: Runtime) -> None:
    ca = ssl.create_default_context(cafile=str(tls.TlsPaths.of(https.settings.data_dir).ca_cert))
    for host in ("127.0.0.1", "localhost"):
        async with httpx.AsyncClient(verify=ca) as client:
            r = await client.get(f"https://{host}:{https.settings.http_port}/api/v1/health")
        assert r.status_code == 200, r.text


async def test_https_without_trusting_the_ca_fails(https: Runtime) -> None:
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await client.get(f"https://127.0.0.1:{https.settings.http_port}/api/v1/health")


def test_banner_shows_https_and_the_ca(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    assert "http://127.0.0.1" in cli._banner(settings, "embedded", None)
    tls.init(settings.data_dir, hostname="test-host")
    on = tls.server_tls(settings.tls, settings.data_dir)
    banner = cli._banner(settings, "embedded", None, on)
    assert f"https://127.0.0.1:{settings.http_port}/" in banner
    assert "ca.pem" in banner


def test_port_check_covers_mqtts(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        settings = make_settings(tmp_path, mqtts_port=taken, tls="on")
        with pytest.raises(ConfigError, match="certs init"):
            cli.check_ports(settings)
        tls.init(settings.data_dir, hostname="test-host")
        with pytest.raises(ConfigError, match=f"MQTTS port {taken} is already in use"):
            cli.check_ports(settings)
        cli.check_ports(settings.replace(tls="off"))
        # with TLS on, the plain MQTT port is not used unless asked for
        cli.check_ports(settings.replace(mqtts_port=free_port(), mqtt_port=taken))
        with pytest.raises(ConfigError, match=f"MQTT port {taken}"):
            cli.check_ports(
                settings.replace(mqtts_port=free_port(), mqtt_port=taken, mqtt_plain="on")
            )
