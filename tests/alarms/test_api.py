from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from karkhana.runtime import Runtime
from karkhana.security.policy import Role
from tests.alarms.conftest import Mailbox, Webhook, build_mill

pytestmark = pytest.mark.anyio
PASSWORD = "alarm-password-123"
RULE = {
    "name": "Bearing too hot",
    "machine_id": "L03",
    "severity": "warning",
    "condition": {
        "type": "threshold",
        "signal": "bearing_temp_c",
        "op": ">",
        "value": 70,
        "deadband": 2,
    },
    "for_s": 0,
}


async def login(
    client: httpx.AsyncClient, rt: Runtime, name: str, role: Role, sites: list[str]
) -> dict[str, str]:
    await rt.users.create(name, PASSWORD, role, sites)
    r = await client.post("/api/v1/auth/login", json={"username": name, "password": PASSWORD})
    return {"Authorization": f"Bearer {r.json()['token']}"}


async def test_device_sample_to_alarm_email_and_webhook_within_two_seconds(
    runtime: Runtime, admin: httpx.AsyncClient, webhook: Webhook, smtp: tuple[Mailbox, int]
) -> None:
    box, port = smtp
    token = await build_mill(runtime)
    r = await admin.put(
        "/api/v1/notify/channels/mail",
        json={"kind": "email", "host": "127.0.0.1", "port": port, "sender": "alarms@mill.pk"},
    )
    assert r.status_code == 200, r.text
    r = await admin.put(
        "/api/v1/notify/channels/wa",
        json={"kind": "webhook", "url": webhook.url, "template": "whatsapp_cloud",
              "headers": {"Authorization": "Bearer wa-secret"}},
    )  # fmt: skip
    assert r.json()["headers"] == {"Authorization": "********"}
    r = await admin.put(
        "/api/v1/notify/recipients/weaver",
        json={"name": "Weaving master", "role": "operator", "sites": ["mill"], "language": "ur",
              "email": "master@mill.pk", "phone": "+923001234567", "channels": ["mail", "wa"]},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    r = await admin.post("/api/v1/rules", json=RULE)
    assert r.status_code == 201, r.text
    rule = r.json()
    assert rule["site_id"] == "mill" and rule["id"]

    sent = time.time()
    r = await admin.post(
        "/api/v1/telemetry/loom-3",
        json={"values": {"bearing_temp_c": 72}},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 200
    alarm = None
    while time.time() - sent < 2:
        found = (await admin.get("/api/v1/alarms")).json()["alarms"]
        if found:
            alarm = found[0]
            break
        await asyncio.sleep(0.02)
    assert alarm is not None, "no alarm within 2 s of the sample"
    assert alarm["rule_id"] == rule["id"] and alarm["machine_id"] == "L03"
    assert alarm["signal"] == "bearing_temp_c" and alarm["severity"] == "warning"
    assert alarm["state"] == "raised" and alarm["value"] == 72 and alarm["limit"] == 70
    assert alarm["message"]["ur"].startswith(
        "لوم 3 کے بیئرنگ کا درجہ حرارت 72 °C ہے، حد 70 °C سے زیادہ"
    )
    assert alarm["message"]["en"].startswith("Loom 3 bearing temperature is 72 °C")
    for key in ("acked_ms", "acked_by", "ack_comment", "cleared_ms"):
        assert alarm[key] is None
    assert alarm["count"] == 1

    for _ in range(250):
        if box.messages and webhook.received:
            break
        await asyncio.sleep(0.02)
    assert webhook.received and webhook.received[0].at - sent < 2
    wa = webhook.received[0]
    assert wa.headers["authorization"] == "Bearer wa-secret"
    assert wa.json()["to"] == "+923001234567"
    assert wa.json()["text"]["body"] == alarm["message"]["ur"]
    assert box.messages and box.messages[0]["To"] == "master@mill.pk"
    assert alarm["message"]["ur"] in box.messages[0].get_content()


async def test_acknowledge_is_audited_and_happens_once(
    runtime: Runtime, admin: httpx.AsyncClient
) -> None:
    token = await build_mill(runtime)
    await admin.post("/api/v1/rules", json=RULE)
    operator = await login(admin, runtime, "weaver", Role.OPERATOR, ["mill"])
    await admin.post("/api/v1/telemetry/loom-3", json={"values": {"bearing_temp_c": 80}},
                     headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    for _ in range(100):
        found = (await admin.get("/api/v1/alarms")).json()["alarms"]
        if found:
            break
        await asyncio.sleep(0.02)
    alarm_id = found[0]["id"]
    r = await admin.post(
        f"/api/v1/alarms/{alarm_id}/ack", json={"comment": "bearing greased"}, headers=operator
    )
    assert r.status_code == 200, r.text
    acked = r.json()
    assert acked["state"] == "acknowledged" and acked["acked_by"] == "weaver"
    assert acked["ack_comment"] == "bearing greased" and acked["tta_ms"] >= 0
    again = await admin.post(
        f"/api/v1/alarms/{alarm_id}/ack", json={"comment": "x"}, headers=operator
    )
    assert again.status_code == 409
    (event,) = await runtime.audit.events(action="alarm.ack")
    assert event.actor == "weaver" and event.target == f"alarm:{alarm_id}"
    assert event.before and event.before["state"] == "raised"
    assert event.after and event.after["ack_comment"] == "bearing greased"
    r = await admin.post(f"/api/v1/alarms/{alarm_id}/shelve", json={"minutes": 0}, headers=operator)
    assert r.status_code == 422
    r = await admin.post(
        f"/api/v1/alarms/{alarm_id}/shelve", json={"minutes": 15}, headers=operator
    )
    assert r.status_code == 200 and r.json()["state"] == "shelved"
    assert (await admin.get("/api/v1/alarms", params={"state": "shelved"})).json()["alarms"]
    assert (
        await admin.post("/api/v1/alarms/nope/ack", json={}, headers=operator)
    ).status_code == 404
    stats = (await admin.get("/api/v1/alarms/stats", headers=operator)).json()
    assert stats["count"] == 1 and stats["unacknowledged"] == 0
    assert stats["tta_ms"]["count"] == 1 and stats["by_machine"][0]["machine_id"] == "L03"
    assert (
        await admin.get("/api/v1/alarms/stats", params={"start": "yesterday"})
    ).status_code == 400


async def test_rules_crud_validation_and_audit(runtime: Runtime, admin: httpx.AsyncClient) -> None:
    await build_mill(runtime)
    r = await admin.post("/api/v1/rules", json={**RULE, "id": "hot"})
    assert r.status_code == 201
    assert (await admin.post("/api/v1/rules", json={**RULE, "id": "hot"})).status_code == 409
    bad = {**RULE, "condition": {**RULE["condition"], "op": "=>"}}
    r = await admin.post("/api/v1/rules", json=bad)
    assert r.status_code == 400 and r.json()["detail"].startswith("condition.op")
    r = await admin.post(
        "/api/v1/rules", json={**RULE, "condition": {**RULE["condition"], "signal": "warp_speed"}}
    )
    assert r.status_code == 400 and "no signal warp_speed" in r.json()["detail"]
    assert (
        await admin.post("/api/v1/rules", json={**RULE, "machine_id": "L99"})
    ).status_code == 404
    assert (await admin.post("/api/v1/rules", json=[1, 2])).status_code == 422
    template_rule = {k: v for k, v in RULE.items() if k != "machine_id"} | {
        "template": "power_loom"
    }
    assert (
        await admin.post("/api/v1/rules", json={**template_rule, "site_id": "nowhere"})
    ).status_code == 404
    assert (
        await admin.post("/api/v1/rules", json={**template_rule, "template": "toaster"})
    ).status_code == 400

    changed = {**RULE, "severity": "critical", "for_s": 60}
    r = await admin.put("/api/v1/rules/hot", json=changed)
    assert r.status_code == 200 and r.json()["severity"] == "critical" and r.json()["id"] == "hot"
    assert (await admin.get("/api/v1/rules/hot")).json()["for_s"] == 60
    assert [x["id"] for x in (await admin.get("/api/v1/rules")).json()["rules"]] == ["hot"]
    assert (await admin.delete("/api/v1/rules/hot")).status_code == 204
    assert (await admin.get("/api/v1/rules/hot")).status_code == 404
    actions = [
        (e.action, e.before is not None, e.after is not None)
        for e in await runtime.audit.events(action="rule.*")
    ]
    assert actions == [
        ("rule.create", False, True),
        ("rule.update", True, True),
        ("rule.delete", True, False),
    ]
    update = (await runtime.audit.events(action="rule.update"))[0]
    assert update.before and update.before["severity"] == "warning"
    assert update.after and update.after["severity"] == "critical"


async def test_sites_bound_alarms_and_rules(runtime: Runtime, admin: httpx.AsyncClient) -> None:
    token_a = await build_mill(runtime, "mill", "L03", "loom-3")
    token_b = await build_mill(runtime, "plant", "P01", "press-1")
    await admin.post("/api/v1/rules", json={**RULE, "id": "a"})
    await admin.post("/api/v1/rules", json={**RULE, "id": "b", "machine_id": "P01"})
    for device, token in (("loom-3", token_a), ("press-1", token_b)):
        await admin.post(f"/api/v1/telemetry/{device}", json={"values": {"bearing_temp_c": 99}},
                         headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    for _ in range(100):
        if len((await admin.get("/api/v1/alarms")).json()["alarms"]) == 2:
            break
        await asyncio.sleep(0.02)
    engineer = await login(admin, runtime, "eng", Role.ENGINEER, ["mill"])
    viewer = await login(admin, runtime, "view", Role.VIEWER, ["mill"])
    mine = (await admin.get("/api/v1/alarms", headers=engineer)).json()["alarms"]
    assert [a["machine_id"] for a in mine] == ["L03"]
    other = next(
        a for a in (await admin.get("/api/v1/alarms")).json()["alarms"] if a["machine_id"] == "P01"
    )
    assert (
        await admin.post(f"/api/v1/alarms/{other['id']}/ack", json={}, headers=engineer)
    ).status_code == 404
    assert (
        await admin.post(f"/api/v1/alarms/{mine[0]['id']}/ack", json={}, headers=viewer)
    ).status_code == 403
    assert [
        r["id"] for r in (await admin.get("/api/v1/rules", headers=engineer)).json()["rules"]
    ] == ["a"]
    assert (await admin.get("/api/v1/rules/b", headers=engineer)).status_code == 404
    r = await admin.post(
        "/api/v1/rules", json={**RULE, "id": "c", "machine_id": "P01"}, headers=engineer
    )
    assert r.status_code == 403
    r = await admin.post("/api/v1/rules", json={**RULE, "id": "d"}, headers=engineer)
    assert r.status_code == 201
    everywhere = {k: v for k, v in RULE.items() if k != "machine_id"} | {"template": "power_loom"}
    assert (await admin.post("/api/v1/rules", json=everywhere, headers=engineer)).status_code == 403
    assert (await admin.post("/api/v1/rules", json=RULE, headers=viewer)).status_code == 403
    assert (await admin.get("/api/v1/notify/channels", headers=engineer)).status_code == 403
    r = await admin.put(
        "/api/v1/notify/channels/x", json={"kind": "webhook", "url": "http://x"}, headers=engineer
    )
    assert r.status_code == 403


async def test_channel_and_recipient_settings(runtime: Runtime, admin: httpx.AsyncClient) -> None:
    r = await admin.put(
        "/api/v1/notify/channels/mail",
        json={"kind": "email", "host": "smtp.mill.pk", "port": 587, "security": "starttls",
              "sender": "alarms@mill.pk", "username": "alarms", "password": "smtp-pass"},
    )  # fmt: skip
    assert r.json()["password"] == "********"
    listed = (await admin.get("/api/v1/notify/channels")).json()
    assert listed["channels"][0]["id"] == "mail" and "whatsapp_cloud" in listed["templates"]
    assert runtime.alarms.channels["mail"].password == "smtp-pass"
    r = await admin.put(
        "/api/v1/notify/channels/mail", json={**r.json(), "port": 465, "security": "tls"}
    )
    assert runtime.alarms.channels["mail"].password == "smtp-pass"
    assert (await admin.put("/api/v1/notify/channels/bad", json={"kind": "fax"})).status_code == 400
    r = await admin.put(
        "/api/v1/notify/recipients/ops",
        json={"name": "Ops", "role": "operator", "channels": ["nope"]},
    )
    assert r.status_code == 400
    r = await admin.put(
        "/api/v1/notify/recipients/ops",
        json={"name": "Ops", "role": "operator", "channels": ["mail"], "email": "ops@mill.pk"},
    )
    assert r.status_code == 200
    assert (await admin.delete("/api/v1/notify/channels/mail")).status_code == 409
    assert (await admin.delete("/api/v1/notify/recipients/ops")).status_code == 204
    assert (await admin.delete("/api/v1/notify/channels/mail")).status_code == 204
    assert (await admin.get("/api/v1/notify/outbox")).json() == {"notifications": []}
    events = await runtime.audit.events(action="notify.*")
    assert [e.action for e in events] == [
        "notify.channel.create", "notify.channel.update", "notify.recipient.create",
        "notify.recipient.delete", "notify.channel.delete",
    ]  # fmt: skip
    assert "smtp-pass" not in str([e.as_dict() for e in events])
