from __future__ import annotations

import pytest

from karkhana.ingest.ratelimit import RateLimiter

T0 = 1_700_000_000_000


def test_burst_then_rate() -> None:
    limiter = RateLimiter(rate=2, burst=3)
    assert [limiter.take("a", T0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a", T0) == pytest.approx(0.5)
    assert limiter.take("a", T0 + 499) == pytest.approx(0.001)  # the refused try costs nothing
    assert limiter.take("a", T0 + 500) == 0.0
    assert limiter.take("a", T0 + 500) > 0
    # a quiet spell refills up to the burst, never beyond it
    assert [limiter.take("a", T0 + 60_000) for _ in range(4)][-1] > 0


def test_devices_do_not_share_a_bucket() -> None:
    limiter = RateLimiter(rate=1, burst=1)
    assert limiter.take("noisy", T0) == 0.0
    assert limiter.take("noisy", T0) == pytest.approx(1.0)
    assert limiter.take("quiet", T0) == 0.0


def test_zero_rate_is_no_limit() -> None:
    limiter = RateLimiter(rate=0, burst=0)
    assert not limiter.enabled
    assert all(limiter.take("a", T0) == 0.0 for _ in range(1000))
    assert len(limiter) == 0


def test_memory_is_bounded_and_forgets_the_least_recent() -> None:
    limiter = RateLimiter(rate=1, burst=1, max_keys=100)
    for i in range(1000):
        limiter.take(f"d{i}", T0)
    assert len(limiter) == 100
    assert limiter.take("d999", T0) > 0  # still remembered: empty
    assert limiter.take("d0", T0) == 0.0  # forgotten: comes back full, as an idle one would be


def test_clock_going_back_does_not_mint_tokens() -> None:
    limiter = RateLimiter(rate=1, burst=1)
    assert limiter.take("a", T0) == 0.0
    assert limiter.take("a", T0 - 10_000) > 0
    assert limiter.take("a", T0 + 999) > 0
    assert limiter.take("a", T0 + 1000) == 0.0


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        RateLimiter(rate=-1, burst=1)
