"""The durable edge queue: put is durable on return, caps and their counters, recovery."""

from __future__ import annotations

import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from karkhana.core.errors import ConfigError, StoreUnavailable
from karkhana.core.model import Sample
from karkhana.edge.buffer import Buffer, BufferFull

pytestmark = pytest.mark.anyio
T0 = 1_700_000_000_000


class Monotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def numbered(start: int, n: int, device: str = "loom-1", key: str = "seq") -> list[Sample]:
    return [Sample(device, key, T0 + i, float(i)) for i in range(start, start + n)]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "edge" / "buffer.db"


@pytest.fixture
def opened(path: Path) -> Iterator[list[Buffer]]:
    """Buffers opened by a test, closed after it."""
    bufs: list[Buffer] = []
    yield bufs
    for b in bufs:
        b.close()


def open_buffer(path: Path, opened: list[Buffer], **kw: object) -> Buffer:
    buf = Buffer.open(path, **kw)  # type: ignore[arg-type]
    opened.append(buf)
    return buf


async def test_put_peek_ack_keeps_values_and_types(path: Path, opened: list[Buffer]) -> None:
    buf = open_buffer(path, opened)
    given = [
        Sample("loom-1", "rpm", T0, 512.5),
        Sample("loom-1", "running", T0, True),
        Sample("loom-1", "stopped", T0, False),
        Sample("loom-1", "state", T0, "weaving"),
        Sample("loom-2", "count", T0 + 1, 7),  # type: ignore[arg-type]
    ]
    await buf.put(given)
    entries = await buf.peek(100)
    assert [e.sample for e in entries] == [*given[:4], Sample("loom-2", "count", T0 + 1, 7.0)]
    assert [type(e.sample.value) for e in entries] == [float, bool, bool, str, float]
    assert buf.stats().points == 5
    assert await buf.ack([e.id for e in entries[:3]]) == 3
    assert await buf.ack([entries[0].id]) == 0  # acknowledged twice: nothing more to delete
    assert [e.sample for e in await buf.peek(100)] == [
        given[3],
        Sample("loom-2", "count", T0 + 1, 7.0),
    ]
    assert buf.stats().points == 2


async def test_put_is_durable_and_counters_persist(path: Path, opened: list[Buffer]) -> None:
    buf = open_buffer(path, opened, cap_points=10)
    await buf.put(numbered(0, 12))
    assert buf.stats().dropped_points == 2
    session = buf.session
    buf.close()
    again = open_buffer(path, opened, cap_points=10)
    assert [e.sample for e in await again.peek(100)] == numbered(2, 10)
    st = again.stats()
    assert (st.points, st.dropped_points, st.full) == (10, 2, True)
    assert again.session == session + 1
    await again.put(numbered(12, 1))  # new ids continue after the old ones
    values = [e.sample.value for e in await again.peek(100, live_first=False)]
    assert values == [float(i) for i in range(3, 13)]
    assert again.stats().dropped_points == 3


async def test_live_data_goes_first_then_backlog_oldest_first(
    path: Path, opened: list[Buffer]
) -> None:
    mono = Monotonic()
    buf = open_buffer(path, opened, live_window_s=10, monotonic=mono)
    await buf.put(numbered(0, 3))
    await buf.put(numbered(3, 3))
    mono.now += 60
    await buf.put(numbered(100, 2))
    values = [e.sample.value for e in await buf.peek(4)]
    assert values == [100.0, 101.0, 0.0, 1.0]
    assert [e.sample.value for e in await buf.peek(4, live_first=False)] == [0.0, 1.0, 2.0, 3.0]
    mono.now += 60  # nothing is live any more: everything is backlog
    assert [e.sample.value for e in await buf.peek(3)] == [0.0, 1.0, 2.0]


async def test_drop_oldest_counts_what_it_drops(path: Path, opened: list[Buffer]) -> None:
    buf = open_buffer(path, opened, cap_points=100, when_full="drop-oldest")
    for start in range(0, 250, 10):
        await buf.put(numbered(start, 10))
    st = buf.stats()
    assert (st.points, st.dropped_points, st.full) == (100, 150, True)
    assert [e.sample.value for e in await buf.peek(1, live_first=False)] == [150.0]
    entries = await buf.peek(100)
    await buf.ack(e.id for e in entries[:5])
    assert buf.stats().full  # still above 90% of the cap
    await buf.ack(e.id for e in entries[5:])
    assert not buf.stats().full


