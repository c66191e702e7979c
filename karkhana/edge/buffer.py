"""The edge's durable queue: samples are on disk before any input acknowledges them.

One SQLite file (WAL) in the edge's data folder. Every change goes through one writer thread that
groups the puts waiting in its queue into one transaction (one fsync for many devices); the
forwarder reads on its own connection. ``put`` returns only after the commit, so with
``synchronous=FULL`` (the default) an acknowledged sample survives a power cut; see docs/edge.md
for the loss window of the other modes.

The buffer holds at most ``cap_points`` samples. When full it either drops the oldest samples or
refuses new ones (:class:`BufferFull`, which inputs turn into HTTP 503 or a missing PUBACK so
that the device keeps the data and retries); both are counted in persisted counters.

At start the file is checked (``PRAGMA quick_check``); a damaged file is moved aside, a new one
started and every row that can still be read is copied into it. A torn write at the end of the
WAL (power cut during a commit) is discarded by SQLite itself: that transaction was never
acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from karkhana.core.clock import SYSTEM_CLOCK, Clock
from karkhana.core.errors import ConfigError, StoreUnavailable
from karkhana.core.model import Sample, Value
from karkhana.store.database import translate

log = logging.getLogger(__name__)

WHEN_FULL = ("drop-oldest", "reject-new")
SYNCHRONOUS = ("FULL", "NORMAL", "OFF")
QUARANTINE_CAP = 100_000
"""Quarantined samples kept for inspection; the oldest go beyond this (counted)."""
MAX_GROUP = 256
"""Most puts the writer commits together."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL,
    key TEXT NOT NULL,
    UNIQUE (device_id, key)
);
CREATE TABLE IF NOT EXISTS queue (
    id INTEGER PRIMARY KEY,
    series_id INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    value NOT NULL,
    added_ms INTEGER NOT NULL,
    epoch INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS queue_unsynced ON queue (epoch) WHERE epoch != 0;
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY,
    series_id INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    value NOT NULL,
    added_ms INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    reason TEXT NOT NULL,
    moved_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
_COUNTERS = (
    "released_points",
    "dropped_points",
    "rejected_points",
    "rejected_messages",
    "quarantined_points",
    "quarantine_dropped",
    "salvaged_points",
    "recoveries",
    "session",
)
_SELECT = (
    "SELECT q.id, s.device_id, s.key, q.ts, q.value, q.epoch"
    " FROM queue AS q JOIN series AS s ON s.id = q.series_id"
)


class BufferFull(StoreUnavailable):
    """The buffer is at its cap and refuses new samples (when_full = reject-new)."""

    reason = "buffer_full"


class Entry(NamedTuple):
    """One buffered sample with its row id; ``epoch`` is non-zero while its timestamp was
    assigned by an edge clock not yet checked against the server's (see edge/clock.py)."""

    id: int
    sample: Sample
    epoch: int


@dataclass(frozen=True, slots=True)
class BufferStats:
    points: int
    cap_points: int
    when_full: str
    full: bool
    dropped_points: int
    rejected_points: int
    rejected_messages: int
    quarantined_points: int
    quarantine_dropped: int
    released_points: int
    salvaged_points: int
    recoveries: int
    session: int


Listener = Callable[[list[Sample]], object]
"""Told the samples of each committed put (see :meth:`Buffer.on_put`)."""


@dataclass(frozen=True, slots=True)
class QuarantineGroup:
    """Quarantined samples of one device for one reason."""

    device_id: str
    reason: str
    points: int
    first_ts: int
    last_ts: int
    last_moved_ms: int


def _stored(value: Value) -> Value | int:
    cls = value.__class__
    if cls is bool:
        return 1 if value else 0
    if cls is int:
        return float(value)
    return value


def _loaded(value: Any) -> Value:
    """Booleans are stored as INTEGER, numbers as REAL (the column has no type affinity)."""
    return bool(value) if value.__class__ is int else value


def _entry(row: tuple[int, str, str, int, Any, int]) -> Entry:
    return Entry(row[0], Sample(row[1], row[2], row[3], _loaded(row[4])), row[5])


def _connect(path: Path, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def _ranges(ids: Iterable[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for i in sorted(set(ids)):
        if out and out[-1][1] == i - 1:
            out[-1] = (out[-1][0], i)
        else:
            out.append((i, i))
    return out


class _Op(NamedTuple):
    kind: str
    args: tuple[Any, ...]
    done: Callable[[Any], None]


_STOP = object()


class Buffer:
    """The durable queue; open with :meth:`open`, close with :meth:`close`."""

    def __init__(
        self,
        path: Path,
        *,
        cap_points: int = 20_000_000,
        when_full: str = "drop-oldest",
        synchronous: str = "FULL",
        live_window_s: float = 10.0,
        clock: Clock = SYSTEM_CLOCK,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if when_full not in WHEN_FULL:
            raise ConfigError(f"when_full must be {' or '.join(WHEN_FULL)}, got {when_full!r}")
        if synchronous.upper() not in SYNCHRONOUS:
            raise ConfigError(f"fsync must be {', '.join(SYNCHRONOUS)}, got {synchronous!r}")
        if cap_points < 1:
            raise ConfigError("cap_points must be at least 1")
        self.path = path
        self.cap_points = cap_points
        self.when_full = when_full
        self.synchronous = synchronous.upper()
        self.live_window_s = live_window_s
        self.clock = clock
        self.monotonic = monotonic
        self.recovered_from: Path | None = None
        """Where a damaged file was moved at start (None: the file was sound)."""
        self._queue: queue.SimpleQueue[_Op | object] = queue.SimpleQueue()
        self._series: dict[tuple[str, str], int] = {}
        self._counters: dict[str, int] = dict.fromkeys(_COUNTERS, 0)
        self._points = 0
        self._next_id = 1
        self._live: deque[tuple[float, int]] = deque()
        self._full = False
        self._listener: tuple[asyncio.AbstractEventLoop, Listener] | None = None
        self._closed = False
        self._read_lock = threading.Lock()
        self._writer: sqlite3.Connection
        self._reader: sqlite3.Connection
        self._thread: threading.Thread | None = None

    @classmethod
    def open(cls, path: Path, **kwargs: Any) -> Buffer:
        """Open (or create) the buffer file, checking and if need be recovering it."""
        buf = cls(path, **kwargs)
        buf._start()
        return buf

    # -- start: integrity check, recovery ---------------------------------------------------
    def _start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        damaged = not self._sound()
        try:
            self._writer = _connect(self.path, self.synchronous)
            self._writer.executescript(_SCHEMA)
            if damaged:
                self._salvage()
            self._load()
            self._reader = _connect(self.path, self.synchronous)
            self._reader.execute("PRAGMA query_only=1")
        except sqlite3.Error as exc:
            raise translate(exc) from exc
        self._thread = threading.Thread(target=self._run, name="karkhana-edge-buffer", daemon=True)
        self._thread.start()

    def _sound(self) -> bool:
        if not self.path.exists():
            return True
        try:
            conn = sqlite3.connect(self.path, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                rows = conn.execute("PRAGMA quick_check").fetchall()
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            log.error("edge buffer %s cannot be read: %s", self.path, exc)
            rows = [(str(exc),)]
        if rows == [("ok",)]:
            return True
        log.error("edge buffer %s is damaged: %s", self.path, "; ".join(str(r[0]) for r in rows))
        aside = self.path.with_name(f"{self.path.name}.damaged-{self.clock.now_ms()}")
        for suffix in ("", "-wal", "-shm"):
            part = Path(str(self.path) + suffix)
            if part.exists():
                part.rename(Path(str(aside) + suffix))
        self.recovered_from = aside
        return False

    def _salvage(self) -> None:
        """Copy every readable row of the damaged file into the new one."""
        assert self.recovered_from is not None
        counters: dict[str, int] = {}
        salvaged = 0
        try:
            old = sqlite3.connect(self.recovered_from)
        except sqlite3.DatabaseError as exc:
            log.error("nothing could be salvaged from %s: %s", self.recovered_from, exc)
            old = None
        if old is not None:
            with contextlib.closing(old):
                with contextlib.suppress(sqlite3.DatabaseError):
                    counters = dict(old.execute("SELECT name, value FROM meta").fetchall())
                series: dict[int, tuple[str, str]] = {}
                with contextlib.suppress(sqlite3.DatabaseError):
                    for sid, device_id, key in old.execute("SELECT id, device_id, key FROM series"):
                        series[sid] = (device_id, key)
                salvaged = self._copy_rows(old, series)
        conn = self._writer
        conn.execute("BEGIN IMMEDIATE")
        for name in _COUNTERS:
            value = counters.get(name, 0)
            if isinstance(value, int):
                conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (name, value))
        conn.execute("UPDATE meta SET value = value + 1 WHERE name = 'recoveries'")
        conn.execute(
            "UPDATE meta SET value = value + ? WHERE name = 'salvaged_points'", (salvaged,)
        )
        conn.execute("COMMIT")
        log.error(
            "edge buffer recovered: %d samples salvaged from %s", salvaged, self.recovered_from
        )

    def _copy_rows(self, old: sqlite3.Connection, series: dict[int, tuple[str, str]]) -> int:
        """Rows in id order, chunk by chunk; a chunk that cannot be read is skipped."""
        conn = self._writer
        ids: dict[tuple[str, str], int] = {}
        copied = 0
        last = 0
        failures = 0
        top = 0
        with contextlib.suppress(sqlite3.DatabaseError):
            top = old.execute("SELECT max(id) FROM queue").fetchone()[0] or 0
        while failures < 1000:
            try:
                rows = old.execute(
                    "SELECT id, series_id, ts, value, added_ms, epoch FROM queue"
                    " WHERE id > ? ORDER BY id LIMIT 1000",
                    (last,),
                ).fetchall()
            except sqlite3.DatabaseError:
                failures += 1
                last += 1000
                if last > top:
                    break
                continue
            if not rows:
                break
            last = rows[-1][0]
            conn.execute("BEGIN IMMEDIATE")
            for rid, sid, ts, value, added, epoch in rows:
                name = series.get(sid)
                if name is None or value is None:
                    continue
                new_sid = ids.get(name)
                if new_sid is None:
                    new_sid = ids[name] = self._series_id(conn, *name)
                conn.execute(
                    "INSERT INTO queue VALUES (?, ?, ?, ?, ?, ?)",
                    (rid, new_sid, ts, value, added, epoch),
                )
                copied += 1
            conn.execute("COMMIT")
        self._series.clear()
        return copied

    def _load(self) -> None:
        conn = self._writer
        conn.execute("BEGIN IMMEDIATE")
        for name in _COUNTERS:
            conn.execute("INSERT OR IGNORE INTO meta VALUES (?, 0)", (name,))
        conn.execute("UPDATE meta SET value = value + 1 WHERE name = 'session'")
        conn.execute("COMMIT")
        self._counters.update(dict(conn.execute("SELECT name, value FROM meta").fetchall()))
        self._points = conn.execute("SELECT count(*) FROM queue").fetchone()[0]
        top = conn.execute("SELECT max(id) FROM queue").fetchone()[0] or 0
        qtop = conn.execute("SELECT max(id) FROM quarantine").fetchone()[0] or 0
        self._next_id = max(top, qtop) + 1
        self._series = {
            (d, k): sid for sid, d, k in conn.execute("SELECT id, device_id, key FROM series")
        }
        self._full = self._points >= self.cap_points

    @property
    def session(self) -> int:
        """This run's number (1, 2, ...): the clock epoch of samples stamped before the edge's
        clock was checked against the server's."""
        return self._counters["session"]

    # -- public API ---------------------------------------------------------------------------
    def put(
        self, samples: Sequence[Sample], epochs: Sequence[int] | int = 0
    ) -> asyncio.Future[None]:
        """Queue samples for the writer now; the future resolves once they are committed, or
        fails with BufferFull (reject-new, at the cap) or StoreUnavailable (disk)."""
        return self._submit("put", (list(samples), epochs))

    def on_put(self, listener: Listener) -> None:
        """Call ``listener`` on this event loop with the samples of every committed put (the
        edge's rule engine sees what is durable, once)."""
        self._listener = (asyncio.get_running_loop(), listener)

    def ack(self, ids: Iterable[int]) -> asyncio.Future[int]:
        """Delete rows the server has committed; resolves to how many were still here."""
        return self._submit("ack", (_ranges(ids),))

    def quarantine(self, ids: Iterable[int], reason: str) -> asyncio.Future[int]:
        """Move rows out of the queue into the quarantine table (kept, counted, never sent)."""
        return self._submit("quarantine", (sorted(set(ids)), reason))

    def release(
        self, device_id: str | None = None, reason_contains: str | None = None
    ) -> asyncio.Future[int]:
        """Move quarantined samples (all, or one device's, or those whose reason contains some
        text) back into the queue behind the backlog, as far as the cap leaves room; resolves to
        how many moved. For when the cause is mended: a child device registered on the server."""
        return self._submit("release", (device_id, reason_contains))

    async def quarantine_summary(self) -> list[QuarantineGroup]:
        """What is in quarantine, by device and reason."""

        def read() -> list[QuarantineGroup]:
            rows = self._reader.execute(
                "SELECT s.device_id, q.reason, count(*), min(q.ts), max(q.ts), max(q.moved_ms)"
                " FROM quarantine AS q JOIN series AS s ON s.id = q.series_id"
                " GROUP BY s.device_id, q.reason ORDER BY count(*) DESC LIMIT 1000"
            ).fetchall()
            return [QuarantineGroup(*r) for r in rows]

        return await asyncio.to_thread(self._read, read)

    def correct(self, epoch: int, delta_ms: int) -> asyncio.Future[int]:
        """Shift the timestamps of samples stamped during an unchecked clock ``epoch`` by
        ``delta_ms`` and mark them checked; resolves to how many rows changed."""
        return self._submit("correct", (epoch, delta_ms))

    async def peek(self, limit: int, *, live_first: bool = True) -> list[Entry]:
        """Up to ``limit`` queued samples: those buffered in the last ``live_window_s`` first
        (oldest of them first), then the backlog oldest-first."""
        floor = self._live_floor() if live_first else None
        return await asyncio.to_thread(self._peek, limit, floor)

    async def oldest_added_ms(self) -> int | None:
        """When the oldest queued sample was buffered (edge clock), or None when empty."""

        def read() -> int | None:
            row = self._reader.execute("SELECT added_ms FROM queue ORDER BY id LIMIT 1").fetchone()
            return None if row is None else int(row[0])

        return await asyncio.to_thread(self._read, read)

    def newest_added_ms(self) -> int | None:
        """When the newest queued sample was buffered (blocking; for the start-up check)."""

        def read() -> int | None:
            row = self._reader.execute(
                "SELECT added_ms FROM queue ORDER BY id DESC LIMIT 1"
            ).fetchone()
            return None if row is None else int(row[0])

        result: int | None = self._read(read)
        return result

    async def quarantined(self, limit: int = 100) -> list[tuple[Entry, str]]:
        """The most recently quarantined samples with the reason."""

        def read() -> list[tuple[Entry, str]]:
            rows = self._reader.execute(
                "SELECT q.id, s.device_id, s.key, q.ts, q.value, q.epoch, q.reason"
                " FROM quarantine AS q JOIN series AS s ON s.id = q.series_id"
                " ORDER BY q.id DESC LIMIT ?",
                (limit,),
            ).fetchall()
            return [(_entry(r[:6]), r[6]) for r in rows]

        return await asyncio.to_thread(self._read, read)

    def stats(self) -> BufferStats:
        c = self._counters
        return BufferStats(
            points=self._points,
            cap_points=self.cap_points,
            when_full=self.when_full,
            full=self._full,
            dropped_points=c["dropped_points"],
            rejected_points=c["rejected_points"],
            rejected_messages=c["rejected_messages"],
            quarantined_points=c["quarantined_points"],
            quarantine_dropped=c["quarantine_dropped"],
            released_points=c["released_points"],
            salvaged_points=c["salvaged_points"],
            recoveries=c["recoveries"],
            session=c["session"],
        )

    def close(self) -> None:
        """Finish queued writes, then close the file."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
        with self._read_lock:
            self._reader.close()

    # -- reading ----------------------------------------------------------------------------
    def _read(self, fn: Callable[[], Any]) -> Any:
        with self._read_lock:
            try:
                return fn()
            except sqlite3.Error as exc:
                raise translate(exc) from exc

    def _live_floor(self) -> int | None:
        horizon = self.monotonic() - self.live_window_s
        live = self._live
        while live and live[0][0] < horizon:
            live.popleft()
        return live[0][1] if live else None

    def _peek(self, limit: int, floor: int | None) -> list[Entry]:
        def read() -> list[Entry]:
            if floor is None:
                rows = self._reader.execute(f"{_SELECT} ORDER BY q.id LIMIT ?", (limit,))
                return [_entry(r) for r in rows]
            out = [
                _entry(r)
                for r in self._reader.execute(
                    f"{_SELECT} WHERE q.id >= ? ORDER BY q.id LIMIT ?", (floor, limit)
                )
            ]
            if len(out) < limit:
                out += [
                    _entry(r)
                    for r in self._reader.execute(
                        f"{_SELECT} WHERE q.id < ? ORDER BY q.id LIMIT ?",
                        (floor, limit - len(out)),
                    )
                ]
            return out

        result: list[Entry] = self._read(read)
        return result

    # -- writing ----------------------------------------------------------------------------
    def _submit(self, kind: str, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()

        def done(result: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
                loop.call_soon_threadsafe(_settle, future, result)

        if self._closed:
            raise StoreUnavailable("the edge buffer is closed", reason="closed")
        self._queue.put(_Op(kind, args, done))
        return future

    def _run(self) -> None:
        pending: _Op | None = None
        stop = False
        while not stop:
            first = pending if pending is not None else self._queue.get()
            pending = None
            if first is _STOP:
                break
            assert isinstance(first, _Op)
            group = [first]
            while first.kind == "put" and len(group) < MAX_GROUP:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                assert isinstance(nxt, _Op)
                if nxt.kind != "put":
                    pending = nxt
                    break
                group.append(nxt)
            self._write(group)
            if stop and pending is not None:
                self._write([pending])
        self._writer.close()

    def _write(self, group: list[_Op]) -> None:
        conn = self._writer
        saved = (dict(self._counters), self._points, self._next_id, self._full)
        new_series: list[tuple[str, str]] = []
        live_mark = self._next_id
        results: list[Any] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for op in group:
                    try:
                        results.append(getattr(self, "_do_" + op.kind)(conn, *op.args, new_series))
                    except BufferFull as exc:
                        results.append(exc)
                self._save_counters(conn, saved[0])
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except Exception as exc:
            self._counters, self._points, self._next_id, self._full = saved
            for name in new_series:
                self._series.pop(name, None)
            failure = translate(exc) if isinstance(exc, sqlite3.Error) else exc
            log.error("edge buffer write failed: %s", failure)
            for op in group:
                op.done(failure)
            return
        if group[0].kind == "put" and self._next_id > live_mark:
            self._live.append((self.monotonic(), live_mark))
        self._alarm(any(isinstance(r, BufferFull) for r in results))
        listener = self._listener
        for op, result in zip(group, results, strict=True):
            if listener is not None and op.kind == "put" and not isinstance(result, BaseException):
                with contextlib.suppress(RuntimeError):  # the loop closed
                    listener[0].call_soon_threadsafe(listener[1], op.args[0])
            op.done(result)

    def _save_counters(self, conn: sqlite3.Connection, before: dict[str, int]) -> None:
        changed = [(v, k) for k, v in self._counters.items() if before.get(k) != v]
        if changed:
            conn.executemany("UPDATE meta SET value = ? WHERE name = ?", changed)

    def _alarm(self, refused: bool) -> None:
        """Full: at the cap, or refusing; clear again below 90% (no flapping at the edge)."""
        if not self._full and (refused or self._points >= self.cap_points):
            self._full = True
            log.warning(
                "edge buffer full (%d samples): %s",
                self.cap_points,
                "dropping the oldest" if self.when_full == "drop-oldest" else "refusing new data",
            )
        elif self._full and self._points < self.cap_points * 0.9:
            self._full = False
            log.warning("edge buffer no longer full (%d samples queued)", self._points)

    def _series_id(self, conn: sqlite3.Connection, device_id: str, key: str) -> int:
        row = conn.execute(
            "SELECT id FROM series WHERE device_id = ? AND key = ?", (device_id, key)
        ).fetchone()
        if row is None:
            row = conn.execute(
                "INSERT INTO series (device_id, key) VALUES (?, ?) RETURNING id", (device_id, key)
            ).fetchone()
        sid = int(row[0])
        self._series[(device_id, key)] = sid
        return sid

    def _do_put(
        self,
        conn: sqlite3.Connection,
        samples: list[Sample],
        epochs: Sequence[int] | int,
        new_series: list[tuple[str, str]],
    ) -> None:
        n = len(samples)
        if self.when_full == "reject-new" and self._points + n > self.cap_points:
            self._counters["rejected_points"] += n
            self._counters["rejected_messages"] += 1
            raise BufferFull(
                f"the edge buffer is full ({self._points} of {self.cap_points} samples);"
                " retry later"
            )
        now = self.clock.now_ms()
        first = self._next_id
        series = self._series
        rows = []
        for i, s in enumerate(samples):
            name = (s.device_id, s.key)
            sid = series.get(name)
            if sid is None:
                sid = self._series_id(conn, *name)
                new_series.append(name)
            epoch = epochs if isinstance(epochs, int) else epochs[i]
            rows.append((first + i, sid, s.ts, _stored(s.value), now, epoch))
        conn.executemany("INSERT INTO queue VALUES (?, ?, ?, ?, ?, ?)", rows)
        self._next_id = first + n
        self._points += n
        excess = self._points - self.cap_points
        if excess > 0:
            dropped = conn.execute(
                "DELETE FROM queue WHERE id IN (SELECT id FROM queue ORDER BY id LIMIT ?)",
                (excess,),
            ).rowcount
            self._points -= dropped
            self._counters["dropped_points"] += dropped

    def _do_ack(
        self, conn: sqlite3.Connection, ranges: list[tuple[int, int]], _new: list[Any]
    ) -> int:
        cur = conn.executemany("DELETE FROM queue WHERE id BETWEEN ? AND ?", ranges)
        deleted = max(cur.rowcount, 0)
        self._points -= deleted
        return deleted

    def _do_quarantine(
        self, conn: sqlite3.Connection, ids: list[int], reason: str, _new: list[Any]
    ) -> int:
        now = self.clock.now_ms()
        moved = 0
        for rid in ids:
            moved += conn.execute(
                "INSERT INTO quarantine SELECT id, series_id, ts, value, added_ms, epoch, ?, ?"
                " FROM queue WHERE id = ?",
                (reason, now, rid),
            ).rowcount
            conn.execute("DELETE FROM queue WHERE id = ?", (rid,))
        self._points -= moved
        self._counters["quarantined_points"] += moved
        kept = conn.execute("SELECT count(*) FROM quarantine").fetchone()[0]
        if kept > QUARANTINE_CAP:
            self._counters["quarantine_dropped"] += conn.execute(
                "DELETE FROM quarantine WHERE id IN"
                " (SELECT id FROM quarantine ORDER BY id LIMIT ?)",
                (kept - QUARANTINE_CAP,),
            ).rowcount
        if moved:
            log.warning("%d samples quarantined: %s", moved, reason)
        return moved

    def _do_release(
        self,
        conn: sqlite3.Connection,
        device_id: str | None,
        reason_contains: str | None,
        _new: list[Any],
    ) -> int:
        room = max(0, self.cap_points - self._points)
        where, args = ["1"], []
        if device_id is not None:
            where.append("series_id IN (SELECT id FROM series WHERE device_id = ?)")
            args.append(device_id)
        if reason_contains:
            where.append("instr(reason, ?) > 0")
            args.append(reason_contains)
        rows = conn.execute(
            "SELECT id, series_id, ts, value, added_ms, epoch FROM quarantine"
            f" WHERE {' AND '.join(where)} ORDER BY id LIMIT ?",
            (*args, room),
        ).fetchall()
        if not rows:
            return 0
        first = self._next_id
        conn.executemany(
            "INSERT INTO queue VALUES (?, ?, ?, ?, ?, ?)",
            [(first + i, *row[1:]) for i, row in enumerate(rows)],
        )
        conn.executemany("DELETE FROM quarantine WHERE id = ?", [(row[0],) for row in rows])
        self._next_id = first + len(rows)
        self._points += len(rows)
        self._counters["released_points"] += len(rows)
        log.warning("%d quarantined samples released to be sent again", len(rows))
        return len(rows)

    def _do_correct(
        self, conn: sqlite3.Connection, epoch: int, delta_ms: int, _new: list[Any]
    ) -> int:
        if epoch == 0:
            return 0
        return conn.execute(
            "UPDATE queue SET ts = ts + ?, epoch = 0 WHERE epoch = ?", (delta_ms, epoch)
        ).rowcount


def _settle(future: asyncio.Future[Any], result: Any) -> None:
    if future.cancelled():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)
