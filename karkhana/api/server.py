"""The HTTP server's connections: uvicorn's h11 protocol with a deadline for request headers.

uvicorn closes a kept-alive connection that stays idle, but not a new connection that never sends
a byte, nor one that sends its headers a byte at a time; a few hundred such clients would hold
every connection that ``limit_concurrency`` allows. Here a request's headers must arrive whole
within a deadline counted from the connection (or the previous answer), or the connection closes.
The body of a request has its own limits where it is read (size and time, api/telemetry.py).
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["header_timeout_protocol"]


class _HeaderDeadline(H11Protocol):
    header_timeout_s: float = 10.0
    _deadline: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        self._disarm()
        if self.header_timeout_s > 0:
            self._deadline = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _headers_late(self) -> None:
        self._deadline = None
        # IDLE: still waiting for (the rest of) a request's headers
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def header_timeout_protocol(timeout_s: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol closing connections whose request headers take over ``timeout_s``
    (0: no deadline); give it to ``uvicorn.Config(http=...)``."""
    return type(
        "HeaderDeadlineProtocol", (_HeaderDeadline,), {"header_timeout_s": float(timeout_s)}
    )
