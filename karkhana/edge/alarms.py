"""Alarms on the edge: the server's rules evaluated by the same pure engine, also offline.

The agent fetches the rules bound to its children's machines from the server
(``GET /api/v1/edge/rules``) whenever the link is up, and keeps the last copy in
``<data_dir>/rules.json``, so that after a power cut with the internet still down it starts with
the rules it had. Every sample that enters the durable buffer goes through
:class:`~karkhana.alarms.engine.RuleSet`; a tick every second lets durations and stale signals
fire when no sample comes.

What a raised or cleared alarm does here, before and without the server:

- the event goes into an outbox (``<data_dir>/alarms.db``, written before anything else happens,
  fsync'd), and is sent to the server (``POST /api/v1/edge/alarms``) once it can be; the server
  imports events by their id, so an alarm raised here and sent twice, or also raised by the
  server from the same samples, is one alarm;
- an optional local webhook (``alarm_webhook``: a siren controller, a local SMS modem, a shop
  floor display) gets the event with its message in English and Urdu;
- an optional Modbus coil (``alarm_coil = "host:port/unit/address"``: a buzzer or a stack light
  through a Modbus relay module) is switched on while any alarm raised here is open, and off
  when the last one clears.

A failing webhook or relay is logged and counted and never stops the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from karkhana.alarms.engine import (
    AlarmEvent,
    BoundRule,
    RuleSet,
    Source,
    bind,
    event_to_json,
)
from karkhana.alarms.messages import Subject, default_catalogue, render
from karkhana.alarms.model import parse_rule
from karkhana.core.errors import ConfigError, InvalidPayload, KarkhanaError
from karkhana.core.files import write_atomically
from karkhana.core.model import Sample

log = logging.getLogger(__name__)

TICK_S = 1.0
SYNC_S = 60.0
"""How often the rules are fetched again while the link is up."""
SEND_BATCH = 200
_COIL = re.compile(r"^(?P<host>[^:/\s]+):(?P<port>\d{1,5})/(?P<unit>\d{1,3})/(?P<address>\d{1,5})$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL,
    kind TEXT NOT NULL,
    event TEXT NOT NULL,
    sent INTEGER NOT NULL DEFAULT 0,
    UNIQUE (id, kind)
);
"""


@dataclass(frozen=True, slots=True)
class Coil:
    """A Modbus coil driven by the edge's alarms (a buzzer or stack light relay)."""

    host: str
    port: int
    unit: int
    address: int

    @classmethod
    def parse(cls, text: str) -> Coil:
        m = _COIL.match(text.strip())
        if m is None:
            raise ConfigError(
                f"alarm_coil: expected host:port/unit/address (like 192.168.1.60:502/1/0),"
                f" got {text!r}"
            )
        port, unit, address = int(m["port"]), int(m["unit"]), int(m["address"])
        if not (0 < port < 65536 and unit < 256 and address < 65536):
            raise ConfigError(f"alarm_coil: port, unit or address out of range in {text!r}")
        return cls(m["host"], port, unit, address)


def bind_rules(data: Any) -> list[BoundRule]:
    """Bound rules from the server's ``/api/v1/edge/rules`` answer (or its cached copy).

    A rule that does not parse is skipped and logged: one bad rule must not take the others'
    protection away."""
    if not isinstance(data, dict) or not isinstance(data.get("rules"), list):
        raise InvalidPayload('rules: expected {"rules": [...]}')
    bound: list[BoundRule] = []
    for i, item in enumerate(data["rules"]):
        try:
            if not isinstance(item, dict):
                raise InvalidPayload("expected an object")
            rule = parse_rule(item.get("rule"))
            signals = item.get("signals")
            if not isinstance(signals, dict):
                raise InvalidPayload("signals: expected an object")
            sources = {
                str(name): Source(str(s["device_id"]), str(s["key"]), s.get("unit"))
                for name, s in signals.items()
            }
            one = bind(
                rule,
                str(item["machine_id"]),
                sources,
                timezone=str(item.get("timezone") or "UTC"),
                origin="edge",
                site_id=item.get("site_id"),
                machine_name=str(item.get("machine_name") or item["machine_id"]),
                template=item.get("template"),
            )
        except (InvalidPayload, KeyError, TypeError, ValueError) as exc:
            log.warning("edge rule %d skipped: %s", i, getattr(exc, "message", exc))
            continue
        if one is not None:
            bound.append(one)
    return bound


