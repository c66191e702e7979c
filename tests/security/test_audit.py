from __future__ import annotations

import itertools
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from karkhana.core.clock import FakeClock
from karkhana.core.errors import Conflict, StoreUnavailable
from karkhana.security.audit import (
    COLUMNS,
    REDACTED,
    AuditLog,
    FailureThrottle,
    chain_hash,
    redact,
    to_csv,
    verify,
)
from karkhana.store.database import Database

pytestmark = pytest.mark.anyio
KEY = b"k" * 32


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "k.db", synchronous="NORMAL")
    yield database
    database.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def audit(db: Database, clock: FakeClock) -> AuditLog:
    return AuditLog(db, clock, KEY)


async def fill(audit: AuditLog, clock: FakeClock, n: int = 5) -> None:
    for i in range(n):
        clock.advance(1000)
        await audit.record(
            "admin",
            "device.create",
            f"device:d{i}",
            after={"id": f"d{i}", "name": f"Device {i}"},
            source="10.0.0.7",
        )


def raw(db: Database) -> sqlite3.Connection:
    """A hand editor's connection to the file, as the sqlite3 shell would be."""
    return sqlite3.connect(db.path, isolation_level=None)


# -- pure parts ----------------------------------------------------------------------------
def _chain(n: int, genesis: str = "g" * 64) -> list[tuple[object, ...]]:
    rows: list[tuple[object, ...]] = []
    prev = genesis
    for seq in range(1, n + 1):
        row = (seq, 1000 * seq, "admin", "x", "t", None, '{"a":1}', None, "ok")
        digest = chain_hash(KEY, prev, row)
        rows.append((*row, prev, digest))
        prev = digest
    return rows


def test_verify_pure_chain() -> None:
    rows = _chain(4)
    head = (4, str(rows[-1][10]))
    assert verify(rows, genesis="g" * 64, key=KEY, head=head).ok
    assert verify([], genesis="g" * 64, key=KEY, head=None).ok
    # a different genesis (another install) or key fails at the first event
    assert verify(rows, genesis="h" * 64, key=KEY, head=head).first_bad_seq == 1
    assert verify(rows, genesis="g" * 64, key=b"other", head=head).first_bad_seq == 1
    # an edited field, a removed event, a swapped order, a cut tail
    edited = [*rows]
    edited[2] = (*rows[2][:6], '{"a":2}', *rows[2][7:])
    r = verify(edited, genesis="g" * 64, key=KEY, head=head)
    assert (r.ok, r.first_bad_seq, r.checked) == (False, 3, 2) and "edited" in r.reason
    r = verify([rows[0], rows[2], rows[3]], genesis="g" * 64, key=KEY, head=head)
    assert (r.ok, r.first_bad_seq) == (False, 2) and "missing" in r.reason
    r = verify(rows[:3], genesis="g" * 64, key=KEY, head=head)
    assert (r.ok, r.first_bad_seq) == (False, 4) and "removed" in r.reason
    r = verify(rows, genesis="g" * 64, key=KEY, head=None)
    assert not r.ok
    r = verify(rows, genesis="g" * 64, key=KEY, head=head, written_with="0123456789abcdef")
    assert not r.ok and "audit.key" in r.reason


def test_redact_removes_secrets_at_any_depth() -> None:
    value = {
        "id": "loom-1",
        "token": "kd_abc",
        "Password": "hunter2hunter2",
        "nested": {"client_secret": "s", "token_hash": "ab", "list": [{"api_key": 1}]},
        "note": "kd_" + "A" * 43,
        "key": "picks_per_min",
    }
    assert redact(value) == {
        "id": "loom-1",
        "token": REDACTED,
        "Password": REDACTED,
        "nested": {
            "client_secret": REDACTED,
            "token_hash": REDACTED,
            "list": [{"api_key": REDACTED}],
        },
        "note": REDACTED,
        "key": "picks_per_min",
    }


def test_throttle_admits_one_per_window_and_counts_the_rest() -> None:
    t = FailureThrottle(window_ms=60_000, max_keys=3)
    assert t.admit("a", 0) == 0
    assert t.admit("a", 10) is None
    assert t.admit("a", 20) is None
    assert t.admit("b", 30) == 0
    assert t.admit("a", 60_000) == 2  # the next window's row carries what was held back
    assert t.admit("a", 60_001) is None
    assert [t.admit("c", 5, burst=3) for _ in range(4)] == [0, 0, 0, None]
    # full table: expired keys go (what they held back moves to the overflow slot), then new
    # keys share that one slot
    assert t.admit("d", 70_000) == 0
    assert t.admit("e", 70_000) == 1
    assert t.admit("f", 70_000) is None
    assert len(t._slots) <= 4


