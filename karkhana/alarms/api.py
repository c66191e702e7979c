"""HTTP routes of alarms, rules and notification settings (docs/alarms.md).

Lists show only the caller's sites; a single alarm or rule of another site is answered as not
found. Changes are written to the audit log by the service, in the same transaction.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query, Response
from pydantic import BaseModel, Field

from karkhana.alarms.history import summary
from karkhana.alarms.notify import payload_templates
from karkhana.api.deps import CurrentUser, RuntimeDep, Source, visible_sites
from karkhana.core.timeutil import parse_ts

router = APIRouter(prefix="/api/v1", tags=["alarms"])

AlarmState = Literal["open", "all", "raised", "acknowledged", "shelved", "cleared"]
RULE_EXAMPLE = {
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
    "for_s": 30,
}
RuleBody = Annotated[dict[str, Any], Body(examples=[RULE_EXAMPLE])]


class AckIn(BaseModel):
    comment: str = Field(default="", max_length=1000)


class ShelveIn(BaseModel):
    minutes: int = Field(ge=1, le=7 * 24 * 60)


def _time(value: str | None, field: str) -> int | None:
    return None if value in (None, "") else parse_ts(value, field)


@router.get("/alarms")
async def list_alarms(
    rt: RuntimeDep,
    user: CurrentUser,
    state: AlarmState = "open",
    machine_id: str | None = None,
    site_id: str | None = None,
    start: Annotated[
        str | None, Query(description="raised at or after: epoch ms or ISO 8601")
    ] = None,
    end: Annotated[str | None, Query(description="raised before: epoch ms or ISO 8601")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> dict[str, list[dict[str, Any]]]:
    """Alarms of the caller's sites, newest first; ``open`` = raised or acknowledged."""
    alarms = await rt.alarms.list_alarms(
        visible_sites(user),
        state=state,
        machine_id=machine_id,
        site_id=site_id,
        start=_time(start, "start"),
        end=_time(end, "end"),
        limit=limit,
    )
    return {"alarms": alarms}


@router.get("/alarms/stats")
async def alarm_stats(
    rt: RuntimeDep,
    user: CurrentUser,
    machine_id: str | None = None,
    site_id: str | None = None,
    start: Annotated[
        str | None, Query(description="raised at or after: epoch ms or ISO 8601")
    ] = None,
    end: Annotated[str | None, Query(description="raised before: epoch ms or ISO 8601")] = None,
) -> dict[str, Any]:
    """Alarm history of the caller's sites: counts, repeats, and time to acknowledge and to clear
    (count, mean, p50, p90, max in ms), overall, per rule and per machine. Default: the last
    7 days."""
    given_end, given_start = _time(end, "end"), _time(start, "start")
    end_ms = rt.clock.now_ms() + 1 if given_end is None else given_end
    start_ms = end_ms - 7 * 86_400_000 if given_start is None else given_start
    alarms = await rt.alarms.list_alarms(
        visible_sites(user),
        state="all",
        machine_id=machine_id,
        site_id=site_id,
        start=start_ms,
        end=end_ms,
        limit=100_000,
    )
    return {"start_ms": start_ms, "end_ms": end_ms, **summary(alarms)}


@router.get("/alarms/{alarm_id}")
async def get_alarm(alarm_id: str, rt: RuntimeDep, user: CurrentUser) -> dict[str, Any]:
    return await rt.alarms.get_alarm(alarm_id, visible_sites(user))


@router.post("/alarms/{alarm_id}/ack")
async def acknowledge(
    alarm_id: str, body: AckIn, rt: RuntimeDep, user: CurrentUser, source: Source
) -> dict[str, Any]:
    """Acknowledge: who and when are recorded with the comment (409 if already acknowledged)."""
    return await rt.alarms.acknowledge(
        alarm_id, user.username, body.comment, visible_sites(user), source
    )


