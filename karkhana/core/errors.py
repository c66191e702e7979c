"""The few domain errors that the rest of karkhana raises and the API maps to HTTP statuses.

Foreign exceptions (sqlite3, json, amqtt, paho) are translated into these once, where they occur.
"""

from __future__ import annotations


class KarkhanaError(Exception):
    """Base of every domain error; ``reason`` is a short machine-readable code."""

    reason = "error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.reason


class InvalidPayload(KarkhanaError):
    """The sender's data cannot be understood (malformed JSON, wrong types, NaN, bad time)."""

    reason = "invalid_payload"


class PayloadTooLarge(KarkhanaError):
    reason = "payload_too_large"


class NotFound(KarkhanaError):
    reason = "not_found"


class Conflict(KarkhanaError):
    reason = "conflict"


class Unauthorized(KarkhanaError):
    """Missing or wrong credentials."""

    reason = "unauthorized"


class Forbidden(KarkhanaError):
    """Valid credentials that may not do this."""

    reason = "forbidden"


class TooManyRequests(KarkhanaError):
    """Slow down: too many failed logins or messages; ``retry_after`` in seconds."""

    reason = "too_many_requests"

    def __init__(self, message: str, *, retry_after: int = 1, reason: str | None = None) -> None:
        super().__init__(message, reason=reason)
        self.retry_after = retry_after


class RequestTimeout(KarkhanaError):
    """The sender took too long to send its request (a slow or stalled client)."""

    reason = "request_timeout"


class StoreUnavailable(KarkhanaError):
    """The store cannot accept writes now (disk full, closed, I/O error)."""

    reason = "store_unavailable"


class ConfigError(KarkhanaError):
    reason = "config_error"
