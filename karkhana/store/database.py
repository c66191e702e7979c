"""The embedded SQLite database: one writer thread fed by a queue, readers on their own connections.

SQLite allows one writer at a time; funnelling every write (telemetry and metadata alike) through
one thread turns lock contention into queueing and lets the writer group many small writes into
one transaction, which is what makes durable (fsync-per-commit) ingestion fast.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from karkhana.core.errors import KarkhanaError, StoreUnavailable
from karkhana.store.migrations import migrate

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

Done = Callable[[Any], None]
"""Called from the writer thread with the job's result or the exception it raised."""


class BatchHandler(Generic[T, R]):
    """Writes many queued items in one transaction.

    ``write`` runs inside the writer's transaction and returns one result per item plus an
    optional action to run after the commit succeeded.
    """

    batchable = False

    def write(
        self, conn: sqlite3.Connection, items: Sequence[T]
    ) -> tuple[Sequence[R], Callable[[], None] | None]:
        raise NotImplementedError

    def rolled_back(self) -> None:
        """Forget any state cached during a transaction that did not commit."""


@dataclass(slots=True)
class _Job:
    handler: BatchHandler[Any, Any]
    item: Any
    size: int
    done: Done


class _FunctionHandler(BatchHandler[Callable[[sqlite3.Connection], Any], Any]):
    def write(
        self, conn: sqlite3.Connection, items: Sequence[Callable[[sqlite3.Connection], Any]]
    ) -> tuple[Sequence[Any], None]:
        return [fn(conn) for fn in items], None


_FUNCTION = _FunctionHandler()
_STOP = object()


def translate(exc: sqlite3.Error) -> KarkhanaError:
    """The one place where sqlite3's errors become karkhana's."""
    text = str(exc)
    if "disk is full" in text or "disk I/O" in text:
        return StoreUnavailable(f"storage failure: {text}", reason="disk_full")
    if "locked" in text or "busy" in text:
        return StoreUnavailable(f"database busy: {text}", reason="busy")
    return StoreUnavailable(f"database error: {text}")


WRITER_CACHE_KIB = 32 * 1024
"""Page cache of the writer: inserts for many series land on many different pages."""


def connect(path: Path, *, synchronous: str = "FULL", readonly: bool = False) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    if readonly:
        conn.execute("PRAGMA query_only=1")
    return conn


class Database:
    """A SQLite file with a single writer thread and thread-local reader connections."""

    def __init__(
        self,
        path: Path,
        *,
        synchronous: str = "FULL",
        max_batch: int = 5000,
        queue_size: int = 10_000,
    ) -> None:
        if synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise ValueError(f"unknown synchronous mode {synchronous!r}")
        self.path = path
        self.synchronous = synchronous.upper()
        self.max_batch = max_batch
        self._queue: queue.Queue[_Job | object] = queue.Queue(maxsize=queue_size)
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = False
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._writer = connect(path, synchronous=self.synchronous)
            self._writer.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")
            migrate(self._writer)
        except sqlite3.Error as exc:
            raise translate(exc) from exc
        self.commits = 0
        # Checkpoints copy the WAL back into the database file; done by the writer they would
        # stall ingestion for the length of the copy, so a thread of their own does them.
        self._writer.execute("PRAGMA wal_autocheckpoint = 0")
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="karkhana-writer", daemon=True)
        self._thread.start()
        self._checkpointer = threading.Thread(
            target=self._checkpoint_loop, name="karkhana-checkpoint", daemon=True
        )
        self._checkpointer.start()

    # -- writing -------------------------------------------------------------------------
    def submit(self, handler: BatchHandler[T, Any], item: T, done: Done, size: int = 1) -> None:
        """Queue one item for the writer; never blocks the caller.

        Raises StoreUnavailable when the queue is full, which callers turn into back-pressure
        (HTTP 503, or the MQTT listener waiting).
        """
        if self._closed:
            raise StoreUnavailable("the database is closed", reason="closed")
        try:
            self._queue.put_nowait(_Job(handler, item, size, done))
        except queue.Full:
            raise StoreUnavailable("the writer is overloaded; retry later", reason="busy") from None

    def submit_blocking(
        self,
        handler: BatchHandler[T, Any],
        item: T,
        done: Done,
        size: int = 1,
        timeout: float | None = None,
    ) -> None:
        """Like submit, but waits for room in the queue (for listener threads)."""
        if self._closed:
            raise StoreUnavailable("the database is closed", reason="closed")
        try:
            self._queue.put(_Job(handler, item, size, done), timeout=timeout)
        except queue.Full:
            raise StoreUnavailable("the writer is overloaded; retry later", reason="busy") from None

    async def run(self, handler: BatchHandler[T, R], item: T, size: int = 1) -> R:
        """Queue an item and wait until its transaction has committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()

        def done(result: Any) -> None:
            loop.call_soon_threadsafe(_settle, future, result)

        self.submit(handler, item, done, size)
        return await future

    async def execute_write_fn(self, fn: Callable[[sqlite3.Connection], R]) -> R:
        """Run ``fn(conn)`` in its own transaction on the writer thread."""
        result: R = await self.run(_FUNCTION, fn)
        return result

    def _run(self) -> None:
        pending: _Job | None = None
        while True:
            first = pending if pending is not None else self._queue.get()
            pending = None
            if first is _STOP:
                break
            assert isinstance(first, _Job)
            group = [first]
            size = first.size
            stop = False
            while first.handler.batchable and size < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                assert isinstance(nxt, _Job)
                if nxt.handler is not first.handler:
                    pending = nxt
                    break
                group.append(nxt)
                size += nxt.size
            self._write_group(group)
            if stop:
                if pending is not None:
                    self._write_group([pending])
                break
        try:
            self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            log.warning("final checkpoint failed: %s", translate(exc))
        self._writer.close()

    def _write_group(self, group: list[_Job]) -> None:
        handler = group[0].handler
        conn = self._writer
        after: Callable[[], None] | None = None
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                results, after = handler.write(conn, [job.item for job in group])
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                handler.rolled_back()
                raise
        except sqlite3.Error as exc:
            failure: BaseException = translate(exc)
            log.error("write failed: %s", failure)
            for job in group:
                job.done(failure)
            return
        except Exception as exc:  # a domain error raised inside a write function
            for job in group:
                job.done(exc)
            return
        self.commits += 1
        for job, result in zip(group, results, strict=True):
            job.done(result)
        if after is not None:
            after()

    # -- reading -------------------------------------------------------------------------
    def reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path, synchronous=self.synchronous, readonly=True)
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def read(self, fn: Callable[[sqlite3.Connection], R]) -> R:
        """Run ``fn`` on this thread's read connection (blocking; for threads)."""
        try:
            return fn(self.reader())
        except sqlite3.Error as exc:
            raise translate(exc) from exc

    async def execute_read_fn(self, fn: Callable[[sqlite3.Connection], R]) -> R:
        return await asyncio.to_thread(self.read, fn)

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    def _checkpoint_loop(self, interval_s: float = 1.0) -> None:
        conn = connect(self.path, synchronous=self.synchronous)
        try:
            while not self._stopping.wait(interval_s):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as exc:
                    log.warning("checkpoint failed: %s", translate(exc))
        finally:
            conn.close()

    def close(self) -> None:
        """Finish queued writes, then stop the writer and close every connection."""
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        self._checkpointer.join()
        self._queue.put(_STOP)
        self._thread.join()
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()


def _settle(future: asyncio.Future[Any], result: Any) -> None:
    if future.cancelled():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)
