"""Per-device message rate: one token bucket per device (pure: time is an argument).

A device may send ``burst`` messages at once and ``rate`` a second after that, so that a noisy
or hostile device cannot fill the writer's queue while the others wait. A device that catches
up after an outage sends batches (many samples per message) and is not held back by this.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["RateLimiter"]


class RateLimiter:
    """Token buckets keyed by device id, at most ``max_keys`` of them (the least recently used
    are forgotten: a forgotten bucket comes back full, which is what an idle one would be).

    Not thread-safe; the caller holds a lock when several threads share one.
    """

    def __init__(self, rate: float, burst: int, max_keys: int = 100_000) -> None:
        """``rate`` messages a second, ``burst`` at once; ``rate`` 0 turns the limit off."""
        if rate < 0 or burst < 0 or max_keys < 1:
            raise ValueError("rate and burst must not be negative, max_keys must be positive")
        self.rate = rate
        self.burst = max(1, burst)
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, int]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str, now_ms: int) -> float:
        """Take one message's token: 0.0 if allowed, else the seconds until one is free."""
        if not self.enabled:
            return 0.0
        tokens, last_ms = self._buckets.pop(key, (float(self.burst), now_ms))
        elapsed = max(0, now_ms - last_ms) / 1000.0
        tokens = min(float(self.burst), tokens + elapsed * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[key] = (tokens, max(now_ms, last_ms))
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait
