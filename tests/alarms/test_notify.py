from __future__ import annotations

import json
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from karkhana.alarms.notify import (
    SECRET,
    EmailChannel,
    QuietHours,
    WebhookChannel,
    backoff_ms,
    channel_to_json,
    parse_channel,
    parse_recipient,
    payload_templates,
    quiet_until,
    recipient_to_json,
    render_payload,
    routed,
)
from karkhana.core.errors import InvalidPayload

PKT = ZoneInfo("Asia/Karachi")


def at(hour: int, minute: int = 0, day: int = 24) -> int:
    return int(datetime(2025, 11, day, hour, minute, tzinfo=PKT).timestamp() * 1000)


def test_quiet_hours_across_midnight_defer_to_the_morning() -> None:
    quiet = QuietHours(22 * 60, 6 * 60)
    assert quiet_until(quiet, at(21, 59), "warning") is None
    assert quiet_until(quiet, at(23, 30), "warning") == at(6, 0, day=25)
    assert quiet_until(quiet, at(2, 0, day=25), "warning") == at(6, 0, day=25)
    assert quiet_until(quiet, at(6, 0, day=25), "warning") is None
    assert quiet_until(quiet, at(23, 30), "critical") is None
    assert quiet_until(QuietHours(22 * 60, 6 * 60, critical=False), at(23, 30), "critical")


def test_quiet_hours_within_a_day() -> None:
    lunch = QuietHours(13 * 60, 14 * 60)
    assert quiet_until(lunch, at(13, 30), "info") == at(14, 0)
    assert quiet_until(lunch, at(14, 30), "info") is None


def test_routing_by_role_and_site() -> None:
    people = [
        parse_recipient({"name": "A", "role": "operator", "sites": ["mill"]}, "a"),
        parse_recipient({"name": "B", "role": "operator", "sites": ["plant"]}, "b"),
        parse_recipient({"name": "C", "role": "engineer"}, "c"),
    ]
    assert [r.id for r in routed(people, ["operator"], "mill")] == ["a"]
    assert [r.id for r in routed(people, ["operator", "engineer"], "plant")] == ["b", "c"]
    assert [r.id for r in routed(people, ["manager"], "mill")] == []


def test_backoff_doubles_up_to_a_cap() -> None:
    assert [backoff_ms(n, 1000, 10_000) for n in range(1, 7)] == [
        1000, 2000, 4000, 8000, 10_000, 10_000,
    ]  # fmt: skip


def test_channels_parse_and_mask_secrets() -> None:
    email = parse_channel(
        {
            "kind": "email",
            "host": "smtp.example.pk",
            "port": 587,
            "sender": "alarms@mill.pk",
            "username": "u",
            "password": "p4ss",
            "security": "starttls",
        },
        "mail",
    )
    assert isinstance(email, EmailChannel) and email.password == "p4ss"
    shown = channel_to_json(email)
    assert shown["password"] == SECRET
    # sending the masked value back keeps the stored password
    again = parse_channel(shown, "mail", email)
    assert again == email
    hook = parse_channel(
        {
            "kind": "webhook",
            "url": "https://graph.example/v20.0/1/messages",
            "template": "whatsapp_cloud",
            "headers": {"Authorization": "Bearer abc"},
        },
        "wa",
    )
    assert isinstance(hook, WebhookChannel)
    assert channel_to_json(hook)["headers"] == {"Authorization": SECRET}
    assert parse_channel(channel_to_json(hook), "wa", hook) == hook


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "pigeon"},
        {"kind": "email", "host": "h", "sender": "not-an-address"},
        {"kind": "email", "host": "h", "sender": "a@b.pk", "port": 70000},
        {"kind": "webhook", "url": "ftp://x"},
        {"kind": "webhook", "url": "http://x", "template": "nope"},
        {"kind": "webhook", "url": "http://x", "headers": {"X-A": "a\nb"}},
        {"kind": "webhook", "url": "http://x", "headers": {"X-A": "ünïcode"}},
        {"kind": "webhook", "url": "http://exa mple/"},
        {"kind": "email", "host": "smtp host", "sender": "a@b.pk"},
        {"kind": "email", "host": "h", "sender": "dük@b.pk"},
    ],
)
def test_bad_channels_are_refused(body: dict[str, object]) -> None:
    with pytest.raises(InvalidPayload):
        parse_channel(body, "c")


def test_recipients_round_trip_and_check_fields() -> None:
    data = {
        "name": "Shift engineer",
        "role": "engineer",
        "channels": ["mail"],
        "sites": ["mill"],
        "language": "ur",
        "email": "eng@mill.pk",
        "phone": "+923001234567",
        "quiet": {"start": "22:00", "end": "06:00", "timezone": "Asia/Karachi", "critical": True},
    }
    r = parse_recipient(data, "eng")
    assert parse_recipient(recipient_to_json(r), "eng") == r
    for bad in ({"role": "boss"}, {"phone": "call me"}, {"language": "fr"},
                {"quiet": {"start": "22:00", "end": "22:00"}}):  # fmt: skip
        with pytest.raises(InvalidPayload):
            parse_recipient({**data, **bad}, "eng")


def test_payload_templates_for_sms_and_whatsapp() -> None:
    templates = payload_templates()
    assert {"generic", "twilio_sms", "whatsapp_cloud"} <= set(templates)
    fields = {"text": "لوم 3 گرم ہے", "phone": "+923001234567", "sender": "+15005550006"}
    sms = render_payload(templates["twilio_sms"], fields, {})
    assert templates["twilio_sms"].content_type == "form"
    assert sms == {"To": "+923001234567", "From": "+15005550006", "Body": "لوم 3 گرم ہے"}
    wa = render_payload(templates["whatsapp_cloud"], fields, {})
    assert wa["to"] == "+923001234567" and wa["text"]["body"] == "لوم 3 گرم ہے"
    assert wa["messaging_product"] == "whatsapp"
    generic = render_payload(templates["generic"], {"text": "{not a field}", "event": "raised"},
                             {"id": "a1", "value": 72.0})  # fmt: skip
    assert generic == {
        "event": "raised",
        "text": "{not a field}",
        "alarm": {"id": "a1", "value": 72.0},
    }
    json.dumps(generic)
