"""The forwarder against an in-process server: delete after commit, re-sends, live first, refusals,
clock correction, back-off and the bandwidth cap."""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from karkhana.api.app import create_app
from karkhana.core.clock import FakeClock
from karkhana.core.model import Sample
from karkhana.edge.buffer import Buffer
from karkhana.edge.clock import EdgeClock
from karkhana.edge.encoding import decode
from karkhana.edge.forwarder import Forwarder, ForwarderConfig, LinkError, TokenBucket
from karkhana.runtime import Runtime

pytestmark = pytest.mark.anyio
NOW = int(time.time() * 1000)
DAY = 86_400_000


class Mono:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Flaky(httpx.AsyncBaseTransport):
    """The server's ASGI app behind a link that can fail in the ways real links do."""

    inner: httpx.AsyncBaseTransport
    plan: list[str] = field(default_factory=list)
    """What to do with the next batch posts: ok, refuse (connect error), lose (answer lost
    after the server handled it), busy (503)."""
    batches: list[list[Sample]] = field(default_factory=list)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        is_batch = request.url.path.endswith("/edge/batches")
        action = self.plan.pop(0) if is_batch and self.plan else "ok"
        if action == "refuse":
            raise httpx.ConnectError("connection refused", request=request)
        if action == "busy":
            return httpx.Response(503, headers={"Retry-After": "7"}, json={"detail": "busy"})
        if is_batch:
            body = await request.aread()
            self.batches.append(decode(body)[1])
        response = await self.inner.handle_async_request(request)
        if action == "lose":
            await response.aread()
            raise httpx.ReadTimeout("the answer never came", request=request)
        return response


@dataclass
class Edge:
    rt: Runtime
    buffer: Buffer
    clock: EdgeClock
    wall: FakeClock
    mono: Mono
    link: Flaky
    forwarder: Forwarder
    slept: list[float]


MakeEdge = Callable[..., Awaitable[Edge]]


@pytest.fixture
async def make_edge(runtime: Runtime, tmp_path: Path) -> AsyncIterator[MakeEdge]:
    """Edges (buffer, clock, forwarder) talking to the in-process server through a Flaky link."""
    _, token = await runtime.devices.create("gw-1")
    made: list[Edge] = []

    async def make(wall_offset_ms: int = 0, path: Path | None = None, **config: object) -> Edge:
        wall = FakeClock(int(time.time() * 1000) + wall_offset_ms)
        mono = Mono()
        buffer = Buffer.open(path or tmp_path / f"edge-{len(made)}.db", monotonic=mono)
        clock = EdgeClock(buffer.session, wall, mono)
        link = Flaky(httpx.ASGITransport(app=create_app(runtime)))
        slept: list[float] = []

        async def sleep(s: float) -> None:
            slept.append(s)
            mono.now += s
            wall.advance(round(s * 1000))

        forwarder = Forwarder(
            buffer,
            clock,
            ForwarderConfig("http://server", "gw-1", token, **config),  # type: ignore[arg-type]
            transport=link,
            rng=random.Random(1),
            sleep=sleep,
            monotonic=mono,
        )
        edge = Edge(runtime, buffer, clock, wall, mono, link, forwarder, slept)
        made.append(edge)
        return edge

    yield make
    for edge in made:
        await edge.forwarder.close()
        edge.buffer.close()


@pytest.fixture
async def edge(make_edge: MakeEdge) -> Edge:
    return await make_edge()


async def drain(edge: Edge, steps: int = 50) -> None:
    for _ in range(steps):
        if edge.buffer.stats().points == 0 and not edge.forwarder._parts:
            return
        await edge.forwarder.step()
    raise AssertionError("the buffer did not drain")


def series(n: int, device: str = "gw-1", key: str = "seq", t0: int = NOW - 60_000) -> list[Sample]:
    return [Sample(device, key, t0 + i * 100, float(i)) for i in range(n)]


async def stored(rt: Runtime, device: str, key: str = "seq") -> list[float]:
    return [p.value for p in await rt.store.query(device, key, 0, NOW + DAY)]  # type: ignore[misc]


