"""The Ingestor's per-device rate limit on the external-broker path (listener threads)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from karkhana.core.clock import FakeClock
from karkhana.core.errors import TooManyRequests
from karkhana.ingest.service import Ingestor
from karkhana.runtime import Runtime
from karkhana.store.base import WriteResult

pytestmark = pytest.mark.anyio
NOW = int(time.time() * 1000)


async def test_threaded_ingestion_is_rate_limited_per_device(runtime: Runtime) -> None:
    await runtime.devices.create("noisy")
    await runtime.devices.create("quiet")
    clock = FakeClock(NOW)
    ingestor = Ingestor(runtime.store, runtime.devices, clock=clock, max_msgs_per_s=1, burst_msgs=2)

    def send(device: str, i: int) -> WriteResult | BaseException:
        got: list[WriteResult | BaseException] = []
        done = threading.Event()

        def finished(result: WriteResult | BaseException) -> None:
            got.append(result)
            done.set()

        payload = f'{{"ts": {NOW + i}, "values": {{"v": {i}}}}}'.encode()
        ingestor.ingest_threaded(device, payload, finished)
        assert done.wait(10)
        return got[0]

    results = [await asyncio.to_thread(send, "noisy", i) for i in range(4)]
    assert [type(r) for r in results] == [
        WriteResult,
        WriteResult,
        TooManyRequests,
        TooManyRequests,
    ]
    refused = results[2]
    assert isinstance(refused, TooManyRequests) and refused.reason == "rate_limited"
    assert refused.retry_after == 1
    assert isinstance(await asyncio.to_thread(send, "quiet", 0), WriteResult)
    clock.advance(1000)
    assert isinstance(await asyncio.to_thread(send, "noisy", 10), WriteResult)
    assert ingestor.snapshot()["noisy"]["rejected"] == {"rate_limited": 2}
