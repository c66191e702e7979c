"""Per-device accounts and topic ACLs for Mosquitto, as generated files the server keeps current.

The device registry is the source of truth: every device row carries its token in Mosquitto's
password format (made at create or rotate, the only moments the plaintext exists), so the
password and ACL files can be written again from the database at any time, after a broker
outage or a restore included. After a change the server sends Mosquitto SIGHUP; Mosquitto 2.0
then re-reads both files and disconnects every client whose password or account no longer holds,
which is what makes rotation and deletion take effect at once (docs/mosquitto.md says why this
was chosen over the dynamic-security plugin).

Files in ``<data_dir>/mosquitto/``:

    karkhana.conf   the snippet for Mosquitto: listener, no anonymous access, the two files below
    passwords       ``<device id>:$7$...`` per device, and the server's own account (mode 0640)
    acl             a device reads and writes under ``karkhana/<id>/``, a gateway also under its
                    children's topics, the server only reads ``karkhana/+/telemetry`` (0640)
    server.secret   the server account's password (0600), part of the ``--mqtt-url``
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from karkhana.core.errors import ConfigError, KarkhanaError
from karkhana.core.files import write_atomically
from karkhana.ingest.service import TELEMETRY_FILTER, TOPIC_PREFIX
from karkhana.security.devices import DeviceRegistry, MqttAccount
from karkhana.security.secrets import mosquitto_hash, mosquitto_hash_matches

log = logging.getLogger(__name__)

SERVER_USER = "_karkhana-server"
"""Starts with '_', so no device can have this id (device ids start with a letter or digit)."""


@dataclass(frozen=True, slots=True)
class MosquittoPaths:
    root: Path

    @classmethod
    def of(cls, data_dir: Path) -> MosquittoPaths:
        return cls(data_dir / "mosquitto")

    @property
    def conf(self) -> Path:
        return self.root / "karkhana.conf"

    @property
    def passwords(self) -> Path:
        return self.root / "passwords"

    @property
    def acl(self) -> Path:
        return self.root / "acl"

    @property
    def server_secret(self) -> Path:
        return self.root / "server.secret"

    @property
    def initialised(self) -> bool:
        """``karkhana mosquitto init`` has run: the server keeps these files in sync."""
        return self.server_secret.exists()


# -- pure rendering ----------------------------------------------------------------------------


def render_passwords(server_hash: str, accounts: Iterable[MqttAccount]) -> str:
    lines = [f"{SERVER_USER}:{server_hash}"]
    lines += [f"{a.id}:{a.mqtt_hash}" for a in accounts if a.mqtt_hash is not None]
    return "\n".join(lines) + "\n"


def render_acl(accounts: Sequence[MqttAccount]) -> str:
    """Explicit per-user rules (no ``pattern`` lines): the server account must not match them."""
    children: dict[str, list[str]] = {}
    for a in accounts:
        if a.parent_id is not None:
            children.setdefault(a.parent_id, []).append(a.id)
    lines = [
        "# written by karkhana from its device registry; changes here are overwritten",
        f"user {SERVER_USER}",
        f"topic read {TELEMETRY_FILTER}",
    ]
    for a in accounts:
        if a.mqtt_hash is None:
            continue
        lines += ["", f"user {a.id}", f"topic readwrite {TOPIC_PREFIX}{a.id}/#"]
        lines += [f"topic readwrite {TOPIC_PREFIX}{child}/#" for child in children.get(a.id, [])]
    return "\n".join(lines) + "\n"


def render_conf(paths: MosquittoPaths, port: int, bind: str = "") -> str:
    root = paths.root.resolve()
    return "\n".join(
        [
            "# written by `karkhana mosquitto init`; include it from mosquitto.conf",
            f"listener {port}" + (f" {bind}" if bind else ""),
            "allow_anonymous false",
            f"password_file {root / paths.passwords.name}",
            f"acl_file {root / paths.acl.name}",
            "",
        ]
    )


def server_url(secret: str, host: str, port: int) -> str:
    host = f"[{host}]" if ":" in host else host
    return f"mqtt://{SERVER_USER}:{quote(secret, safe='')}@{host}:{port}"


def _server_hash(secret: str, passwords: str | None) -> str:
    """The server's line of the current file when it still matches, so that an unchanged
    registry renders byte-identical files (and Mosquitto is not reloaded for nothing)."""
    for line in (passwords or "").splitlines():
        user, _, hashed = line.partition(":")
        if user == SERVER_USER and mosquitto_hash_matches(secret, hashed):
            return hashed
    return mosquitto_hash(secret)


# -- files and the broker process ---------------------------------------------------------------


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def write_files(paths: MosquittoPaths, passwords: str, acl: str) -> bool:
    """Write what differs (the ACL first: a new device's rules exist before its login does);
    returns whether anything changed. Raises ConfigError."""
    changed = False
    try:
        for path, text in ((paths.acl, acl), (paths.passwords, passwords)):
            if _read(path) != text:
                write_atomically(path, text.encode(), 0o640, dir_mode=0o750)
                changed = True
    except OSError as exc:
        raise ConfigError(f"cannot write Mosquitto files in {paths.root}: {exc}") from None
    return changed


def reload_broker(pid_file: Path) -> None:
    """SIGHUP to the Mosquitto process named by ``pid_file``; raises ConfigError."""
    try:
        pid = int(pid_file.read_text().strip())
    except FileNotFoundError:
        raise ConfigError(
            f"Mosquitto pid file {pid_file} not found: is Mosquitto running? It reads the new"
            " files when it starts"
        ) from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read Mosquitto pid file {pid_file}: {exc}") from None
    comm = Path(f"/proc/{pid}/comm")
    # a stale pid file may name some other process now; SIGHUP would stop most programs
    if comm.parent.parent.is_dir() and _read(comm) not in (None, "mosquitto\n"):
        raise ConfigError(f"process {pid} from {pid_file} is not mosquitto (stale pid file?)")
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise ConfigError(f"Mosquitto (pid {pid} from {pid_file}) is not running") from None
    except PermissionError:
        raise ConfigError(
            f"not allowed to signal Mosquitto (pid {pid}): run the server as Mosquitto's user, or"
            " set mosquitto_pid_file=off and reload it with the systemd path unit in"
            " docs/mosquitto.md"
        ) from None


class MosquittoSync:
    """Keeps the password and ACL files equal to the device registry, and Mosquitto reloaded."""

    def __init__(
        self, devices: DeviceRegistry, paths: MosquittoPaths, pid_file: Path | None
    ) -> None:
        """``pid_file`` None: something else reloads Mosquitto when the files change."""
        self.devices = devices
        self.paths = paths
        self.pid_file = pid_file
        self._lock = asyncio.Lock()

    async def sync(self, *, reload: bool = False) -> bool:
        """Write the files from the registry; reload Mosquitto when they changed (or always,
        with ``reload``). Raises ConfigError when the files cannot be written or Mosquitto
        cannot be told."""
        async with self._lock:
            accounts = await self.devices.mqtt_accounts()
            changed = await asyncio.to_thread(self._write, accounts)
            if (changed or reload) and self.pid_file is not None:
                reload_broker(self.pid_file)
            return changed

    async def start(self) -> None:
        """At server start: bring the files up to date and follow every later change. The
        reload is sent even for unchanged files, in case an earlier one failed."""
        try:
            await self.sync(reload=True)
        except KarkhanaError as exc:
            log.error("Mosquitto files: %s", exc.message)
        self.devices.on_changed(self.device_changed)

    def _write(self, accounts: Sequence[MqttAccount]) -> bool:
        try:
            secret = self.paths.server_secret.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read {self.paths.server_secret}: {exc}") from None
        passwords = render_passwords(_server_hash(secret, _read(self.paths.passwords)), accounts)
        return write_files(self.paths, passwords, render_acl(accounts))

    async def device_changed(self, device_id: str) -> None:
        """Registry listener. The device change is committed already and cannot be undone, so a
        failure here is logged loudly instead of failing the request that made it."""
        try:
            await self.sync()
        except KarkhanaError as exc:
            log.error(
                "Mosquitto not updated after a change to device %s: %s", device_id, exc.message
            )


@dataclass(frozen=True, slots=True)
class InitResult:
    paths: MosquittoPaths
    url: str
    created_secret: bool
    reload_error: str | None
    without_credential: tuple[str, ...]
    """Devices made before Mosquitto hashes were kept: they need a new token to log in."""


async def init(
    devices: DeviceRegistry,
    data_dir: Path,
    *,
    port: int = 1883,
    bind: str = "",
    pid_file: Path | None = None,
) -> InitResult:
    """Write ``<data_dir>/mosquitto/`` (keeping the server's password when it exists)."""
    paths = MosquittoPaths.of(data_dir)
    created = not paths.server_secret.exists()
    try:
        paths.root.mkdir(parents=True, exist_ok=True, mode=0o750)
        if created:
            write_atomically(
                paths.server_secret, (secrets.token_urlsafe(32) + "\n").encode(), 0o600
            )
        if _read(paths.conf) != (conf := render_conf(paths, port, bind)):
            write_atomically(paths.conf, conf.encode(), 0o644, dir_mode=0o750)
        secret = paths.server_secret.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot write Mosquitto files in {paths.root}: {exc}") from None
    reload_error = None
    try:
        await MosquittoSync(devices, paths, pid_file).sync()
    except ConfigError as exc:
        if paths.passwords.exists() and paths.acl.exists():
            reload_error = exc.message
        else:
            raise
    host = bind if bind and bind not in ("0.0.0.0", "::") else "127.0.0.1"
    accounts = await devices.mqtt_accounts()
    return InitResult(
        paths,
        server_url(secret, host, port),
        created,
        reload_error,
        tuple(a.id for a in accounts if a.mqtt_hash is None),
    )
