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
    # maintenance: work orders, preventive schedules, learned condition-monitoring models
    """
    CREATE TABLE maintenance_schedules (
        id INTEGER PRIMARY KEY,
        machine_id TEXT NOT NULL REFERENCES machines (id) ON DELETE CASCADE,
        title TEXT NOT NULL,
        basis TEXT NOT NULL,
        interval REAL NOT NULL,
        signal TEXT,
        lead REAL NOT NULL,
        created_ms INTEGER NOT NULL,
        last_done_ms INTEGER NOT NULL,
        last_done_meter REAL NOT NULL,
        active INTEGER NOT NULL DEFAULT 1
    );
    CREATE INDEX maintenance_schedules_machine ON maintenance_schedules (machine_id);
    CREATE TABLE work_orders (
        id INTEGER PRIMARY KEY,
        machine_id TEXT NOT NULL REFERENCES machines (id) ON DELETE CASCADE,
        title TEXT NOT NULL,
        kind TEXT NOT NULL,
        source TEXT NOT NULL,
        source_ref TEXT,
        priority TEXT NOT NULL,
        status TEXT NOT NULL,
        assignee TEXT,
        parts TEXT NOT NULL DEFAULT '[]',
        notes TEXT NOT NULL DEFAULT '',
        breakdown INTEGER NOT NULL DEFAULT 0,
        down_start_ms INTEGER,
        down_end_ms INTEGER,
        started_ms INTEGER,
        completed_ms INTEGER,
        schedule_id INTEGER REFERENCES maintenance_schedules (id) ON DELETE SET NULL,
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL
    );
    CREATE INDEX work_orders_machine ON work_orders (machine_id, created_ms);
    CREATE INDEX work_orders_status ON work_orders (status);
    CREATE TABLE condition_models (
        machine_id TEXT PRIMARY KEY REFERENCES machines (id) ON DELETE CASCADE,
        detector BLOB NOT NULL,
        first_ts INTEGER NOT NULL,
        last_ts INTEGER NOT NULL,
        score REAL,
        run_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL
    );
    """,
    # production: machine state intervals (end_ms NULL while open), output per minute, and the
    # last reading of each count signal so that increments continue across restarts
    """
    CREATE TABLE production_intervals (
        id INTEGER PRIMARY KEY,
        machine_id TEXT NOT NULL REFERENCES machines (id) ON DELETE CASCADE,
        start_ms INTEGER NOT NULL,
        end_ms INTEGER,
        state TEXT NOT NULL,
        reason_id TEXT,
        auto INTEGER NOT NULL DEFAULT 0,
        UNIQUE (machine_id, start_ms)
    );
    CREATE INDEX production_intervals_start ON production_intervals (start_ms);
    CREATE TABLE production_counts (
        machine_id TEXT NOT NULL REFERENCES machines (id) ON DELETE CASCADE,
        minute_ms INTEGER NOT NULL,
        total REAL NOT NULL DEFAULT 0,
        rejects REAL NOT NULL DEFAULT 0,
        PRIMARY KEY (machine_id, minute_ms)
    ) WITHOUT ROWID;
    CREATE TABLE production_counters (
        machine_id TEXT NOT NULL REFERENCES machines (id) ON DELETE CASCADE,
        signal TEXT NOT NULL,
        ts INTEGER NOT NULL,
        value REAL NOT NULL,
        PRIMARY KEY (machine_id, signal)
    ) WITHOUT ROWID;
    """,
    # alarms (alarms/service.py): rules as JSON, alarm history, notification channels,
    # recipients and the durable outbox of notifications
    """
    CREATE TABLE alarm_rules (
        id TEXT PRIMARY KEY,
        body TEXT NOT NULL,
        machine_id TEXT,
        template TEXT,
        site_id TEXT,
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL
    );
    CREATE TABLE alarms (
        id TEXT PRIMARY KEY,
        rule_id TEXT NOT NULL,
        machine_id TEXT NOT NULL,
        site_id TEXT,
        signal TEXT NOT NULL,
        severity TEXT NOT NULL,
        state TEXT NOT NULL,
        message_en TEXT NOT NULL,
        message_ur TEXT NOT NULL,
        value TEXT,
        limit_value REAL,
        unit TEXT,
        raised_ms INTEGER NOT NULL,
        last_ms INTEGER NOT NULL,
        acked_ms INTEGER,
        acked_by TEXT,
        ack_comment TEXT,
        cleared_ms INTEGER,
        shelved_until_ms INTEGER,
        count INTEGER NOT NULL DEFAULT 1,
        origin TEXT NOT NULL,
        level INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX alarms_condition ON alarms (rule_id, machine_id, raised_ms);
    CREATE INDEX alarms_raised ON alarms (raised_ms);
    CREATE INDEX alarms_state ON alarms (state);
    CREATE TABLE alarm_raises (
        event_id TEXT PRIMARY KEY,
        alarm_id TEXT NOT NULL,
        ts INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE notify_channels (id TEXT PRIMARY KEY, body TEXT NOT NULL, updated_ms INTEGER NOT NULL);
    CREATE TABLE notify_recipients (
        id TEXT PRIMARY KEY, body TEXT NOT NULL, updated_ms INTEGER NOT NULL
    );
    CREATE TABLE notify_outbox (
        id INTEGER PRIMARY KEY,
        alarm_id TEXT NOT NULL,
        channel_id TEXT NOT NULL,
        recipient_id TEXT NOT NULL,
        address TEXT NOT NULL,
        subject TEXT NOT NULL,
        body TEXT NOT NULL,
        reason TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        deferred INTEGER NOT NULL DEFAULT 0,
        next_ms INTEGER NOT NULL,
        created_ms INTEGER NOT NULL,
        sent_ms INTEGER,
        last_error TEXT
    );
    CREATE INDEX notify_outbox_due ON notify_outbox (state, next_ms);
    """,
    # maintenance: hourly running-time means of each machine's signals (remaining-life input)
    """
    CREATE TABLE condition_cycles (
        machine_id TEXT NOT NULL REFERENCES machines (id) ON DELETE CASCADE,
        start_ms INTEGER NOT NULL,
        means TEXT NOT NULL,
        rows INTEGER NOT NULL,
        PRIMARY KEY (machine_id, start_ms)
    ) WITHOUT ROWID;
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
