"""The embedded telemetry store on SQLite: raw samples, 1-minute and 1-hour rollups, latest values.

Rollups are updated in the same transaction as the raw samples they summarise, so a chart over a
year reads about 9,000 hourly rows instead of 31 million raw ones, and never sees a rollup that
disagrees with the raw data.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from karkhana.core.model import Point, Sample, Value
from karkhana.store.base import (
    Agg,
    Latest,
    RetentionPolicy,
    RetentionResult,
    WriteCallback,
    WriteResult,
)
from karkhana.store.database import BatchHandler, Database
from karkhana.store.rollup import HOUR_MS, MINUTE_MS, RAW, Partial, plan

CommitListener = Callable[[list[Sample]], None]

_INSERT = "INSERT OR IGNORE INTO samples (series_id, ts, value, text) VALUES (?, ?, ?, ?)"
_UPSERT_ROLLUP = """
INSERT INTO {table} (series_id, bucket, count, sum, min, max, first_ts, first, last_ts, last)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (series_id, bucket) DO UPDATE SET
    count = count + excluded.count,
    sum = sum + excluded.sum,
    min = min(min, excluded.min),
    max = max(max, excluded.max),
    first = CASE WHEN excluded.first_ts < first_ts THEN excluded.first ELSE first END,
    first_ts = min(first_ts, excluded.first_ts),
    last = CASE WHEN excluded.last_ts >= last_ts THEN excluded.last ELSE last END,
    last_ts = max(last_ts, excluded.last_ts)
