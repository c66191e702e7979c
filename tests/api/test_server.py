"""A real uvicorn server with karkhana's settings: slow clients are cut off, others served."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import uvicorn

from karkhana import cli
from karkhana.api.app import create_app
from karkhana.runtime import Runtime
from tests.conftest import make_settings

pytestmark = pytest.mark.anyio


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[Runtime]:
    settings = make_settings(tmp_path, tls="off", http_header_timeout_s=2, http_body_timeout_s=1)
    rt = Runtime(settings)
    await rt.start(mqtt=False)
    server = uvicorn.Server(cli.uvicorn_config(create_app(rt), settings, None))
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.02)
    yield rt
    server.should_exit = True
    await task
    await rt.stop()


def closed_after(rt: Runtime, chunks: list[bytes], pause: float, wait: float) -> float | None:
    """Send ``chunks`` with ``pause`` between them; seconds until the server closed, or None."""
    with socket.create_connection(("127.0.0.1", rt.settings.http_port), timeout=wait) as s:
        started = time.monotonic()
        try:
            for chunk in chunks:
                s.sendall(chunk)
                time.sleep(pause)
            while s.recv(4096):
                pass
        except TimeoutError:
            return None
        except (BrokenPipeError, ConnectionResetError):
            pass
        return time.monotonic() - started


async def test_silent_connection_is_closed(http: Runtime) -> None:
    took = await asyncio.to_thread(closed_after, http, [], 0, 8)
    assert took is not None and took < 5


async def test_headers_sent_a_byte_at_a_time_are_cut_off(http: Runtime) -> None:
    request = b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 100
    took = await asyncio.to_thread(
        closed_after, http, [request[i : i + 1] for i in range(len(request))], 0.05, 12
    )
    assert took is not None and took < 5


def read_response(s: socket.socket) -> bytes:
    """One whole HTTP response (headers, then Content-Length bytes of body), however the
    server splits it into segments."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    while len(body) < length:
        chunk = s.recv(4096)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def two_requests(rt: Runtime, pause: float) -> list[bytes]:
    request = b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(("127.0.0.1", rt.settings.http_port), timeout=5) as s:
        answers = []
        for _ in range(2):
            s.sendall(request)
            answers.append(read_response(s))
            time.sleep(pause)
        return answers


async def test_kept_alive_connection_still_serves(http: Runtime) -> None:
    # well inside the 2 s deadline, which restarts after each answer
    answers = await asyncio.to_thread(two_requests, http, 0.5)
    assert all(a.startswith(b"HTTP/1.1 200") for a in answers)


async def test_slow_body_gets_408(http: Runtime) -> None:
    _, token = await http.devices.create("slow")

    def send() -> bytes:
        with socket.create_connection(("127.0.0.1", http.settings.http_port), timeout=5) as s:
            s.sendall(
                b"POST /api/v1/telemetry/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
                b"Content-Type: application/json\r\nAuthorization: Bearer "
                + token.encode()
                + b"\r\n\r\n{"
            )
            return s.recv(4096)

    answer = await asyncio.to_thread(send)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:100]


async def test_oversized_headers_are_refused(http: Runtime) -> None:
    def send() -> bytes:
        with socket.create_connection(("127.0.0.1", http.settings.http_port), timeout=5) as s:
            s.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000)
            return s.recv(4096)

    assert (await asyncio.to_thread(send)).startswith(b"HTTP/1.1 400")