async def test_batches_are_deleted_only_after_the_server_committed(edge: Edge) -> None:
    await edge.buffer.put(series(300) + series(50, "loom-1") + series(50, "loom-2", "t"))
    await drain(edge)
    assert await stored(edge.rt, "gw-1") == [float(i) for i in range(300)]
    assert len(await stored(edge.rt, "loom-1")) == 50
    assert (await edge.rt.devices.get("loom-2")).parent_id == "gw-1"
    status = edge.forwarder.status()
    assert (status["link"], status["sent_points"], status["failures"]) == ("up", 400, 0)
    assert status["bytes_per_point"] < 4
    assert edge.clock.synced


async def test_a_lost_answer_is_resent_with_the_same_id_and_stored_once(edge: Edge) -> None:
    await edge.buffer.put(series(100))
    edge.link.plan = ["lose"]
    with pytest.raises(LinkError):
        await edge.forwarder.step()
    assert edge.buffer.stats().points == 100  # not acknowledged: still here
    assert await stored(edge.rt, "gw-1") == [float(i) for i in range(100)]  # but committed
    await edge.forwarder.step()
    assert edge.buffer.stats().points == 0
    assert edge.forwarder.status()["replays"] == 1
    assert edge.link.batches[0] == edge.link.batches[1]
    assert await stored(edge.rt, "gw-1") == [float(i) for i in range(100)]


async def test_after_a_crash_rows_are_batched_again_and_stored_once(
    runtime: Runtime, make_edge: MakeEdge
) -> None:
    first = await make_edge()
    await first.buffer.put(series(100))
    first.link.plan = ["lose"]
    with pytest.raises(LinkError):
        await first.forwarder.step()
    first.buffer.close()  # the edge dies here; a new one opens the same buffer
    again = await make_edge(path=first.buffer.path)
    await drain(again)
    assert await stored(runtime, "gw-1") == [float(i) for i in range(100)]
    assert again.forwarder.status()["server_duplicates"] == 100


async def test_live_data_goes_first_after_an_outage(edge: Edge) -> None:
    edge.forwarder.config = dataclasses.replace(edge.forwarder.config, batch_points=50)
    await edge.buffer.put(series(200, key="backlog"))
    edge.link.plan = ["refuse", "refuse"]
    for _ in range(2):
        with pytest.raises(LinkError):
            await edge.forwarder.step()
    assert edge.forwarder.status()["link"] == "down"
    edge.mono.now += 120  # the backlog is old now
    edge.wall.advance(120_000)
    await edge.buffer.put(series(5, key="live", t0=NOW))
    await edge.forwarder.step()
    first = edge.link.batches[0]
    assert [s.key for s in first[:5]] == ["live"] * 5
    assert [s.value for s in first[5:]] == [float(i) for i in range(45)]
    await drain(edge)
    assert await stored(edge.rt, "gw-1", "backlog") == [float(i) for i in range(200)]


async def test_refused_devices_are_isolated_and_quarantined(edge: Edge) -> None:
    await edge.rt.devices.create("gw-2")
    await edge.rt.devices.create("not-mine", parent_id="gw-2")
    await edge.buffer.put(series(10) + series(10, "not-mine") + series(10, "loom-1"))
    await drain(edge)
    assert len(await stored(edge.rt, "gw-1")) == 10
    assert len(await stored(edge.rt, "loom-1")) == 10
    assert await stored(edge.rt, "not-mine") == []
    assert edge.forwarder.status()["refused_points"] == 10
    assert edge.buffer.stats().quarantined_points == 10
    (entry, reason), *_ = await edge.buffer.quarantined()
    assert entry.sample.device_id == "not-mine"
    assert "403" in reason


async def test_far_past_and_future_samples_are_quarantined_not_sent(edge: Edge) -> None:
    old = Sample("gw-1", "seq", NOW - 400 * DAY, 1.0)
    ahead = Sample("gw-1", "seq", NOW + 3 * DAY, 2.0)
    await edge.buffer.put([old, *series(3), ahead])
    await drain(edge)
    assert await stored(edge.rt, "gw-1") == [0.0, 1.0, 2.0]
    assert edge.forwarder.status()["out_of_window_points"] == 2
    assert sorted(e.sample.value for e, _ in await edge.buffer.quarantined()) == [1.0, 2.0]


