"""Notification channels, recipients and routing: who is told what, when, and how.

Pure: channels and recipients are parsed from their JSON form, payloads rendered from the
templates in templates/payloads/, quiet hours and retry back-off computed from times passed in.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx

from karkhana.alarms.model import ID, ROLES
from karkhana.core.errors import ConfigError, InvalidPayload

PAYLOADS = Path(__file__).resolve().parent / "templates" / "payloads"
SECRET = "********"
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_EMAIL = re.compile(r"^[!-?A-~]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$|^\[?[0-9A-Fa-f:.]+\]?$")
_HEADER_VALUE = re.compile(r"^[ -~]*$")
_PHONE = re.compile(r"^\+?[0-9]{6,15}$")
_HEADER = re.compile(r"^[A-Za-z0-9-]{1,64}$")


@dataclass(frozen=True, slots=True)
class EmailChannel:
    id: str
    host: str
    sender: str
    port: int = 25
    username: str = ""
    password: str = ""
    security: Literal["none", "starttls", "tls"] = "none"
    timeout_s: float = 10.0


@dataclass(frozen=True, slots=True)
class WebhookChannel:
    id: str
    url: str
    template: str = "generic"
    headers: tuple[tuple[str, str], ...] = ()
    username: str = ""
    password: str = ""
    sender: str = ""
    """The From number or name, for SMS gateways."""
    timeout_s: float = 10.0


Channel = EmailChannel | WebhookChannel


@dataclass(frozen=True, slots=True)
class QuietHours:
    start_min: int
    end_min: int
    timezone: str = "Asia/Karachi"
    critical: bool = True
    """Critical alarms still go out during quiet hours."""


@dataclass(frozen=True, slots=True)
class Recipient:
    id: str
    name: str
    role: str
    channels: tuple[str, ...]
    sites: tuple[str, ...] = ()
    """Empty: every site."""
    language: Literal["en", "ur"] = "en"
    email: str = ""
    phone: str = ""
    quiet: QuietHours | None = None


@dataclass(frozen=True, slots=True)
class PayloadTemplate:
    id: str
    content_type: Literal["json", "form"]
    body: Any
    description: str = ""


# -- parsing -----------------------------------------------------------------------------


def _fail(where: str, message: str) -> InvalidPayload:
    return InvalidPayload(f"{where}: {message}")


def _text(data: Mapping[str, Any], key: str, default: str | None = None, limit: int = 500) -> str:
    value = data.get(key, default)
    if not isinstance(value, str) or (default is None and not value.strip()) or len(value) > limit:
        raise _fail(key, f"a string of at most {limit} characters is required")
    return value


def _known(data: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise _fail(unknown[0], "unknown field")


def _id(value: object, where: str = "id") -> str:
    if not isinstance(value, str) or not ID.fullmatch(value):
        raise _fail(where, "1-64 letters, digits, '_', '.' or '-'")
    return value


def _timeout(data: Mapping[str, Any]) -> float:
    value = data.get("timeout_s", 10)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.1 <= value <= 120:
        raise _fail("timeout_s", "a number of seconds from 0.1 to 120")
    return float(value)


def _secret(data: Mapping[str, Any], key: str, old: str) -> str:
    """A secret field; the masked value sent back unchanged keeps the stored one."""
    value = _text(data, key, "")
    return old if value == SECRET else value


def parse_channel(data: object, channel_id: str, old: Channel | None = None) -> Channel:
    if not isinstance(data, Mapping):
        raise _fail("channel", "a JSON object is required")
    kind = data.get("kind")
    _id(channel_id)
    if kind == "email":
        _known(
            data,
            {
                "id",
                "kind",
                "host",
                "port",
                "username",
                "password",
                "sender",
                "security",
                "timeout_s",
            },
        )
        port = data.get("port", 25)
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise _fail("port", "a port number 1-65535")
        security = data.get("security", "none")
        if security not in ("none", "starttls", "tls"):
            raise _fail("security", "none, starttls or tls")
        sender = _text(data, "sender")
        if not _EMAIL.fullmatch(sender):
            raise _fail("sender", "an email address")
        host = _text(data, "host", limit=255)
        if not _HOST.fullmatch(host):
            raise _fail("host", "a host name or IP address")
        return EmailChannel(
            channel_id,
            host,
            sender,
            port,
            _text(data, "username", ""),
            _secret(data, "password", old.password if isinstance(old, EmailChannel) else ""),
            security,
            _timeout(data),
        )
    if kind == "webhook":
        _known(
            data,
            {
                "id",
                "kind",
                "url",
                "template",
                "headers",
                "username",
                "password",
                "sender",
                "timeout_s",
            },
        )
        url = _text(data, "url", limit=2000)
        if not re.fullmatch(r"https?://[^\s/]+\S*", url) or not _HEADER_VALUE.fullmatch(url):
            raise _fail("url", "an http:// or https:// address")
        try:
            httpx.URL(url)
        except httpx.InvalidURL:
            raise _fail("url", "not a valid address") from None
        template = _text(data, "template", "generic")
        if template not in payload_templates():
            raise _fail("template", f"one of {', '.join(sorted(payload_templates()))}")
        headers = data.get("headers", {})
        if not isinstance(headers, Mapping) or len(headers) > 20:
            raise _fail("headers", "an object of at most 20 headers")
        old_headers = dict(old.headers) if isinstance(old, WebhookChannel) else {}
        checked = []
        for name, value in headers.items():
            if not _HEADER.fullmatch(str(name)) or not isinstance(value, str) or len(value) > 2000:
                raise _fail(f"headers.{name}", "a header name and a string value")
            if not _HEADER_VALUE.fullmatch(value):
                raise _fail(f"headers.{name}", "printable ASCII, no line breaks")
            checked.append(
                (str(name), old_headers.get(str(name), "") if value == SECRET else value)
            )
        return WebhookChannel(
            channel_id,
            url,
            template,
            tuple(checked),
            _text(data, "username", ""),
            _secret(data, "password", old.password if isinstance(old, WebhookChannel) else ""),
            _text(data, "sender", "", limit=64),
            _timeout(data),
        )
    raise _fail("kind", "email or webhook")


def channel_to_json(channel: Channel, *, reveal: bool = False) -> dict[str, Any]:
    """The channel's JSON form; passwords and header values masked unless ``reveal``."""

    def mask(value: str) -> str:
        return value if reveal or not value else SECRET

    if isinstance(channel, EmailChannel):
        return {
            "id": channel.id,
            "kind": "email",
            "host": channel.host,
            "port": channel.port,
            "username": channel.username,
            "password": mask(channel.password),
            "sender": channel.sender,
            "security": channel.security,
            "timeout_s": channel.timeout_s,
        }
    return {
        "id": channel.id,
        "kind": "webhook",
        "url": channel.url,
        "template": channel.template,
        "headers": {k: mask(v) for k, v in channel.headers},
        "username": channel.username,
        "password": mask(channel.password),
        "sender": channel.sender,
        "timeout_s": channel.timeout_s,
    }


