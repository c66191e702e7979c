"""Counter increments across resets and rollovers, summed per minute."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from karkhana.production.counts import bucket, increment

M = 60_000


def test_counting_up_and_a_reset() -> None:
    per_minute, last = bucket([(0, 100.0), (M, 150.0), (2 * M, 10.0), (3 * M + 5, 30.0)])
    # the first reading only sets the start; after the reset the counter counts from zero
    assert per_minute == {M: 50.0, 2 * M: 10.0, 3 * M: 20.0}
    assert last == 30.0


def test_sixteen_and_thirty_two_bit_rollovers() -> None:
    assert increment(65500.0, 65535.0) == 35.0
    assert increment(65535.0, 20.0) == 21.0
    assert increment(4294967290.0, 5.0) == 11.0
    assert increment(9990.0, 5.0, modulus=10000.0) == 15.0


def test_a_drop_in_the_middle_of_the_range_is_a_reset() -> None:
    assert increment(30000.0, 100.0) == 100.0


def test_continues_from_a_stored_reading() -> None:
    per_minute, _ = bucket([(5 * M, 130.0)], prev=100.0)
    assert per_minute == {5 * M: 30.0}


@given(st.lists(st.integers(0, 1000), max_size=50), st.integers(0, 65535))
def test_a_wrapping_counter_counts_every_unit(steps: list[int], first: int) -> None:
    """A 16-bit register that wraps loses nothing, whatever the steps (each under a tenth)."""
    readings, value = [], first
    for i, step in enumerate(steps):
        value = (value + step) % 65536
        readings.append((i * M, float(value)))
    per_minute, _ = bucket(readings, prev=float(first))
    assert sum(per_minute.values()) == sum(steps)
