"""Registering simulated devices with a server and keeping their tokens between runs.

Tokens are secrets: the credentials file is written atomically and readable by its owner only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import httpx

from karkhana.core.errors import ConfigError, Forbidden, Unauthorized
from karkhana.core.files import write_atomically
from karkhana.sim.device import SimDevice
from karkhana.sim.transport import TransportError

CREDENTIALS_FORMAT = 1


class Provisioner(Protocol):
    async def ensure(self, devices: Sequence[SimDevice]) -> dict[str, str]:
        """A token for every device (device id -> token), registering devices as needed."""
        ...


class StaticProvisioner:
    """Tokens known in advance (an in-process demo that created the devices itself)."""

    def __init__(self, tokens: Mapping[str, str]) -> None:
        self.tokens = dict(tokens)

    async def ensure(self, devices: Sequence[SimDevice]) -> dict[str, str]:
        missing = [d.device_id for d in devices if d.device_id not in self.tokens]
        if missing:
            raise ConfigError(f"no token for device(s) {', '.join(missing)}")
        return {d.device_id: self.tokens[d.device_id] for d in devices}


class HttpProvisioner:
    """Creates devices through the HTTP API as an administrator; rotates tokens it has lost."""

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        credentials_file: Path,
        *,
        timeout_s: float = 10.0,
        http_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.username = username
        self.password = password
        self.credentials_file = credentials_file
        self.timeout_s = timeout_s
        self._http_transport = http_transport

    async def ensure(self, devices: Sequence[SimDevice]) -> dict[str, str]:
        return await self._register(devices, everyone=False)

    async def refresh(self, devices: Sequence[SimDevice]) -> dict[str, str]:
        """New tokens for all ``devices``, for when the server no longer accepts the saved ones
        (its database was reset, or the tokens were rotated by someone else)."""
        return await self._register(devices, everyone=True)

    async def _register(self, devices: Sequence[SimDevice], everyone: bool) -> dict[str, str]:
        tokens = load_credentials(self.credentials_file, self.base_url)
        missing = [d for d in devices if everyone or d.device_id not in tokens]
        if missing:
            async with self._client() as client:
                session = await self._login(client)
                try:
                    for device in missing:
                        tokens[device.device_id] = await self._create(client, session, device)
                finally:
                    save_credentials(self.credentials_file, self.base_url, tokens)
        return {d.device_id: tokens[d.device_id] for d in devices}

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.base_url, timeout=self.timeout_s, transport=self._http_transport
        )

    async def _login(self, client: httpx.AsyncClient) -> str:
        if not self.password:
            raise ConfigError(
                "devices must be registered but no admin password was given "
                "(use --password or KARKHANA_ADMIN_PASSWORD)"
            )
        body = {"username": self.username, "password": self.password}
        response = await self._post(client, "/api/v1/auth/login", body, None)
        if response.status_code in (400, 401, 403):
            raise Unauthorized(
                f"login to {self.base_url} as {self.username!r} failed: wrong password?"
            )
        return self._field(response, "token", 200)

    async def _create(self, client: httpx.AsyncClient, session: str, device: SimDevice) -> str:
        body = {"id": device.device_id, "name": device.name, "template": device.template}
        response = await self._post(client, "/api/v1/devices", body, session)
        if response.status_code == 409:
            return await self._rotate(client, session, device.device_id)
        return self._field(response, "token", 201, 200)

    async def _rotate(self, client: httpx.AsyncClient, session: str, device_id: str) -> str:
        response = await self._post(
            client, f"/api/v1/devices/{device_id}/rotate-token", {}, session
        )
        return self._field(response, "token", 200, 201)

    async def _post(
        self, client: httpx.AsyncClient, path: str, body: Mapping[str, Any], session: str | None
    ) -> httpx.Response:
        headers = {} if session is None else {"Authorization": f"Bearer {session}"}
        try:
            return await client.post(path, json=dict(body), headers=headers)
        except httpx.TransportError as exc:
            raise TransportError(
                f"cannot reach {self.base_url}: {exc or type(exc).__name__}"
            ) from None

    def _field(self, response: httpx.Response, name: str, *ok: int) -> str:
        where = f"POST {response.request.url.path}"
        if response.status_code == 401:
            raise Unauthorized(f"{where}: the server no longer accepts the admin session")
        if response.status_code == 403:
            raise Forbidden(f"{where}: user {self.username!r} may not manage devices")
        if response.status_code not in ok:
            raise TransportError(f"{where} answered {response.status_code}: {response.text[:200]}")
        try:
            value = response.json()[name]
        except (ValueError, KeyError, TypeError):
            raise TransportError(
                f"{where}: expected JSON with {name!r}, got {response.text[:200]}"
            ) from None
        if not isinstance(value, str) or not value:
            raise TransportError(f"{where}: {name!r} is not a non-empty string")
        return value


def load_credentials(path: Path, server: str) -> dict[str, str]:
    """Saved tokens for ``server``; tokens saved for another server are ignored."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read credentials: {exc}") from None
    tokens = doc.get("tokens") if isinstance(doc, dict) else None
    if not isinstance(tokens, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in tokens.items()
    ):
        raise ConfigError(f"{path}: not a simulator credentials file (delete it to start over)")
    if doc.get("server") != server.rstrip("/"):
        return {}
    return dict(tokens)


def save_credentials(path: Path, server: str, tokens: Mapping[str, str]) -> None:
    doc = {"format": CREDENTIALS_FORMAT, "server": server.rstrip("/"), "tokens": dict(tokens)}
    data = (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()
    try:
        write_atomically(path, data, 0o600, dir_mode=0o755)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot save credentials: {exc.strerror}") from None
