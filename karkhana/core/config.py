"""Settings as one typed table: name, type, default, help.

Every setting can come from a command-line flag (``--http-port``) or the environment
(``KARKHANA_HTTP_PORT``); flags win. The table is the single source for both and for the docs.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from karkhana.core.errors import ConfigError

PREFIX = "KARKHANA_"


@dataclass(frozen=True, slots=True)
class Setting:
    name: str
    type: type
    default: Any
    help: str
    secret: bool = False


SETTINGS: tuple[Setting, ...] = (
    Setting("http_host", str, "0.0.0.0", "address the HTTP API and dashboard listen on"),
    Setting("http_port", int, 8000, "port of the HTTP API and dashboard"),
    Setting("mqtt_host", str, "0.0.0.0", "address the embedded MQTT broker listens on"),
    Setting("mqtt_port", int, 1883, "port of the embedded MQTT broker"),
    Setting(
        "mqtt_url",
        str,
        "",
        "external MQTT broker to subscribe to (mqtt://user:password@host:port) instead of"
        " embedding one",
        secret=True,
    ),
    Setting(
        "mqtt_ca_file",
        str,
        "",
        "CA certificate (PEM) that signed the external broker's certificate, for an mqtts://"
        " mqtt_url (default: the system's trusted CAs)",
    ),
    Setting(
        "mosquitto_pid_file",
        str,
        "/run/mosquitto/mosquitto.pid",
        "after `karkhana mosquitto init`: Mosquitto's pid file, to send it SIGHUP when device"
        " credentials change (off: something else reloads it, see docs/mosquitto.md)",
    ),
    Setting(
        "tls",
        str,
        "auto",
        "HTTPS and MQTTS: auto = on once `karkhana certs init` has made tls/server.pem in"
        " data_dir, on = required, off = plain HTTP and MQTT",
    ),
    Setting("mqtts_port", int, 8883, "port of the embedded broker's MQTT over TLS listener"),
    Setting(
        "mqtt_plain",
        str,
        "off",
        "with TLS on, also accept unencrypted MQTT on mqtt_port (on or off); with TLS off it is"
        " always on",
    ),
    Setting("data_dir", Path, Path("data"), "folder for the database and generated files"),
    Setting(
        "admin_password",
        str,
        "",
        "password of the first admin, used on first start only; random and printed once if unset",
        secret=True,
    ),
    Setting("max_payload_bytes", int, 256 * 1024, "largest telemetry message accepted"),
    Setting("max_future_s", int, 86_400, "reject samples timestamped further ahead than this"),
    Setting(
        "edge_max_batch_bytes",
        int,
        2 * 1024 * 1024,
        "largest compressed batch an edge agent may send (POST /api/v1/edge/batches)",
    ),
    Setting(
        "edge_create_children",
        str,
        "on",
        "on: a device that an edge gateway sends data for and that does not exist yet is created"
        " as the gateway's child, in its site; off: children must be registered first",
    ),
    Setting("edge_max_children", int, 1000, "most child devices one edge gateway may create"),
    Setting(
        "device_max_msgs_per_s",
        int,
        20,
        "telemetry messages a second one device may send, over HTTP and MQTT alike; more are"
        " refused (HTTP 429) or dropped (MQTT) and counted (0 = no limit)",
    ),
    Setting(
        "device_burst_msgs",
        int,
        200,
        "messages one device may send at once before device_max_msgs_per_s applies",
    ),
    Setting(
        "http_max_connections",
        int,
        1000,
        "open HTTP connections and requests in progress; beyond this the server answers 503"
        " (0 = no limit)",
    ),
    Setting(
        "http_header_timeout_s",
        int,
        10,
        "seconds an HTTP client has to send a request's headers, from connecting or from the"
        " previous answer; a slower connection is closed (0 = no limit)",
    ),
    Setting(
        "http_body_timeout_s",
        int,
        60,
        "seconds an HTTP client has to send the body of a telemetry request (0 = no limit)",
    ),
    Setting(
        "mqtt_max_connections",
        int,
        2000,
        "connections the embedded MQTT broker holds; more are closed at once (0 = no limit)",
    ),
    Setting(
        "mqtt_read_timeout_s",
        int,
        10,
        "seconds the embedded broker waits for a new connection's CONNECT, and for the rest of a"
        " packet once it has begun; a slower connection is closed (0 = no limit)",
    ),
    Setting("raw_retention_days", int, 30, "days raw samples are kept (0 = forever)"),
    Setting("rollup_1m_retention_days", int, 400, "days 1-minute rollups are kept (0 = forever)"),
    Setting("rollup_1h_retention_days", int, 0, "days 1-hour rollups are kept (0 = forever)"),
    Setting(
        "sqlite_synchronous",
        str,
        "FULL",
        "SQLite fsync policy: FULL survives power cuts with no loss of acknowledged data;"
        " NORMAL may lose the last commits on a power cut",
    ),
    Setting(
        "writer_max_batch",
        int,
        50_000,
        "most samples the writer commits in one transaction (bigger groups amortise the"
        " per-series cost of rollups under heavy load)",
    ),
    Setting("token_ttl_hours", int, 12, "lifetime of API tokens issued at login"),
    Setting(
        "energy_tariff",
        str,
        "nepra_b2b_tou_example",
        "electricity tariff id of every site that <data_dir>/energy.toml does not give its own"
        " (shipped files and <data_dir>/tariffs/*.toml; see docs/energy.md)",
    ),
    Setting(
        "diesel_price_pkr_per_litre",
        float,
        285.0,
        "diesel price for the generator's fuel cost, per litre in the tariff's currency",
    ),
    Setting(
        "generator_kva",
        float,
        0.0,
        "rating of the standby generator in kVA, for its diesel estimate (0 = none or unknown)",
    ),
    Setting("log_level", str, "info", "debug, info, warning or error"),
)

_BY_NAME = {s.name: s for s in SETTINGS}
_CHOICES = {
    "tls": ("auto", "on", "off"),
    "mqtt_plain": ("on", "off"),
    "edge_create_children": ("on", "off"),
}


@dataclass(frozen=True, slots=True)
class Settings:
    http_host: str = "0.0.0.0"
    http_port: int = 8000
    mqtt_host: str = "0.0.0.0"
    mqtt_port: int = 1883
    mqtt_url: str = ""
    mqtt_ca_file: str = ""
    mosquitto_pid_file: str = "/run/mosquitto/mosquitto.pid"
    tls: str = "auto"
    mqtts_port: int = 8883
    mqtt_plain: str = "off"
    data_dir: Path = Path("data")
    admin_password: str = ""
    max_payload_bytes: int = 256 * 1024
    max_future_s: int = 86_400
    edge_max_batch_bytes: int = 2 * 1024 * 1024
    edge_create_children: str = "on"
    edge_max_children: int = 1000
    device_max_msgs_per_s: int = 20
    device_burst_msgs: int = 200
    http_max_connections: int = 1000
    http_header_timeout_s: int = 10
    http_body_timeout_s: int = 60
    mqtt_max_connections: int = 2000
    mqtt_read_timeout_s: int = 10
    raw_retention_days: int = 30
    rollup_1m_retention_days: int = 400
    rollup_1h_retention_days: int = 0
    sqlite_synchronous: str = "FULL"
    writer_max_batch: int = 50_000
    token_ttl_hours: int = 12
    energy_tariff: str = "nepra_b2b_tou_example"
    diesel_price_pkr_per_litre: float = 285.0
    generator_kva: float = 0.0
    log_level: str = "info"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "karkhana.db"

    def replace(self, **changes: Any) -> Settings:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return Settings(**values)


def _convert(setting: Setting, raw: str, source: str) -> Any:
    try:
        value = setting.type(raw)
    except ValueError:
        raise ConfigError(
            f"{source}: expected {setting.type.__name__} for {setting.name}, got {raw!r}"
        ) from None
    if setting.type in (int, float) and not value >= 0:
        raise ConfigError(f"{source}: {setting.name} must not be negative")
    if setting.name.endswith("_port") and not 0 <= value <= 65535:
        raise ConfigError(f"{source}: {setting.name} must be a port number (0-65535)")
    if setting.name == "sqlite_synchronous" and str(value).upper() not in {
        "FULL",
        "NORMAL",
        "EXTRA",
    }:
        raise ConfigError(f"{source}: sqlite_synchronous must be FULL, NORMAL or EXTRA")
    if setting.name in _CHOICES and value not in _CHOICES[setting.name]:
        *first, last = _CHOICES[setting.name]
        raise ConfigError(
            f"{source}: {setting.name} must be {', '.join(first)} or {last}, got {raw!r}"
        )
    return value


def load(
    environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
) -> Settings:
    """Settings from defaults, then ``KARKHANA_*`` environment variables, then overrides."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for s in SETTINGS:
        raw = env.get(PREFIX + s.name.upper())
        if raw is not None and raw != "":
            values[s.name] = _convert(s, raw, PREFIX + s.name.upper())
    for name, value in (overrides or {}).items():
        if value is None:
            continue
        if name not in _BY_NAME:
            raise ConfigError(f"unknown setting {name}")
        s = _BY_NAME[name]
        # strings from flags are checked like those from the environment
        typed = isinstance(value, s.type) and s.type is not str
        values[name] = value if typed else _convert(s, str(value), "--" + name)
    return Settings(**values)


def add_arguments(parser: argparse.ArgumentParser, names: tuple[str, ...] | None = None) -> None:
    """Add a ``--flag`` for each setting (or the named ones) to an argparse parser."""
    for s in SETTINGS:
        if names is not None and s.name not in names:
            continue
        parser.add_argument(
            "--" + s.name.replace("_", "-"),
            dest=s.name,
            default=None,
            metavar=s.type.__name__.upper(),
            help=f"{s.help} (env {PREFIX}{s.name.upper()}, default {s.default!s:.40})",
        )


def from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Settings:
    overrides = {s.name: getattr(args, s.name, None) for s in SETTINGS}
    return load(environ, overrides)


def describe() -> str:
    """Markdown table of every setting, for docs/configuration.md."""
    lines = ["| setting | environment | default | meaning |", "|---|---|---|---|"]
    for s in SETTINGS:
        default = "(none)" if s.default in ("", None) else f"`{s.default}`"
        lines.append(
            f"| `--{s.name.replace('_', '-')}` | `{PREFIX}{s.name.upper()}` | {default} | {s.help} |"
        )
    return "\n".join(lines)


assert {f.name for f in fields(Settings)} == set(_BY_NAME), "Settings and SETTINGS must agree"
