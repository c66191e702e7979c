"""Real receivers for notifications: an SMTP server (aiosmtpd) and an HTTP webhook server."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from karkhana.runtime import Runtime
from tests.conftest import free_port


@dataclass
class Mailbox:
    messages: list[EmailMessage] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        return "250 OK"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Webhook:
    port: int
    received: list[Received] = field(default_factory=list)
    fail_next: int = 0
    """Answer this many requests with 500 first (a webhook that is down)."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook(free_port())

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", 0))
            body = self.rfile.read(length)
            if hook.fail_next > 0:
                hook.fail_next -= 1
                self.send_response(500)
                self.end_headers()
                return
            hook.received.append(
                Received(
                    self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.time()
                )
            )
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", hook.port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()


async def build_mill(
    rt: Runtime, site: str = "mill", machine: str = "L03", device: str = "loom-3"
) -> str:
    """A site with one power loom bound to one device; returns the device token."""
    await rt.assets.create_site(site, "Faisalabad mill")
    await rt.assets.create_area(f"{site}-weaving", site, "Weaving")
    await rt.assets.create_line(f"{site}-shed", f"{site}-weaving", "Shed A")
    _, token = await rt.devices.create(device, site_id=site)
    await rt.assets.create_machine(machine, f"{site}-shed", "Loom 3", "power_loom", device)
    return token
