"""The ``[[opcua]]`` tables of the edge config: which OPC UA servers, which nodes, which keys.

::

    [[opcua]]
    device_id = "press-1"                  # the device the samples belong to (on the server)
    url = "opc.tcp://192.168.1.60:4840"    # the PLC's or SCADA's OPC UA endpoint
    publishing_interval_ms = 1000          # how often the server sends changes (default 1000)
    timestamps = "edge"                    # "edge" (default) or "source" (the server's clock)
    timeout_s = 5.0
    username = "karkhana"                  # optional; password too
    password = "..."
    security = "Basic256Sha256,SignAndEncrypt,edge-cert.pem,edge-key.pem"  # optional

    [opcua.nodes]                          # signal key = node id
    speed_spm = "ns=2;s=Press.Speed"
    strokes = "ns=2;i=1002"

Parsing needs no OPC UA library: node ids and security strings are checked by their grammar
here, so a wrong config stops the agent at start with the table and field named, whether or not
the optional ``opcua`` extra (asyncua) is installed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from karkhana.core.errors import ConfigError
from karkhana.core.model import KEY_PATTERN, is_valid_device_id

_FIELDS = {
    "device_id",
    "url",
    "nodes",
    "publishing_interval_ms",
    "timestamps",
    "timeout_s",
    "username",
    "password",
    "security",
}
NODE_ID = re.compile(
    r"^(ns=\d{1,5};)?(i=\d{1,10}|s=.{1,1024}|g=[0-9A-Fa-f]{8}(-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}"
    r"|b=[A-Za-z0-9+/=]{1,1024})$"
)
POLICIES = (
    "Basic128Rsa15",
    "Basic256",
    "Basic256Sha256",
    "Aes128Sha256RsaOaep",
    "Aes256Sha256RsaPss",
)
MODES = ("Sign", "SignAndEncrypt")
TIMESTAMPS = ("edge", "source")
MAX_NODES = 2_000


@dataclass(frozen=True, slots=True)
class OpcUaServer:
    """One OPC UA server the edge subscribes to, for one device."""

    device_id: str
    url: str
    nodes: tuple[tuple[str, str], ...]
    """``(key, node id)`` pairs, in the file's order."""
    publishing_interval_ms: int = 1000
    timestamps: str = "edge"
    timeout_s: float = 5.0
    username: str = ""
    password: str = ""
    security: str = ""

    def __repr__(self) -> str:  # never the password
        return (
            f"OpcUaServer(device_id={self.device_id!r}, url={self.url!r}, nodes={len(self.nodes)})"
        )


def parse_servers(raw: Any, source: str) -> tuple[OpcUaServer, ...]:
    """The ``[[opcua]]`` array of tables of a config file, validated."""
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        raise ConfigError(f"{source}: opcua must be an array of tables ([[opcua]])")
    servers: list[OpcUaServer] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        where = f"{source}: opcua[{i}]"
        for name in item:
            if name not in _FIELDS:
                allowed = ", ".join(sorted(_FIELDS))
                raise ConfigError(f"{where}.{name}: unknown field (expected one of {allowed})")
        device_id = _text(item, "device_id", where)
        if not is_valid_device_id(device_id):
            raise ConfigError(f"{where}.device_id: {device_id!r} is not a valid device id")
        if device_id in seen:
            raise ConfigError(f"{where}.device_id: {device_id!r} is read twice")
        seen.add(device_id)
        url = _text(item, "url", where)
        if not url.startswith("opc.tcp://") or len(url) <= len("opc.tcp://"):
            raise ConfigError(f"{where}.url: expected opc.tcp://host:port/..., got {url!r}")
        timestamps = _text(item, "timestamps", where, "edge")
        if timestamps not in TIMESTAMPS:
            raise ConfigError(
                f"{where}.timestamps: expected 'edge' or 'source', got {timestamps!r}"
            )
        security = _text(item, "security", where, "", empty=True)
        if security:
            _check_security(security, f"{where}.security")
        servers.append(
            OpcUaServer(
                device_id=device_id,
                url=url,
                nodes=_nodes(item.get("nodes"), f"{where}.nodes"),
                publishing_interval_ms=int(
                    _number(item, "publishing_interval_ms", where, 1000, 10, 3_600_000)
                ),
                timestamps=timestamps,
                timeout_s=_number(item, "timeout_s", where, 5.0, 0.1, 600.0),
                username=_text(item, "username", where, "", empty=True),
                password=_text(item, "password", where, "", empty=True),
                security=security,
            )
        )
    return tuple(servers)


def _nodes(raw: Any, where: str) -> tuple[tuple[str, str], ...]:
    if raw is None:
        raise ConfigError(f"{where}: missing (a table of signal key = node id)")
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{where}: expected a table of signal key = node id, got {raw!r}")
    if len(raw) > MAX_NODES:
        raise ConfigError(f"{where}: {len(raw)} nodes; at most {MAX_NODES} per server")
    pairs: list[tuple[str, str]] = []
    for key, node in raw.items():
        if not KEY_PATTERN.match(key):
            raise ConfigError(f"{where}.{key}: not a valid signal key")
        if not isinstance(node, str) or not NODE_ID.match(node):
            raise ConfigError(
                f"{where}.{key}: {node!r} is not an OPC UA node id (like 'ns=2;s=Line1.Speed'"
                " or 'ns=2;i=1002')"
            )
        pairs.append((key, node))
    return tuple(pairs)


def _check_security(value: str, where: str) -> None:
    parts = [p.strip() for p in value.split(",")]
    if len(parts) not in (4, 5) or parts[0] not in POLICIES or parts[1] not in MODES:
        raise ConfigError(
            f"{where}: expected 'Policy,Mode,client-cert.pem,client-key.pem[,server-cert.der]'"
            f" with Policy one of {', '.join(POLICIES)} and Mode Sign or SignAndEncrypt"
        )


def _text(
    item: dict[str, Any], name: str, where: str, default: str | None = None, *, empty: bool = False
) -> str:
    value = item.get(name, default)
    if value is None:
        raise ConfigError(f"{where}.{name}: missing")
    if not isinstance(value, str) or (not empty and not value.strip()):
        raise ConfigError(f"{where}.{name}: expected non-empty text")
    return value


def _number(
    item: dict[str, Any], name: str, where: str, default: float, low: float, high: float
) -> float:
    value = item.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}.{name}: expected a number, got {value!r}")
    if not math.isfinite(value) or not low <= value <= high:
        raise ConfigError(f"{where}.{name}: must be between {low:g} and {high:g}, got {value!r}")
    return float(value)
