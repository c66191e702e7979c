from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from karkhana.api.app import create_app
from karkhana.core.clock import FakeClock
from karkhana.runtime import Runtime
from tests.conftest import ADMIN_PASSWORD, make_settings
from tests.production.support import NOW, build_mill, day_samples, settle


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
async def mill(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Runtime]:
    """A runtime on a fake clock at 09:00 with shift A's samples stored and processed."""
    rt = Runtime(make_settings(tmp_path), clock)
    await rt.start(mqtt=False)
    try:
        await build_mill(rt)
        samples, _ = day_samples()
        await rt.store.write(samples)
        await settle(rt, "L1", samples[-1].ts)
        yield rt
    finally:
        await rt.stop()


@pytest.fixture
async def api(mill: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(mill))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        r = await c.post(
            "/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
        )
        c.headers["Authorization"] = f"Bearer {r.json()['token']}"
        yield c