async def test_reject_new_refuses_whole_messages(path: Path, opened: list[Buffer]) -> None:
    buf = open_buffer(path, opened, cap_points=10, when_full="reject-new")
    await buf.put(numbered(0, 8))
    with pytest.raises(BufferFull) as caught:
        await buf.put(numbered(8, 5))
    assert isinstance(caught.value, StoreUnavailable)  # the API answers 503
    st = buf.stats()
    assert (st.points, st.rejected_points, st.rejected_messages, st.full) == (8, 5, 1, True)
    await buf.put(numbered(8, 2))
    await buf.ack(e.id for e in await buf.peek(10))
    await buf.put(numbered(13, 5))
    assert buf.stats().points == 5
    assert not buf.stats().full


async def test_a_refused_put_does_not_fail_its_group(path: Path, opened: list[Buffer]) -> None:
    buf = open_buffer(path, opened, cap_points=10, when_full="reject-new")
    futures = [buf.put(numbered(i * 4, 4)) for i in range(3)]  # committed together
    results = [await _outcome(f) for f in futures]
    assert results[:2] == [None, None]
    assert isinstance(results[2], BufferFull)
    assert buf.stats().points == 8


async def _outcome(future: object) -> object:
    try:
        return await future  # type: ignore[misc]
    except BufferFull as exc:
        return exc


async def test_quarantine_and_clock_correction(path: Path, opened: list[Buffer]) -> None:
    buf = open_buffer(path, opened)
    await buf.put(numbered(0, 4), epochs=[0, 7, 7, 0])
    entries = await buf.peek(10)
    assert [e.epoch for e in entries] == [0, 7, 7, 0]
    assert await buf.correct(7, 5000) == 2
    after = await buf.peek(10)
    assert [e.sample.ts - T0 for e in after] == [0, 5001, 5002, 3]
    assert [e.epoch for e in after] == [0, 0, 0, 0]
    assert await buf.quarantine([after[0].id, after[3].id], "too far in the past") == 2
    assert [e.sample.value for e in await buf.peek(10)] == [1.0, 2.0]
    st = buf.stats()
    assert (st.points, st.quarantined_points) == (2, 2)
    kept = await buf.quarantined()
    assert [(e.sample.value, reason) for e, reason in kept] == [
        (3.0, "too far in the past"),
        (0.0, "too far in the past"),
    ]


async def test_disk_full_is_store_unavailable_and_changes_nothing(
    path: Path, opened: list[Buffer]
) -> None:
    buf = open_buffer(path, opened)
    await buf.put(numbered(0, 10))
    pages = buf._writer.execute("PRAGMA page_count").fetchone()[0]
    buf._writer.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(StoreUnavailable) as caught:
        await buf.put([Sample("dev-x", f"k{i}", T0, "x" * 500) for i in range(50)])
    assert caught.value.reason == "disk_full"
    assert buf.stats().points == 10
    buf._writer.execute("PRAGMA max_page_count = 1073741823")
    await buf.put([Sample("dev-x", "k1", T0, 1.0)])
    assert [e.sample.device_id for e in await buf.peek(20)][-1] == "dev-x"
    assert buf.stats().points == 11


def test_bad_settings_are_config_errors(path: Path) -> None:
    for kw in ({"when_full": "panic"}, {"synchronous": "SOMETIMES"}, {"cap_points": 0}):
        with pytest.raises(ConfigError):
            Buffer(path, **kw)  # type: ignore[arg-type]


# -- damage and recovery ----------------------------------------------------------------------


