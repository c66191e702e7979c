"""Delivery of notifications: a durable outbox, workers, retries with back-off.

Notifications are rows of ``notify_outbox``, written in the same transaction as the alarm that
caused them, so none is lost to a crash or restart. Workers here send what is due; a failure is
logged and retried later (doubling waits), so a dead SMTP server or webhook delays only its own
messages. Nothing here runs on the ingestion path: the alarm service only wakes the dispatcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import smtplib
import sqlite3
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import httpx

from karkhana.alarms.notify import Channel, EmailChannel, WebhookChannel, backoff_ms
from karkhana.core.clock import Clock
from karkhana.core.errors import KarkhanaError
from karkhana.store.database import Database

log = logging.getLogger(__name__)


class DeliveryError(KarkhanaError):
    """A notification could not be delivered this time."""

    reason = "delivery_failed"


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One due row of the outbox."""

    id: int
    alarm_id: str
    channel_id: str
    address: str
    subject: str
    body: str
    attempts: int
    deferred: bool
    alarm_state: str


def send_email(channel: EmailChannel, to: str, subject: str, text: str) -> None:
    """Blocking SMTP delivery (run in a thread); smtplib's errors become DeliveryError."""
    msg = EmailMessage()
    msg["From"] = channel.sender
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content(text)
    try:
        if channel.security == "tls":
            client: smtplib.SMTP = smtplib.SMTP_SSL(
                channel.host,
                channel.port,
                timeout=channel.timeout_s,
                context=ssl.create_default_context(),
            )
        else:
            client = smtplib.SMTP(channel.host, channel.port, timeout=channel.timeout_s)
        with client:
            if channel.security == "starttls":
                client.starttls(context=ssl.create_default_context())
            if channel.username:
                client.login(channel.username, channel.password)
            client.send_message(msg)
    except (smtplib.SMTPException, OSError, UnicodeError) as exc:
        raise DeliveryError(f"SMTP {channel.host}:{channel.port}: {exc}") from None


async def send_webhook(client: httpx.AsyncClient, channel: WebhookChannel, body: str) -> None:
    payload = json.loads(body)
    content_type = payload.get("content_type", "json")
    data = payload.get("body")
    auth = httpx.BasicAuth(channel.username, channel.password) if channel.username else None
    body_kw: dict[str, Any] = {"data": data} if content_type == "form" else {"json": data}
    try:
        if auth is not None:
            body_kw["auth"] = auth
        response = await client.post(
            channel.url, headers=dict(channel.headers), timeout=channel.timeout_s, **body_kw
        )
    except (httpx.HTTPError, httpx.InvalidURL, UnicodeError) as exc:
        # network errors say what failed; others may quote the URL, which can hold a token
        detail = f" {exc}" if isinstance(exc, httpx.TransportError) else ""
        raise DeliveryError(f"webhook {channel.id}: {type(exc).__name__}{detail}") from None
    if response.status_code >= 300:
        raise DeliveryError(f"webhook {channel.id}: HTTP {response.status_code}")


