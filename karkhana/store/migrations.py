"""Schema of the embedded SQLite database, as an ordered list of migrations.

``PRAGMA user_version`` records how many have been applied; a database made by a newer
karkhana is refused rather than guessed at.
"""

from __future__ import annotations

import sqlite3

from karkhana.core.errors import ConfigError

_ROLLUP_COLUMNS = """(
    series_id INTEGER NOT NULL,
    bucket INTEGER NOT NULL,
    count INTEGER NOT NULL,
    sum REAL NOT NULL,
    min REAL NOT NULL,
    max REAL NOT NULL,
    first_ts INTEGER NOT NULL,
    first REAL NOT NULL,
    last_ts INTEGER NOT NULL,
    last REAL NOT NULL,
    PRIMARY KEY (series_id, bucket)
) WITHOUT ROWID"""

MIGRATIONS: tuple[str, ...] = (
    f"""
    CREATE TABLE series (
        id INTEGER PRIMARY KEY,
        device_id TEXT NOT NULL,
        key TEXT NOT NULL,
        has_text INTEGER NOT NULL DEFAULT 0,
        UNIQUE (device_id, key)
    );
    CREATE TABLE samples (
        series_id INTEGER NOT NULL,
        ts INTEGER NOT NULL,
        value REAL,
        text TEXT,
        PRIMARY KEY (series_id, ts)
    ) WITHOUT ROWID;
    CREATE TABLE rollup_1m {_ROLLUP_COLUMNS};
    CREATE TABLE rollup_1h {_ROLLUP_COLUMNS};
    CREATE TABLE latest (
        series_id INTEGER PRIMARY KEY,
        ts INTEGER NOT NULL,
        value REAL,
        text TEXT
    );
    CREATE TABLE devices (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        template TEXT,
        token_hash TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        token_changed_ms INTEGER NOT NULL
    );
    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        username TEXT NOT NULL UNIQUE,
        password_hash TEXT NOT NULL,
        role TEXT NOT NULL,
        created_ms INTEGER NOT NULL
    );
    CREATE TABLE api_tokens (
        token_hash TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        created_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL
    );
    CREATE TABLE sites (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        timezone TEXT NOT NULL
    );
    CREATE TABLE areas (
        id TEXT PRIMARY KEY,
        site_id TEXT NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
        name TEXT NOT NULL
    );
    CREATE TABLE lines (
        id TEXT PRIMARY KEY,
        area_id TEXT NOT NULL REFERENCES areas (id) ON DELETE CASCADE,
        name TEXT NOT NULL
    );
    CREATE TABLE machines (
        id TEXT PRIMARY KEY,
        line_id TEXT NOT NULL REFERENCES lines (id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        template TEXT NOT NULL
    );
    CREATE TABLE signals (
        machine_id TEXT NOT NULL REFERENCES machines (id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        device_id TEXT NOT NULL,
        key TEXT NOT NULL,
        unit TEXT,
        PRIMARY KEY (machine_id, name)
    );
    """,
    """
    ALTER TABLE devices ADD COLUMN site_id TEXT REFERENCES sites (id) ON DELETE SET NULL;
    CREATE TABLE user_sites (
        user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        site_id TEXT NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
        PRIMARY KEY (user_id, site_id)
    );
    ALTER TABLE api_tokens ADD COLUMN kind TEXT NOT NULL DEFAULT 'login';
    ALTER TABLE api_tokens ADD COLUMN name TEXT;
    ALTER TABLE api_tokens ADD COLUMN scopes TEXT;
    """,
    # the audit log (security/audit.py): append-only, hash-chained from a per-install random value
    """
    CREATE TABLE audit_log (
        seq INTEGER PRIMARY KEY,
        ts_ms INTEGER NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        before TEXT,
        after TEXT,
        source TEXT,
        outcome TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    );
    CREATE INDEX audit_log_ts ON audit_log (ts_ms);
    CREATE TABLE audit_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
    INSERT INTO audit_meta (name, value) VALUES ('genesis', lower(hex(randomblob(32))));
    CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    CREATE TRIGGER audit_meta_no_delete BEFORE DELETE ON audit_meta
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    CREATE TRIGGER audit_meta_fixed BEFORE UPDATE ON audit_meta
    WHEN OLD.name IN ('genesis', 'key_id')
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    """,
    # gateways (a device that publishes for its children) and the token in Mosquitto's password
    # file format (security/mosquitto.py), made while the plaintext token exists
    """
    ALTER TABLE devices ADD COLUMN parent_id TEXT REFERENCES devices (id) ON DELETE SET NULL;
    ALTER TABLE devices ADD COLUMN mqtt_hash TEXT;
    """,
)


def migrate(conn: sqlite3.Connection) -> int:
    """Apply pending migrations; returns the schema version now in force."""
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version > len(MIGRATIONS):
        raise ConfigError(
            f"the database schema is version {version} but this karkhana knows only "
            f"{len(MIGRATIONS)}; upgrade karkhana"
        )
    for number in range(version, len(MIGRATIONS)):
        conn.executescript(
            "BEGIN IMMEDIATE;"
            + MIGRATIONS[number]
            + f"; PRAGMA user_version = {number + 1}; COMMIT;"
        )
    return len(MIGRATIONS)
