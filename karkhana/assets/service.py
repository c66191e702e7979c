"""Reads and writes the asset hierarchy through the single database writer."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from karkhana.assets.model import Area, Line, Machine, SignalBinding, Site
from karkhana.assets.template import MachineTemplate
from karkhana.core.errors import Conflict, InvalidPayload, NotFound
from karkhana.core.model import is_valid_device_id, is_valid_key
from karkhana.store.database import Database

_PARENT = {
    "areas": ("sites", "site_id"),
    "lines": ("areas", "area_id"),
    "machines": ("lines", "line_id"),
}
_NOUN = {"sites": "site", "areas": "area", "lines": "line", "machines": "machine"}
_SITE_OF = {
    "sites": "SELECT id FROM sites WHERE id = ?",
    "areas": "SELECT site_id FROM areas WHERE id = ?",
    "lines": "SELECT a.site_id FROM lines l JOIN areas a ON a.id = l.area_id WHERE l.id = ?",
    "machines": "SELECT a.site_id FROM machines m JOIN lines l ON l.id = m.line_id"
    " JOIN areas a ON a.id = l.area_id WHERE m.id = ?",
}


def _check_id(value: str, what: str) -> None:
    if not is_valid_device_id(value):
        raise InvalidPayload(f"{what}: 1-64 letters, digits, '_', '.' or '-'")


class AssetService:
    def __init__(self, db: Database, templates: Mapping[str, MachineTemplate]) -> None:
        self.db = db
        self.templates = templates

    def template(self, template_id: str) -> MachineTemplate:
        try:
            return self.templates[template_id]
        except KeyError:
            raise NotFound(f"no machine template {template_id}") from None

    async def _insert(self, table: str, row: dict[str, Any]) -> None:
        noun = _NOUN[table]
        _check_id(row["id"], "id")
        if not str(row.get("name", "")).strip():
            raise InvalidPayload("name: must not be empty")
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)

        def insert(conn: sqlite3.Connection) -> None:
            if table in _PARENT:
                parent, column = _PARENT[table]
                if (
                    conn.execute(f"SELECT 1 FROM {parent} WHERE id = ?", (row[column],)).fetchone()
                    is None
                ):
                    raise NotFound(f"no {_NOUN[parent]} {row[column]}")
            try:
                conn.execute(f"INSERT INTO {table} ({cols}) VALUES ({marks})", tuple(row.values()))
            except sqlite3.IntegrityError:
                raise Conflict(f"{noun} {row['id']} already exists") from None

        await self.db.execute_write_fn(insert)

    async def create_site(self, site_id: str, name: str, timezone: str = "Asia/Karachi") -> Site:
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidPayload(f"timezone: unknown time zone {timezone!r}") from None
        await self._insert("sites", {"id": site_id, "name": name, "timezone": timezone})
        return Site(site_id, name, timezone)

    async def create_area(self, area_id: str, site_id: str, name: str) -> Area:
        await self._insert("areas", {"id": area_id, "site_id": site_id, "name": name})
        return Area(area_id, site_id, name)

    async def create_line(self, line_id: str, area_id: str, name: str) -> Line:
        await self._insert("lines", {"id": line_id, "area_id": area_id, "name": name})
        return Line(line_id, area_id, name)

    async def create_machine(
        self,
        machine_id: str,
        line_id: str,
        name: str,
        template_id: str,
        device_id: str | None = None,
        bindings: Mapping[str, tuple[str, str]] | None = None,
    ) -> Machine:
        """Create a machine; with ``device_id`` every template signal binds to that device's key
        of the same name, and ``bindings`` (signal -> (device, key)) overrides single signals."""
        template = self.template(template_id)
        chosen: dict[str, tuple[str, str]] = {}
        if device_id is not None:
            _check_id(device_id, "device_id")
            chosen = {s.key: (device_id, s.key) for s in template.signals}
        for signal, (dev, key) in (bindings or {}).items():
            if not any(s.key == signal for s in template.signals):
                raise InvalidPayload(
                    f"bindings.{signal}: template {template_id} has no such signal"
                )
            _check_id(dev, f"bindings.{signal}.device_id")
            if not is_valid_key(key):
                raise InvalidPayload(f"bindings.{signal}.key: invalid key")
            chosen[signal] = (dev, key)
        units = {s.key: s.unit for s in template.signals}
        signals = tuple(
            SignalBinding(name_, dev, key, units[name_]) for name_, (dev, key) in chosen.items()
        )
        await self._insert(
            "machines",
            {"id": machine_id, "line_id": line_id, "name": name, "template": template_id},
        )

        def bind(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO signals (machine_id, name, device_id, key, unit) VALUES (?, ?, ?, ?, ?)",
                [(machine_id, s.name, s.device_id, s.key, s.unit) for s in signals],
            )

        await self.db.execute_write_fn(bind)
        return Machine(machine_id, line_id, name, template_id, signals)

    async def get_machine(self, machine_id: str) -> Machine:
        def read(conn: sqlite3.Connection) -> Machine:
            row = conn.execute(
                "SELECT id, line_id, name, template FROM machines WHERE id = ?", (machine_id,)
            ).fetchone()
            if row is None:
                raise NotFound(f"no machine {machine_id}")
            sigs = conn.execute(
                "SELECT name, device_id, key, unit FROM signals WHERE machine_id = ? ORDER BY name",
                (machine_id,),
            ).fetchall()
            return Machine(row[0], row[1], row[2], row[3], tuple(SignalBinding(*s) for s in sigs))

        return await self.db.execute_read_fn(read)

    async def delete(self, table: str, item_id: str) -> None:
        if table not in _NOUN:
            raise NotFound(f"no such asset kind {table}")

        def delete(conn: sqlite3.Connection) -> None:
            if conn.execute(f"DELETE FROM {table} WHERE id = ?", (item_id,)).rowcount == 0:
                raise NotFound(f"no {_NOUN[table]} {item_id}")

        await self.db.execute_write_fn(delete)

    async def site_of(self, table: str, item_id: str) -> str:
        """The site that a site, area, line or machine belongs to."""
        if table not in _SITE_OF:
            raise NotFound(f"no such asset kind {table}")
        row = await self.db.execute_read_fn(
            lambda c: c.execute(_SITE_OF[table], (item_id,)).fetchone()
        )
        if row is None:
            raise NotFound(f"no {_NOUN[table]} {item_id}")
        site: str = row[0]
        return site

    async def tree(self, sites: frozenset[str] | None = None) -> list[dict[str, Any]]:
        """Every site (or only ``sites``) with its areas, lines and machines, nested."""

        def read(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            sites = [
                {"id": i, "name": n, "timezone": tz, "areas": []}
                for i, n, tz in conn.execute("SELECT id, name, timezone FROM sites ORDER BY id")
            ]
            by_site = {s["id"]: s for s in sites}
            areas: dict[str, dict[str, Any]] = {}
            for i, site_id, n in conn.execute("SELECT id, site_id, name FROM areas ORDER BY id"):
                areas[i] = {"id": i, "name": n, "lines": []}
                by_site[site_id]["areas"].append(areas[i])
            lines: dict[str, dict[str, Any]] = {}
            for i, area_id, n in conn.execute("SELECT id, area_id, name FROM lines ORDER BY id"):
                lines[i] = {"id": i, "name": n, "machines": []}
                areas[area_id]["lines"].append(lines[i])
            for i, line_id, n, t in conn.execute(
                "SELECT id, line_id, name, template FROM machines ORDER BY id"
            ):
                lines[line_id]["machines"].append({"id": i, "name": n, "template": t})
            return sites

        everything = await self.db.execute_read_fn(read)
        return everything if sites is None else [s for s in everything if s["id"] in sites]