class EdgeAlarms:
    """The edge's rule engine, outbox and local actions."""

    def __init__(
        self,
        data_dir: Path,
        *,
        client: httpx.AsyncClient | None = None,
        now_ms: Callable[[], int],
        webhook: str = "",
        coil: Coil | None = None,
        write_coil: Callable[[Coil, bool], Awaitable[None]] | None = None,
        link_up: Callable[[], bool] = lambda: True,
    ) -> None:
        self.data_dir = data_dir
        self.rules_path = data_dir / "rules.json"
        self.client = client
        self.now_ms = now_ms
        self.webhook = webhook
        self.coil = coil
        self.write_coil = write_coil or modbus_coil
        self.link_up = link_up
        self.rules = RuleSet()
        self.stats = {
            "rules": 0,
            "raised": 0,
            "cleared": 0,
            "unsent": 0,
            "sent": 0,
            "webhook_failures": 0,
            "coil_failures": 0,
            "rules_fetched_ms": 0,
        }
        self.last_error = ""
        self._open: set[str] = set()
        self._coil_on: bool | None = None
        self._actions: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        data_dir.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(data_dir / "alarms.db", isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._count_unsent()
        self._load_cached()
        self._latch_open()

    # -- rules -------------------------------------------------------------------------------
    def _load_cached(self) -> None:
        try:
            data = json.loads(self.rules_path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.error("cached edge rules unreadable (%s); waiting for the server's", exc)
            return
        self._use(data)

    def _latch_open(self) -> None:
        """Alarms raised here before a restart and not cleared stay open: their rules start as
        raised, so they clear later instead of being raised a second time."""
        rows = self._db.execute(
            "SELECT event FROM outbox WHERE kind = 'raised' AND id NOT IN"
            " (SELECT id FROM outbox WHERE kind = 'cleared')"
        ).fetchall()
        now = self.now_ms()
        for (text,) in rows:
            e = json.loads(text)
            self.rules.latch(e["rule_id"], e["machine_id"], e["ts"], e["id"], now)
            self._open.add(e["id"])

    def _use(self, data: Any) -> None:
        bound = bind_rules(data)
        self.rules.replace(bound)
        self.stats["rules"] = len(bound)

    async def fetch_rules(self) -> bool:
        """Fetch the rules from the server and cache them; False when the server is away."""
        if self.client is None:
            return False
        try:
            r = await self.client.get("/api/v1/edge/rules")
        except httpx.HTTPError as exc:
            self.last_error = f"rules: {type(exc).__name__}"
            return False
        if r.status_code != 200:
            self.last_error = f"rules: HTTP {r.status_code}"
            return False
        try:
            data = r.json()
            self._use(data)
        except (ValueError, InvalidPayload) as exc:
            self.last_error = f"rules: {exc}"
            log.error("the server's edge rules were refused: %s", exc)
            return False
        with contextlib.suppress(OSError):
            write_atomically(self.rules_path, json.dumps(data).encode(), 0o600)
        self.stats["rules_fetched_ms"] = self.now_ms()
        return True

    # -- evaluation --------------------------------------------------------------------------
    def feed(self, samples: Sequence[Sample]) -> list[AlarmEvent]:
        """Evaluate samples that are now in the durable buffer (called on the event loop)."""
        events = self.rules.feed(samples)
        if events:
            self._handle(events)
        return events

    def tick(self) -> list[AlarmEvent]:
        events = self.rules.tick(self.now_ms())
        if events:
            self._handle(events)
        return events

    def _handle(self, events: list[AlarmEvent]) -> None:
        rows = [(e.id, e.kind, json.dumps(event_to_json(e))) for e in events]
        try:
            self._db.executemany(
                "INSERT OR IGNORE INTO outbox (id, kind, event) VALUES (?, ?, ?)", rows
            )
        except sqlite3.Error as exc:  # a full disk must not silence the local actions
            log.error("alarm outbox not written: %s", exc)
        for e in events:
            self.stats["raised" if e.kind == "raised" else "cleared"] += 1
            log.warning("edge alarm %s: %s on %s (%s)", e.kind, e.rule_id, e.machine_id, e.id)
            if e.kind == "raised":
                self._open.add(e.id)
            else:
                self._open.discard(e.id)
            if self.webhook:
                self._spawn(self._post_webhook(e))
        self._count_unsent()
        if self.coil is not None:
            self._spawn(self._drive_coil())
        self._wake.set()

    def _spawn(self, job: Awaitable[None]) -> None:
        task = asyncio.ensure_future(job)
        self._actions.add(task)
        task.add_done_callback(self._actions.discard)

    def _texts(self, e: AlarmEvent) -> dict[str, str]:
        rule = next((r for r in self.rules.rules if r.key == (e.rule_id, e.machine_id)), None)
        subject = Subject(
            rule.machine_name if rule else e.machine_id,
            rule.template if rule else None,
            e.signal,
            e.signal.replace("_", " "),
        )
        cat = default_catalogue()
        tz = str(rule.tz) if rule is not None and rule.tz is not None else "Asia/Karachi"
        return {
            lang: render(cat, lang, e.message, subject, e.value, e.limit, e.unit, e.ts, tz)
            for lang in ("en", "ur")
        }

    async def _post_webhook(self, e: AlarmEvent) -> None:
        """POST the event to the local webhook; tried again after 1, 4 and 16 s."""
        body = {**event_to_json(e), "text": self._texts(e)}
        async with httpx.AsyncClient(timeout=5) as client:
            for attempt, pause in enumerate((1.0, 4.0, 16.0, None)):
                try:
                    r = await client.post(self.webhook, json=body)
                    r.raise_for_status()
                    return
                except httpx.HTTPError as exc:
                    self.stats["webhook_failures"] += 1
                    log.error(
                        "local alarm webhook failed (attempt %d): %s",
                        attempt + 1,
                        exc or type(exc).__name__,
                    )
                if pause is not None:
                    await asyncio.sleep(pause)

    async def _drive_coil(self) -> None:
        assert self.coil is not None
        on = bool(self._open)
        if on == self._coil_on:
            return
        try:
            await self.write_coil(self.coil, on)
        except KarkhanaError as exc:
            self.stats["coil_failures"] += 1
            log.error("alarm coil not switched %s: %s", "on" if on else "off", exc.message)
            return
        self._coil_on = on

    # -- outbox ------------------------------------------------------------------------------
    def _count_unsent(self) -> None:
        self.stats["unsent"] = self._db.execute(
            "SELECT count(*) FROM outbox WHERE sent = 0"
        ).fetchone()[0]

    async def send(self) -> int:
        """Send unsent events to the server, oldest first; how many the server took."""
        if self.client is None:
            return 0
        sent = 0
        while True:
            rows = self._db.execute(
                "SELECT seq, event FROM outbox WHERE sent = 0 ORDER BY seq LIMIT ?", (SEND_BATCH,)
            ).fetchall()
            if not rows:
                break
            try:
                r = await self.client.post(
                    "/api/v1/edge/alarms", json={"events": [json.loads(e) for _, e in rows]}
                )
            except httpx.HTTPError as exc:
                self.last_error = f"alarms: {type(exc).__name__}"
                break
            if r.status_code != 200:
                self.last_error = f"alarms: HTTP {r.status_code}"
                break
            self._db.executemany(
                "UPDATE outbox SET sent = 1 WHERE seq = ?", [(s,) for s, _ in rows]
            )
            sent += len(rows)
        if sent:
            self.stats["sent"] += sent
            # keep a day's worth of sent events for `edge status`; older ones go
            self._db.execute(
                "DELETE FROM outbox WHERE sent = 1 AND seq NOT IN"
                " (SELECT seq FROM outbox ORDER BY seq DESC LIMIT 10000)"
            )
        self._count_unsent()
        return sent

    async def run(self) -> None:
        """Tick, fetch the rules now and then, and send the outbox when the link is up."""
        last_fetch = -SYNC_S
        loop = asyncio.get_running_loop()
        while True:
            self.tick()
            if self.link_up() or self.stats["unsent"]:
                if loop.time() - last_fetch >= SYNC_S and await self.fetch_rules():
                    last_fetch = loop.time()
                if self.stats["unsent"]:
                    await self.send()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), TICK_S)

    def status(self) -> dict[str, Any]:
        return {**self.stats, "open": len(self._open), "last_error": self.last_error}

    async def close(self) -> None:
        for task in list(self._actions):
            task.cancel()
        self._db.close()


async def modbus_coil(coil: Coil, on: bool) -> None:
    """Switch one coil of a Modbus TCP relay module."""
    from pymodbus.client import AsyncModbusTcpClient
    from pymodbus.exceptions import ModbusException

    client = AsyncModbusTcpClient(coil.host, port=coil.port, timeout=3, retries=1)
    try:
        if not await client.connect():
            raise KarkhanaError(f"{coil.host}:{coil.port}: cannot connect")
        response: Any = await client.write_coil(coil.address, on, device_id=coil.unit)
        if response.isError():
            raise KarkhanaError(f"{coil.host}:{coil.port}: exception answer {response}")
    except (ModbusException, OSError, TimeoutError) as exc:
        raise KarkhanaError(f"{coil.host}:{coil.port}: {exc}") from None
    finally:
        client.close()
