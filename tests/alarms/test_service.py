from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from karkhana.alarms.engine import AlarmEvent, alarm_id
from karkhana.core.clock import FakeClock
from karkhana.runtime import Runtime
from tests.alarms.conftest import Mailbox, Webhook, build_mill
from tests.conftest import make_settings

pytestmark = pytest.mark.anyio
HOT = {
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
}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(int(time.time() * 1000))


@pytest.fixture
async def rt(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Runtime]:
    runtime = Runtime(make_settings(tmp_path), clock)
    await runtime.start(mqtt=False)
    runtime.alarms.dispatcher.backoff_base_ms = 20
    yield runtime
    await runtime.stop()


async def until(check: Callable[[], Awaitable[Any]], within_s: float = 5.0) -> Any:
    deadline = time.monotonic() + within_s
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.02)


async def send(rt: Runtime, token: str, ts: int, **values: Any) -> None:
    body = json.dumps({"ts": ts, "values": values}).encode()
    await rt.ingestor.ingest("loom-3", body, token=token)


async def alarms(rt: Runtime, state: str = "all") -> list[dict[str, Any]]:
    return await rt.alarms.list_alarms(None, state=state)


async def outbox(rt: Runtime, state: str | None = None) -> list[dict[str, Any]]:
    return await rt.alarms.outbox(state)


async def add_webhook_recipient(
    rt: Runtime, hook: Webhook, role: str = "operator", **extra: Any
) -> None:
    await rt.alarms.put_channel("hook", {"kind": "webhook", "url": hook.url}, "admin")
    await rt.alarms.put_recipient(
        f"{role}-desk",
        {"name": f"{role} desk", "role": role, "channels": ["hook"], **extra},
        "admin",
    )


async def test_a_sample_raises_stores_and_notifies_once(
    rt: Runtime, clock: FakeClock, webhook: Webhook
) -> None:
    token = await build_mill(rt)
    await add_webhook_recipient(rt, webhook, sites=["mill"])
    rule = await rt.alarms.create_rule(HOT, "admin", None)
    now = clock.now_ms()
    await send(rt, token, now, bearing_temp_c=72.0)
    (alarm,) = await until(lambda: alarms(rt, "open"))
    assert alarm["id"] == alarm_id(rule["id"], "L03", now)
    assert alarm["state"] == "raised" and alarm["value"] == 72.0 and alarm["limit"] == 70.0
    assert alarm["site_id"] == "mill" and alarm["count"] == 1
    assert alarm["message"]["ur"].startswith(
        "لوم 3 کے بیئرنگ کا درجہ حرارت 72 °C ہے، حد 70 °C سے زیادہ"
    )
    await until(lambda: asyncio.sleep(0, webhook.received))
    payload = webhook.received[0].json()
    assert payload["event"] == "raised" and payload["alarm"]["id"] == alarm["id"]
    assert payload["text"] == alarm["message"]["en"]
    # still hot: no second alarm; cooled below limit - deadband: cleared
    await send(rt, token, now + 1000, bearing_temp_c=69.0)
    await send(rt, token, now + 2000, bearing_temp_c=67.0)
    (cleared,) = await until(lambda: alarms(rt, "cleared"))
    assert cleared["cleared_ms"] == now + 2000 and cleared["ttc_ms"] == 2000
    assert len(webhook.received) == 1


async def test_flood_control_counts_repeats_on_one_alarm(
    rt: Runtime, clock: FakeClock, webhook: Webhook
) -> None:
    token = await build_mill(rt)
    await add_webhook_recipient(rt, webhook)
    await rt.alarms.create_rule({**HOT, "repeat_window_s": 60}, "admin", None)
    now = clock.now_ms()
    for i in range(5):  # flapping: hot, cool, hot, cool ...
        await send(rt, token, now + i * 2000, bearing_temp_c=75.0)
        await send(rt, token, now + i * 2000 + 1000, bearing_temp_c=60.0)
    await until(lambda: _count(rt, 5))
    (alarm,) = await alarms(rt)
    assert alarm["count"] == 5 and alarm["state"] == "cleared"
    await until(lambda: asyncio.sleep(0, webhook.received))
    await asyncio.sleep(0.2)
    assert len(webhook.received) == 1  # repeats are counted, not sent again
    # after the repeat window a new alarm starts
    await send(rt, token, now + 100_000, bearing_temp_c=75.0)
    await until(lambda: _n_alarms(rt, 2))


async def _count(rt: Runtime, n: int) -> bool:
    found = await alarms(rt)
    return bool(found) and found[0]["count"] == n and found[0]["state"] == "cleared"


async def _n_alarms(rt: Runtime, n: int) -> bool:
    return len(await alarms(rt)) == n


async def test_escalation_to_the_next_role_until_acknowledged(
    rt: Runtime, clock: FakeClock, webhook: Webhook
) -> None:
    token = await build_mill(rt)
    await add_webhook_recipient(rt, webhook)
    await rt.alarms.put_recipient(
        "engineer-desk",
        {"name": "Engineer", "role": "engineer", "channels": ["hook"], "language": "ur"},
        "admin",
    )
    await rt.alarms.put_recipient(
        "manager-desk", {"name": "Manager", "role": "manager", "channels": ["hook"]}, "admin"
    )
    escalate = [{"after_min": 10, "roles": ["engineer"]}, {"after_min": 30, "roles": ["manager"]}]
    await rt.alarms.create_rule(
        {**HOT, "notify": {"roles": ["operator"], "escalate": escalate}}, "admin", None
    )
    await send(rt, token, clock.now_ms(), bearing_temp_c=80.0)
    await until(lambda: asyncio.sleep(0, len(webhook.received) == 1))
    clock.advance(9 * 60_000)
    await rt.alarms.tick()
    await asyncio.sleep(0.2)
    assert len(webhook.received) == 1
    clock.advance(2 * 60_000)
    await rt.alarms.tick()
    await until(lambda: asyncio.sleep(0, len(webhook.received) == 2))
    escalated = webhook.received[1].json()
    assert escalated["event"] == "escalated"
    assert escalated["text"].startswith("10 منٹ سے کسی نے تسلیم نہیں کیا: لوم 3")
    rows = await outbox(rt)
    assert {(r["recipient_id"], r["reason"]) for r in rows} == {
        ("operator-desk", "raised"),
        ("engineer-desk", "escalated"),
    }
    # acknowledged: the manager is never called
    (alarm,) = await alarms(rt)
    await rt.alarms.acknowledge(alarm["id"], "weaver", "mending", None)
    clock.advance(30 * 60_000)
    await rt.alarms.tick()
    await asyncio.sleep(0.2)
    assert len(webhook.received) == 2