def torn_copy(path: Path, folder: Path, part: int) -> Path:
    """A copy of the buffer whose WAL ends early: in the middle (1/part of it) or, for part 1,
    a few bytes short, as a power cut during a write leaves it."""
    wal = Path(f"{path}-wal").read_bytes()
    assert wal
    folder.mkdir()
    shutil.copy(path, folder / "buffer.db")
    cut = len(wal) - 7 if part == 1 else len(wal) // part
    (folder / "buffer.db-wal").write_bytes(wal[:cut])
    return folder / "buffer.db"


def corrupt(path: Path, first_page: int, pages: int) -> None:
    raw = bytearray(path.read_bytes())
    assert len(raw) > (first_page + pages + 10) * 4096
    raw[first_page * 4096 : (first_page + pages) * 4096] = b"\xa5" * (pages * 4096)
    path.write_bytes(bytes(raw))


async def test_torn_wal_tail_loses_only_whole_unacknowledged_puts(
    path: Path, opened: list[Buffer], tmp_path: Path
) -> None:
    buf = open_buffer(path, opened)
    for start in range(0, 200, 10):
        await buf.put(numbered(start, 10))
    for part in (3, 2, 1):
        copy = torn_copy(path, tmp_path / f"copy-{part}", part)
        torn = open_buffer(copy, opened)
        assert torn.recovered_from is None  # SQLite ignores the torn frames: no damage
        values = [e.sample.value for e in await torn.peek(1000)]
        assert len(values) % 10 == 0  # each put is there whole or not at all
        assert values == [float(i) for i in range(len(values))]
        torn.close()


async def test_damaged_file_is_moved_aside_and_rows_salvaged(
    path: Path, opened: list[Buffer]
) -> None:
    buf = open_buffer(path, opened, cap_points=100_000)
    for start in range(0, 20_000, 1000):
        await buf.put(numbered(start, 1000))
    buf.close()
    corrupt(path, 20, 2)  # two pages in the middle of the queue

    again = open_buffer(path, opened, cap_points=100_000)
    assert again.recovered_from is not None
    assert again.recovered_from.exists()
    st = again.stats()
    assert st.recoveries == 1
    assert 10_000 < st.salvaged_points < 20_000
    assert st.points == st.salvaged_points
    values = [e.sample.value for e in await again.peek(100_000)]
    assert values == sorted(set(values))  # in order, nothing doubled
    assert all(v == float(int(v)) and 0 <= v < 20_000 for v in values)
    await again.put(numbered(50_000, 1))
    assert again.stats().points == st.points + 1


def not_a_database(path: Path) -> Path:
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not a database" * 100)
    return path


async def test_a_file_that_is_not_sqlite_is_replaced(path: Path, opened: list[Buffer]) -> None:
    buf = open_buffer(not_a_database(path), opened)
    assert buf.recovered_from is not None
    assert buf.stats().points == 0
    await buf.put(numbered(0, 1))
    assert buf.stats().points == 1


WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from karkhana.core.model import Sample
    from karkhana.edge.buffer import Buffer

    async def main() -> None:
        buf = Buffer.open(Path(sys.argv[1]))
        i = int(sys.argv[2])
        while True:
            await buf.put([Sample("d", "seq", 1_700_000_000_000 + i + j, float(i + j))
                           for j in range(5)])
            print(i + 4, flush=True)
            i += 5

    asyncio.run(main())
    """
)


def test_kill_9_mid_write_keeps_every_acknowledged_put(path: Path, opened: list[Buffer]) -> None:
    acked = -1
    for _round in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), str(acked + 1)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        for _ in range(40):  # a few dozen commits, then kill it while it writes
            line = proc.stdout.readline()
            assert line, "the writer stopped early"
            acked = int(line)
        proc.send_signal(signal.SIGKILL)
        rest, _ = proc.communicate(timeout=30)
        for line in rest.split():
            acked = int(line)
        # every put whose answer came back is there; at most the one in flight beyond it
        with sqlite3.connect(path) as conn:
            stored = [int(v) for (v,) in conn.execute("SELECT value FROM queue ORDER BY id")]
        assert stored[: acked + 1] == list(range(acked + 1))
        assert len(stored) in (acked + 1, acked + 6)
        acked = len(stored) - 1
    buf = open_buffer(path, opened)
    assert buf.recovered_from is None
    assert buf.stats().points == acked + 1
