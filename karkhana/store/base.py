"""The Store contract: what every telemetry backend (SQLite, PostgreSQL) provides.

Every backend passes the same conformance suite in tests/conformance.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from karkhana.core.model import Point, Sample, Value


class Agg(StrEnum):
    AVG = "avg"
    MIN = "min"
    MAX = "max"
    FIRST = "first"
    LAST = "last"
    COUNT = "count"
    SUM = "sum"


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What a committed write did: ``stored`` new samples, ``duplicates`` already present."""

    stored: int
    duplicates: int


@dataclass(frozen=True, slots=True)
class Latest:
    key: str
    ts: int
    value: Value


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How long each resolution is kept, in milliseconds; 0 keeps it forever."""

    raw_ms: int
    rollup_1m_ms: int
    rollup_1h_ms: int


@dataclass(frozen=True, slots=True)
class RetentionResult:
    raw_deleted: int
    rollup_1m_deleted: int
    rollup_1h_deleted: int


WriteCallback = Callable[[WriteResult | BaseException], None]


class Store(Protocol):
    async def write(self, samples: Sequence[Sample]) -> WriteResult:
        """Store samples; returns only after they are committed (durable)."""
        ...

    def submit(self, samples: Sequence[Sample], done: WriteCallback) -> None:
        """Thread-safe, non-blocking write; ``done`` is called from the writer after commit."""
        ...

    async def latest(self, device_id: str) -> list[Latest]: ...

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
        """Points in [start, end): raw when ``bucket`` is None, else one per non-empty bucket.

        Buckets are aligned to multiples of ``bucket`` milliseconds since the epoch.
        """
        ...

    async def keys(self, device_id: str) -> list[str]: ...

    async def delete_device(self, device_id: str) -> int: ...

    async def apply_retention(self, now_ms: int, policy: RetentionPolicy) -> RetentionResult: ...

    async def close(self) -> None: ...