def test_csv_export_defuses_formulas() -> None:
    from karkhana.security.audit import AuditEvent

    e = AuditEvent(
        1, 0, "=cmd|'/c calc'!A1", "auth.login", "user:x", None, None, "1.2.3.4", "failed", "h", "p"
    )
    text = to_csv([e])
    assert text.splitlines()[0].startswith("seq,ts_ms,time_utc,actor")
    assert "'=cmd" in text


# -- with a database -----------------------------------------------------------------------
async def test_chain_verifies_and_events_are_filtered(
    audit: AuditLog, clock: FakeClock, db: Database
) -> None:
    assert (await audit.verify()).ok
    await fill(audit, clock)
    await audit.record("bob", "auth.login", "user:bob", source="10.0.0.9", outcome="failed")
    result = await audit.verify()
    assert result.ok and result.checked == 6 and result.reason == "audit log intact: 6 events"
    events = await audit.events()
    assert [e.seq for e in events] == [1, 2, 3, 4, 5, 6]
    assert events[0].prev_hash == db.read(
        lambda c: c.execute("SELECT value FROM audit_meta WHERE name = 'genesis'").fetchone()[0]
    )
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(events))
    assert events[0].after == {"id": "d0", "name": "Device 0"}
    assert [e.seq for e in await audit.events(actor="bob")] == [6]
    assert [e.seq for e in await audit.events(action="device.*", limit=2)] == [4, 5]
    start = events[2].ts_ms
    assert [e.seq for e in await audit.events(start=start, end=start + 2000)] == [3, 4]
    assert await audit.head() == (6, events[-1].hash)


async def test_genesis_is_random_per_install(tmp_path: Path) -> None:
    values = set()
    for name in ("a.db", "b.db"):
        database = Database(tmp_path / name, synchronous="NORMAL")
        values.add(
            database.read(
                lambda c: c.execute("SELECT value FROM audit_meta WHERE name='genesis'").fetchone()[
                    0
                ]
            )
        )
        database.close()
    assert len(values) == 2 and all(len(v) == 64 for v in values)


async def test_triggers_refuse_update_and_delete(
    audit: AuditLog, clock: FakeClock, db: Database
) -> None:
    await fill(audit, clock, 2)
    conn = raw(db)
    for sql in (
        "UPDATE audit_log SET actor = 'mallory' WHERE seq = 1",
        "DELETE FROM audit_log WHERE seq = 2",
        "DELETE FROM audit_meta",
        "UPDATE audit_meta SET value = 'x' WHERE name = 'genesis'",
    ):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute(sql)
    conn.close()
    with pytest.raises(StoreUnavailable):
        await db.execute_write_fn(lambda c: c.execute("DELETE FROM audit_log"))
    assert (await audit.verify()).ok


async def test_hand_edited_row_is_found(audit: AuditLog, clock: FakeClock, db: Database) -> None:
    await fill(audit, clock)
    conn = raw(db)
    conn.execute("DROP TRIGGER audit_log_no_update")
    conn.execute(
        """UPDATE audit_log SET after = '{"id":"d2","name":"Nothing here"}' WHERE seq = 3"""
    )
    conn.close()
    result = await audit.verify()
    assert (result.ok, result.first_bad_seq, result.checked) == (False, 3, 2)
    assert "edited" in result.reason


async def test_recomputed_hash_without_the_key_is_found(
    audit: AuditLog, clock: FakeClock, db: Database
) -> None:
    """An editor who recomputes the row's hash with plain SHA-256 (no key) is still caught."""
    await fill(audit, clock, 3)
    conn = raw(db)
    conn.execute("DROP TRIGGER audit_log_no_update")
    row = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM audit_log WHERE seq = 3").fetchone()
    forged = (*row[:2], "someone-else", *row[3:9])
    conn.execute(
        "UPDATE audit_log SET actor = ?, hash = ? WHERE seq = 3",
        (forged[2], chain_hash(b"", row[9], forged)),
    )
    conn.close()
    assert (await audit.verify()).first_bad_seq == 3