async def test_quiet_hours_hold_messages_until_morning_but_not_critical_ones(
    rt: Runtime, clock: FakeClock, webhook: Webhook
) -> None:
    token = await build_mill(rt)
    # quiet all day except the minute after now, in UTC
    now = clock.now_ms()
    minute = (now // 60_000 + 2) % 1440
    start = f"{(minute // 60):02d}:{minute % 60:02d}"
    end_minute = (minute - 1) % 1440 if minute else 1439
    end = f"{(end_minute // 60):02d}:{end_minute % 60:02d}"
    await add_webhook_recipient(rt, webhook, quiet={"start": start, "end": end, "timezone": "UTC"})
    await rt.alarms.create_rule(HOT, "admin", None)
    await rt.alarms.create_rule({**HOT, "id": "crit", "severity": "critical",
                                 "condition": {**HOT["condition"], "value": 90}}, "admin", None)  # fmt: skip
    await send(rt, token, now, bearing_temp_c=80.0)
    await until(lambda: outbox(rt))
    (held,) = await outbox(rt)
    assert held["deferred"] == 1 and held["state"] == "pending" and held["next_ms"] > now
    await send(rt, token, now + 1000, bearing_temp_c=95.0)
    await until(lambda: asyncio.sleep(0, webhook.received))
    assert webhook.received[0].json()["alarm"]["severity"] == "critical"
    await asyncio.sleep(0.2)
    assert len(webhook.received) == 1
    clock.set(held["next_ms"])
    rt.alarms.dispatcher.wake()
    await until(lambda: asyncio.sleep(0, len(webhook.received) == 2))
    assert webhook.received[1].json()["alarm"]["severity"] == "warning"


async def test_a_dead_webhook_is_retried_and_email_still_goes(
    rt: Runtime, clock: FakeClock, webhook: Webhook, smtp: tuple[Mailbox, int]
) -> None:
    box, port = smtp
    token = await build_mill(rt)
    webhook.fail_next = 3
    await rt.alarms.put_channel("hook", {"kind": "webhook", "url": webhook.url}, "admin")
    await rt.alarms.put_channel(
        "mail",
        {"kind": "email", "host": "127.0.0.1", "port": port, "sender": "alarms@mill.pk"},
        "admin",
    )
    await rt.alarms.put_recipient(
        "op", {"name": "Op", "role": "operator", "channels": ["hook", "mail"], "email": "op@mill.pk",
               "language": "ur"}, "admin",
    )  # fmt: skip
    await rt.alarms.create_rule(HOT, "admin", None)
    await send(rt, token, clock.now_ms(), bearing_temp_c=75.0)
    await until(lambda: asyncio.sleep(0, box.messages))
    mail = box.messages[0]
    assert mail["To"] == "op@mill.pk" and "لوم 3" in mail.get_content()
    assert webhook.received == []
    for _ in range(3):  # each retry waits a little longer
        clock.advance(60_000)
        rt.alarms.dispatcher.wake()
        await asyncio.sleep(0.15)
    await until(lambda: asyncio.sleep(0, webhook.received))
    rows = {r["channel_id"]: r for r in await outbox(rt)}
    assert rows["hook"]["state"] == "sent" and rows["hook"]["attempts"] == 4
    assert rows["mail"]["state"] == "sent" and rows["mail"]["attempts"] == 1


async def test_a_webhook_that_never_answers_fails_after_the_last_attempt(
    rt: Runtime, clock: FakeClock
) -> None:
    token = await build_mill(rt)
    rt.alarms.dispatcher.max_attempts = 2
    await rt.alarms.put_channel(
        "hook", {"kind": "webhook", "url": "http://127.0.0.1:9/x", "timeout_s": 1}, "admin"
    )
    await rt.alarms.put_recipient(
        "op", {"name": "Op", "role": "operator", "channels": ["hook"]}, "admin"
    )
    await rt.alarms.create_rule(HOT, "admin", None)
    await send(rt, token, clock.now_ms(), bearing_temp_c=75.0)
    await until(lambda: outbox(rt))
    await until(lambda: _attempts(rt, 1))
    clock.advance(60_000)
    rt.alarms.dispatcher.wake()
    (row,) = await until(lambda: outbox(rt, "failed"))
    assert row["attempts"] == 2 and "webhook hook" in row["last_error"]


async def _attempts(rt: Runtime, n: int) -> bool:
    rows = await outbox(rt)
    return bool(rows) and rows[0]["attempts"] >= n


async def test_shelved_alarms_are_silent_until_the_shelf_runs_out(
    rt: Runtime, clock: FakeClock
) -> None:
    token = await build_mill(rt)
    await rt.alarms.create_rule(HOT, "admin", None)
    await send(rt, token, clock.now_ms(), bearing_temp_c=75.0)
    (alarm,) = await until(lambda: alarms(rt, "open"))
    shelved = await rt.alarms.shelve(alarm["id"], "weaver", 30, None)
    assert (
        shelved["state"] == "shelved" and shelved["shelved_until_ms"] == clock.now_ms() + 1_800_000
    )
    clock.advance(31 * 60_000)
    await rt.alarms.tick()
    assert (await rt.alarms.get_alarm(alarm["id"]))["state"] == "raised"


async def test_edge_events_import_once(rt: Runtime, clock: FakeClock) -> None:
    await build_mill(rt)
    await rt.alarms.create_rule({**HOT, "id": "hot"}, "admin", None)
    ts = clock.now_ms() - 60_000
    aid = alarm_id("hot", "L03", ts)
    raised = AlarmEvent(
        aid,
        "raised",
        "hot",
        "L03",
        ts,
        "warning",
        "bearing_temp_c",
        "above",
        75.0,
        70.0,
        "°C",
        "edge:gw-1",
    )
    cleared = AlarmEvent(
        aid,
        "cleared",
        "hot",
        "L03",
        ts + 5000,
        "warning",
        "bearing_temp_c",
        "above",
        60.0,
        70.0,
        "°C",
        "edge:gw-1",
    )
    assert await rt.alarms.import_events([raised]) == 1
    assert await rt.alarms.import_events([raised]) == 0
    assert await rt.alarms.import_events([cleared, raised]) == 1
    assert await rt.alarms.import_events([cleared]) == 0
    (alarm,) = await alarms(rt)
    assert (
        alarm["origin"] == "edge:gw-1" and alarm["count"] == 1 and alarm["cleared_ms"] == ts + 5000
    )


async def test_an_open_alarm_survives_a_restart_and_clears_later(
    tmp_path: Path, clock: FakeClock
) -> None:
    settings = make_settings(tmp_path)
    first = Runtime(settings, clock)
    await first.start(mqtt=False)
    token = await build_mill(first)
    await first.alarms.create_rule(HOT, "admin", None)
    await send(first, token, clock.now_ms(), bearing_temp_c=75.0)
    (alarm,) = await until(lambda: alarms(first, "open"))
    await first.stop()
    second = Runtime(settings, clock)
    await second.start(mqtt=False)
    try:
        await send(second, token, clock.now_ms() + 1000, bearing_temp_c=76.0)
        await send(second, token, clock.now_ms() + 2000, bearing_temp_c=60.0)
        (cleared,) = await until(lambda: alarms(second, "cleared"))
        assert cleared["id"] == alarm["id"] and len(await alarms(second)) == 1
    finally:
        await second.stop()


async def test_template_rules_follow_new_machines(rt: Runtime, clock: FakeClock) -> None:
    token = await build_mill(rt)
    await rt.alarms.create_rule(
        {
            **{k: v for k, v in HOT.items() if k != "machine_id"},
            "template": "power_loom",
            "site_id": "mill",
        },
        "admin",
        None,
    )
    _, token4 = await rt.devices.create("loom-4", site_id="mill")
    await rt.assets.create_machine("L04", "mill-shed", "Loom 4", "power_loom", "loom-4")
    await rt.alarms.refresh_machines()
    await rt.ingestor.ingest(
        "loom-4", json.dumps({"values": {"bearing_temp_c": 90}}).encode(), token=token4
    )
    await send(rt, token, clock.now_ms(), bearing_temp_c=91.0)
    found = await until(lambda: _n_open(rt, 2))
    assert {a["machine_id"] for a in found} == {"L03", "L04"}


async def _n_open(rt: Runtime, n: int) -> list[dict[str, Any]] | None:
    found = await alarms(rt, "open")
    return found if len(found) == n else None


async def test_every_notification_is_delivered_exactly_once(
    rt: Runtime, clock: FakeClock, webhook: Webhook
) -> None:
    token = await build_mill(rt)
    await add_webhook_recipient(rt, webhook)
    await rt.alarms.create_rule({**HOT, "repeat_window_s": 0}, "admin", None)
    now = clock.now_ms()
    for i in range(40):
        await send(rt, token, now + i * 20, bearing_temp_c=75.0 if i % 2 == 0 else 60.0)
        await asyncio.sleep(0.005)
    await until(lambda: asyncio.sleep(0, len(webhook.received) >= 20))
    await asyncio.sleep(0.3)
    ids = [r.json()["alarm"]["id"] for r in webhook.received]
    assert len(ids) == len(set(ids)) == 20
    assert len(await outbox(rt, "sent")) == 20


async def test_rules_for_an_edge_gateway_bind_again_on_the_edge(
    rt: Runtime, clock: FakeClock
) -> None:
    from karkhana.alarms.engine import RuleSet, bind
    from karkhana.alarms.engine import Source as EngineSource
    from karkhana.alarms.model import parse_rule
    from karkhana.core.model import Sample

    await build_mill(rt)
    await build_mill(rt, "plant", "P01", "press-1")
    await rt.alarms.create_rule({**HOT, "id": "hot"}, "admin", None)
    await rt.alarms.create_rule({**HOT, "id": "other", "machine_id": "P01"}, "admin", None)
    answer = rt.alarms.edge_rules({"loom-3", "gw-1"})
    (item,) = answer["rules"]
    assert item["machine_id"] == "L03" and item["site_id"] == "mill"
    assert item["signals"]["bearing_temp_c"]["device_id"] == "loom-3"
    sources = {
        k: EngineSource(v["device_id"], v["key"], v["unit"]) for k, v in item["signals"].items()
    }
    bound = bind(parse_rule(item["rule"]), item["machine_id"], sources, origin="edge")
    assert bound is not None
    edge = RuleSet([bound])
    ts = clock.now_ms()
    (event,) = edge.feed([Sample("loom-3", "bearing_temp_c", ts, 80.0)])
    assert edge.tick(ts + 1) == []
    # the server, fed the same sample, names the same alarm: importing the edge's adds nothing
    assert [
        e.id for e in await rt.alarms.process([Sample("loom-3", "bearing_temp_c", ts, 80.0)])
    ] == [event.id]
    assert await rt.alarms.import_events([event]) == 0


async def test_all_clear_goes_to_everyone_who_was_told(
    rt: Runtime, clock: FakeClock, webhook: Webhook
) -> None:
    token = await build_mill(rt)
    await add_webhook_recipient(rt, webhook)
    await rt.alarms.put_recipient(
        "engineer-desk",
        {"name": "Engineer", "role": "engineer", "channels": ["hook"], "language": "ur"},
        "admin",
    )
    await rt.alarms.put_recipient(
        "manager-desk", {"name": "Manager", "role": "manager", "channels": ["hook"]}, "admin"
    )
    notify = {"roles": ["operator"], "escalate": [{"after_min": 5, "roles": ["engineer"]},
              {"after_min": 60, "roles": ["manager"]}], "on_clear": True}  # fmt: skip
    await rt.alarms.create_rule({**HOT, "notify": notify}, "admin", None)
    now = clock.now_ms()
    await send(rt, token, now, bearing_temp_c=80.0)
    await until(lambda: asyncio.sleep(0, len(webhook.received) == 1))
    clock.advance(6 * 60_000)
    await rt.alarms.tick()
    await until(lambda: asyncio.sleep(0, len(webhook.received) == 2))
    await send(rt, token, now + 7 * 60_000, bearing_temp_c=60.0)
    await until(lambda: asyncio.sleep(0, len(webhook.received) == 4))
    await asyncio.sleep(0.2)
    cleared = [r.json() for r in webhook.received if r.json()["event"] == "cleared"]
    assert len(cleared) == 2 and len(webhook.received) == 4  # the manager was never told
    english = next(c["text"] for c in cleared if c["text"].startswith("Back"))
    urdu = next(c["text"] for c in cleared if not c["text"].startswith("Back"))
    assert (
        english.startswith("Back to normal at ") and "It was: Loom 3 bearing temperature" in english
    )
    assert "پر حالت معمول پر آ گئی۔ پہلے: لوم 3" in urdu  # noqa: RUF001 (Urdu full stop)


async def test_a_dead_smtp_server_delays_only_its_own_messages(
    rt: Runtime, clock: FakeClock, webhook: Webhook
) -> None:
    from tests.conftest import free_port

    token = await build_mill(rt)
    await rt.alarms.put_channel("hook", {"kind": "webhook", "url": webhook.url}, "admin")
    await rt.alarms.put_channel(
        "mail", {"kind": "email", "host": "127.0.0.1", "port": free_port(), "sender": "alarms@mill.pk",
                 "timeout_s": 2}, "admin",
    )  # fmt: skip
    await rt.alarms.put_recipient(
        "op",
        {"name": "Op", "role": "operator", "channels": ["mail", "hook"], "email": "op@mill.pk"},
        "admin",
    )
    await rt.alarms.create_rule(HOT, "admin", None)
    await send(rt, token, clock.now_ms(), bearing_temp_c=75.0)
    await until(lambda: asyncio.sleep(0, webhook.received))

    async def mail_tried() -> bool:
        return any(r["channel_id"] == "mail" and r["attempts"] == 1 for r in await outbox(rt))

    await until(mail_tried)
    rows = {r["channel_id"]: r for r in await outbox(rt)}
    assert rows["hook"]["state"] == "sent"
    assert rows["mail"]["state"] == "pending" and rows["mail"]["attempts"] == 1
    assert (
        rows["mail"]["last_error"].startswith("SMTP 127.0.0.1")
        and rows["mail"]["next_ms"] > clock.now_ms()
    )


async def test_a_new_rule_judges_the_latest_values_at_once(rt: Runtime, clock: FakeClock) -> None:
    token = await build_mill(rt)
    now = clock.now_ms()
    await send(rt, token, now, bearing_temp_c=75.0, fault=True)
    await rt.alarms.create_rule(HOT, "admin", None)
    (alarm,) = await until(lambda: alarms(rt, "open"))
    assert alarm["raised_ms"] == now and alarm["value"] == 75.0
    # a boolean signal keeps its meaning although the store keeps it as a number
    faulty = {
        **HOT,
        "id": "faulty",
        "condition": {"type": "state", "signal": "fault", "in": ["true"]},
    }
    await rt.alarms.create_rule(faulty, "admin", None)
    await until(lambda: _n_open(rt, 2))


async def test_a_sample_committed_before_a_restart_still_raises(
    tmp_path: Path, clock: FakeClock
) -> None:
    settings = make_settings(tmp_path)
    first = Runtime(settings, clock)
    await first.start(mqtt=False)
    token = await build_mill(first)
    await first.alarms.create_rule(HOT, "admin", None)
    await first.alarms.stop()  # the alarm service is gone (a crash) while ingestion commits
    await send(first, token, clock.now_ms(), bearing_temp_c=75.0)
    await first.stop()
    second = Runtime(settings, clock)
    await second.start(mqtt=False)
    try:
        (alarm,) = await until(lambda: alarms(second, "open"))
        assert alarm["raised_ms"] == clock.now_ms()
    finally:
        await second.stop()


async def test_old_notifications_are_pruned_but_alarms_stay(
    rt: Runtime, clock: FakeClock, webhook: Webhook
) -> None:
    token = await build_mill(rt)
    await add_webhook_recipient(rt, webhook)
    await rt.alarms.create_rule(HOT, "admin", None)
    await send(rt, token, clock.now_ms(), bearing_temp_c=75.0)
    await until(lambda: outbox(rt, "sent"))
    assert await rt.alarms.prune(clock.now_ms() + 89 * 86_400_000) == 0
    assert (
        await rt.alarms.prune(clock.now_ms() + 91 * 86_400_000) == 2
    )  # the notification, the raise id
    assert await outbox(rt) == [] and len(await alarms(rt)) == 1


async def test_disabling_a_rule_or_removing_the_machine_clears_its_alarm(
    rt: Runtime, clock: FakeClock
) -> None:
    token = await build_mill(rt)
    rule = await rt.alarms.create_rule(HOT, "admin", None)
    await send(rt, token, clock.now_ms(), bearing_temp_c=75.0)
    await until(lambda: alarms(rt, "open"))
    await rt.alarms.update_rule(rule["id"], {**rule, "enabled": False}, "admin", None)
    (cleared,) = await alarms(rt, "cleared")
    assert cleared["cleared_ms"] == clock.now_ms()
    clock.advance(1000)
    # enabled again while still hot: raised again at once, as a repeat of the same alarm
    await rt.alarms.update_rule(rule["id"], {**rule, "enabled": True}, "admin", None)
    (again,) = await alarms(rt, "open")
    assert again["id"] == cleared["id"] and again["count"] == 2
    await rt.assets.delete("machines", "L03")
    await rt.alarms.refresh_machines()
    assert await alarms(rt, "open") == []
