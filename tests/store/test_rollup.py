from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from karkhana.store.base import Agg
from karkhana.store.rollup import HOUR_MS, MINUTE_MS, RAW, Partial, plan, summarise


@given(
    st.integers(0, 10**13),
    st.integers(1, 3 * 86_400_000),
    st.sampled_from([1000, 45_000, MINUTE_MS, 5 * MINUTE_MS, HOUR_MS, 9 * HOUR_MS, 86_400_000]),
)
def test_plan_tiles_the_range_exactly(start: int, span: int, bucket: int) -> None:
    pieces = plan(start, start + span, bucket)
    assert pieces[0][1] == start and pieces[-1][2] == start + span
    for (_, _, hi), (_, lo, _) in itertools.pairwise(pieces):
        assert hi == lo
    for resolution, lo, hi in pieces:
        assert lo < hi
        if resolution != RAW:
            assert bucket % resolution == 0 and lo % resolution == 0 and hi % resolution == 0


def test_plan_uses_hours_for_long_ranges() -> None:
    pieces = plan(HOUR_MS * 10 - 5, HOUR_MS * 100 + 61_000, HOUR_MS)
    assert [p[0] for p in pieces] == [RAW, HOUR_MS, MINUTE_MS, RAW]


def test_partial_merge_equals_one_pass() -> None:
    points = [(10, 5.0), (3, -1.0), (7, 2.0), (12, 9.0), (1, 4.0)]
    one = summarise(points, 100)[0]
    left = summarise(points[:2], 100)[0]
    left.merge(summarise(points[2:], 100)[0])
    for agg in Agg:
        assert one.value(agg) == left.value(agg)
    assert one.value(Agg.FIRST) == 4.0 and one.value(Agg.LAST) == 9.0
    assert Partial.of(5, 1.0).value(Agg.COUNT) == 1.0
