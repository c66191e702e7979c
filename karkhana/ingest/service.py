"""Ingestion: authenticate, decode and store telemetry from any transport, counting rejects.

HTTP, the embedded broker and the external-broker listener all come through here, so a payload
is judged the same way whichever way it arrived.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from karkhana.core.clock import SYSTEM_CLOCK, Clock
from karkhana.core.errors import KarkhanaError, TooManyRequests, Unauthorized
from karkhana.core.model import Sample
from karkhana.ingest.codec import decode
from karkhana.ingest.ratelimit import RateLimiter
from karkhana.security.devices import DeviceRegistry
from karkhana.store.base import WriteResult
from karkhana.store.sqlite import SQLiteStore

log = logging.getLogger(__name__)

TOPIC_PREFIX = "karkhana/"
TELEMETRY_SUFFIX = "/telemetry"
TELEMETRY_FILTER = "karkhana/+/telemetry"
UNKNOWN_DEVICE = "(unknown)"


def device_of_topic(topic: str) -> str | None:
    """The device id in ``karkhana/<device_id>/telemetry``, or None for any other topic."""
    if topic.startswith(TOPIC_PREFIX) and topic.endswith(TELEMETRY_SUFFIX):
        device_id = topic[len(TOPIC_PREFIX) : -len(TELEMETRY_SUFFIX)]
        if device_id and "/" not in device_id:
            return device_id
    return None


@dataclass
class DeviceStats:
    messages: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    last_reason: str = ""
    last_logged_ms: int = 0


class Ingestor:
    def __init__(
        self,
        store: SQLiteStore,
        devices: DeviceRegistry,
        *,
        max_payload_bytes: int = 256 * 1024,
        max_future_ms: int = 86_400_000,
        clock: Clock = SYSTEM_CLOCK,
        log_interval_ms: int = 60_000,
        max_msgs_per_s: float = 0,
        burst_msgs: int = 1,
    ) -> None:
        """``max_msgs_per_s`` per device (0: no limit), ``burst_msgs`` at once."""
        self.store = store
        self.devices = devices
        self.max_payload_bytes = max_payload_bytes
        self.max_future_ms = max_future_ms
        self.clock = clock
        self.log_interval_ms = log_interval_ms
        self.stats: defaultdict[str, DeviceStats] = defaultdict(DeviceStats)
        self.limiter = RateLimiter(max_msgs_per_s, burst_msgs)
        self._lock = threading.Lock()

    def decode(self, device_id: str, payload: bytes) -> list[Sample]:
        return decode(
            payload,
            device_id,
            now_ms=self.clock.now_ms(),
            max_future_ms=self.max_future_ms,
            max_bytes=self.max_payload_bytes,
        )

    def admit(self, device_id: str) -> None:
        """Take one message from the device's allowance; TooManyRequests when it has none."""
        if not self.limiter.enabled:
            return
        now = self.clock.now_ms()
        with self._lock:
            wait = self.limiter.take(device_id, now)
        if wait > 0:
            raise TooManyRequests(
                f"more than {self.limiter.rate:g} messages a second",
                retry_after=max(1, math.ceil(wait)),
                reason="rate_limited",
            )

    async def ingest(self, device_id: str, payload: bytes, token: str | None = None) -> WriteResult:
        """Check the token (when given) and the device's message rate, decode and store; raises
        a KarkhanaError on bad input."""
        try:
            if token is not None and not self.devices.verify(device_id, token):
                raise Unauthorized("unknown device or wrong token")
            self.admit(device_id)
            samples = self.decode(device_id, payload)
        except KarkhanaError as exc:
            self.reject(device_id, exc)
            raise
        result = await self.store.write(samples)
        self.accept(device_id, result)
        return result

    def ingest_threaded(
        self, device_id: str, payload: bytes, done: Callable[[WriteResult | BaseException], None]
    ) -> None:
        """For listener threads: decode, queue for the writer (waiting for room), call ``done``."""
        try:
            if not self.devices.exists(device_id):
                raise Unauthorized("unknown device")
            self.admit(device_id)
            samples = self.decode(device_id, payload)
        except KarkhanaError as exc:
            self.reject(device_id, exc)
            done(exc)
            return

        def finished(result: WriteResult | BaseException) -> None:
            if isinstance(result, WriteResult):
                self.accept(device_id, result)
            done(result)

        self.store.submit_blocking(samples, finished)

    def accept(self, device_id: str, result: WriteResult) -> None:
        with self._lock:
            st = self.stats[device_id]
            st.messages += 1
            st.stored += result.stored
            st.duplicates += result.duplicates

    def reject(self, device_id: str, exc: KarkhanaError) -> None:
        """Count a rejected message and log it, at most once per interval per device."""
        now = self.clock.now_ms()
        with self._lock:
            # unknown ids share one counter so that junk ids cannot grow this table
            key = device_id if self.devices.exists(device_id) else UNKNOWN_DEVICE
            st = self.stats[key]
            st.rejected[exc.reason] += 1
            st.last_reason = exc.message
            due = now - st.last_logged_ms >= self.log_interval_ms
            if due:
                st.last_logged_ms = now
                total = sum(st.rejected.values())
        if due:
            log.warning(
                "rejected message from device %r: %s (%d rejected so far)",
                device_id[:64],
                exc.message,
                total,
            )

    def snapshot(self) -> dict[str, dict[str, object]]:
        with self._lock:
            return {
                d: {
                    "messages": s.messages,
                    "stored": s.stored,
                    "duplicates": s.duplicates,
                    "rejected": dict(s.rejected),
                    "last_reject_reason": s.last_reason,
                }
                for d, s in self.stats.items()
            }