"""
_UPSERT_LATEST = """
INSERT INTO latest (series_id, ts, value, text) VALUES (?, ?, ?, ?)
ON CONFLICT (series_id) DO UPDATE SET ts = excluded.ts, value = excluded.value, text = excluded.text
WHERE excluded.ts >= latest.ts
"""
_ROLLUP_TABLES = {MINUTE_MS: "rollup_1m", HOUR_MS: "rollup_1h"}


def _columns(value: Value) -> tuple[float | None, str | None]:
    if isinstance(value, str):
        return None, value
    return float(value), None


class _SampleWriter(BatchHandler[Sequence[Sample], WriteResult]):
    """Writes queued sample lists: dedupe, raw insert, rollups and latest in one transaction."""

    batchable = True

    def __init__(self, listeners: list[CommitListener]) -> None:
        self._series: dict[tuple[str, str], int] = {}
        self._text_series: set[int] = set()
        self._new_series: list[tuple[str, str]] = []
        self._listeners = listeners

    def series_id(self, conn: sqlite3.Connection, device_id: str, key: str) -> int:
        sid = self._series.get((device_id, key))
        if sid is None:
            row = conn.execute(
                "SELECT id, has_text FROM series WHERE device_id = ? AND key = ?", (device_id, key)
            ).fetchone()
            if row is None:
                cur = conn.execute(
                    "INSERT INTO series (device_id, key) VALUES (?, ?)", (device_id, key)
                )
                sid = int(cur.lastrowid or 0)
                self._new_series.append((device_id, key))
            else:
                sid = int(row[0])
                if row[1]:
                    self._text_series.add(sid)
            self._series[(device_id, key)] = sid
        return sid

    def forget_device(self, device_id: str) -> None:
        for k in [k for k in self._series if k[0] == device_id]:
            self._text_series.discard(self._series.pop(k))

    def rolled_back(self) -> None:
        for k in self._new_series:
            self._series.pop(k, None)
        self._new_series.clear()
        # has_text flags set in a rolled-back transaction are re-read on next use
        self._series.clear()
        self._text_series.clear()

    def write(
        self, conn: sqlite3.Connection, items: Sequence[Sequence[Sample]]
    ) -> tuple[list[WriteResult], Callable[[], None] | None]:
        self._new_series.clear()
        rows: dict[tuple[int, int], tuple[int, Sample]] = {}
        job_keys: list[list[tuple[int, int]]] = []
        for job, samples in enumerate(items):
            keys = []
            for s in samples:
                k = (self.series_id(conn, s.device_id, s.key), s.ts)
                keys.append(k)
                if k not in rows:
                    rows[k] = (job, s)
            job_keys.append(keys)

        params = [(k[0], k[1], *_columns(s.value)) for k, (_, s) in rows.items()]
        before = conn.total_changes
        conn.execute("SAVEPOINT raw")
        conn.executemany(_INSERT, params)
        if conn.total_changes - before == len(params):
            new = rows
            conn.execute("RELEASE raw")
        else:
            # Some samples were already stored: find exactly which, so rollups count each once.
            conn.execute("ROLLBACK TO raw")
            conn.execute("RELEASE raw")
            new = {}
            for p, (k, v) in zip(params, rows.items(), strict=True):
                if conn.execute(_INSERT, p).rowcount == 1:
                    new[k] = v
        self._update_derived(conn, new)

        results = []
        for job, keys in enumerate(job_keys):
            stored = len({k for k in keys if k in new and new[k][0] == job})
            results.append(WriteResult(stored=stored, duplicates=len(keys) - stored))
        self._new_series.clear()
        committed = [s for _, s in new.values()]
        listeners = self._listeners
        if not listeners or not committed:
            return results, None

        def notify() -> None:
            for listener in listeners:
                listener(committed)

        return results, notify

    def _update_derived(
        self, conn: sqlite3.Connection, new: dict[tuple[int, int], tuple[int, Sample]]
    ) -> None:
        numeric: list[tuple[int, int, float]] = []
        latest: dict[int, tuple[int, Value]] = {}
        newly_text: set[int] = set()
        for (sid, ts), (_, s) in new.items():
            v = s.value
            if isinstance(v, str):
                if sid not in self._text_series:
                    newly_text.add(sid)
            else:
                numeric.append((sid, ts, float(v)))
            cur = latest.get(sid)
            if cur is None or ts >= cur[0]:
                latest[sid] = (ts, v)
        for sid in newly_text:
            conn.execute("UPDATE series SET has_text = 1 WHERE id = ?", (sid,))
            self._text_series.add(sid)
        for resolution, table in _ROLLUP_TABLES.items():
            groups: dict[tuple[int, int], Partial] = {}
            for sid, ts, v in numeric:
                gk = (sid, ts - ts % resolution)
                p = groups.get(gk)
                if p is None:
                    groups[gk] = Partial.of(ts, v)
                else:
                    p.add(ts, v)
            conn.executemany(
                _UPSERT_ROLLUP.format(table=table),
                [
                    (
                        sid,
                        b,
                        p.count,
                        p.total,
                        p.minimum,
                        p.maximum,
                        p.first_ts,
                        p.first,
                        p.last_ts,
                        p.last,
                    )
                    for (sid, b), p in groups.items()
                ],
            )
        conn.executemany(
            _UPSERT_LATEST,
            [(sid, ts, *_columns(v)) for sid, (ts, v) in latest.items()],
        )


class SQLiteStore:
    """Store implementation on a :class:`Database`; see :class:`karkhana.store.base.Store`."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._listeners: list[CommitListener] = []
        self._writer = _SampleWriter(self._listeners)

    def on_commit(self, listener: CommitListener) -> None:
        """Call ``listener`` (on the writer thread) with every list of newly committed samples."""
        self._listeners.append(listener)

    async def write(self, samples: Sequence[Sample]) -> WriteResult:
        if not samples:
            return WriteResult(0, 0)
        return await self.db.run(self._writer, samples, size=len(samples))

    def submit(self, samples: Sequence[Sample], done: WriteCallback) -> None:
        self.db.submit(self._writer, samples, done, size=max(1, len(samples)))

    def submit_blocking(
        self, samples: Sequence[Sample], done: WriteCallback, timeout: float | None = None
    ) -> None:
        self.db.submit_blocking(self._writer, samples, done, max(1, len(samples)), timeout)

    async def latest(self, device_id: str) -> list[Latest]:
        def read(conn: sqlite3.Connection) -> list[Latest]:
            rows = conn.execute(
                "SELECT s.key, l.ts, l.value, l.text FROM latest l JOIN series s ON s.id = l.series_id"
                " WHERE s.device_id = ? ORDER BY s.key",
                (device_id,),
            ).fetchall()
            return [
                Latest(key, ts, text if text is not None else value)
                for key, ts, value, text in rows
            ]

        return await self.db.execute_read_fn(read)

    async def keys(self, device_id: str) -> list[str]:
        def read(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                "SELECT key FROM series WHERE device_id = ? ORDER BY key", (device_id,)
            ).fetchall()
            return [r[0] for r in rows]

        return await self.db.execute_read_fn(read)

    async def query(
        self,
        device_id: str,
        key: str,
        start: int,
        end: int,
        bucket: int | None = None,
        agg: Agg = Agg.AVG,
        limit: int | None = None,
    ) -> list[Point]:
        if bucket is not None and bucket <= 0:
            raise ValueError("bucket must be positive")

        def read(conn: sqlite3.Connection) -> list[Point]:
            row = conn.execute(
                "SELECT id, has_text FROM series WHERE device_id = ? AND key = ?", (device_id, key)
            ).fetchone()
            if row is None or start >= end:
                return []
            sid, has_text = row
            if bucket is None:
                return _raw(conn, sid, start, end, limit)
            return _bucketed(conn, sid, bool(has_text), start, end, bucket, agg, limit)

        return await self.db.execute_read_fn(read)

    async def delete_device(self, device_id: str) -> int:
        def delete(conn: sqlite3.Connection) -> int:
            sids = [
                r[0]
                for r in conn.execute("SELECT id FROM series WHERE device_id = ?", (device_id,))
            ]
            removed = 0
            for sid in sids:
                removed += conn.execute("DELETE FROM samples WHERE series_id = ?", (sid,)).rowcount
                for table in ("rollup_1m", "rollup_1h", "latest"):
                    conn.execute(f"DELETE FROM {table} WHERE series_id = ?", (sid,))
            conn.execute("DELETE FROM series WHERE device_id = ?", (device_id,))
            self._writer.forget_device(device_id)
            return removed

        return await self.db.execute_write_fn(delete)

    async def apply_retention(self, now_ms: int, policy: RetentionPolicy) -> RetentionResult:
        sids: list[int] = await self.db.execute_read_fn(
            lambda conn: [r[0] for r in conn.execute("SELECT id FROM series")]
        )
        totals = [0, 0, 0]
        limits = (
            ("samples", "ts", policy.raw_ms),
            ("rollup_1m", "bucket", policy.rollup_1m_ms),
            ("rollup_1h", "bucket", policy.rollup_1h_ms),
        )
        chunk = 200
        for i in range(0, len(sids), chunk):
            part = sids[i : i + chunk]

            def delete(conn: sqlite3.Connection, part: list[int] = part) -> list[int]:
                counts = [0, 0, 0]
                for n, (table, column, keep) in enumerate(limits):
                    if keep <= 0:
                        continue
                    cutoff = now_ms - keep
                    for sid in part:
                        counts[n] += conn.execute(
                            f"DELETE FROM {table} WHERE series_id = ? AND {column} < ?",
                            (sid, cutoff),
                        ).rowcount
                return counts

            for n, c in enumerate(await self.db.execute_write_fn(delete)):
                totals[n] += c
        return RetentionResult(*totals)

    async def close(self) -> None:
        self.db.close()