def _minutes(value: object, where: str) -> int:
    if not isinstance(value, str) or not (m := _HHMM.fullmatch(value)):
        raise _fail(where, "a time of day HH:MM")
    return int(m.group(1)) * 60 + int(m.group(2))


def parse_recipient(data: object, recipient_id: str) -> Recipient:
    if not isinstance(data, Mapping):
        raise _fail("recipient", "a JSON object is required")
    _known(data, {"id", "name", "role", "channels", "sites", "language", "email", "phone", "quiet"})
    _id(recipient_id)
    role = data.get("role")
    if role not in ROLES:
        raise _fail("role", f"one of {', '.join(ROLES)}")
    channels = data.get("channels", [])
    if not isinstance(channels, list) or len(channels) > 10:
        raise _fail("channels", "a list of channel ids")
    sites = data.get("sites", [])
    if not isinstance(sites, list) or len(sites) > 100:
        raise _fail("sites", "a list of site ids (empty: every site)")
    language = data.get("language", "en")
    if language not in ("en", "ur"):
        raise _fail("language", "en or ur")
    email = _text(data, "email", "", limit=254)
    if email and not _EMAIL.fullmatch(email):
        raise _fail("email", "an email address")
    phone = _text(data, "phone", "", limit=20)
    if phone and not _PHONE.fullmatch(phone):
        raise _fail("phone", "a phone number in international form, e.g. +923001234567")
    quiet = None
    raw = data.get("quiet")
    if raw is not None:
        if not isinstance(raw, Mapping):
            raise _fail("quiet", "an object with start and end (HH:MM)")
        unknown = sorted(set(raw) - {"start", "end", "timezone", "critical"})
        if unknown:
            raise _fail(f"quiet.{unknown[0]}", "unknown field")
        timezone = raw.get("timezone", "Asia/Karachi")
        try:
            ZoneInfo(str(timezone))
        except (ZoneInfoNotFoundError, ValueError):
            raise _fail("quiet.timezone", "an IANA time zone such as Asia/Karachi") from None
        critical = raw.get("critical", True)
        if not isinstance(critical, bool):
            raise _fail("quiet.critical", "true or false")
        start = _minutes(raw.get("start"), "quiet.start")
        end = _minutes(raw.get("end"), "quiet.end")
        if start == end:
            raise _fail("quiet", "start and end must differ")
        quiet = QuietHours(start, end, str(timezone), critical)
    return Recipient(
        recipient_id,
        _text(data, "name", limit=200),
        str(role),
        tuple(_id(c, "channels") for c in channels),
        tuple(_id(s, "sites") for s in sites),
        language,
        email,
        phone,
        quiet,
    )


