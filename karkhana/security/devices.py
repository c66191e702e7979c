"""The device registry: who may send data, each with its own secret token (stored hashed).

Token checks happen on every message, so digests are cached in memory and refreshed on every
change made through this registry.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from karkhana.core.clock import SYSTEM_CLOCK, Clock
from karkhana.core.errors import Conflict, InvalidPayload, NotFound
from karkhana.core.model import is_valid_device_id
from karkhana.security.secrets import mosquitto_hash, new_token, token_digest, token_matches
from karkhana.store.database import Database

DeviceListener = Callable[[str], None]
ChangeListener = Callable[[str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Device:
    id: str
    name: str
    template: str | None
    created_ms: int
    token_changed_ms: int
    site_id: str | None = None
    parent_id: str | None = None
    """The gateway that may publish for this device (besides the device itself)."""


@dataclass(frozen=True, slots=True)
class MqttAccount:
    """What an external broker needs to know of a device: who may publish for it, and the
    token in Mosquitto's password format (None for devices made before there was one)."""

    id: str
    parent_id: str | None
    mqtt_hash: str | None


def _device(row: tuple[str, str, str | None, int, int, str | None, str | None]) -> Device:
    return Device(*row)


_COLUMNS = "id, name, template, created_ms, token_changed_ms, site_id, parent_id"


class DeviceRegistry:
    def __init__(self, db: Database, clock: Clock = SYSTEM_CLOCK) -> None:
        self.db = db
        self.clock = clock
        self._digests: dict[str, str] = {}
        self._parents: dict[str, str] = {}
        self._revoked: list[DeviceListener] = []
        self._changed: list[ChangeListener] = []

    async def load(self) -> None:
        rows = await self.db.execute_read_fn(
            lambda c: c.execute("SELECT id, token_hash, parent_id FROM devices").fetchall()
        )
        self._digests = {r[0]: r[1] for r in rows}
        self._parents = {r[0]: r[2] for r in rows if r[2] is not None}

    def on_revoked(self, listener: DeviceListener) -> None:
        """Call ``listener(device_id)`` when a device's token is rotated or the device deleted."""
        self._revoked.append(listener)

    def on_changed(self, listener: ChangeListener) -> None:
        """Await ``listener(device_id)`` after a device is created, its token rotated or it is
        deleted, before the change is reported done (an external broker's files follow it)."""
        self._changed.append(listener)

    def may_act_for(self, username: str | None, device_id: str) -> bool:
        """Whether an authenticated device may publish as ``device_id``: it is that device or
        that device's gateway."""
        return bool(username) and (
            username == device_id or self._parents.get(device_id) == username
        )

    def exists(self, device_id: str) -> bool:
        return device_id in self._digests

    async def site_of(self, device_id: str) -> str | None:
        """The site a device belongs to (None: not yet assigned, admins only)."""
        row = await self.db.execute_read_fn(
            lambda c: c.execute("SELECT site_id FROM devices WHERE id = ?", (device_id,)).fetchone()
        )
        if row is None:
            raise NotFound(f"no device {device_id}")
        site: str | None = row[0]
        return site

    def verify(self, device_id: str, token: str | None) -> bool:
        digest = self._digests.get(device_id)
        if digest is None or not token:
            return False
        return token_matches(token, digest)

    async def create(
        self,
        device_id: str,
        name: str | None = None,
        template: str | None = None,
        site_id: str | None = None,
        parent_id: str | None = None,
    ) -> tuple[Device, str]:
        """Register a device; returns it and its token, which is shown only this once.

        ``parent_id``: the gateway (an existing device) that may also publish for it.
        """
        if not is_valid_device_id(device_id):
            raise InvalidPayload(
                "id: 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit"
            )
        token = new_token("kd")
        now = self.clock.now_ms()
        device = Device(device_id, name or device_id, template, now, now, site_id, parent_id)
        digest, mqtt_hash = token_digest(token), mosquitto_hash(token)

        def insert(conn: sqlite3.Connection) -> None:
            if site_id is not None and (
                conn.execute("SELECT 1 FROM sites WHERE id = ?", (site_id,)).fetchone() is None
            ):
                raise NotFound(f"no site {site_id}")
            if parent_id is not None and (
                conn.execute("SELECT 1 FROM devices WHERE id = ?", (parent_id,)).fetchone() is None
            ):
                raise NotFound(f"no device {parent_id}")
            try:
                conn.execute(
                    f"INSERT INTO devices ({_COLUMNS}, token_hash, mqtt_hash)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        device.id,
                        device.name,
                        template,
                        now,
                        now,
                        site_id,
                        parent_id,
                        digest,
                        mqtt_hash,
                    ),
                )
            except sqlite3.IntegrityError:
                raise Conflict(f"device {device_id} already exists") from None

        await self.db.execute_write_fn(insert)
        self._digests[device_id] = digest
        if parent_id is not None:
            self._parents[device_id] = parent_id
        await self._changed_notify(device_id)
        return device, token

    async def rotate(self, device_id: str) -> str:
        """Give a device a new token; the old one stops working at once."""
        token = new_token("kd")
        now = self.clock.now_ms()
        digest, mqtt_hash = token_digest(token), mosquitto_hash(token)

        def update(conn: sqlite3.Connection) -> None:
            cur = conn.execute(
                "UPDATE devices SET token_hash = ?, mqtt_hash = ?, token_changed_ms = ?"
                " WHERE id = ?",
                (digest, mqtt_hash, now, device_id),
            )
            if cur.rowcount == 0:
                raise NotFound(f"no device {device_id}")

        await self.db.execute_write_fn(update)
        self._digests[device_id] = digest
        self._notify(device_id)
        await self._changed_notify(device_id)
        return token

    async def delete(self, device_id: str) -> None:
        def delete(conn: sqlite3.Connection) -> None:
            if conn.execute("DELETE FROM devices WHERE id = ?", (device_id,)).rowcount == 0:
                raise NotFound(f"no device {device_id}")

        await self.db.execute_write_fn(delete)
        self._digests.pop(device_id, None)
        self._parents.pop(device_id, None)
        # the database sets the children's parent_id to NULL
        for child in [c for c, p in self._parents.items() if p == device_id]:
            del self._parents[child]
        self._notify(device_id)
        await self._changed_notify(device_id)

    async def get(self, device_id: str) -> Device:
        row = await self.db.execute_read_fn(
            lambda c: c.execute(
                f"SELECT {_COLUMNS} FROM devices WHERE id = ?", (device_id,)
            ).fetchone()
        )
        if row is None:
            raise NotFound(f"no device {device_id}")
        return _device(row)

    async def list(self) -> list[Device]:
        rows = await self.db.execute_read_fn(
            lambda c: c.execute(f"SELECT {_COLUMNS} FROM devices ORDER BY id").fetchall()
        )
        return [_device(r) for r in rows]

    async def mqtt_accounts(self) -> tuple[MqttAccount, ...]:
        rows = await self.db.execute_read_fn(
            lambda c: c.execute(
                "SELECT id, parent_id, mqtt_hash FROM devices ORDER BY id"
            ).fetchall()
        )
        return tuple(MqttAccount(*r) for r in rows)

    def _notify(self, device_id: str) -> None:
        for listener in self._revoked:
            listener(device_id)

    async def _changed_notify(self, device_id: str) -> None:
        for listener in self._changed:
            await listener(device_id)
