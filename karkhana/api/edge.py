"""Batches from edge agents: ``POST /api/v1/edge/batches`` (docs/edge.md)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request
from pydantic import BaseModel

from karkhana.api.deps import RuntimeDep, bearer_token, client_address, runtime
from karkhana.api.telemetry import _body
from karkhana.core.errors import Unauthorized
from karkhana.edge.encoding import CONTENT_TYPE
from karkhana.edge.receiver import EdgeReceiver

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
        await rt.audit.refused(
            gateway_id[:64] or "(none)",
            "device.auth",
            f"device:{gateway_id[:64]}",
            source=client_address(request),
            details={"transport": "edge"},
        )
        raise
    return BatchReceipt(
        batch_id=str(receipt.batch_id),
        stored=receipt.stored,
        duplicates=receipt.duplicates,
        replay=receipt.replay,
    )
