"""The audit log: who did what, when, from where, with the state before and after.

Rows are only ever appended, through the single writer, and each row carries
``hash = HMAC-SHA256(key, prev_hash + canonical JSON of the row)``: changing, inserting or
removing a row breaks the chain from that row on, which :func:`verify` finds. The chain starts
from a random value made with the database (``audit_meta.genesis``) and is keyed with
``<data_dir>/audit.key``, a file kept outside the database; the newest head (seq and hash) is
stored too, so that rows cut from the end show up as well. Triggers refuse UPDATE and DELETE.

What a hash chain cannot do: someone who can read ``audit.key`` and write the database can
rewrite the whole chain consistently. The head is therefore also written to the server log at
start and every hour, so a copy of the log kept elsewhere pins the chain down.

Secrets never enter the log: values under keys that name a token, password, secret or hash are
replaced by ``[redacted]`` before a row is written.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import logging
import re
import sqlite3
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from karkhana.core.clock import SYSTEM_CLOCK, Clock
from karkhana.core.errors import StoreUnavailable
from karkhana.store.database import Database

log = logging.getLogger(__name__)

REDACTED = "[redacted]"
_SECRET_KEY = re.compile(r"token(?!_ttl)|passw|secret|hash|api_?key|private_?key|credential", re.I)
_SECRET_VALUE = re.compile(r"^k[a-z]_[A-Za-z0-9_-]{32,}$")
"""Values shaped like karkhana's own tokens (``kd_...``, ``kt_...``), whatever their key."""

COLUMNS = (
    "seq",
    "ts_ms",
    "actor",
    "action",
    "target",
    "before",
    "after",
    "source",
    "outcome",
    "prev_hash",
    "hash",
)
_HASHED = COLUMNS[:-2]
_MAX_TEXT = 200
NO_KEY_ID = "none"


