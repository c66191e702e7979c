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

_BATCH_TABLE = """
CREATE TEMP TABLE IF NOT EXISTS batch (
    series_id INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    value REAL,
    text TEXT,
    job INTEGER NOT NULL,
    PRIMARY KEY (series_id, ts)
) WITHOUT ROWID
"""
_ROLLUP_FROM_BATCH = """
INSERT INTO {table} (series_id, bucket, count, sum, min, max, first_ts, first, last_ts, last)
SELECT a.series_id, a.b, a.c, a.s, a.mn, a.mx, a.fts, f.value, a.lts, l.value
FROM (
    SELECT series_id, ts - ts % {resolution} AS b, count(*) AS c, sum(value) AS s,
           min(value) AS mn, max(value) AS mx, min(ts) AS fts, max(ts) AS lts
    FROM batch WHERE value IS NOT NULL GROUP BY series_id, b
) AS a
JOIN batch AS f ON f.series_id = a.series_id AND f.ts = a.fts
JOIN batch AS l ON l.series_id = a.series_id AND l.ts = a.lts
WHERE true
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
_LATEST_FROM_BATCH = """
INSERT INTO latest (series_id, ts, value, text)
SELECT series_id, max(ts), value, text FROM batch WHERE true GROUP BY series_id
ON CONFLICT (series_id) DO UPDATE SET ts = excluded.ts, value = excluded.value, text = excluded.text
WHERE excluded.ts >= latest.ts
"""
_ROLLUP_TABLES = {MINUTE_MS: "rollup_1m", HOUR_MS: "rollup_1h"}


class _SampleWriter(BatchHandler[Sequence[Sample], WriteResult]):
    """Writes queued sample lists: dedupe, raw insert, rollups and latest in one transaction.

    The per-sample work is done by SQLite: the batch goes into a temporary table once, and the
    raw insert, duplicate removal, rollups and latest values are set-based statements over it.
    """

    batchable = True

    def __init__(self, listeners: list[CommitListener]) -> None:
        self._series: dict[str, dict[str, int]] = {}
        self._listeners = listeners
        self._prepared: sqlite3.Connection | None = None

    def _series_id(self, conn: sqlite3.Connection, device_id: str, key: str) -> int:
        row = conn.execute(
            "SELECT id FROM series WHERE device_id = ? AND key = ?", (device_id, key)
        ).fetchone()
        if row is None:
            cur = conn.execute(
                "INSERT INTO series (device_id, key) VALUES (?, ?)", (device_id, key)
            )
            sid = int(cur.lastrowid or 0)
        else:
            sid = int(row[0])
        self._series.setdefault(device_id, {})[key] = sid
        return sid

    def forget_device(self, device_id: str) -> None:
        self._series.pop(device_id, None)

    def rolled_back(self) -> None:
        self._series.clear()

    def write(
        self, conn: sqlite3.Connection, items: Sequence[Sequence[Sample]]
    ) -> tuple[list[WriteResult], Callable[[], None] | None]:
        if self._prepared is not conn:
            conn.execute("PRAGMA temp_store = MEMORY")
            conn.execute(_BATCH_TABLE)
            self._prepared = conn
        series = self._series
        rows: list[tuple[int, int, Any, str | None, int]] = []
        texts = False
        submitted = 0
        for job, samples in enumerate(items):
            submitted += len(samples)
            for s in samples:
                keys = series.get(s.device_id)
                sid = keys.get(s.key) if keys is not None else None
                if sid is None:
                    sid = self._series_id(conn, s.device_id, s.key)
                v = s.value
                if v.__class__ is str:
                    rows.append((sid, s.ts, None, v, job))
                    texts = True
                else:
                    rows.append((sid, s.ts, v, None, job))
        conn.executemany("INSERT OR IGNORE INTO batch VALUES (?, ?, ?, ?, ?)", rows)
        unique = conn.execute("SELECT count(*) FROM batch").fetchone()[0]
        conn.execute("SAVEPOINT raw")
        inserted = conn.execute(
            "INSERT OR IGNORE INTO samples SELECT series_id, ts, value, text FROM batch"
        ).rowcount
        if inserted == unique:
            conn.execute("RELEASE raw")
        else:
            # Some samples were stored before: drop them from the batch so rollups count each once.
            conn.execute("ROLLBACK TO raw")
            conn.execute("RELEASE raw")
            conn.execute(
                "DELETE FROM batch WHERE EXISTS (SELECT 1 FROM samples AS s"
                " WHERE s.series_id = batch.series_id AND s.ts = batch.ts)"
            )
            conn.execute("INSERT INTO samples SELECT series_id, ts, value, text FROM batch")
        for resolution, table in _ROLLUP_TABLES.items():
            conn.execute(_ROLLUP_FROM_BATCH.format(table=table, resolution=resolution))
        conn.execute(_LATEST_FROM_BATCH)
        if texts:
            conn.execute(
                "UPDATE series SET has_text = 1 WHERE has_text = 0 AND id IN"
                " (SELECT series_id FROM batch WHERE text IS NOT NULL)"
            )
        if inserted == unique == submitted:
            results = [WriteResult(len(samples), 0) for samples in items]
            committed: list[Sample] | None = None
        else:
            stored = dict(conn.execute("SELECT job, count(*) FROM batch GROUP BY job").fetchall())
            results = [
                WriteResult(stored.get(job, 0), len(samples) - stored.get(job, 0))
                for job, samples in enumerate(items)
            ]
            committed = self._committed(conn, items)
        conn.execute("DELETE FROM batch")
        listeners = self._listeners
        if not listeners:
            return results, None

        def notify() -> None:
            new = committed if committed is not None else [s for job in items for s in job]
            if new:
                for listener in listeners:
                    listener(new)

        return results, notify

    def _committed(
        self, conn: sqlite3.Connection, items: Sequence[Sequence[Sample]]
    ) -> list[Sample]:
        """The samples that were new, each once (first occurrence in the batch)."""
        new = {
            (sid, ts, job) for sid, ts, job in conn.execute("SELECT series_id, ts, job FROM batch")
        }
        out = []
        for job, samples in enumerate(items):
            for s in samples:
                k = (self._series[s.device_id][s.key], s.ts, job)
                if k in new:
                    new.discard(k)
                    out.append(s)
        return out


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