def _raw(
    conn: sqlite3.Connection, sid: int, start: int, end: int, limit: int | None
) -> list[Point]:
    sql = (
        "SELECT ts, value, text FROM samples WHERE series_id = ? AND ts >= ? AND ts < ? ORDER BY ts"
    )
    args: tuple[Any, ...] = (sid, start, end)
    if limit is not None:
        sql += " LIMIT ?"
        args = (*args, limit)
    return [
        Point(ts, text if text is not None else value)
        for ts, value, text in conn.execute(sql, args)
    ]


def _bucketed(
    conn: sqlite3.Connection,
    sid: int,
    has_text: bool,
    start: int,
    end: int,
    bucket: int,
    agg: Agg,
    limit: int | None,
) -> list[Point]:
    if has_text:
        points = _bucketed_text(conn, sid, start, end, bucket, agg)
    else:
        merged: dict[int, Partial] = {}
        for resolution, lo, hi in plan(start, end, bucket):
            for ob, part in _partials(conn, sid, resolution, lo, hi, bucket, agg):
                cur = merged.get(ob)
                if cur is None:
                    merged[ob] = part
                else:
                    cur.merge(part)
        points = [Point(ob, merged[ob].value(agg)) for ob in sorted(merged)]
    return points[:limit] if limit is not None else points


