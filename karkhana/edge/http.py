"""The edge's local HTTP input and health page (Starlette: the edge keeps its memory small).

``POST /api/v1/telemetry/<device_id>`` takes the same JSON as the server and answers 200 only
once the samples are in the durable buffer; a full buffer (reject-new) or a failing disk answers
503 with Retry-After, so that the device keeps its data and sends it again. ``GET /health`` is
the agent's status.

``GET /quarantine`` lists the quarantined samples by device and reason, and ``POST
/quarantine/release`` (``{"device_id": ..., "reason_contains": ...}``, both optional) sends them
again; both answer only on the box itself (loopback), where `karkhana edge quarantine` and
`karkhana edge release` call them.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from karkhana.core.errors import (
    Forbidden,
    InvalidPayload,
    KarkhanaError,
    PayloadTooLarge,
    RequestTimeout,
    StoreUnavailable,
    Unauthorized,
)
from karkhana.core.model import is_valid_device_id
from karkhana.edge.buffer import Buffer
from karkhana.edge.clock import EdgeClock
from karkhana.ingest.codec import decode

BODY_TIMEOUT_S = 30.0
LOOPBACK = ("127.0.0.1", "::1")
FAR_FUTURE_MS = 100 * 365 * 86_400_000
STATUS: dict[type[KarkhanaError], int] = {
    InvalidPayload: 400,
    Unauthorized: 401,
    Forbidden: 403,
    RequestTimeout: 408,
    PayloadTooLarge: 413,
    StoreUnavailable: 503,
}


@dataclass
class InputStats:
    messages: int = 0
    points: int = 0
    refused: int = 0
    last_reason: str = ""


async def read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The body, at most ``limit`` bytes, arriving within ``timeout_s``."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"payload is {declared} bytes; the limit is {limit}")
    chunks = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                chunks += chunk
                if len(chunks) > limit:
                    raise PayloadTooLarge(f"payload exceeds the limit of {limit} bytes")
    except TimeoutError:
        raise RequestTimeout(f"the body did not arrive within {timeout_s:g} s") from None
    return bytes(chunks)


def local_app(
    buffer: Buffer,
    clock: EdgeClock,
    status: Callable[[], Awaitable[dict[str, Any]]],
    *,
    local_token: str = "",
    max_payload_bytes: int = 256 * 1024,
    max_future_ms: int = 86_400_000,
    on_put: Callable[[], None] | None = None,
) -> Starlette:
    stats = InputStats()

    async def telemetry(request: Request) -> JSONResponse:
        device_id = request.path_params["device_id"]
        try:
            if local_token:
                header = request.headers.get("authorization", "")
                sent = header[7:].strip() if header[:7].lower() == "bearer " else ""
                if not hmac.compare_digest(sent.encode(), local_token.encode()):
                    raise Unauthorized("send 'Authorization: Bearer <local_token>'")
            if not is_valid_device_id(device_id):
                raise InvalidPayload("device id: 1-64 letters, digits, '_', '.' or '-'")
            body = await read_body(request, max_payload_bytes, BODY_TIMEOUT_S)
            now = clock.now_ms()
            # until the clock is checked against the server, a device's own (NTP) time may be
            # right while ours is not: judge its timestamps later, against the server's time
            future = max_future_ms if clock.synced else FAR_FUTURE_MS
            samples = decode(body, device_id, now_ms=now, max_future_ms=future, max_bytes=len(body))
            epoch = clock.epoch
            epochs = [epoch if s.ts == now else 0 for s in samples] if epoch else 0
            await buffer.put(samples, epochs)
        except KarkhanaError as exc:
            stats.refused += 1
            stats.last_reason = exc.message
            return error(exc)
        stats.messages += 1
        stats.points += len(samples)
        if on_put is not None:
            on_put()
        return JSONResponse({"stored": len(samples), "duplicates": 0})

    async def health(request: Request) -> JSONResponse:
        body = await status()
        body["inputs"] = {**body.get("inputs", {}), "http": stats.__dict__.copy()}
        return JSONResponse(body)

    def on_the_box(request: Request) -> None:
        host = request.client.host if request.client else ""
        if host not in LOOPBACK:
            raise Forbidden("quarantine is managed on the edge box itself (loopback only)")

    async def quarantine(request: Request) -> JSONResponse:
        try:
            on_the_box(request)
            groups = await buffer.quarantine_summary()
        except KarkhanaError as exc:
            return error(exc)
        return JSONResponse({"groups": [asdict(g) for g in groups]})

    async def release(request: Request) -> JSONResponse:
        try:
            on_the_box(request)
            body = await read_body(request, 4096, BODY_TIMEOUT_S)
            try:
                query = json.loads(body or b"{}")
            except ValueError:
                raise InvalidPayload("expected a JSON object") from None
            if not isinstance(query, dict) or not all(
                isinstance(query.get(k), str | None) for k in ("device_id", "reason_contains")
            ):
                raise InvalidPayload('expected {"device_id": text, "reason_contains": text}')
            released = await buffer.release(query.get("device_id"), query.get("reason_contains"))
        except KarkhanaError as exc:
            return error(exc)
        if released and on_put is not None:
            on_put()
        return JSONResponse({"released": released})

    return Starlette(
        routes=[
            Route("/api/v1/telemetry/{device_id}", telemetry, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
            Route("/quarantine", quarantine, methods=["GET"]),
            Route("/quarantine/release", release, methods=["POST"]),
        ]
    )


def error(exc: KarkhanaError) -> JSONResponse:
    code = next((STATUS[c] for c in type(exc).__mro__ if c in STATUS), 500)
    headers = {"Retry-After": "5"} if code == 503 else None
    if code == 401:
        headers = {"WWW-Authenticate": "Bearer"}
    return JSONResponse({"reason": exc.reason, "detail": exc.message}, code, headers=headers)