def redact(value: Any) -> Any:
    """A copy of ``value`` with every secret-looking entry replaced, at any depth."""
    if isinstance(value, dict):
        return {
            str(k): REDACTED if _SECRET_KEY.search(str(k)) else redact(v) for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        return [redact(v) for v in items]
    if isinstance(value, str) and _SECRET_VALUE.match(value):
        return REDACTED
    return value


def _dump(value: dict[str, Any] | None) -> str | None:
    if value is None:
        return None
    return json.dumps(
        redact(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )


def _load(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return {"unreadable": text}
    return value if isinstance(value, dict) else {"value": value}


def _clip(text: str | None) -> str | None:
    return None if text is None else text[:_MAX_TEXT]


def key_id(key: bytes) -> str:
    """A short name for a key that reveals nothing about it."""
    if not key:
        return NO_KEY_ID
    return hmac.new(key, b"karkhana audit key id", hashlib.sha256).hexdigest()[:16]


def chain_hash(key: bytes, prev_hash: str, row: Sequence[Any]) -> str:
    """The hash of one row (``seq`` .. ``outcome`` as stored, in COLUMNS order) after ``prev_hash``.

    ``before`` and ``after`` enter as the exact stored JSON text, so verification never depends
    on how JSON is parsed and printed again.
    """
    canonical = json.dumps(
        dict(zip(_HASHED, row, strict=True)),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    message = (prev_hash + canonical).encode()
    if key:
        return hmac.new(key, message, hashlib.sha256).hexdigest()
    return hashlib.sha256(message).hexdigest()


@dataclass(frozen=True, slots=True)
class AuditEvent:
    seq: int
    ts_ms: int
    actor: str
    action: str
    target: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    source: str | None
    outcome: str
    hash: str
    prev_hash: str

    @classmethod
    def of_row(cls, row: Sequence[Any]) -> AuditEvent:
        """From a stored row in COLUMNS order."""
        seq, ts, actor, action, target, before, after, source, outcome, prev, digest = row
        return cls(
            seq,
            ts,
            actor,
            action,
            target,
            _load(before),
            _load(after),
            source,
            outcome,
            digest,
            prev,
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    checked: int
    first_bad_seq: int | None
    reason: str


def verify(
    rows: Iterable[Sequence[Any]],
    *,
    genesis: str,
    key: bytes,
    head: tuple[int, str] | None = None,
    written_with: str | None = None,
) -> VerifyResult:
    """Check a chain of stored rows (COLUMNS order, ascending seq); pure.

    ``head`` is the (seq, hash) the log recorded as its newest; ``written_with`` the key id the
    log recorded for its key. ``checked`` counts the rows found intact before the first bad one.
    """
    if written_with is not None and written_with != key_id(key):
        return VerifyResult(
            False,
            0,
            1,
            "audit.key is not the key this log was written with (was it replaced or lost?)",
        )
    expected_seq, prev, checked = 1, genesis, 0
    for row in rows:
        seq, stored_prev, stored_hash = row[0], row[9], row[10]
        if seq != expected_seq:
            what = "is missing (deleted?)" if seq > expected_seq else "is out of order"
            return VerifyResult(False, checked, expected_seq, f"event {expected_seq} {what}")
        if stored_prev != prev:
            return VerifyResult(
                False,
                checked,
                seq,
                f"event {seq} does not follow the event before it (one was removed or replaced)",
            )
        if not hmac.compare_digest(chain_hash(key, prev, row[:9]), str(stored_hash)):
            return VerifyResult(
                False, checked, seq, f"event {seq} does not match its hash (it was edited)"
            )
        prev = stored_hash
        expected_seq += 1
        checked += 1
    last = expected_seq - 1
    if head is None:
        if last:
            return VerifyResult(False, checked, 1, "the recorded head of the log is missing")
    elif head[0] > last:
        return VerifyResult(
            False,
            checked,
            last + 1,
            f"the log ends at event {last} but event {head[0]} was written (rows removed)",
        )
    elif head[0] < last:
        return VerifyResult(
            False, checked, head[0] + 1, f"events after {head[0]} were not written by karkhana"
        )
    elif head[1] != prev:
        return VerifyResult(False, checked, last, f"event {last} is not the recorded head")
    return VerifyResult(True, checked, None, f"audit log intact: {checked} events")


class FailureThrottle:
    """Admits up to ``burst`` refused attempts per key per window; counts the rest.

    A flood of bad logins or device credentials then costs a few rows a minute, not the disk.
    Memory is bounded: beyond ``max_keys`` keys, expired ones are dropped (their held counts
    move to one shared overflow key) and new ones share that key.
    """

    OVERFLOW: Hashable = ("*", "*")

    def __init__(self, window_ms: int = 60_000, max_keys: int = 10_000) -> None:
        self.window_ms = window_ms
        self.max_keys = max_keys
        self._slots: dict[Hashable, list[int]] = {}  # key -> [window start, used, held]

    def admit(self, key: Hashable, now_ms: int, burst: int = 1) -> int | None:
        """None: hold this one back; else the number held back since the last admitted one."""
        if key not in self._slots and len(self._slots) >= self.max_keys:
            self._prune(now_ms)
            if len(self._slots) >= self.max_keys:
                key = self.OVERFLOW
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = [now_ms, 0, 0]
        elif now_ms - slot[0] >= self.window_ms:
            slot[0], slot[1] = now_ms, 0
        if slot[1] < burst:
            slot[1] += 1
            held, slot[2] = slot[2], 0
            return held
        slot[2] += 1
        return None

    def _prune(self, now_ms: int) -> None:
        kept: dict[Hashable, list[int]] = {}
        lost = 0
        for k, slot in self._slots.items():
            if now_ms - slot[0] < self.window_ms or k == self.OVERFLOW:
                kept[k] = slot
            else:
                lost += slot[2]
        if lost:
            kept.setdefault(self.OVERFLOW, [now_ms, 0, 0])[2] += lost
        self._slots = kept


class AuditLog:
    def __init__(
        self,
        db: Database,
        clock: Clock = SYSTEM_CLOCK,
        key: bytes = b"",
        throttle: FailureThrottle | None = None,
    ) -> None:
        self.db = db
        self.clock = clock
        self.key = key
        self.key_id = key_id(key)
        self.throttle = throttle or FailureThrottle()

    # -- writing -------------------------------------------------------------------------
    def append(
        self,
        conn: sqlite3.Connection,
        actor: str,
        action: str,
        target: str,
        *,
        before: dict[str, Any] | None = None,
        after: dict[str, Any] | None = None,
        source: str | None = None,
        outcome: str = "ok",
        ts_ms: int | None = None,
    ) -> AuditEvent:
        """Append inside the caller's write transaction (on the writer thread), so that a change
        and its audit row commit together or not at all."""
        meta = _meta(conn)
        if "key_id" not in meta:
            conn.execute(
                "INSERT INTO audit_meta (name, value) VALUES ('key_id', ?)", (self.key_id,)
            )
        seq = int(meta.get("head_seq", 0)) + 1
        prev = meta.get("head_hash", meta.get("genesis", ""))
        row = (
            seq,
            self.clock.now_ms() if ts_ms is None else ts_ms,
            _clip(actor) or "",
            _clip(action) or "",
            _clip(target) or "",
            _dump(before),
            _dump(after),
            _clip(source),
            _clip(outcome) or "",
        )
        digest = chain_hash(self.key, prev, row)
        conn.execute(
            f"INSERT INTO audit_log ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
            (*row, prev, digest),
        )
        conn.executemany(
            "INSERT INTO audit_meta (name, value) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            [("head_seq", str(seq)), ("head_hash", digest)],
        )
        return AuditEvent.of_row((*row, prev, digest))

    async def record(
        self,
        actor: str,
        action: str,
        target: str,
        *,
        before: dict[str, Any] | None = None,
        after: dict[str, Any] | None = None,
        source: str | None = None,
        outcome: str = "ok",
    ) -> AuditEvent:
        """Append one event in its own transaction; returns it once committed."""
        ts = self.clock.now_ms()
        return await self.db.execute_write_fn(
            lambda conn: self.append(
                conn,
                actor,
                action,
                target,
                before=before,
                after=after,
                source=source,
                outcome=outcome,
                ts_ms=ts,
            )
        )

    async def refused(
        self,
        actor: str,
        action: str,
        target: str,
        *,
        source: str | None = None,
        details: dict[str, Any] | None = None,
        burst: int = 1,
        key: Hashable | None = None,
    ) -> AuditEvent | None:
        """Record a refused attempt (outcome ``failed``), throttled per (action, actor, source).

        The row admitted after a quiet spell carries ``repeats``: how many were held back before
        it. ``key`` replaces the throttle's key (to group attempts under made-up names). A store that cannot write is logged, not raised: the caller is answering "no" anyway
        and that answer must not change.
        """
        if key is None:
            key = (action, actor[:_MAX_TEXT], source)
        held = self.throttle.admit(key, self.clock.now_ms(), burst)
        if held is None:
            return None
        after = dict(details or {})
        if held:
            after["repeats"] = held
        try:
            return await self.record(
                actor, action, target, after=after or None, source=source, outcome="failed"
            )
        except StoreUnavailable as exc:
            log.error("could not audit %s by %r: %s", action, actor[:64], exc.message)
            return None

    # -- reading -------------------------------------------------------------------------
    async def events(
        self,
        *,
        start: int | None = None,
        end: int | None = None,
        actor: str | None = None,
        action: str | None = None,
        limit: int | None = 1000,
    ) -> list[AuditEvent]:
        """The newest ``limit`` events that match, oldest first. ``action`` ending in ``*``
        matches a prefix (``device.*``)."""
        where: list[str] = []
        args: list[object] = []
        if start is not None:
            where.append("ts_ms >= ?")
            args.append(start)
        if end is not None:
            where.append("ts_ms < ?")
            args.append(end)
        if actor:
            where.append("actor = ?")
            args.append(actor)
        if action:
            if action.endswith("*"):
                where.append("substr(action, 1, ?) = ?")
                args += [len(action) - 1, action[:-1]]
            else:
                where.append("action = ?")
                args.append(action)
        sql = f"SELECT {', '.join(COLUMNS)} FROM audit_log"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        rows = await self.db.execute_read_fn(lambda c: c.execute(sql, args).fetchall())
        return [AuditEvent.of_row(r) for r in reversed(rows)]

    async def head(self) -> tuple[int, str]:
        """The newest event's seq and hash ((0, genesis) for an empty log)."""
        meta = await self.db.execute_read_fn(_meta)
        return int(meta.get("head_seq", 0)), meta.get("head_hash", meta.get("genesis", ""))

    async def key_matches(self) -> bool:
        """Whether this key is the one the log was written with (True for a log not yet used)."""
        meta = await self.db.execute_read_fn(_meta)
        return meta.get("key_id", self.key_id) == self.key_id

    async def verify(self) -> VerifyResult:
        """Walk the whole chain in one read transaction (a consistent snapshot)."""

        def walk(conn: sqlite3.Connection) -> VerifyResult:
            conn.execute("BEGIN")
            try:
                meta = _meta(conn)
                head = (
                    (int(meta["head_seq"]), meta.get("head_hash", ""))
                    if "head_seq" in meta
                    else None
                )
                rows = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM audit_log ORDER BY seq")
                return verify(
                    rows,
                    genesis=meta.get("genesis", ""),
                    key=self.key,
                    head=head,
                    written_with=meta.get("key_id"),
                )
            finally:
                conn.execute("COMMIT")

        return await self.db.execute_read_fn(walk)


def _meta(conn: sqlite3.Connection) -> dict[str, str]:
    return dict(conn.execute("SELECT name, value FROM audit_meta").fetchall())


# -- export ------------------------------------------------------------------------------
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    """Keep spreadsheets from running a cell as a formula (a username can be ``=cmd|...``)."""
    if isinstance(value, str) and value.startswith(_FORMULA):
        return "'" + value
    return value


def iso_utc(ts_ms: int) -> str:
    iso = datetime.fromtimestamp(ts_ms / 1000, UTC).isoformat(timespec="milliseconds")
    return iso.replace("+00:00", "Z")


def to_csv(events: Iterable[AuditEvent]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["seq", "ts_ms", "time_utc", *COLUMNS[2:]])
    for e in events:
        writer.writerow(
            [
                e.seq,
                e.ts_ms,
                iso_utc(e.ts_ms),
                *(
                    _cell(v)
                    for v in (
                        e.actor,
                        e.action,
                        e.target,
                        _dump(e.before) or "",
                        _dump(e.after) or "",
                        e.source or "",
                        e.outcome,
                        e.prev_hash,
                        e.hash,
                    )
                ),
            ]
        )
    return out.getvalue()


def to_json(events: Iterable[AuditEvent]) -> str:
    return json.dumps(
        [{**e.as_dict(), "time_utc": iso_utc(e.ts_ms)} for e in events],
        ensure_ascii=False,
        indent=1,
    )


def settings_snapshot(settings: Any) -> dict[str, str]:
    """Every setting as text, secrets only as whether they are set (never their value)."""
    from karkhana.core.config import SETTINGS

    snapshot: dict[str, str] = {}
    for s in SETTINGS:
        value = getattr(settings, s.name)
        if s.secret:
            snapshot[s.name] = "(set)" if value else "(not set)"
        else:
            snapshot[s.name] = str(value)
    return snapshot


async def record_settings(audit: AuditLog, snapshot: dict[str, str]) -> AuditEvent | None:
    """Audit the settings the server starts with when they differ from the last start's.

    Settings come from flags and ``KARKHANA_*`` variables, so a change shows at the next start:
    one ``settings.changed`` event (actor ``system``) with the changed settings before and after.
    The first start records them all.
    """
    snapshot = redact(snapshot)  # compared as stored: secret settings are never written
    known: dict[str, str] = {}
    for event in await audit.events(action="settings.changed", limit=None):
        known.update({k: str(v) for k, v in (event.after or {}).items()})
    changed = {k: v for k, v in snapshot.items() if known.get(k) != v}
    if not changed:
        return None
    before = {k: known[k] for k in changed if k in known}
    return await audit.record(
        "system", "settings.changed", "settings", before=before or None, after=changed
    )