def _bucketed_text(
    conn: sqlite3.Connection, sid: int, start: int, end: int, bucket: int, agg: Agg
) -> list[Point]:
    """Series that carry strings (states, codes): count, first and last see every value."""
    groups: dict[int, list[Value]] = {}
    for ts, value, text in conn.execute(
        "SELECT ts, value, text FROM samples WHERE series_id = ? AND ts >= ? AND ts < ? ORDER BY ts",
        (sid, start, end),
    ):
        groups.setdefault(ts - ts % bucket, []).append(text if text is not None else value)
    out = []
    for ob, values in groups.items():
        if agg is Agg.COUNT:
            out.append(Point(ob, float(len(values))))
        elif agg is Agg.FIRST:
            out.append(Point(ob, values[0]))
        elif agg is Agg.LAST:
            out.append(Point(ob, values[-1]))
        else:
            nums = [float(v) for v in values if not isinstance(v, str)]
            if nums:
                p = Partial.of(0, nums[0])
                for v in nums[1:]:
                    p.add(0, v)
                out.append(Point(ob, p.value(agg)))
    return out


def _partials(
    conn: sqlite3.Connection, sid: int, resolution: int, lo: int, hi: int, bucket: int, agg: Agg
) -> list[tuple[int, Partial]]:
    nan = math.nan
    if resolution == RAW:
        table, tcol, count, total, low, high, first_ts, last_ts, first, last = (
            "samples",
            "ts",
            "count(value)",
            "sum(value)",
            "min(value)",
            "max(value)",
            "min(ts)",
            "max(ts)",
            "value",
            "value",
        )
        where = " AND value IS NOT NULL"
    else:
        table, tcol, count, total, low, high, first_ts, last_ts, first, last = (
            "rollup_1h" if resolution == HOUR_MS else "rollup_1m",
            "bucket",
            "sum(count)",
            "sum(sum)",
            "min(min)",
            "max(max)",
            "min(first_ts)",
            "max(last_ts)",
            "first",
            "last",
        )
        where = ""
    base = f"FROM {table} WHERE series_id = ? AND {tcol} >= ? AND {tcol} < ?{where} GROUP BY ob"
    ob = f"{tcol} - {tcol} % ?"
    args = (bucket, sid, lo, hi)
    out: dict[int, Partial] = {}
    for b, c, s, mn, mx, fts, lts in conn.execute(
        f"SELECT {ob} AS ob, {count}, {total}, {low}, {high}, {first_ts}, {last_ts} {base}", args
    ):
        if c:
            out[b] = Partial(c, s, mn, mx, fts, nan, lts, nan)
    # SQLite returns the other columns of the row that holds a lone min()/max() aggregate.
    if agg is Agg.FIRST:
        for b, v, _ in conn.execute(f"SELECT {ob} AS ob, {first}, {first_ts} {base}", args):
            if b in out:
                out[b].first = v
    elif agg is Agg.LAST:
        for b, v, _ in conn.execute(f"SELECT {ob} AS ob, {last}, {last_ts} {base}", args):
            if b in out:
                out[b].last = v
    return list(out.items())
