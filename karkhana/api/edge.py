"""Edge agents: ``POST /api/v1/edge/batches`` (samples), ``GET /api/v1/edge/rules`` (the alarm
rules a gateway evaluates itself) and ``POST /api/v1/edge/alarms`` (the alarms it raised),
each authenticated with the gateway's device token (docs/edge.md)."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from pydantic import BaseModel, Field

from karkhana.alarms.engine import event_from_json
from karkhana.api.deps import RuntimeDep, bearer_token, client_address, runtime
from karkhana.api.telemetry import _body
from karkhana.core.errors import Forbidden, Unauthorized
from karkhana.edge.encoding import CONTENT_TYPE
from karkhana.edge.receiver import EdgeReceiver
from karkhana.runtime import Runtime

router = APIRouter(prefix="/api/v1/edge", tags=["edge"])


class BatchReceipt(BaseModel):
    batch_id: str
    stored: int
    duplicates: int
    replay: bool


def receiver(request: Request) -> EdgeReceiver:
    """One receiver per application (it remembers recently committed batch ids)."""
    found: EdgeReceiver | None = getattr(request.app.state, "edge_receiver", None)
    if found is None:
        rt = runtime(request)
        found = EdgeReceiver(
            rt.store,
            rt.devices,
            rt.ingestor,
            rt.clock,
            audit=rt.audit,
            create_children=rt.settings.edge_create_children == "on",
            max_children=rt.settings.edge_max_children,
        )
        request.app.state.edge_receiver = found
    return found


@router.post(
    "/batches",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {CONTENT_TYPE: {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def post_batch(
    request: Request,
    rt: RuntimeDep,
    edge: Annotated[EdgeReceiver, Depends(receiver)],
    x_karkhana_gateway: Annotated[str, Header(description="the gateway's device id")] = "",
    authorization: Annotated[str | None, Header(description="Bearer <gateway token>")] = None,
) -> BatchReceipt:
    """Store a batch from an edge gateway, authenticated with the gateway's device token.

    Answers only after every sample is committed. Re-sending a batch is safe: samples already
    stored are counted as duplicates, and a recently committed batch id is answered with
    ``replay: true`` without writing again. A gateway sends for itself and its child devices;
    unknown devices become its children when the server allows it (``edge_create_children``).
    """
    gateway_id = x_karkhana_gateway
    body = await _body(request, rt.settings.edge_max_batch_bytes, rt.settings.http_body_timeout_s)
    try:
        receipt = await edge.receive(gateway_id, bearer_token(request) or "", body)
    except Unauthorized:
        await _refused(rt, request, gateway_id)
        raise
    return BatchReceipt(
        batch_id=str(receipt.batch_id),
        stored=receipt.stored,
        duplicates=receipt.duplicates,
        replay=receipt.replay,
    )


async def _refused(rt: Runtime, request: Request, gateway_id: str) -> None:
    """Audit a gateway credential that did not verify."""
    await rt.audit.refused(
        gateway_id[:64] or "(none)",
        "device.auth",
        f"device:{gateway_id[:64]}",
        source=client_address(request),
        details={"transport": "edge"},
    )


async def _gateway(request: Request, rt: Runtime, gateway_id: str) -> str:
    """The gateway the request's device token belongs to; refused attempts are audited."""
    if not rt.devices.verify(gateway_id, bearer_token(request)):
        await _refused(rt, request, gateway_id)
        raise Unauthorized("send the gateway's id (X-Karkhana-Gateway) and its device token")
    return gateway_id


async def _fed_by(rt: Runtime, gateway_id: str) -> set[str]:
    """The gateway and its child devices."""
    return {gateway_id} | {d.id for d in await rt.devices.list() if d.parent_id == gateway_id}


@router.get("/rules")
async def edge_rules(
    request: Request,
    rt: RuntimeDep,
    x_karkhana_gateway: Annotated[str, Header(description="the gateway's device id")] = "",
    authorization: Annotated[str | None, Header(description="Bearer <gateway token>")] = None,
) -> dict[str, Any]:
    """The alarm rules an edge gateway evaluates itself: every enabled rule bound to a machine
    whose signals all come from the gateway or its child devices, with those bindings."""
    gateway_id = await _gateway(request, rt, x_karkhana_gateway)
    return {"gateway_id": gateway_id, **rt.alarms.edge_rules(await _fed_by(rt, gateway_id))}


class EdgeAlarmsIn(BaseModel):
    events: list[dict[str, Any]] = Field(max_length=10_000)


@router.post("/alarms")
async def edge_alarms(
    request: Request,
    rt: RuntimeDep,
    body: EdgeAlarmsIn,
    x_karkhana_gateway: Annotated[str, Header(description="the gateway's device id")] = "",
    authorization: Annotated[str | None, Header(description="Bearer <gateway token>")] = None,
) -> dict[str, int]:
    """Alarm events raised or cleared on an edge gateway while it evaluated rules itself.

    Imported by their ids: sending them again, or the server raising the same alarm from the
    same samples, makes no second alarm. Only machines fed by the gateway's devices are taken.
    """
    gateway_id = await _gateway(request, rt, x_karkhana_gateway)
    events = [event_from_json(e) for e in body.events]
    rules = rt.alarms.edge_rules(await _fed_by(rt, gateway_id))["rules"]
    allowed = {r["machine_id"] for r in rules}
    foreign = sorted({e.machine_id for e in events} - allowed)
    if foreign:
        raise Forbidden(f"gateway {gateway_id} does not feed machine(s) {', '.join(foreign[:5])}")
    new = await rt.alarms.import_events([replace(e, origin="edge") for e in events])
    return {"received": len(events), "new": new}