@router.post("/alarms/{alarm_id}/shelve")
async def shelve(
    alarm_id: str, body: ShelveIn, rt: RuntimeDep, user: CurrentUser, source: Source
) -> dict[str, Any]:
    """Silence an alarm for some minutes: no notifications or escalation until then."""
    return await rt.alarms.shelve(
        alarm_id, user.username, body.minutes, visible_sites(user), source
    )


@router.get("/rules")
async def list_rules(
    rt: RuntimeDep, user: CurrentUser, machine_id: str | None = None
) -> dict[str, list[dict[str, Any]]]:
    return {"rules": rt.alarms.list_rules(visible_sites(user), machine_id)}


@router.post("/rules", status_code=201)
async def create_rule(
    body: RuleBody, rt: RuntimeDep, user: CurrentUser, source: Source
) -> dict[str, Any]:
    """A rule for one machine (``machine_id``) or every machine of a template (``template``,
    optionally only in ``site_id``); see docs/alarms.md for every condition type."""
    return await rt.alarms.create_rule(body, user.username, visible_sites(user), source)


@router.get("/rules/{rule_id}")
async def get_rule(rule_id: str, rt: RuntimeDep, user: CurrentUser) -> dict[str, Any]:
    return rt.alarms.get_rule(rule_id, visible_sites(user))


@router.put("/rules/{rule_id}")
async def update_rule(
    rule_id: str, body: RuleBody, rt: RuntimeDep, user: CurrentUser, source: Source
) -> dict[str, Any]:
    return await rt.alarms.update_rule(rule_id, body, user.username, visible_sites(user), source)


@router.delete("/rules/{rule_id}", status_code=204)
async def delete_rule(rule_id: str, rt: RuntimeDep, user: CurrentUser, source: Source) -> Response:
    await rt.alarms.delete_rule(rule_id, user.username, visible_sites(user), source)
    return Response(status_code=204)


@router.get("/notify/channels")
async def list_channels(rt: RuntimeDep, user: CurrentUser) -> dict[str, Any]:
    """Email (SMTP) and webhook channels; passwords and header values are masked."""
    return {
        "channels": rt.alarms.list_channels(),
        "templates": {t.id: t.description for t in payload_templates().values()},
    }


@router.put("/notify/channels/{channel_id}")
async def put_channel(
    channel_id: str,
    body: Annotated[dict[str, Any], Body()],
    rt: RuntimeDep,
    user: CurrentUser,
    source: Source,
) -> dict[str, Any]:
    """Create or replace a channel; a masked secret sent back unchanged keeps the stored one."""
    return await rt.alarms.put_channel(channel_id, body, user.username, source)


@router.delete("/notify/channels/{channel_id}", status_code=204)
async def delete_channel(
    channel_id: str, rt: RuntimeDep, user: CurrentUser, source: Source
) -> Response:
    await rt.alarms.delete_channel(channel_id, user.username, source)
    return Response(status_code=204)


@router.get("/notify/recipients")
async def list_recipients(rt: RuntimeDep, user: CurrentUser) -> dict[str, Any]:
    return {"recipients": rt.alarms.list_recipients()}


@router.put("/notify/recipients/{recipient_id}")
async def put_recipient(
    recipient_id: str,
    body: Annotated[dict[str, Any], Body()],
    rt: RuntimeDep,
    user: CurrentUser,
    source: Source,
) -> dict[str, Any]:
    """Create or replace who is told: role, sites, language, address, channels, quiet hours."""
    return await rt.alarms.put_recipient(recipient_id, body, user.username, source)


@router.delete("/notify/recipients/{recipient_id}", status_code=204)
async def delete_recipient(
    recipient_id: str, rt: RuntimeDep, user: CurrentUser, source: Source
) -> Response:
    await rt.alarms.delete_recipient(recipient_id, user.username, source)
    return Response(status_code=204)


@router.get("/notify/outbox")
async def outbox(
    rt: RuntimeDep,
    user: CurrentUser,
    state: Literal["pending", "sent", "failed", "dropped"] | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 200,
) -> dict[str, Any]:
    """Notifications sent, waiting (retry or quiet hours), failed or dropped."""
    return {"notifications": await rt.alarms.outbox(state, limit)}