class Dispatcher:
    """Sends due outbox rows with at most ``concurrency`` deliveries at once."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        channels: Callable[[], Mapping[str, Channel]],
        *,
        concurrency: int = 8,
        max_attempts: int = 8,
        poll_s: float = 1.0,
        backoff_base_ms: int = 2_000,
    ) -> None:
        self.db = db
        self.clock = clock
        self.channels = channels
        self.max_attempts = max_attempts
        self.poll_s = poll_s
        self.backoff_base_ms = backoff_base_ms
        self._slots = asyncio.Semaphore(concurrency)
        self._wake = asyncio.Event()
        self._inflight: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None
        self.sent = 0
        self.failed = 0

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        async with httpx.AsyncClient() as client:
            self._client = client
            try:
                while True:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self.poll_s)
                    self._wake.clear()
                    # taken before the read: a delivery that ends after the read still counts
                    # as in flight, so a row read as pending just before it was marked sent is
                    # not sent twice
                    busy = frozenset(self._inflight)
                    try:
                        due = await self.db.execute_read_fn(functools.partial(self._due, busy=busy))
                    except KarkhanaError as exc:
                        log.error("cannot read the notification outbox: %s", exc.message)
                        continue
                    for item in due:
                        self._inflight.add(item.id)
                        task = asyncio.create_task(self._deliver(item))
                        self._tasks.add(task)
                        task.add_done_callback(self._done)
            finally:
                for task in list(self._tasks):
                    task.cancel()
                for task in list(self._tasks):
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                self._client = None

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.critical("a notification delivery crashed", exc_info=task.exception())

    def _due(self, conn: sqlite3.Connection, busy: frozenset[int]) -> list[Outgoing]:
        rows = conn.execute(
            "SELECT o.id, o.alarm_id, o.channel_id, o.address, o.subject, o.body, o.attempts,"
            " o.deferred, a.state FROM notify_outbox o JOIN alarms a ON a.id = o.alarm_id"
            " WHERE o.state = 'pending' AND o.next_ms <= ? ORDER BY o.next_ms LIMIT 200",
            (self.clock.now_ms(),),
        ).fetchall()
        return [
            Outgoing(r[0], r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7]), r[8])
            for r in rows
            if r[0] not in busy
        ]

    async def _deliver(self, item: Outgoing) -> None:
        try:
            async with self._slots:
                await self._attempt(item)
        finally:
            self._inflight.discard(item.id)

    async def _attempt(self, item: Outgoing) -> None:
        channel = self.channels().get(item.channel_id)
        if item.alarm_state == "shelved":
            await self._finish(item, "dropped", "the alarm is shelved")
            return
        if item.deferred and item.alarm_state == "cleared":
            await self._finish(item, "dropped", "cleared during quiet hours")
            return
        if channel is None:
            await self._finish(item, "failed", f"no channel {item.channel_id}")
            return
        try:
            if isinstance(channel, EmailChannel):
                await asyncio.to_thread(send_email, channel, item.address, item.subject, item.body)
            else:
                assert self._client is not None
                await send_webhook(self._client, channel, item.body)
        except DeliveryError as exc:
            attempts = item.attempts + 1
            if attempts >= self.max_attempts:
                log.error(
                    "notification %d (alarm %s) failed for good after %d attempts: %s",
                    item.id,
                    item.alarm_id,
                    attempts,
                    exc.message,
                )
                await self._finish(item, "failed", exc.message)
                return
            wait = backoff_ms(attempts, self.backoff_base_ms)
            log.warning(
                "notification %d (alarm %s) attempt %d failed: %s; retrying in %.1f s",
                item.id,
                item.alarm_id,
                attempts,
                exc.message,
                wait / 1000,
            )
            await self._write(
                "UPDATE notify_outbox SET attempts = ?, next_ms = ?, last_error = ? WHERE id = ?",
                (attempts, self.clock.now_ms() + wait, exc.message[:500], item.id),
            )
            return
        await self._finish(item, "sent", None)

    async def _finish(self, item: Outgoing, state: str, error: str | None) -> None:
        if state == "sent":
            self.sent += 1
        elif state == "failed":
            self.failed += 1
        attempts = item.attempts + (1 if state in ("sent", "failed") else 0)
        await self._write(
            "UPDATE notify_outbox SET state = ?, attempts = ?, sent_ms = ?, last_error = ?"
            " WHERE id = ?",
            (state, attempts, self.clock.now_ms(), error, item.id),
        )

    async def _write(self, sql: str, params: tuple[Any, ...]) -> None:
        try:
            await self.db.execute_write_fn(lambda conn: conn.execute(sql, params))
        except KarkhanaError as exc:
            log.error("cannot update the notification outbox: %s", exc.message)