async def test_deleted_rows_are_found(audit: AuditLog, clock: FakeClock, db: Database) -> None:
    await fill(audit, clock)
    conn = raw(db)
    conn.execute("DROP TRIGGER audit_log_no_delete")
    conn.execute("DELETE FROM audit_log WHERE seq = 2")
    conn.close()
    result = await audit.verify()
    assert (result.ok, result.first_bad_seq) == (False, 2) and "missing" in result.reason

    conn = raw(db)
    conn.execute("DELETE FROM audit_log WHERE seq >= 4")  # cut the tail too
    conn.close()
    result = await audit.verify()
    assert not result.ok


async def test_cut_tail_is_found(audit: AuditLog, clock: FakeClock, db: Database) -> None:
    await fill(audit, clock)
    conn = raw(db)
    conn.execute("DROP TRIGGER audit_log_no_delete")
    conn.execute("DELETE FROM audit_log WHERE seq = 5")
    conn.close()
    result = await audit.verify()
    assert (result.ok, result.first_bad_seq) == (False, 5) and "removed" in result.reason
    # the log goes on from the recorded head, so the gap stays visible
    await audit.record("admin", "x", "y")
    result = await audit.verify()
    assert (result.ok, result.first_bad_seq) == (False, 5)


async def test_another_key_is_reported(db: Database, clock: FakeClock) -> None:
    await fill(AuditLog(db, clock, KEY), clock, 2)
    result = await AuditLog(db, clock, b"x" * 32).verify()
    assert not result.ok and "audit.key" in result.reason


async def test_secrets_never_stored(audit: AuditLog, db: Database) -> None:
    await audit.record(
        "admin", "user.create", "user:x", after={"username": "x", "password": "p" * 12}
    )
    stored = db.read(lambda c: c.execute("SELECT after FROM audit_log").fetchone()[0])
    assert "pppppppppppp" not in stored and REDACTED in stored
    assert (await audit.verify()).ok


async def test_refused_attempts_are_throttled(audit: AuditLog, clock: FakeClock) -> None:
    for _ in range(50):
        await audit.refused(
            "loom-1",
            "device.auth",
            "device:loom-1",
            source="10.0.0.5",
            details={"transport": "mqtt"},
        )
    await audit.refused("loom-1", "device.auth", "device:loom-1", source="10.0.0.6")
    clock.advance(60_000)
    await audit.refused(
        "loom-1", "device.auth", "device:loom-1", source="10.0.0.5", details={"transport": "mqtt"}
    )
    events = await audit.events()
    assert [(e.source, e.outcome) for e in events] == [
        ("10.0.0.5", "failed"),
        ("10.0.0.6", "failed"),
        ("10.0.0.5", "failed"),
    ]
    assert events[0].after == {"transport": "mqtt"}
    assert events[2].after == {"transport": "mqtt", "repeats": 49}


async def test_concurrent_records_keep_one_chain(audit: AuditLog) -> None:
    import asyncio

    await asyncio.gather(*(audit.record(f"u{i}", "x", "y") for i in range(100)))
    result = await audit.verify()
    assert result.ok and result.checked == 100


