"""Send the buffer to the server: compressed batches, live data first, delete after commit.

One batch is in flight at a time. A batch holds the samples buffered in the last few seconds
first and then the oldest backlog, so that after an outage dashboards show "now" with the first
batch while history fills in behind it. The buffer deletes a batch's rows only after the server
answered 200, which it does only after committing them.

Re-sends are safe without bookkeeping on the edge: a batch whose answer was lost (read timeout,
dropped connection) is re-sent with the same bytes and id, which the server recognises; after a
crash the rows are simply batched again under new ids, and the server stores each (device, key,
timestamp) once.

Failures back off exponentially with full jitter (or as the server's Retry-After says). A batch
the server refuses outright (400, 403, 413) is split by device, then halved, until the refused
samples are isolated; those are quarantined (kept on the edge, counted, never silently lost).
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from karkhana import __version__
from karkhana.core.errors import StoreUnavailable
from karkhana.edge.buffer import Buffer, Entry
from karkhana.edge.clock import EdgeClock
from karkhana.edge.encoding import CONTENT_TYPE, encode

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
HEADER_OVERHEAD = 400
"""Bytes of HTTP request and answer around each batch, for the bandwidth cap."""
PERMANENT = {400, 403, 404, 413, 422}

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ForwarderConfig:
    server: str
    gateway_id: str
    token: str
    batch_points: int = 20_000
    batch_bytes: int = 1024 * 1024
    bandwidth_bps: int = 0
    """Bytes a second on the wire (0: no cap)."""
    linger_s: float = 1.0
    """After a batch that emptied the buffer, wait this long for more data."""
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    timeout_s: float = 30.0
    sync_interval_s: float = 600.0
    max_age_ms: int = 365 * DAY_MS
    """Samples older than this (server time) are quarantined instead of sent."""
    max_future_ms: int = DAY_MS
    ca_file: str = ""


class LinkError(Exception):
    """The server could not be reached or asked us to wait; ``retry_after`` in seconds."""

    def __init__(self, message: str, state: str = "down", retry_after: float | None = None):
        super().__init__(message)
        self.state = state
        self.retry_after = retry_after


class TokenBucket:
    """A bandwidth cap: ``rate`` bytes a second, bursts of ``burst`` bytes."""

    def __init__(
        self,
        rate: float,
        burst: float,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.monotonic = monotonic
        self.sleep = sleep
        self.tokens = burst
        self._at = monotonic()

    def _refill(self) -> None:
        now = self.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self._at) * self.rate)
        self._at = now

    async def take(self, n: int) -> float:
        """Wait until ``n`` bytes may go (a batch larger than the burst goes once the bucket
        is full, leaving it in debt); returns the seconds waited."""
        if self.rate <= 0:
            return 0.0
        self._refill()
        need = min(n, self.burst)
        waited = 0.0
        if self.tokens < need:
            wait = (need - self.tokens) / self.rate
            await self.sleep(wait)
            waited = wait
            self._refill()
        self.tokens -= n
        return waited


@dataclass(slots=True)
class Batch:
    batch_id: uuid.UUID
    entries: list[Entry]
    body: bytes
    attempts: int = 0


@dataclass(slots=True)
class ForwarderStats:
    link: str = "starting"
    last_error: str = ""
    last_ok_ms: int | None = None
    """Edge time of the last committed batch."""
    failures: int = 0
    """Consecutive failed attempts."""
    batches: int = 0
    points: int = 0
    bytes: int = 0
    replays: int = 0
    duplicates: int = 0
    refused_points: int = 0
    out_of_window_points: int = 0
    uncorrected_points: int = 0
    throttled_s: float = 0.0


class Forwarder:
    def __init__(
        self,
        buffer: Buffer,
        clock: EdgeClock,
        config: ForwarderConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        rng: random.Random | None = None,
        sleep: Sleep = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.buffer = buffer
        self.clock = clock
        self.config = config
        self.rng = rng or random.Random()
        self.sleep = sleep
        self.monotonic = monotonic
        self.stats = ForwarderStats()
        limit = config.bandwidth_bps
        self.bucket = TokenBucket(limit, max(limit, 4096), monotonic, sleep)
        self._client = httpx.AsyncClient(
            base_url=config.server.rstrip("/"),
            transport=transport,
            timeout=httpx.Timeout(config.timeout_s, connect=min(10.0, config.timeout_s)),
            # with a CA file only that CA is trusted: the server's certificate is pinned to it
            verify=ssl.create_default_context(cafile=config.ca_file) if config.ca_file else True,
            headers={
                "Authorization": f"Bearer {config.token}",
                "X-Karkhana-Gateway": config.gateway_id,
                "User-Agent": f"karkhana-edge/{__version__}",
            },
        )
        self._pending: Batch | None = None
        self._parts: list[list[Entry]] = []
        self._next_sync = 0.0
        self._bytes_per_point = 2.0

    async def close(self) -> None:
        await self._client.aclose()

    # -- the loop -----------------------------------------------------------------------------
    async def run(self) -> None:
        """Forward until cancelled."""
        while True:
            try:
                sent = await self.step()
            except LinkError as exc:
                await self.sleep(self.backoff(exc))
                continue
            except StoreUnavailable as exc:
                # the buffer's disk failed: what was not acknowledged is sent again later
                log.error("edge buffer unavailable to the forwarder: %s", exc.message)
                await self.sleep(self.config.backoff_max_s)
                continue
            if not sent:
                await self.sleep(self.config.linger_s)

    async def step(self) -> bool:
        """Send one batch if there is one; False when the buffer had nothing to send (or the
        last batch was not full: a short wait lets live data gather). Raises LinkError, after
        noting it in the link state."""
        try:
            return await self._step()
        except LinkError as exc:
            self._failed(exc)
            raise

    async def _step(self) -> bool:
        if not self.clock.synced or self.monotonic() >= self._next_sync:
            await self.sync()
        batch = self._pending or await self._next_batch()
        if batch is None:
            return False
        self._pending = batch
        self.stats.throttled_s += await self.bucket.take(len(batch.body) + HEADER_OVERHEAD)
        batch.attempts += 1
        answer = await self._post(batch)
        await self._handle(batch, answer)
        full = len(batch.entries) >= self._points_limit() * 0.9
        return full or bool(self._parts)

    async def sync(self) -> None:
        """Measure the clock offset from the server's health answer; correct this run's samples
        stamped before the first measurement."""
        started = self.monotonic()
        try:
            r = await self._client.get("/api/v1/health")
        except httpx.HTTPError as exc:
            raise self._link_error(exc) from None
        local = self.clock.wall.now_ms()
        rtt = self.monotonic() - started
        if r.status_code != 200:
            raise LinkError(f"server health answered {r.status_code}", "down", _retry_after(r))
        try:
            server_ms = int(r.json()["time_ms"])
        except (ValueError, KeyError, TypeError):
            raise LinkError("the server's health answer has no time_ms (older server?)") from None
        correction = self.clock.observe_server(server_ms, rtt, local)
        if correction is not None:
            shifted = await self.buffer.correct(correction.epoch, correction.delta_ms)
            if correction.delta_ms and shifted:
                log.warning(
                    "%d samples stamped before the clock check shifted by %+d ms",
                    shifted,
                    correction.delta_ms,
                )
        self._next_sync = self.monotonic() + self.config.sync_interval_s

    # -- batches --------------------------------------------------------------------------------
    def _points_limit(self) -> int:
        by_bytes = int(self._byte_budget() / max(self._bytes_per_point, 0.05))
        return max(1, min(self.config.batch_points, by_bytes))

    def _byte_budget(self) -> int:
        """Batch bytes: the configured size, or about 5 s of a bandwidth cap."""
        budget = self.config.batch_bytes
        if self.config.bandwidth_bps > 0:
            budget = min(budget, max(2048, self.config.bandwidth_bps * 5))
        return budget

    async def _next_batch(self) -> Batch | None:
        if self._parts:
            entries = self._parts.pop(0)
        else:
            while True:
                peeked = await self.buffer.peek(self._points_limit(), live_first=True)
                if not peeked:
                    return None
                entries = await self._screen(peeked)
                if entries:
                    break
        batch_id = uuid.uuid4()
        body = encode(batch_id, [e.sample for e in entries])
        while len(body) > self._byte_budget() and len(entries) > 1:
            self._parts.insert(0, entries[len(entries) // 2 :])
            entries = entries[: len(entries) // 2]
            body = encode(batch_id, [e.sample for e in entries])
        self._bytes_per_point = 0.7 * self._bytes_per_point + 0.3 * len(body) / len(entries)
        return Batch(batch_id, entries, body)

    async def _screen(self, entries: list[Entry]) -> list[Entry]:
        """Quarantine samples far outside the server's time; note uncorrectable stamps."""
        now = self.clock.now_ms()
        low, high = now - self.config.max_age_ms, now + self.config.max_future_ms
        outside = [e for e in entries if not low <= e.sample.ts <= high]
        if outside:
            self.stats.out_of_window_points += len(outside)
            await self.buffer.quarantine(
                (e.id for e in outside),
                "timestamp outside [server time - max_age, server time + 1 day]",
            )
            gone = {e.id for e in outside}
            entries = [e for e in entries if e.id not in gone]
        stale = sum(1 for e in entries if e.epoch not in (0, self.clock.session))
        if stale:
            # stamped in an earlier run that never reached the server: the offset of that run
            # is unknown, so they go as stamped (inside the window) and are counted
            self.stats.uncorrected_points += stale
        return entries

    async def _post(self, batch: Batch) -> httpx.Response:
        try:
            return await self._client.post(
                "/api/v1/edge/batches",
                content=batch.body,
                headers={"Content-Type": CONTENT_TYPE},
            )
        except httpx.HTTPError as exc:
            if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
                # never reached the server: batch again, so that live data goes first
                self._pending = None
                self._parts.clear()
            raise self._link_error(exc) from None

    async def _handle(self, batch: Batch, r: httpx.Response) -> None:
        status = r.status_code
        if status == 200:
            await self.buffer.ack(e.id for e in batch.entries)
            self._pending = None
            body = _json(r)
            st = self.stats
            if st.failures:
                log.warning("link to the server back after %d failed attempts", st.failures)
            st.link, st.last_error, st.failures = "up", "", 0
            st.last_ok_ms = self.clock.now_ms()
            st.batches += 1
            st.points += len(batch.entries)
            st.bytes += len(batch.body)
            st.duplicates += int(body.get("duplicates", 0))
            st.replays += bool(body.get("replay"))
            return
        detail = str(_json(r).get("detail", r.text[:200]))
        if status == 401:
            self._pending = None
            raise LinkError(f"the server refused the gateway's token: {detail}", "unauthorized")
        if status in PERMANENT:
            self._pending = None
            await self._refused(batch.entries, status, detail)
            return
        if status not in (429, 503):
            self._pending = None  # the server did not commit: batch afresh
        state = "throttled" if status in (429, 503) else "server_error"
        raise LinkError(f"server answered {status}: {detail}", state, _retry_after(r))

    async def _refused(self, entries: list[Entry], status: int, detail: str) -> None:
        devices = sorted({e.sample.device_id for e in entries})
        if len(devices) > 1:
            self._parts[:0] = [[e for e in entries if e.sample.device_id == d] for d in devices]
        elif len(entries) > 1 and status in (400, 413):
            half = len(entries) // 2
            self._parts[:0] = [entries[:half], entries[half:]]
        else:
            self.stats.refused_points += len(entries)
            log.error(
                "server refused %d samples of %s (%d: %s); quarantined",
                len(entries),
                devices[0],
                status,
                detail,
            )
            await self.buffer.quarantine(
                (e.id for e in entries), f"refused by the server ({status}): {detail}"[:500]
            )

    # -- failures ---------------------------------------------------------------------------
    def _link_error(self, exc: httpx.HTTPError) -> LinkError:
        return LinkError(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)

    def _failed(self, exc: LinkError) -> None:
        st = self.stats
        if st.link == "up":
            log.warning("link to the server lost: %s", exc)
            self._next_sync = 0.0  # measure the clock again once back
        st.link, st.last_error = exc.state, str(exc)
        st.failures += 1

    def backoff(self, exc: LinkError) -> float:
        """Seconds to wait after a failure: exponential with full jitter, at least what the
        server's Retry-After asked for."""
        st = self.stats
        cap = min(self.config.backoff_max_s, self.config.backoff_base_s * 2 ** min(st.failures, 30))
        delay = self.rng.uniform(0, cap)
        if exc.retry_after is not None:
            delay = max(delay, exc.retry_after)
        return delay

    @property
    def client(self) -> httpx.AsyncClient:
        """The HTTP client to the server (base URL, gateway token, pinned CA)."""
        return self._client

    def status(self) -> dict[str, Any]:
        st = self.stats
        return {
            "link": st.link,
            "last_error": st.last_error,
            "last_sync_ms": st.last_ok_ms,
            "failures": st.failures,
            "sent_batches": st.batches,
            "sent_points": st.points,
            "sent_bytes": st.bytes,
            "bytes_per_point": round(st.bytes / st.points, 3) if st.points else None,
            "server_duplicates": st.duplicates,
            "replays": st.replays,
            "refused_points": st.refused_points,
            "out_of_window_points": st.out_of_window_points,
            "uncorrected_points": st.uncorrected_points,
            "throttled_s": round(st.throttled_s, 1),
        }


def _json(r: httpx.Response) -> dict[str, Any]:
    try:
        body = r.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _retry_after(r: httpx.Response) -> float | None:
    value = r.headers.get("retry-after", "")
    try:
        return min(float(value), 3600.0) if value else None
    except ValueError:
        return None
