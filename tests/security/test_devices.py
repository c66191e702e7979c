from __future__ import annotations

from pathlib import Path

import pytest

from karkhana.core.errors import Conflict, InvalidPayload, NotFound
from karkhana.security.devices import DeviceRegistry
from karkhana.store.database import Database

pytestmark = pytest.mark.anyio


async def test_registry_lifecycle_and_persistence(tmp_path: Path) -> None:
    db = Database(tmp_path / "k.db", synchronous="NORMAL")
    reg = DeviceRegistry(db)
    revoked: list[str] = []
    reg.on_revoked(revoked.append)
    device, token = await reg.create("meter-1", "Main incomer", "energy_meter_3ph")
    assert device.name == "Main incomer" and token.startswith("kd_")
    assert reg.verify("meter-1", token)
    assert not reg.verify("meter-1", token + "x")
    assert not reg.verify("meter-1", None)
    assert not reg.verify("meter-2", token)
    with pytest.raises(Conflict):
        await reg.create("meter-1")
    with pytest.raises(InvalidPayload):
        await reg.create("../etc")
    stored = db.read(lambda c: c.execute("SELECT token_hash FROM devices").fetchone()[0])
    assert token not in stored

    new = await reg.rotate("meter-1")
    assert revoked == ["meter-1"]
    assert reg.verify("meter-1", new) and not reg.verify("meter-1", token)

    db.close()
    db = Database(tmp_path / "k.db", synchronous="NORMAL")
    reg = DeviceRegistry(db)
    await reg.load()
    assert reg.verify("meter-1", new)
    assert [d.id for d in await reg.list()] == ["meter-1"]
    await reg.delete("meter-1")
    assert not reg.exists("meter-1")
    with pytest.raises(NotFound):
        await reg.delete("meter-1")
    with pytest.raises(NotFound):
        await reg.rotate("meter-1")
    db.close()
