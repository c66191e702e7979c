from __future__ import annotations

import asyncio
import csv
import io
import re
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from pydantic import BaseModel, Field

from karkhana.api.deps import CurrentUser, RuntimeDep, client_address
from karkhana.core.errors import InvalidPayload, PayloadTooLarge, RequestTimeout, Unauthorized
from karkhana.core.model import Point
from karkhana.core.timeutil import nice_bucket, parse_duration, parse_ts
from karkhana.runtime import Runtime
from karkhana.store.base import Agg

router = APIRouter(prefix="/api/v1/telemetry", tags=["telemetry"])
MAX_RAW_POINTS = 100_000


class IngestResult(BaseModel):
    stored: int
    duplicates: int


class LatestValue(BaseModel):
    ts: int
    value: float | bool | str


class SeriesOut(BaseModel):
    device_id: str
    key: str
    start: int
    end: int
    bucket: int | None = Field(description="bucket width in ms; null for raw points")
    agg: str | None
    points: list[tuple[int, float | str | None]]


async def _body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The body, read up to ``limit`` bytes and for at most ``timeout_s`` (0: no limit)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"payload is {declared} bytes; the limit is {limit}")
    chunks = bytearray()
    try:
        async with asyncio.timeout(timeout_s or None):
            async for chunk in request.stream():
                chunks += chunk
                if len(chunks) > limit:
                    raise PayloadTooLarge(f"payload exceeds the limit of {limit} bytes")
    except TimeoutError:
        raise RequestTimeout(f"the body did not arrive within {timeout_s:g} s") from None
    return bytes(chunks)


@router.post(
    "/{device_id}",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"type": "object"},
                    "example": {
                        "ts": 1700000000000,
                        "values": {"picks_per_min": 512, "running": True},
                    },
                }
            },
        }
    },
)
async def ingest(
    device_id: str,
    request: Request,
    rt: RuntimeDep,
    authorization: Annotated[str | None, Header(description="Bearer <device token>")] = None,
) -> IngestResult:
    """Store telemetry of one device, authenticated with the device's own token.

    Answers only after the samples are committed to disk. A device that sends more than
    ``device_max_msgs_per_s`` messages a second gets 429 with Retry-After; a body that takes
    longer than ``http_body_timeout_s`` to arrive gets 408.
    """
    token = None
    if authorization and authorization[:7].lower() == "bearer ":
        token = authorization[7:].strip()
    body = await _body(request, rt.settings.max_payload_bytes, rt.settings.http_body_timeout_s)
    try:
        result = await rt.ingestor.ingest(device_id, body, token=token or "")
    except Unauthorized:
        await rt.audit.refused(
            device_id,
            "device.auth",
            f"device:{device_id}",
            source=client_address(request),
            details={"transport": "http"},
        )
        raise
    return IngestResult(stored=result.stored, duplicates=result.duplicates)


@router.get("/{device_id}/latest")
async def latest(device_id: str, rt: RuntimeDep, user: CurrentUser) -> dict[str, LatestValue]:
    """The most recent value of every key of a device."""
    await rt.devices.get(device_id)
    return {x.key: LatestValue(ts=x.ts, value=x.value) for x in await rt.store.latest(device_id)}


def _time(value: str | None, default: int, field: str) -> int:
    return default if value in (None, "") else parse_ts(value, field)


async def _series(
    rt: Runtime,
    device_id: str,
    key: str,
    start: str | None,
    end: str | None,
    bucket: str | None,
    agg: Agg | None,
    points: int | None,
    limit: int | None,
) -> SeriesOut:
    await rt.devices.get(device_id)
    t_end = _time(end, rt.clock.now_ms() + 1, "end")
    t_start = _time(start, t_end - 3_600_000, "start")
    if t_start >= t_end:
        raise InvalidPayload("start: must be before end")
    width: int | None = None
    if bucket:
        width = parse_duration(bucket)
    elif points:
        width = nice_bucket(t_end - t_start, points)
    if width is not None and (t_end - t_start) // width > MAX_RAW_POINTS:
        raise InvalidPayload(f"bucket: more than {MAX_RAW_POINTS} buckets; choose a wider bucket")
    if width is None:
        cap = min(limit or MAX_RAW_POINTS, MAX_RAW_POINTS)
        result: list[Point] = await rt.store.query(device_id, key, t_start, t_end, limit=cap)
        used_agg = None
    else:
        used_agg = agg or Agg.AVG
        result = await rt.store.query(device_id, key, t_start, t_end, width, used_agg, limit)
    return SeriesOut(
        device_id=device_id,
        key=key,
        start=t_start,
        end=t_end,
        bucket=width,
        agg=used_agg.value if used_agg else None,
        points=[
            (p.ts, p.value if not isinstance(p.value, bool) else float(p.value)) for p in result
        ],
    )


def _csv(series: SeriesOut) -> Response:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["ts_ms", "time_utc", series.key])
    for ts, value in series.points:
        iso = datetime.fromtimestamp(ts / 1000, UTC).isoformat(timespec="milliseconds")
        writer.writerow([ts, iso.replace("+00:00", "Z"), "" if value is None else value])
    # a header is latin-1 and the key comes from the URL: keep the file name to plain characters
    name = re.sub(r"[^A-Za-z0-9._-]", "_", f"{series.device_id}_{series.key}") + ".csv"
    return Response(
        out.getvalue(),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get("/{device_id}/{key:path}", response_model=SeriesOut)
async def series(
    device_id: str,
    key: str,
    request: Request,
    rt: RuntimeDep,
    user: CurrentUser,
    start: Annotated[
        str | None, Query(description="epoch ms or ISO 8601; default end - 1h")
    ] = None,
    end: Annotated[
        str | None, Query(description="epoch ms or ISO 8601 (exclusive); default now")
    ] = None,
    bucket: Annotated[str | None, Query(description="bucket width: 30s, 5m, 1h, 1d or ms")] = None,
    agg: Annotated[Agg | None, Query(description="aggregate per bucket (default avg)")] = None,
    points: Annotated[
        int | None,
        Query(ge=1, le=10_000, description="choose a bucket giving about this many points"),
    ] = None,
    limit: Annotated[int | None, Query(ge=1, le=MAX_RAW_POINTS)] = None,
    format: Annotated[str, Query(pattern="^(json|csv)$")] = "json",
) -> SeriesOut | Response:
    """Points of one key: raw without ``bucket``/``points``, else one aggregate per bucket.

    Buckets are aligned to multiples of their width since the epoch (UTC). ``format=csv`` or
    ``Accept: text/csv`` downloads the same points as CSV.
    """
    result = await _series(rt, device_id, key, start, end, bucket, agg, points, limit)
    wants_csv = format == "csv" or "text/csv" in request.headers.get("accept", "")
    return _csv(result) if wants_csv else result
