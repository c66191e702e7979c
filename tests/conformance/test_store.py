"""Conformance suite every Store backend must pass (SQLite today, PostgreSQL later)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from karkhana.core.errors import StoreUnavailable
from karkhana.core.model import Sample
from karkhana.store.base import Agg, RetentionPolicy
from karkhana.store.database import Database
from karkhana.store.sqlite import SQLiteStore

T0 = 1_700_000_000_000 - 1_700_000_000_000 % 3_600_000  # an hour boundary
MIN = 60_000
HOUR = 3_600_000


def _sqlite(path: Path) -> SQLiteStore:
    return SQLiteStore(Database(path / "t.db", synchronous="NORMAL"))


BACKENDS: dict[str, Callable[[Path], Any]] = {"sqlite": _sqlite}


@pytest.fixture(params=sorted(BACKENDS))
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Any]]:
    made: list[Any] = []
    counter = iter(range(1000))

    def make() -> Any:
        d = tmp_path / str(next(counter))
        d.mkdir()
        store = BACKENDS[request.param](d)
        made.append(store)
        return store

    yield make
    for store in made:
        asyncio.run(store.close())


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def brute(
    samples: list[tuple[int, float]], start: int, end: int, bucket: int, agg: Agg
) -> list[list[float]]:
    groups: dict[int, list[tuple[int, float]]] = {}
    for ts, v in sorted(samples):
        if start <= ts < end:
            groups.setdefault(ts - ts % bucket, []).append((ts, v))
    out = []
    for b in sorted(groups):
        vals = [v for _, v in groups[b]]
        value = {
            Agg.AVG: sum(vals) / len(vals),
            Agg.MIN: min(vals),
            Agg.MAX: max(vals),
            Agg.FIRST: vals[0],
            Agg.LAST: vals[-1],
            Agg.COUNT: float(len(vals)),
            Agg.SUM: sum(vals),
        }[agg]
        out.append([b, value])
    return out


def test_write_latest_and_raw_range(make_store: Callable[[], Any]) -> None:
    store = make_store()

    async def go() -> None:
        r = await store.write(
            [
                Sample("loom-1", "rpm", T0 + 1000, 500.0),
                Sample("loom-1", "rpm", T0, 480.0),
                Sample("loom-1", "state", T0, "running"),
                Sample("loom-1", "fault", T0, False),
                Sample("loom-2", "rpm", T0, 1.0),
            ]
        )
        assert (r.stored, r.duplicates) == (5, 0)
        latest = {x.key: (x.ts, x.value) for x in await store.latest("loom-1")}
        assert latest == {
            "rpm": (T0 + 1000, 500.0),
            "state": (T0, "running"),
            "fault": (T0, 0.0),
        }
        pts = await store.query("loom-1", "rpm", T0, T0 + 1000)
        assert [(p.ts, p.value) for p in pts] == [(T0, 480.0)]
        pts = await store.query("loom-1", "rpm", T0, T0 + 1001)
        assert [p.value for p in pts] == [480.0, 500.0]
        assert await store.query("loom-1", "nope", T0, T0 + 10) == []
        assert await store.keys("loom-1") == ["fault", "rpm", "state"]
        assert await store.query("loom-1", "rpm", T0, T0 + 1001, limit=1) == pts[:1]

    run(go())


def test_duplicates_are_stored_once(make_store: Callable[[], Any]) -> None:
    store = make_store()

    async def go() -> None:
        s = Sample("d", "k", T0, 1.0)
        r1 = await store.write([s, s, Sample("d", "k", T0 + 1, 2.0)])
        assert (r1.stored, r1.duplicates) == (2, 1)
        r2 = await store.write([Sample("d", "k", T0, 9.0), Sample("d", "k", T0 + 2, 3.0)])
        assert (r2.stored, r2.duplicates) == (1, 1)
        pts = await store.query("d", "k", T0, T0 + MIN, bucket=MIN, agg=Agg.COUNT)
        assert [p.value for p in pts] == [3.0]
        pts = await store.query("d", "k", T0, T0 + HOUR, bucket=HOUR, agg=Agg.SUM)
        assert [p.value for p in pts] == [6.0]
        raw = await store.query("d", "k", T0, T0 + 10)
        assert [p.value for p in raw] == [1.0, 2.0, 3.0]

    run(go())


def test_concurrent_writers_each_get_their_result(make_store: Callable[[], Any]) -> None:
    store = make_store()

    async def go() -> None:
        jobs = [store.write([Sample(f"dev{i % 7}", "v", T0 + i, float(i))]) for i in range(300)]
        results = await asyncio.gather(*jobs)
        assert all(r.stored == 1 for r in results)
        total = 0
        for d in range(7):
            total += len(await store.query(f"dev{d}", "v", T0, T0 + 1000))
        assert total == 300

    run(go())


def test_submit_calls_back_after_commit(make_store: Callable[[], Any]) -> None:
    store = make_store()
    import threading

    seen: list[Any] = []
    event = threading.Event()

    def done(result: Any) -> None:
        seen.append(result)
        event.set()

    store.submit([Sample("d", "k", T0, 1.0)], done)
    assert event.wait(10)
    assert seen[0].stored == 1
    assert [p.value for p in run(store.query("d", "k", T0, T0 + 1))] == [1.0]


def test_rollups_match_brute_force_randomised(make_store: Callable[[], Any]) -> None:
    store = make_store()
    rng = random.Random(7)
    samples = []
    ts = T0 - 3 * HOUR + 1234
    while ts < T0 + 5 * HOUR:
        samples.append((ts, round(rng.uniform(-50, 50), 3)))
        ts += rng.choice([700, 1000, 13_000, 61_000, 250_000])
    shuffled = samples[:]
    rng.shuffle(shuffled)

    async def go() -> None:
        for i in range(0, len(shuffled), 37):
            await store.write([Sample("m", "x", t, v) for t, v in shuffled[i : i + 37]])
        for start, end, bucket in [
            (T0 - 3 * HOUR, T0 + 5 * HOUR, HOUR),
            (T0 - 2 * HOUR - 12_345, T0 + 4 * HOUR + 999, HOUR),
            (T0 - 2 * HOUR - 12_345, T0 + 4 * HOUR + 999, 2 * HOUR),
            (T0 - 2 * HOUR - 12_345, T0 + 4 * HOUR + 999, 5 * MIN),
            (T0 + 17, T0 + 3 * MIN + 5, MIN),
            (T0 - 7_000, T0 + 2 * HOUR, 45_000),
            (T0 - HOUR, T0 + HOUR, 90 * MIN),
        ]:
            for agg in Agg:
                got = await store.query("m", "x", start, end, bucket=bucket, agg=agg)
                want = brute(samples, start, end, bucket, agg)
                assert [p.ts for p in got] == [w[0] for w in want], (start, end, bucket, agg)
                for p, w in zip(got, want, strict=True):
                    assert p.value == pytest.approx(w[1], rel=1e-9, abs=1e-9), (bucket, agg, p.ts)

    run(go())


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    points=st.lists(
        st.tuples(st.integers(0, 4 * HOUR), st.integers(-1000, 1000)), min_size=1, max_size=60
    ),
    lo=st.integers(0, 4 * HOUR),
    span=st.integers(1, 4 * HOUR),
    bucket=st.sampled_from([1000, 30_000, MIN, 2 * MIN, 10 * MIN, HOUR, 3 * HOUR]),
    agg=st.sampled_from(list(Agg)),
)
def test_bucketed_query_equals_brute_force(
    make_store: Callable[[], Any],
    points: list[tuple[int, int]],
    lo: int,
    span: int,
    bucket: int,
    agg: Agg,
) -> None:
    store = make_store()
    firsts: dict[int, float] = {}
    for t, v in points:
        firsts.setdefault(T0 + t, float(v))

    async def go() -> None:
        await store.write([Sample("p", "x", T0 + t, float(v)) for t, v in points])
        got = await store.query("p", "x", T0 + lo, T0 + lo + span, bucket=bucket, agg=agg)
        want = brute(list(firsts.items()), T0 + lo, T0 + lo + span, bucket, agg)
        assert [p.ts for p in got] == [w[0] for w in want]
        assert [p.value for p in got] == pytest.approx([w[1] for w in want])

    run(go())


def test_text_series_buckets(make_store: Callable[[], Any]) -> None:
    store = make_store()

    async def go() -> None:
        await store.write(
            [
                Sample("l", "state", T0, "running"),
                Sample("l", "state", T0 + 10_000, "stopped"),
                Sample("l", "state", T0 + MIN, "running"),
            ]
        )
        first = await store.query("l", "state", T0, T0 + HOUR, bucket=MIN, agg=Agg.FIRST)
        assert [(p.ts, p.value) for p in first] == [(T0, "running"), (T0 + MIN, "running")]
        last = await store.query("l", "state", T0, T0 + HOUR, bucket=MIN, agg=Agg.LAST)
        assert [p.value for p in last] == ["stopped", "running"]
        count = await store.query("l", "state", T0, T0 + HOUR, bucket=HOUR, agg=Agg.COUNT)
        assert [p.value for p in count] == [3.0]

    run(go())


def test_retention_keeps_rollups_longer(make_store: Callable[[], Any]) -> None:
    store = make_store()
    day = 24 * HOUR

    async def go() -> None:
        await store.write([Sample("d", "k", T0 - 10 * day, 5.0), Sample("d", "k", T0, 7.0)])
        result = await store.apply_retention(T0, RetentionPolicy(day, 30 * day, 0))
        assert result.raw_deleted == 1
        assert result.rollup_1m_deleted == 0
        assert [p.value for p in await store.query("d", "k", T0 - 11 * day, T0 + 1)] == [7.0]
        hourly = await store.query("d", "k", T0 - 11 * day, T0 + HOUR, bucket=HOUR, agg=Agg.MAX)
        assert [p.value for p in hourly] == [5.0, 7.0]

    run(go())


def test_delete_device(make_store: Callable[[], Any]) -> None:
    store = make_store()

    async def go() -> None:
        await store.write([Sample("a", "k", T0, 1.0), Sample("b", "k", T0, 2.0)])
        assert await store.delete_device("a") == 1
        assert await store.latest("a") == []
        assert await store.query("a", "k", T0, T0 + HOUR, bucket=HOUR) == []
        assert len(await store.latest("b")) == 1
        await store.write([Sample("a", "k", T0, 3.0)])
        assert [p.value for p in await store.query("a", "k", T0, T0 + 1)] == [3.0]

    run(go())


def test_write_after_close_fails_clearly(make_store: Callable[[], Any]) -> None:
    store = make_store()
    run(store.close())
    with pytest.raises(StoreUnavailable):
        run(store.write([Sample("d", "k", T0, 1.0)]))
