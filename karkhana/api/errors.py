"""The one place where domain errors become HTTP responses: ``{"reason": ..., "detail": ...}``."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from karkhana.core.errors import (
    ConfigError,
    Conflict,
    Forbidden,
    InvalidPayload,
    KarkhanaError,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
    StoreUnavailable,
    TooManyRequests,
    Unauthorized,
)

STATUS: dict[type[KarkhanaError], int] = {
    InvalidPayload: 400,
    ConfigError: 400,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    RequestTimeout: 408,
    Conflict: 409,
    PayloadTooLarge: 413,
    TooManyRequests: 429,
    StoreUnavailable: 503,
}


def status_of(exc: KarkhanaError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def install(app: FastAPI) -> None:
    async def domain(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, KarkhanaError)
        status = status_of(exc)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        if status == 503:
            headers = {"Retry-After": "1"}
        if isinstance(exc, TooManyRequests):
            headers = {"Retry-After": str(exc.retry_after)}
        return JSONResponse({"reason": exc.reason, "detail": exc.message}, status, headers=headers)

    async def validation(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = exc.errors()
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse(
            {"reason": "invalid_request", "detail": f"{where}: {first.get('msg', 'invalid')}"},
            422,
        )

    async def http(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return JSONResponse(
            {"reason": "http_error", "detail": str(exc.detail)},
            exc.status_code,
            headers=exc.headers,
        )

    app.add_exception_handler(KarkhanaError, domain)
    app.add_exception_handler(RequestValidationError, validation)
    app.add_exception_handler(StarletteHTTPException, http)