# -- end to end: MQTT and the command line ---------------------------------------------------
async def test_refused_mqtt_login_is_recorded_with_its_address(tmp_path: Path) -> None:
    from karkhana.runtime import Runtime
    from tests.conftest import make_settings
    from tests.ingest.test_broker import connect

    rt = Runtime(make_settings(tmp_path))
    await rt.start()
    try:
        await rt.devices.create("loom-01")
        for _ in range(3):
            dev = await connect(rt, "loom-01", "kd_wrong")
            assert not dev.connected.is_set()
            dev.close()
        [event] = await rt.audit.events(action="device.auth")
        assert (event.actor, event.outcome, event.source) == ("loom-01", "failed", "127.0.0.1")
        assert event.after == {"transport": "mqtt"}
    finally:
        await rt.stop()


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KARKHANA_DATA_DIR": str(tmp_path / "data")}
    return subprocess.run(
        [sys.executable, "-m", "karkhana", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_cli_verify_and_export(tmp_path: Path) -> None:
    r = cli(tmp_path, "audit", "verify")
    assert (r.returncode, r.stdout.strip()) == (0, "audit log intact: 0 events"), r.stderr
    r = cli(tmp_path, "set-password", "admin", "--password", "brand-new-password")
    assert r.returncode == 0, r.stderr
    r = cli(tmp_path, "audit", "verify")
    assert (r.returncode, r.stdout.strip()) == (0, "audit log intact: 2 events"), r.stderr

    out = tmp_path / "audit.json"
    r = cli(tmp_path, "audit", "export", "--format", "json", "--out", str(out))
    assert r.returncode == 0, r.stderr
    exported = json.loads(out.read_text())
    assert [(e["actor"], e["action"]) for e in exported] == [
        ("system", "user.create"),
        ("cli", "user.set_password"),
    ]
    r = cli(tmp_path, "audit", "export", "--format", "csv")
    assert r.returncode == 0 and r.stdout.count("\n") == 4  # header, 2 events, the json export

    conn = sqlite3.connect(tmp_path / "data" / "karkhana.db", isolation_level=None)
    conn.execute("DROP TRIGGER audit_log_no_update")
    conn.execute("""UPDATE audit_log SET after = '{"role":"viewer"}' WHERE seq = 1""")
    conn.close()
    r = cli(tmp_path, "audit", "verify")
    assert r.returncode == 1
    assert "event 1" in r.stdout and "edited" in r.stdout and "Traceback" not in r.stderr


async def test_user_changes_are_recorded_with_the_change(audit: AuditLog, db: Database) -> None:
    from karkhana.security.policy import Permission
    from karkhana.security.users import Role, Users

    users = Users(db, audit.clock, audit=audit)
    await db.execute_write_fn(
        lambda c: c.execute("INSERT INTO sites (id, name, timezone) VALUES ('s1', 'Mill', 'UTC')")
    )
    bilal = await users.create(
        "bilal", "bilal-password", Role.ENGINEER, actor="admin", source="10.0.0.2"
    )
    await users.set_sites("bilal", ["s1"], actor="admin")
    info, _ = await users.create_api_token(bilal, "scada", [Permission.READ], 3_600_000)
    await users.revoke_api_token(info.id, actor="admin")
    await users.set_password("bilal", "other-password", actor="cli", source="local")
    await users.delete("bilal", actor="admin")
    got = [(e.actor, e.action, e.target) for e in await audit.events()]
    assert got == [
        ("admin", "user.create", "user:bilal"),
        ("admin", "user.set_sites", "user:bilal"),
        ("bilal", "api_token.create", f"api_token:{info.id}"),
        ("admin", "api_token.revoke", f"api_token:{info.id}"),
        ("cli", "user.set_password", "user:bilal"),
        ("admin", "user.delete", "user:bilal"),
    ]
    events = await audit.events()
    assert events[0].after == {"username": "bilal", "role": "engineer", "sites": []}
    assert events[0].source == "10.0.0.2"
    assert (events[1].before, events[1].after) == ({"sites": []}, {"sites": ["s1"]})
    assert events[5].before == {"username": "bilal", "role": "engineer"}
    # a change that fails leaves no audit row: the row is in the change's own transaction
    with pytest.raises(Conflict):
        await users.create("admin2", "x" * 12, Role.VIEWER)
        await users.create("admin2", "x" * 12, Role.VIEWER)
    assert [e.action for e in await audit.events()][-1] == "user.create"
    assert len(await audit.events()) == 7
    assert (await audit.verify()).ok


async def test_settings_changes_are_audited_at_start_without_secrets(tmp_path: Path) -> None:
    from karkhana.runtime import Runtime
    from tests.conftest import make_settings

    settings = make_settings(tmp_path, admin_password="a-Very-secret-pw-1")
    rt = Runtime(settings)
    await rt.start(mqtt=False)
    await rt.stop()
    rt = Runtime(settings)
    await rt.start(mqtt=False)  # the same settings: nothing new
    await rt.stop()
    rt = Runtime(settings.replace(raw_retention_days=7, token_ttl_hours=2))
    await rt.start(mqtt=False)
    try:
        events = await rt.audit.events(action="settings.changed")
        assert len(events) == 2
        first, second = events
        assert first.actor == "system" and first.before is None
        assert first.after is not None and first.after["admin_password"] == "[redacted]"
        assert second.before == {
            "raw_retention_days": str(settings.raw_retention_days),
            "token_ttl_hours": str(settings.token_ttl_hours),
        }
        assert second.after == {"raw_retention_days": "7", "token_ttl_hours": "2"}
        assert "a-Very-secret-pw-1" not in json.dumps([e.as_dict() for e in events])
        assert (await rt.audit.verify()).ok
    finally:
        await rt.stop()
