"""Edge agent settings as one typed table: a TOML file, ``KARKHANA_EDGE_*`` variables, flags.

The names are the same everywhere: ``gateway_id`` in the file (``gateway-id`` also works), the
``--gateway-id`` flag and ``KARKHANA_EDGE_GATEWAY_ID``. Flags win over the environment, which
wins over the file.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from karkhana.core.errors import ConfigError
from karkhana.edge.buffer import SYNCHRONOUS, WHEN_FULL
from karkhana.edge.modbus.devices import ModbusDevice, parse_devices
from karkhana.edge.opcua.servers import OpcUaServer, parse_servers

PREFIX = "KARKHANA_EDGE_"


@dataclass(frozen=True, slots=True)
class EdgeSetting:
    name: str
    type: type
    default: Any
    help: str
    secret: bool = False


EDGE_SETTINGS: tuple[EdgeSetting, ...] = (
    EdgeSetting(
        "server", str, "", "URL of the karkhana server, e.g. https://karkhana.example:8000"
    ),
    EdgeSetting("gateway_id", str, "", "this edge's device id on the server (a gateway device)"),
    EdgeSetting("token", str, "", "the gateway's device token", secret=True),
    EdgeSetting("ca_file", str, "", "CA certificate (PEM) that signed the server's certificate"),
    EdgeSetting("data_dir", Path, Path("edge-data"), "folder for the buffer file"),
    EdgeSetting("http_host", str, "0.0.0.0", "address of the local HTTP input and /health"),
    EdgeSetting("http_port", int, 8100, "port of the local HTTP input and /health"),
    EdgeSetting("mqtt_host", str, "0.0.0.0", "address of the local MQTT input (embedded broker)"),
    EdgeSetting("mqtt_port", int, 1883, "port of the local MQTT input (0: off)"),
    EdgeSetting(
        "local_token",
        str,
        "",
        "if set, local devices must send 'Authorization: Bearer <local_token>' to the HTTP input"
        " and log in to the MQTT input with user name = device id, password = <local_token>",
        secret=True,
    ),
    EdgeSetting("max_payload_bytes", int, 256 * 1024, "largest message the HTTP input accepts"),
    EdgeSetting(
        "buffer_cap_points",
        int,
        20_000_000,
        "most samples the buffer holds (about 35 B each on disk: 700 MB by default)",
    ),
    EdgeSetting(
        "when_full",
        str,
        "drop-oldest",
        "buffer at its cap: drop-oldest (keep the newest, count what is dropped) or reject-new"
        " (inputs answer 503 so devices keep their data and retry)",
    ),
    EdgeSetting(
        "fsync",
        str,
        "FULL",
        "FULL: nothing acknowledged is lost on a power cut; NORMAL: the commits since the last"
        " checkpoint may be (docs/edge.md); OFF: for tests only",
    ),
    EdgeSetting("bandwidth_bps", int, 0, "bytes a second the forwarder may send (0: no cap)"),
    EdgeSetting(
        "timeout_s", float, 30.0, "seconds to wait for the server's answer before trying again"
    ),
    EdgeSetting("batch_points", int, 20_000, "most samples in one batch"),
    EdgeSetting("batch_bytes", int, 1024 * 1024, "most compressed bytes in one batch"),
    EdgeSetting(
        "live_window_s", float, 10.0, "samples buffered this recently are sent before the backlog"
    ),
    EdgeSetting(
        "max_age_days",
        int,
        365,
        "samples older than this (server time) are quarantined on the edge, not sent",
    ),
    EdgeSetting(
        "status_interval_s", float, 60.0, "seconds between status reports to the server (0: off)"
    ),
    EdgeSetting(
        "sim_profile",
        str,
        "",
        "feed the edge from the simulator: textile, auto or food (default: off)",
    ),
    EdgeSetting("sim_devices", int, 0, "main machines of the simulated plant (0: the profile's)"),
    EdgeSetting("sim_interval_s", float, 1.0, "seconds between simulator readings"),
    EdgeSetting(
        "alarms",
        str,
        "on",
        "on: evaluate the server's alarm rules here too, so alarms fire during outages; off",
    ),
    EdgeSetting(
        "alarm_webhook",
        str,
        "",
        "URL on the factory LAN that gets every alarm raised or cleared on the edge (JSON)",
    ),
    EdgeSetting(
        "alarm_coil",
        str,
        "",
        "Modbus coil switched on while an edge alarm is open: host:port/unit/address",
    ),
    EdgeSetting("log_level", str, "info", "debug, info, warning or error"),
)
_BY_NAME = {s.name: s for s in EDGE_SETTINGS}
_CHOICES: dict[str, tuple[str, ...]] = {
    "when_full": WHEN_FULL,
    "fsync": SYNCHRONOUS,
    "sim_profile": ("", "textile", "auto", "food"),
    "alarms": ("on", "off"),
}


@dataclass(frozen=True, slots=True)
class EdgeSettings:
    server: str = ""
    gateway_id: str = ""
    token: str = ""
    ca_file: str = ""
    data_dir: Path = Path("edge-data")
    http_host: str = "0.0.0.0"
    http_port: int = 8100
    mqtt_host: str = "0.0.0.0"
    mqtt_port: int = 1883
    local_token: str = ""
    max_payload_bytes: int = 256 * 1024
    buffer_cap_points: int = 20_000_000
    when_full: str = "drop-oldest"
    fsync: str = "FULL"
    bandwidth_bps: int = 0
    timeout_s: float = 30.0
    batch_points: int = 20_000
    batch_bytes: int = 1024 * 1024
    live_window_s: float = 10.0
    max_age_days: int = 365
    status_interval_s: float = 60.0
    sim_profile: str = ""
    sim_devices: int = 0
    sim_interval_s: float = 1.0
    alarms: str = "on"
    alarm_webhook: str = ""
    alarm_coil: str = ""
    modbus: tuple[ModbusDevice, ...] = ()
    """``[[modbus]]`` tables of the config file (karkhana.edge.modbus.devices)."""
    opcua: tuple[OpcUaServer, ...] = ()
    """``[[opcua]]`` tables of the config file (karkhana.edge.opcua.servers)."""
    log_level: str = "info"

    @property
    def buffer_path(self) -> Path:
        return self.data_dir / "buffer.db"

    @property
    def local_url(self) -> str:
        host = "127.0.0.1" if self.http_host in ("0.0.0.0", "::", "") else self.http_host
        return f"http://{host}:{self.http_port}"

    def require_link(self) -> None:
        """The agent needs a server, a gateway id and a token."""
        missing = [n for n in ("server", "gateway_id", "token") if not getattr(self, n)]
        if missing:
            flags = ", ".join("--" + n.replace("_", "-") for n in missing)
            raise ConfigError(f"the edge needs {flags} (or in --config, or KARKHANA_EDGE_*)")
        if not self.server.startswith(("http://", "https://")):
            raise ConfigError(f"server must be an http:// or https:// URL, got {self.server!r}")


def _convert(setting: EdgeSetting, raw: Any, source: str) -> Any:
    if setting.type in (int, float) and isinstance(raw, bool):
        raise ConfigError(f"{source}: expected a number for {setting.name}")
    try:
        value = setting.type(raw)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{source}: expected {setting.type.__name__} for {setting.name}, got {raw!r}"
        ) from None
    if setting.type in (int, float) and value < 0:
        raise ConfigError(f"{source}: {setting.name} must not be negative")
    if setting.name in ("http_port", "mqtt_port") and not 0 <= value <= 65535:
        raise ConfigError(f"{source}: {setting.name} must be a port number (0-65535)")
    if setting.name == "fsync":
        value = str(value).upper()
    if setting.name in _CHOICES and value not in _CHOICES[setting.name]:
        allowed = ", ".join(c for c in _CHOICES[setting.name] if c)
        raise ConfigError(f"{source}: {setting.name} must be one of {allowed}, got {raw!r}")
    return value


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"no config file {path}") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    values: dict[str, Any] = {}
    for raw_name, raw in doc.items():
        name = raw_name.replace("-", "_")
        if name == "modbus":
            values["modbus"] = parse_devices(raw, str(path))
            continue
        if name == "opcua":
            values["opcua"] = parse_servers(raw, str(path))
            continue
        if name not in _BY_NAME:
            raise ConfigError(f"{path}: unknown setting {raw_name!r}")
        values[name] = _convert(_BY_NAME[name], raw, str(path))
    return values


def load(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> EdgeSettings:
    """Defaults, then the TOML file, then ``KARKHANA_EDGE_*`` variables, then overrides."""
    values = read_toml(config_file) if config_file is not None else {}
    env = os.environ if environ is None else environ
    for s in EDGE_SETTINGS:
        raw = env.get(PREFIX + s.name.upper())
        if raw:
            values[s.name] = _convert(s, raw, PREFIX + s.name.upper())
    for name, raw in (overrides or {}).items():
        if raw is None:
            continue
        if name not in _BY_NAME:
            raise ConfigError(f"unknown edge setting {name}")
        values[name] = _convert(_BY_NAME[name], raw, "--" + name.replace("_", "-"))
    return EdgeSettings(**values)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", type=Path, default=None, metavar="FILE", help="TOML file with these settings"
    )
    for s in EDGE_SETTINGS:
        parser.add_argument(
            "--" + s.name.replace("_", "-"),
            dest="edge_" + s.name,
            default=None,
            metavar=s.type.__name__.upper(),
            help=f"{s.help} (env {PREFIX}{s.name.upper()})",
        )


def from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> EdgeSettings:
    overrides = {s.name: getattr(args, "edge_" + s.name, None) for s in EDGE_SETTINGS}
    return load(args.config, environ, overrides)


def describe() -> str:
    """Markdown table of every edge setting, for docs/edge.md."""
    lines = ["| setting | environment | default | meaning |", "|---|---|---|---|"]
    for s in EDGE_SETTINGS:
        default = "(none)" if s.default in ("", None) else f"`{s.default}`"
        lines.append(
            f"| `{s.name}` / `--{s.name.replace('_', '-')}` | `{PREFIX}{s.name.upper()}`"
            f" | {default} | {s.help} |"
        )
    return "\n".join(lines)


assert {f.name for f in fields(EdgeSettings)} == set(_BY_NAME) | {"modbus", "opcua"}, (
    "EdgeSettings and table differ"
)