def recipient_to_json(r: Recipient) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": r.id,
        "name": r.name,
        "role": r.role,
        "channels": list(r.channels),
        "sites": list(r.sites),
        "language": r.language,
        "email": r.email,
        "phone": r.phone,
        "quiet": None,
    }
    if r.quiet is not None:
        q = r.quiet
        out["quiet"] = {
            "start": f"{q.start_min // 60:02d}:{q.start_min % 60:02d}",
            "end": f"{q.end_min // 60:02d}:{q.end_min % 60:02d}",
            "timezone": q.timezone,
            "critical": q.critical,
        }
    return out


# -- routing and timing ------------------------------------------------------------------


def routed(
    recipients: Iterable[Recipient], roles: Iterable[str], site_id: str | None
) -> list[Recipient]:
    """Recipients with one of ``roles`` who look after the alarm's site."""
    wanted = set(roles)
    return [
        r
        for r in recipients
        if r.role in wanted and (not r.sites or (site_id is not None and site_id in r.sites))
    ]


def quiet_until(quiet: QuietHours | None, ts_ms: int, severity: str) -> int | None:
    """When quiet hours at ``ts_ms`` end (epoch ms), or None when a message may go now."""
    if quiet is None or (severity == "critical" and quiet.critical):
        return None
    local = datetime.fromtimestamp(ts_ms / 1000, ZoneInfo(quiet.timezone))
    minute = local.hour * 60 + local.minute
    start, end = quiet.start_min, quiet.end_min
    inside = start <= minute < end if start < end else (minute >= start or minute < end)
    if not inside:
        return None
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if start > end and minute >= start:
        day += timedelta(days=1)
    wake = (day + timedelta(minutes=end)).replace(tzinfo=None)
    return int(wake.replace(tzinfo=ZoneInfo(quiet.timezone)).timestamp() * 1000)


def backoff_ms(attempt: int, base_ms: int = 2_000, cap_ms: int = 600_000) -> int:
    """Wait before retry number ``attempt`` (1, 2, ...): doubling from ``base_ms`` up to
    ``cap_ms``."""
    return int(min(cap_ms, base_ms * 2 ** max(0, attempt - 1)))


# -- payloads ----------------------------------------------------------------------------


def _load_template(path: Path) -> PayloadTemplate:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        kind = data["content_type"]
        if kind not in ("json", "form"):
            raise ValueError("content_type must be json or form")
        return PayloadTemplate(path.stem, kind, data["body"], str(data.get("description", "")))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not a usable payload template: {exc}") from None


@cache
def payload_templates(directory: Path = PAYLOADS) -> dict[str, PayloadTemplate]:
    return {p.stem: _load_template(p) for p in sorted(directory.glob("*.json"))}


class _Fields(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return ""


def render_payload(
    template: PayloadTemplate, fields: Mapping[str, str], alarm: Mapping[str, Any]
) -> Any:
    """The template's body with ``{field}`` placeholders filled in each string; a string that is
    exactly ``"{alarm}"`` becomes the alarm object itself."""
    values = _Fields(fields)

    def fill(node: Any) -> Any:
        if isinstance(node, str):
            if node == "{alarm}":
                return dict(alarm)
            return node.format_map(values)
        if isinstance(node, list):
            return [fill(n) for n in node]
        if isinstance(node, dict):
            return {k: fill(v) for k, v in node.items()}
        return node

    return fill(template.body)
