"""The edge verifies the server's certificate, and with ``ca_file`` trusts only that CA."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import uvicorn

from karkhana import cli
from karkhana.api.app import create_app
from karkhana.core.clock import SYSTEM_CLOCK
from karkhana.edge.buffer import Buffer
from karkhana.edge.clock import EdgeClock
from karkhana.edge.forwarder import Forwarder, ForwarderConfig, LinkError
from karkhana.runtime import Runtime
from karkhana.security import tls
from tests.conftest import make_settings

pytestmark = pytest.mark.anyio


@pytest.fixture
async def https(tmp_path: Path) -> AsyncIterator[Runtime]:
    settings = make_settings(tmp_path / "server")
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


_gateways = itertools.count()


async def forwarder_sync(rt: Runtime, tmp_path: Path, ca_file: str) -> None:
    gateway = f"gw-{next(_gateways)}"
    _, token = await rt.devices.create(gateway)
    buffer = Buffer.open(tmp_path / f"{gateway}.db")
    url = f"https://127.0.0.1:{rt.settings.http_port}"
    forwarder = Forwarder(
        buffer,
        EdgeClock(buffer.session, SYSTEM_CLOCK),
        ForwarderConfig(url, gateway, token, ca_file=ca_file),
    )
    try:
        await forwarder.sync()
    finally:
        await forwarder.close()
        buffer.close()


async def test_edge_trusts_the_pinned_ca(https: Runtime, tmp_path: Path) -> None:
    ca = tls.TlsPaths.of(https.settings.data_dir).ca_cert
    await forwarder_sync(https, tmp_path, str(ca))


async def test_edge_refuses_an_unknown_certificate(https: Runtime, tmp_path: Path) -> None:
    with pytest.raises(LinkError):
        await forwarder_sync(https, tmp_path, "")
    other = tmp_path / "other"
    tls.init(other, hostname="elsewhere")
    with pytest.raises(LinkError):
        await forwarder_sync(https, tmp_path, str(tls.TlsPaths.of(other).ca_cert))