async def test_samples_stamped_by_a_wrong_clock_are_shifted_after_the_first_sync(
    runtime: Runtime, make_edge: MakeEdge
) -> None:
    edge = await make_edge(wall_offset_ms=-3 * DAY)  # booted 3 days behind
    stamped = edge.clock.now_ms()
    device_stamped = Sample("gw-1", "dev", NOW - 5000, 9.0)
    await edge.buffer.put(
        [Sample("gw-1", "edge", stamped, 1.0), device_stamped], epochs=[edge.clock.epoch, 0]
    )
    await drain(edge)
    assert edge.clock.synced and abs(edge.clock.offset_ms - 3 * DAY) < 60_000
    (point,) = await runtime.store.query("gw-1", "edge", 0, NOW + DAY)
    assert abs(point.ts - (stamped + 3 * DAY)) < 60_000
    assert await stored(runtime, "gw-1", "dev") == [9.0]


def test_a_wall_clock_jump_keeps_the_edge_time_running_smoothly() -> None:
    wall, mono = FakeClock(NOW), Mono()
    clock = EdgeClock(1, wall, mono)
    before = clock.now_ms()
    wall.advance(-3_600_000)  # NTP, or a person, set the clock back an hour
    mono.now += 1.0
    wall.advance(1000)
    assert abs(clock.now_ms() - (before + 1000)) < 5
    assert clock.jumps == 1
    wall.advance(500)
    mono.now += 0.5  # normal running is not a jump
    assert abs(clock.now_ms() - (before + 1500)) < 5
    assert clock.jumps == 1


async def test_busy_server_and_backoff(edge: Edge) -> None:
    await edge.buffer.put(series(10))
    edge.link.plan = ["busy", "refuse", "refuse", "refuse"]
    task_sleeps: list[float] = []
    for _ in range(4):
        with pytest.raises(LinkError) as caught:
            await edge.forwarder.step()
        task_sleeps.append(edge.forwarder.backoff(caught.value))
    assert task_sleeps[0] >= 7  # the server's Retry-After
    assert edge.forwarder.status()["link"] == "down"
    assert all(0 <= d <= 60 for d in task_sleeps[1:])
    await edge.forwarder.step()
    assert edge.forwarder.status()["failures"] == 0
    assert edge.buffer.stats().points == 0


async def test_wrong_token_is_unauthorized(edge: Edge) -> None:
    edge.forwarder._client.headers["Authorization"] = "Bearer kd_wrong"
    await edge.buffer.put(series(3))
    with pytest.raises(LinkError) as caught:
        await edge.forwarder.step()
    assert caught.value.state == "unauthorized"
    assert edge.buffer.stats().points == 3


async def test_bandwidth_cap_paces_the_bytes() -> None:
    mono = Mono()
    waits: list[float] = []

    async def sleep(s: float) -> None:
        waits.append(s)
        mono.now += s

    bucket = TokenBucket(1000, 2000, mono, sleep)
    sent = 0
    for size in [500] * 20 + [5000, 100]:
        await bucket.take(size)
        sent += size
    elapsed = mono.now - 100.0
    assert sent - 2000 <= elapsed * 1000 + 1e-6  # never faster than the cap after the burst
    assert elapsed * 1000 <= sent  # and not needlessly slower


async def test_small_batches_under_a_bandwidth_cap(make_edge: MakeEdge) -> None:
    edge = await make_edge(bandwidth_bps=500)
    await edge.buffer.put(
        [Sample("gw-1", f"k{i % 50}", NOW - 100_000 + i, random.random()) for i in range(3000)]
    )
    await drain(edge, 200)
    assert max(len(b) for b in edge.link.batches) < 400
    assert edge.forwarder.status()["throttled_s"] > 0
