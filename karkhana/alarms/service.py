"""The alarm service: evaluates committed samples against the rules, keeps the alarms' life
cycle in the store, and plans notifications into the durable outbox.

Rules, channels and recipients live in the database and in memory; every change goes through the
single writer with its audit row in the same transaction. Rule state is not stored: after a
restart (or a rule change) each rule starts fresh, and a rule whose alarm is still open starts as
raised, so that it clears the open alarm instead of raising a second one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import secrets
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from karkhana.alarms.dispatch import Dispatcher
from karkhana.alarms.engine import AlarmEvent, BoundRule, RuleSet, Source, bind
from karkhana.alarms.messages import (
    LANGUAGES,
    Catalogue,
    Language,
    Subject,
    clock_time,
    default_catalogue,
    render,
    wrap,
)
from karkhana.alarms.model import Rule, leaves, parse_rule, rule_to_json
from karkhana.alarms.notify import (
    Channel,
    EmailChannel,
    Recipient,
    channel_to_json,
    parse_channel,
    parse_recipient,
    payload_templates,
    quiet_until,
    recipient_to_json,
    render_payload,
    routed,
)
from karkhana.assets.service import AssetService
from karkhana.core.bus import Bus, Subscription
from karkhana.core.clock import Clock
from karkhana.core.errors import Conflict, Forbidden, InvalidPayload, KarkhanaError, NotFound
from karkhana.core.model import Sample
from karkhana.security.audit import AuditLog
from karkhana.store.base import Store
from karkhana.store.database import Database

log = logging.getLogger(__name__)

Sites = frozenset[str] | None
"""The sites a caller may see; None: all of them (admins)."""

ALARM_COLUMNS = (
    "id, rule_id, machine_id, site_id, signal, severity, state, message_en, message_ur, value,"
    " limit_value, unit, raised_ms, acked_ms, acked_by, ack_comment, cleared_ms,"
    " shelved_until_ms, count, origin, last_ms, level"
)
MAX_SHELVE_MIN = 7 * 24 * 60
KEEP_MS = 90 * 86_400_000
"""How long sent notifications and the ids of raise events are kept."""


@dataclass(frozen=True, slots=True)
class MachineInfo:
    id: str
    name: str
    template: str
    site_id: str
    timezone: str
    signals: Mapping[str, Source]
    names: Mapping[str, str]
    """English names of the signals, from the template."""


def alarm_json(row: Sequence[Any]) -> dict[str, Any]:
    """An alarms row (ALARM_COLUMNS order) as the API shows it."""
    (
        aid,
        rule_id,
        machine_id,
        site_id,
        signal,
        severity,
        state,
        en,
        ur,
        value,
        limit,
        unit,
        raised,
        acked,
        acked_by,
        comment,
        cleared,
        shelved,
        count,
        origin,
        last,
        _level,
    ) = row
    return {
        "id": aid,
        "rule_id": rule_id,
        "machine_id": machine_id,
        "site_id": site_id,
        "signal": signal,
        "severity": severity,
        "state": state,
        "message": {"en": en, "ur": ur},
        "value": None if value is None else json.loads(value),
        "limit": limit,
        "unit": unit,
        "raised_ms": raised,
        "acked_ms": acked,
        "acked_by": acked_by,
        "ack_comment": comment,
        "cleared_ms": cleared,
        "shelved_until_ms": shelved,
        "count": count,
        "last_ms": last,
        "origin": origin,
        "tta_ms": None if acked is None else acked - raised,
        "ttc_ms": None if cleared is None else cleared - raised,
    }


class AlarmService:
    def __init__(
        self,
        db: Database,
        assets: AssetService,
        audit: AuditLog,
        clock: Clock,
        *,
        store: Store | None = None,
        catalogue: Catalogue | None = None,
        tick_s: float = 1.0,
        max_attempts: int = 8,
        backoff_base_ms: int = 2_000,
    ) -> None:
        self.db = db
        self.store = store
        self.assets = assets
        self.audit = audit
        self.clock = clock
        self.catalogue = catalogue or default_catalogue()
        self.tick_s = tick_s
        self.ruleset = RuleSet()
        self.rules: dict[str, Rule] = {}
        self.machines: dict[str, MachineInfo] = {}
        self.channels: dict[str, Channel] = {}
        self.recipients: dict[str, Recipient] = {}
        self.dispatcher = Dispatcher(
            db,
            clock,
            lambda: self.channels,
            max_attempts=max_attempts,
            backoff_base_ms=backoff_base_ms,
        )
        self.samples_seen = 0
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._subscription: Subscription | None = None
        self._machine_signature: object = None

    # -- running -----------------------------------------------------------------------
    async def start(self, bus: Bus | None = None) -> None:
        await self.reload()
        if bus is not None:
            self._subscription = bus.subscribe(maxsize=10_000)
            self._tasks.append(asyncio.create_task(self._consume(self._subscription)))
        self._tasks.append(asyncio.create_task(self._tick_loop()))
        self._tasks.append(asyncio.create_task(self.dispatcher.run()))
        for task in self._tasks:
            task.add_done_callback(_report_crash)

    async def stop(self) -> None:
        if self._subscription is not None:
            self._subscription.close()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def _consume(self, sub: Subscription) -> None:
        while True:
            samples = await sub.get()
            try:
                await self.process(samples)
            except KarkhanaError as exc:
                log.error("alarm evaluation could not store its result: %s", exc.message)

    async def _tick_loop(self) -> None:
        beats = 0
        while True:
            await asyncio.sleep(self.tick_s)
            beats += 1
            try:
                if beats % 10 == 0:
                    await self.refresh_machines()
                if beats % 3600 == 1:
                    await self.prune()
                await self.tick()
            except KarkhanaError as exc:
                log.error("alarm housekeeping failed: %s", exc.message)

    async def process(self, samples: Sequence[Sample]) -> list[AlarmEvent]:
        """Evaluate committed samples; store and notify what they raise or clear."""
        self.samples_seen += len(samples)
        events = self.ruleset.feed(samples)
        if events:
            await self._apply(events)
        return events

    async def tick(self, now_ms: int | None = None) -> None:
        """Time passing: stale signals and durations, shelves that run out, escalation."""
        now = self.clock.now_ms() if now_ms is None else now_ms
        events = self.ruleset.tick(now)
        if events:
            await self._apply(events)

        def read(conn: sqlite3.Connection) -> tuple[int, list[Any]]:
            expired = conn.execute(
                "SELECT COUNT(*) FROM alarms WHERE state = 'shelved' AND shelved_until_ms <= ?",
                (now,),
            ).fetchone()[0]
            waiting = conn.execute(
                "SELECT rule_id, level, raised_ms FROM alarms"
                " WHERE state = 'raised' AND acked_ms IS NULL"
            ).fetchall()
            return expired, waiting

        expired, waiting = await self.db.execute_read_fn(read)
        if expired or any(self._escalation_due(r, lv, raised, now) for r, lv, raised in waiting):
            async with self._lock:
                planned = await self.db.execute_write_fn(lambda c: self._housekeep(c, now))
            if planned:
                self.dispatcher.wake()

    async def prune(self, now_ms: int | None = None) -> int:
        """Forget delivered, failed and dropped notifications, and the raise ids kept for
        idempotent imports, after ``KEEP_MS``; alarms themselves are history and stay."""
        cutoff = (self.clock.now_ms() if now_ms is None else now_ms) - KEEP_MS

        def write(conn: sqlite3.Connection) -> int:
            gone = conn.execute(
                "DELETE FROM notify_outbox WHERE state != 'pending' AND created_ms < ?", (cutoff,)
            ).rowcount
            return gone + conn.execute("DELETE FROM alarm_raises WHERE ts < ?", (cutoff,)).rowcount

        return await self.db.execute_write_fn(write)

    def _escalation_due(self, rule_id: str, level: int, raised_ms: int, now: int) -> bool:
        rule = self.rules.get(rule_id)
        steps = rule.notify.escalate if rule else ()
        return level < len(steps) and now >= raised_ms + steps[level].after_min * 60_000

    # -- loading and binding -----------------------------------------------------------
    async def reload(self) -> None:
        def read(conn: sqlite3.Connection) -> tuple[list[Any], list[Any], list[Any]]:
            return (
                conn.execute("SELECT id, body FROM alarm_rules").fetchall(),
                conn.execute("SELECT id, body FROM notify_channels").fetchall(),
                conn.execute("SELECT id, body FROM notify_recipients").fetchall(),
            )

        rules, channels, recipients = await self.db.execute_read_fn(read)
        self.rules = {}
        for rid, body in rules:
            try:
                self.rules[rid] = parse_rule(json.loads(body), rid)
            except (InvalidPayload, ValueError) as exc:
                log.error("stored alarm rule %s cannot be read and is skipped: %s", rid, exc)
        self.channels = {}
        for cid, body in channels:
            try:
                self.channels[cid] = parse_channel(json.loads(body), cid)
            except (InvalidPayload, ValueError) as exc:
                log.error("stored notification channel %s is skipped: %s", cid, exc)
        self.recipients = {}
        for rid, body in recipients:
            try:
                self.recipients[rid] = parse_recipient(json.loads(body), rid)
            except (InvalidPayload, ValueError) as exc:
                log.error("stored notification recipient %s is skipped: %s", rid, exc)
        await self.refresh_machines(force=True)

    async def refresh_machines(self, *, force: bool = False) -> None:
        """Re-read machines and their signals when they changed; rebind the rules."""

        def read(conn: sqlite3.Connection) -> tuple[list[Any], list[Any]]:
            machines = conn.execute(
                "SELECT m.id, m.name, m.template, a.site_id, s.timezone FROM machines m"
                " JOIN lines l ON l.id = m.line_id JOIN areas a ON a.id = l.area_id"
                " JOIN sites s ON s.id = a.site_id"
            ).fetchall()
            signals = conn.execute(
                "SELECT machine_id, name, device_id, key, unit FROM signals"
            ).fetchall()
            return machines, signals

        machines, signals = await self.db.execute_read_fn(read)
        signature = (tuple(sorted(machines)), tuple(sorted(signals)))
        if not force and signature == self._machine_signature:
            return
        self._machine_signature = signature
        bound: dict[str, dict[str, Source]] = {}
        for machine_id, name, device_id, key, unit in signals:
            bound.setdefault(machine_id, {})[name] = Source(device_id, key, unit)
        infos = {}
        for mid, name, template_id, site_id, tz in machines:
            template = self.assets.templates.get(template_id)
            names = {s.key: s.name for s in template.signals} if template else {}
            infos[mid] = MachineInfo(mid, name, template_id, site_id, tz, bound.get(mid, {}), names)
        self.machines = infos
        await self._rebind()

    def _bind_all(self) -> list[BoundRule]:
        return [b for rule in self.rules.values() if rule.enabled for b in self.bind(rule)]

    def bind(self, rule: Rule) -> list[BoundRule]:
        """The rule bound to each machine it watches (its machine, or every machine of its
        template in its site) that has all of its signals."""
        if rule.machine_id is not None:
            targets = [self.machines[rule.machine_id]] if rule.machine_id in self.machines else []
        else:
            targets = [
                m
                for m in self.machines.values()
                if m.template == rule.template
                and (rule.site_id is None or m.site_id == rule.site_id)
            ]
        out = []
        for m in targets:
            b = bind(
                rule,
                m.id,
                m.signals,
                timezone=m.timezone,
                site_id=m.site_id,
                machine_name=m.name,
                template=m.template,
            )
            if b is not None:
                out.append(b)
        return out

    async def _rebind(self) -> None:
        """Bind the rules again; rules that start fresh (new, changed, or after a restart) are
        latched to their open alarm and primed with the latest value of each of their signals,
        so that a new rule judges the current value at once and a sample committed just before
        a restart still raises its alarm."""
        self.ruleset.replace(self._bind_all())
        fresh = self.ruleset.fresh()
        open_ = await self.db.execute_read_fn(
            lambda c: c.execute(
                "SELECT id, rule_id, machine_id, raised_ms FROM alarms WHERE state != 'cleared'"
            ).fetchall()
        )
        now = self.clock.now_ms()
        orphans = []
        for aid, rule_id, machine_id, raised in open_:
            rule = self.rules.get(rule_id)
            if rule is None or not rule.enabled or machine_id not in self.machines:
                orphans.append(aid)
            else:
                self.ruleset.latch(rule_id, machine_id, raised, aid, now)
        if orphans:
            await self._close(orphans, now)
        if self.store is None or not fresh:
            return
        devices = {s.device_id for i in fresh for s in self.ruleset.rules[i].sources}
        booleans = self._boolean_keys()
        latest = [
            Sample(
                device,
                value.key,
                value.ts,
                bool(value.value) if (device, value.key) in booleans else value.value,
            )
            for device in sorted(devices)
            for value in await self.store.latest(device)
        ]
        latest.sort(key=lambda s: s.ts)
        events = self.ruleset.feed_some(fresh, latest)
        if events:
            await self._apply(events)
        # An old sample can name an alarm that has since been cleared (say, while the rule was
        # disabled): the condition still holds, so it is raised again now.
        still_open = {
            aid
            for (aid,) in await self.db.execute_read_fn(
                lambda c: c.execute("SELECT id FROM alarms WHERE state != 'cleared'").fetchall()
            )
        }
        again = self.ruleset.unlatch(fresh, still_open)
        if again:
            events = self.ruleset.tick_some(again, now)
            if events:
                await self._apply(events)

    async def _close(self, alarm_ids: Sequence[str], now: int) -> None:
        """Clear alarms that nothing watches any more (rule disabled, machine removed)."""

        def write(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE alarms SET state = 'cleared', cleared_ms = ?, last_ms = ?,"
                " shelved_until_ms = NULL WHERE id = ? AND cleared_ms IS NULL",
                [(now, now, aid) for aid in alarm_ids],
            )

        async with self._lock:
            await self.db.execute_write_fn(write)

    def _boolean_keys(self) -> set[tuple[str, str]]:
        """Device keys of boolean signals (the store keeps booleans as numbers)."""
        keys = set()
        for m in self.machines.values():
            template = self.assets.templates.get(m.template)
            if template is None:
                continue
            for spec in template.signals:
                source = m.signals.get(spec.key)
                if spec.kind == "bool" and source is not None:
                    keys.add((source.device_id, source.key))
        return keys

    # -- events ------------------------------------------------------------------------
    def _texts(self, ev: AlarmEvent) -> dict[Language, str]:
        m = self.machines.get(ev.machine_id)
        subject = Subject(
            m.name if m else ev.machine_id,
            m.template if m else None,
            ev.signal,
            m.names.get(ev.signal, ev.signal) if m else ev.signal,
        )
        tz = m.timezone if m else "UTC"
        return {
            lang: render(
                self.catalogue, lang, ev.message, subject, ev.value, ev.limit, ev.unit, ev.ts, tz
            )
            for lang in LANGUAGES
        }

    async def _apply(self, events: Sequence[AlarmEvent]) -> int:
        """Store events; returns how many changed something (imports already seen do not)."""
        now = self.clock.now_ms()
        prepared = [(ev, self._texts(ev) if ev.kind == "raised" else None) for ev in events]

        def write(conn: sqlite3.Connection) -> tuple[int, int]:
            changed = planned = 0
            for ev, texts in prepared:
                if texts is not None:
                    done, n = self._raise(conn, ev, texts, now)
                else:
                    done, n = self._clear(conn, ev, now)
                changed += done
                planned += n
            return changed, planned

        async with self._lock:
            changed, planned = await self.db.execute_write_fn(write)
        if planned:
            self.dispatcher.wake()
        return changed

    def _raise(
        self, conn: sqlite3.Connection, ev: AlarmEvent, texts: Mapping[Language, str], now: int
    ) -> tuple[int, int]:
        if conn.execute("SELECT 1 FROM alarm_raises WHERE event_id = ?", (ev.id,)).fetchone():
            return 0, 0
        rule = self.rules.get(ev.rule_id)
        window_ms = (rule.repeat_window_s if rule else 600) * 1000
        last = conn.execute(
            "SELECT id, state, cleared_ms, acked_ms FROM alarms WHERE rule_id = ? AND machine_id = ?"
            " ORDER BY raised_ms DESC LIMIT 1",
            (ev.rule_id, ev.machine_id),
        ).fetchone()
        value = json.dumps(ev.value)
        if last is not None and (last[2] is None or ev.ts - last[2] <= window_ms):
            aid, state, cleared, acked = last
            if cleared is not None:
                state = "acknowledged" if acked is not None else "raised"
            conn.execute(
                "UPDATE alarms SET count = count + 1, last_ms = ?, value = ?, limit_value = ?,"
                " state = ?, cleared_ms = NULL, message_en = ?, message_ur = ? WHERE id = ?",
                (ev.ts, value, ev.limit, state, texts["en"], texts["ur"], aid),
            )
            conn.execute(
                "INSERT INTO alarm_raises (event_id, alarm_id, ts) VALUES (?, ?, ?)",
                (ev.id, aid, ev.ts),
            )
            return 1, 0
        m = self.machines.get(ev.machine_id)
        site_id = m.site_id if m else None
        conn.execute(
            f"INSERT INTO alarms ({ALARM_COLUMNS}) VALUES ({', '.join('?' * 22)})",
            (
                ev.id,
                ev.rule_id,
                ev.machine_id,
                site_id,
                ev.signal,
                ev.severity,
                "raised",
                texts["en"],
                texts["ur"],
                value,
                ev.limit,
                ev.unit,
                ev.ts,
                None,
                None,
                None,
                None,
                None,
                1,
                ev.origin,
                ev.ts,
                0,
            ),
        )
        conn.execute(
            "INSERT INTO alarm_raises (event_id, alarm_id, ts) VALUES (?, ?, ?)",
            (ev.id, ev.id, ev.ts),
        )
        row = conn.execute(f"SELECT {ALARM_COLUMNS} FROM alarms WHERE id = ?", (ev.id,)).fetchone()
        roles = rule.notify.roles if rule else ("operator",)
        return 1, self._plan(conn, alarm_json(row), roles, "raised", 0, now)

    def _clear(self, conn: sqlite3.Connection, ev: AlarmEvent, now: int) -> tuple[int, int]:
        row = conn.execute(
            "SELECT alarm_id FROM alarm_raises WHERE event_id = ?", (ev.id,)
        ).fetchone()
        if row is None:
            row = conn.execute(
                "SELECT id FROM alarms WHERE rule_id = ? AND machine_id = ? AND cleared_ms IS NULL"
                " AND raised_ms <= ? ORDER BY raised_ms DESC LIMIT 1",
                (ev.rule_id, ev.machine_id, ev.ts),
            ).fetchone()
        if row is None:
            return 0, 0
        if not conn.execute(
            "UPDATE alarms SET state = 'cleared', cleared_ms = ?, last_ms = ?,"
            " shelved_until_ms = NULL WHERE id = ? AND cleared_ms IS NULL",
            (ev.ts, ev.ts, row[0]),
        ).rowcount:
            return 0, 0
        rule = self.rules.get(ev.rule_id)
        if rule is None or not rule.notify.on_clear:
            return 1, 0
        alarm_row = conn.execute(
            f"SELECT {ALARM_COLUMNS} FROM alarms WHERE id = ?", (row[0],)
        ).fetchone()
        told = {*rule.notify.roles}
        for step in rule.notify.escalate[: alarm_row[-1]]:
            told.update(step.roles)
        return 1, self._plan(conn, alarm_json(alarm_row), sorted(told), "cleared", 0, now)

    def _plan(
        self,
        conn: sqlite3.Connection,
        alarm: Mapping[str, Any],
        roles: Iterable[str],
        reason: str,
        minutes: int,
        now: int,
    ) -> int:
        """Outbox rows for everyone routed to this alarm; returns how many."""
        rows = []
        severity = str(alarm["severity"])
        for person in routed(self.recipients.values(), roles, alarm["site_id"]):
            text = str(alarm["message"][person.language])
            if reason == "escalated":
                text = wrap(self.catalogue, person.language, "escalated", text, minutes)
            elif reason == "cleared":
                m = self.machines.get(str(alarm["machine_id"]))
                at = clock_time(alarm["cleared_ms"], m.timezone if m else "UTC")
                text = wrap(self.catalogue, person.language, "cleared", text, time=at)
            subject = f"[{severity}] {text}"[:160]
            wake = quiet_until(person.quiet, now, severity)
            for cid in person.channels:
                channel = self.channels.get(cid)
                if channel is None:
                    continue
                if isinstance(channel, EmailChannel):
                    if not person.email:
                        continue
                    address, body = person.email, text
                else:
                    template = payload_templates()[channel.template]
                    if "{phone}" in json.dumps(template.body) and not person.phone:
                        continue
                    fields = {
                        "text": text,
                        "phone": person.phone,
                        "email": person.email,
                        "name": person.name,
                        "sender": channel.sender,
                        "event": reason,
                        "alarm_id": str(alarm["id"]),
                        "severity": severity,
                        "machine_id": str(alarm["machine_id"]),
                        "signal": str(alarm["signal"]),
                    }
                    address = person.phone or person.email or person.id
                    body = json.dumps(
                        {
                            "content_type": template.content_type,
                            "body": render_payload(template, fields, alarm),
                        },
                        ensure_ascii=False,
                    )
                rows.append(
                    (
                        alarm["id"],
                        cid,
                        person.id,
                        address,
                        subject,
                        body,
                        reason,
                        int(wake is not None),
                        wake if wake is not None else now,
                        now,
                    )
                )
        conn.executemany(
            "INSERT INTO notify_outbox (alarm_id, channel_id, recipient_id, address, subject, body,"
            " reason, deferred, next_ms, created_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        return len(rows)

    def _housekeep(self, conn: sqlite3.Connection, now: int) -> int:
        conn.execute(
            "UPDATE alarms SET state = CASE WHEN acked_ms IS NULL THEN 'raised'"
            " ELSE 'acknowledged' END, shelved_until_ms = NULL"
            " WHERE state = 'shelved' AND shelved_until_ms <= ?",
            (now,),
        )
        planned = 0
        rows = conn.execute(
            f"SELECT {ALARM_COLUMNS} FROM alarms WHERE state = 'raised' AND acked_ms IS NULL"
        ).fetchall()
        for row in rows:
            alarm = alarm_json(row)
            level = row[-1]
            rule = self.rules.get(alarm["rule_id"])
            if rule is None or not self._escalation_due(rule.id, level, alarm["raised_ms"], now):
                continue
            step = rule.notify.escalate[level]
            planned += self._plan(conn, alarm, step.roles, "escalated", step.after_min, now)
            conn.execute("UPDATE alarms SET level = ? WHERE id = ?", (level + 1, alarm["id"]))
        return planned

    def edge_rules(self, devices: Iterable[str]) -> dict[str, Any]:
        """The enabled rules, bound per machine, whose signals all come from ``devices`` (an edge
        gateway and its children), in the form the edge agent binds again
        (``karkhana/edge/alarms.py``)."""
        wanted = set(devices)
        out = []
        for b in self.ruleset.rules:
            if not all(s.device_id in wanted for s in b.sources):
                continue
            m = self.machines.get(b.machine_id)
            signals = {
                leaf.signal: {"device_id": s.device_id, "key": s.key, "unit": s.unit}
                for leaf, s in zip(b.leaves, b.sources, strict=True)
            }
            out.append(
                {
                    "rule": rule_to_json(b.rule),
                    "machine_id": b.machine_id,
                    "machine_name": b.machine_name,
                    "template": b.template,
                    "site_id": b.site_id,
                    "timezone": m.timezone if m else "UTC",
                    "signals": signals,
                }
            )
        return {"rules": out}

    async def import_events(self, events: Iterable[AlarmEvent]) -> int:
        """Store alarm events raised elsewhere (an edge agent) exactly once; returns how many
        were new. Sending the same events again changes nothing."""
        return await self._apply(list(events))

    # -- alarms ------------------------------------------------------------------------
    async def list_alarms(
        self,
        sites: Sites,
        *,
        state: str = "open",
        machine_id: str | None = None,
        site_id: str | None = None,
        start: int | None = None,
        end: int | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        where: list[str] = []
        params: list[Any] = []
        if state == "open":
            where.append("state IN ('raised', 'acknowledged')")
        elif state != "all":
            where.append("state = ?")
            params.append(state)
        for column, value in (("machine_id", machine_id), ("site_id", site_id)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if start is not None:
            where.append("raised_ms >= ?")
            params.append(start)
        if end is not None:
            where.append("raised_ms < ?")
            params.append(end)
        if sites is not None:
            where.append(f"site_id IN ({', '.join('?' * len(sites))})")
            params.extend(sorted(sites))
        sql = f"SELECT {ALARM_COLUMNS} FROM alarms"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY raised_ms DESC LIMIT ?"
        params.append(limit)
        rows = await self.db.execute_read_fn(lambda c: c.execute(sql, params).fetchall())
        return [alarm_json(r) for r in rows]

    async def get_alarm(self, alarm_id: str, sites: Sites = None) -> dict[str, Any]:
        row = await self.db.execute_read_fn(
            lambda c: c.execute(
                f"SELECT {ALARM_COLUMNS} FROM alarms WHERE id = ?", (alarm_id,)
            ).fetchone()
        )
        if row is None or (sites is not None and row[3] not in sites):
            raise NotFound(f"no alarm {alarm_id}")
        return alarm_json(row)

    async def _change_alarm(
        self,
        alarm_id: str,
        sites: Sites,
        actor: str,
        action: str,
        source: str | None,
        change: Any,
    ) -> dict[str, Any]:
        def write(conn: sqlite3.Connection) -> dict[str, Any]:
            row = conn.execute(
                f"SELECT {ALARM_COLUMNS} FROM alarms WHERE id = ?", (alarm_id,)
            ).fetchone()
            if row is None or (sites is not None and row[3] not in sites):
                raise NotFound(f"no alarm {alarm_id}")
            before = alarm_json(row)
            change(conn, before)
            after = alarm_json(
                conn.execute(
                    f"SELECT {ALARM_COLUMNS} FROM alarms WHERE id = ?", (alarm_id,)
                ).fetchone()
            )
            keep = ("state", "acked_ms", "acked_by", "ack_comment", "shelved_until_ms")
            self.audit.append(
                conn,
                actor,
                action,
                f"alarm:{alarm_id}",
                before={k: before[k] for k in keep},
                after={k: after[k] for k in keep},
                source=source,
            )
            return after

        async with self._lock:
            return await self.db.execute_write_fn(write)

    async def acknowledge(
        self, alarm_id: str, actor: str, comment: str, sites: Sites, source: str | None = None
    ) -> dict[str, Any]:
        now = self.clock.now_ms()

        def change(conn: sqlite3.Connection, alarm: Mapping[str, Any]) -> None:
            if alarm["acked_ms"] is not None:
                raise Conflict(f"alarm {alarm_id} was acknowledged by {alarm['acked_by']}")
            state = "cleared" if alarm["state"] == "cleared" else "acknowledged"
            conn.execute(
                "UPDATE alarms SET state = ?, acked_ms = ?, acked_by = ?, ack_comment = ?,"
                " shelved_until_ms = NULL WHERE id = ?",
                (state, now, actor, comment, alarm_id),
            )

        return await self._change_alarm(alarm_id, sites, actor, "alarm.ack", source, change)

    async def shelve(
        self, alarm_id: str, actor: str, minutes: int, sites: Sites, source: str | None = None
    ) -> dict[str, Any]:
        if not 1 <= minutes <= MAX_SHELVE_MIN:
            raise InvalidPayload(f"minutes: from 1 to {MAX_SHELVE_MIN}")
        until = self.clock.now_ms() + minutes * 60_000

        def change(conn: sqlite3.Connection, alarm: Mapping[str, Any]) -> None:
            if alarm["state"] == "cleared":
                raise Conflict(f"alarm {alarm_id} has cleared; there is nothing to shelve")
            conn.execute(
                "UPDATE alarms SET state = 'shelved', shelved_until_ms = ? WHERE id = ?",
                (until, alarm_id),
            )

        return await self._change_alarm(alarm_id, sites, actor, "alarm.shelve", source, change)

    # -- rules -------------------------------------------------------------------------
    def site_of_rule(self, rule: Rule) -> str | None:
        if rule.machine_id is not None:
            m = self.machines.get(rule.machine_id)
            return m.site_id if m else rule.site_id
        return rule.site_id

    def _visible(self, rule: Rule, sites: Sites) -> bool:
        site = self.site_of_rule(rule)
        return sites is None or site is None or site in sites

    def list_rules(self, sites: Sites, machine_id: str | None = None) -> list[dict[str, Any]]:
        return [
            rule_to_json(r)
            for r in sorted(self.rules.values(), key=lambda r: r.id)
            if self._visible(r, sites) and (machine_id is None or r.machine_id == machine_id)
        ]

    def get_rule(self, rule_id: str, sites: Sites) -> dict[str, Any]:
        rule = self.rules.get(rule_id)
        if rule is None or not self._visible(rule, sites):
            raise NotFound(f"no rule {rule_id}")
        return rule_to_json(rule)

    async def _check_rule(self, rule: Rule, sites: Sites) -> Rule:
        """The rule with its site filled in, once its machine or template and signals exist and
        the caller may change rules there."""
        await self.refresh_machines()
        if rule.machine_id is not None:
            m = self.machines.get(rule.machine_id)
            if m is None:
                raise NotFound(f"no machine {rule.machine_id}")
            have = set(m.signals)
            rule = dataclasses.replace(rule, site_id=m.site_id)
            where = f"machine {m.id}"
        else:
            template = self.assets.templates.get(rule.template or "")
            if template is None:
                raise InvalidPayload(f"template: no machine template {rule.template}")
            have = {s.key for s in template.signals}
            where = f"template {template.id}"
            if rule.site_id is not None:
                await self.assets.site_of("sites", rule.site_id)  # NotFound for no such site
        for leaf in leaves(rule.condition):
            if leaf.signal not in have:
                raise InvalidPayload(f"condition: {where} has no signal {leaf.signal}")
        self._may_change(rule, sites)
        return rule

    def _may_change(self, rule: Rule, sites: Sites) -> None:
        if sites is None:
            return
        site = self.site_of_rule(rule)
        if site is None:
            raise Forbidden("only admins change rules for every site")
        if site not in sites:
            raise Forbidden("this belongs to a site you do not have access to")

    async def create_rule(
        self, data: Mapping[str, Any], actor: str, sites: Sites, source: str | None = None
    ) -> dict[str, Any]:
        body = dict(data)
        body.setdefault("id", f"rule-{secrets.token_hex(4)}")
        rule = await self._check_rule(parse_rule(body), sites)
        return await self._store_rule(rule, None, actor, source)

    async def update_rule(
        self,
        rule_id: str,
        data: Mapping[str, Any],
        actor: str,
        sites: Sites,
        source: str | None = None,
    ) -> dict[str, Any]:
        old = self.rules.get(rule_id)
        if old is None or not self._visible(old, sites):
            raise NotFound(f"no rule {rule_id}")
        self._may_change(old, sites)
        rule = await self._check_rule(parse_rule(data, rule_id), sites)
        return await self._store_rule(rule, old, actor, source)

    async def _store_rule(
        self, rule: Rule, old: Rule | None, actor: str, source: str | None
    ) -> dict[str, Any]:
        body = rule_to_json(rule)
        now = self.clock.now_ms()

        def write(conn: sqlite3.Connection) -> None:
            text = json.dumps(body, ensure_ascii=False)
            if old is None:
                try:
                    conn.execute(
                        "INSERT INTO alarm_rules (id, body, machine_id, template, site_id,"
                        " created_ms, updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (rule.id, text, rule.machine_id, rule.template, rule.site_id, now, now),
                    )
                except sqlite3.IntegrityError:
                    raise Conflict(f"rule {rule.id} already exists") from None
            else:
                conn.execute(
                    "UPDATE alarm_rules SET body = ?, machine_id = ?, template = ?, site_id = ?,"
                    " updated_ms = ? WHERE id = ?",
                    (text, rule.machine_id, rule.template, rule.site_id, now, rule.id),
                )
            self.audit.append(
                conn,
                actor,
                "rule.create" if old is None else "rule.update",
                f"rule:{rule.id}",
                before=None if old is None else rule_to_json(old),
                after=body,
                source=source,
            )

        await self.db.execute_write_fn(write)
        self.rules[rule.id] = rule
        await self._rebind()
        return body

    async def delete_rule(
        self, rule_id: str, actor: str, sites: Sites, source: str | None = None
    ) -> None:
        """Delete a rule; its open alarms clear now."""
        old = self.rules.get(rule_id)
        if old is None or not self._visible(old, sites):
            raise NotFound(f"no rule {rule_id}")
        self._may_change(old, sites)
        now = self.clock.now_ms()

        def write(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM alarm_rules WHERE id = ?", (rule_id,))
            conn.execute(
                "UPDATE alarms SET state = 'cleared', cleared_ms = ?, shelved_until_ms = NULL"
                " WHERE rule_id = ? AND cleared_ms IS NULL",
                (now, rule_id),
            )
            self.audit.append(
                conn,
                actor,
                "rule.delete",
                f"rule:{rule_id}",
                before=rule_to_json(old),
                source=source,
            )

        async with self._lock:
            await self.db.execute_write_fn(write)
        self.rules.pop(rule_id, None)
        await self._rebind()

    # -- channels and recipients ---------------------------------------------------------
    def list_channels(self) -> list[dict[str, Any]]:
        return [channel_to_json(c) for _, c in sorted(self.channels.items())]

    def list_recipients(self) -> list[dict[str, Any]]:
        return [recipient_to_json(r) for _, r in sorted(self.recipients.items())]

    async def put_channel(
        self, channel_id: str, data: Mapping[str, Any], actor: str, source: str | None = None
    ) -> dict[str, Any]:
        old = self.channels.get(channel_id)
        channel = parse_channel(data, channel_id, old)
        stored = channel_to_json(channel, reveal=True)
        await self._put(
            "notify_channels",
            channel_id,
            stored,
            actor,
            "channel",
            source,
            None if old is None else channel_to_json(old),
            channel_to_json(channel),
        )
        self.channels[channel_id] = channel
        return channel_to_json(channel)

    async def put_recipient(
        self, recipient_id: str, data: Mapping[str, Any], actor: str, source: str | None = None
    ) -> dict[str, Any]:
        old = self.recipients.get(recipient_id)
        recipient = parse_recipient(data, recipient_id)
        unknown = [c for c in recipient.channels if c not in self.channels]
        if unknown:
            raise InvalidPayload(f"channels: no channel {unknown[0]}")
        body = recipient_to_json(recipient)
        await self._put(
            "notify_recipients",
            recipient_id,
            body,
            actor,
            "recipient",
            source,
            None if old is None else recipient_to_json(old),
            body,
        )
        self.recipients[recipient_id] = recipient
        return body

    async def _put(
        self,
        table: str,
        item_id: str,
        stored: dict[str, Any],
        actor: str,
        noun: str,
        source: str | None,
        before: dict[str, Any] | None,
        after: dict[str, Any],
    ) -> None:
        now = self.clock.now_ms()

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"INSERT INTO {table} (id, body, updated_ms) VALUES (?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET body = excluded.body,"
                " updated_ms = excluded.updated_ms",
                (item_id, json.dumps(stored, ensure_ascii=False), now),
            )
            self.audit.append(
                conn,
                actor,
                f"notify.{noun}.{'create' if before is None else 'update'}",
                f"{noun}:{item_id}",
                before=before,
                after=after,
                source=source,
            )

        await self.db.execute_write_fn(write)

    async def delete_channel(self, channel_id: str, actor: str, source: str | None = None) -> None:
        old = self.channels.get(channel_id)
        if old is None:
            raise NotFound(f"no channel {channel_id}")
        users = [r.id for r in self.recipients.values() if channel_id in r.channels]
        if users:
            raise Conflict(f"channel {channel_id} is used by recipient {users[0]}")
        await self._delete(
            "notify_channels", channel_id, actor, "channel", channel_to_json(old), source
        )
        self.channels.pop(channel_id, None)

    async def delete_recipient(
        self, recipient_id: str, actor: str, source: str | None = None
    ) -> None:
        old = self.recipients.get(recipient_id)
        if old is None:
            raise NotFound(f"no recipient {recipient_id}")
        await self._delete(
            "notify_recipients", recipient_id, actor, "recipient", recipient_to_json(old), source
        )
        self.recipients.pop(recipient_id, None)

    async def _delete(
        self,
        table: str,
        item_id: str,
        actor: str,
        noun: str,
        before: dict[str, Any],
        source: str | None,
    ) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute(f"DELETE FROM {table} WHERE id = ?", (item_id,))
            self.audit.append(
                conn,
                actor,
                f"notify.{noun}.delete",
                f"{noun}:{item_id}",
                before=before,
                source=source,
            )

        await self.db.execute_write_fn(write)

    async def outbox(self, state: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """Notifications, newest first (to see what was sent, is waiting or failed)."""
        sql = (
            "SELECT id, alarm_id, channel_id, recipient_id, address, subject, reason, state,"
            " attempts, deferred, next_ms, created_ms, sent_ms, last_error FROM notify_outbox"
        )
        params: list[Any] = []
        if state is not None:
            sql += " WHERE state = ?"
            params.append(state)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        rows = await self.db.execute_read_fn(lambda c: c.execute(sql, params).fetchall())
        names = (
            "id", "alarm_id", "channel_id", "recipient_id", "address", "subject", "reason",
            "state", "attempts", "deferred", "next_ms", "created_ms", "sent_ms", "last_error",
        )  # fmt: skip
        return [dict(zip(names, r, strict=True)) for r in rows]


def _report_crash(task: asyncio.Task[None]) -> None:
    """A loop of the alarm service that ends other than by being stopped is a bug: say so loudly
    rather than let alarms stop in silence."""
    if not task.cancelled() and task.exception() is not None:
        log.critical("alarm service task %s died", task.get_name(), exc_info=task.exception())
