"""The audit log for admins: list, export as CSV or JSON, verify the hash chain."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel

from karkhana.api.deps import CurrentUser, RuntimeDep, Source
from karkhana.core.errors import InvalidPayload
from karkhana.core.timeutil import parse_ts
from karkhana.security.audit import AuditEvent, to_csv

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])
MAX_EVENTS = 100_000


class AuditEventOut(BaseModel):
    seq: int
    ts_ms: int
    actor: str
    action: str
    target: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    source: str | None
    outcome: str
    prev_hash: str
    hash: str

    @classmethod
    def of(cls, e: AuditEvent) -> AuditEventOut:
        return cls(**e.as_dict())


class VerifyOut(BaseModel):
    ok: bool
    checked: int
    first_bad_seq: int | None
    reason: str


@router.get("", response_model=list[AuditEventOut])
async def list_events(
    rt: RuntimeDep,
    user: CurrentUser,
    source: Source,
    start: Annotated[str | None, Query(description="epoch ms or ISO 8601")] = None,
    end: Annotated[str | None, Query(description="epoch ms or ISO 8601 (exclusive)")] = None,
    actor: Annotated[str | None, Query(max_length=200)] = None,
    action: Annotated[
        str | None, Query(max_length=200, description="exact, or a prefix ending in *: device.*")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_EVENTS)] = 1000,
    format: Annotated[str, Query(pattern="^(json|csv)$")] = "json",
) -> list[AuditEventOut] | Response:
    """The newest ``limit`` matching events, oldest first; ``format=csv`` downloads them.

    A download is itself recorded (``audit.export``).
    """
    t_start = None if not start else parse_ts(start, "start")
    t_end = None if not end else parse_ts(end, "end")
    if t_start is not None and t_end is not None and t_start >= t_end:
        raise InvalidPayload("start: must be before end")
    events = await rt.audit.events(
        start=t_start, end=t_end, actor=actor, action=action, limit=limit
    )
    if format == "json":
        return [AuditEventOut.of(e) for e in events]
    await rt.audit.record(
        user.username,
        "audit.export",
        "audit",
        after={"format": "csv", "events": len(events), "start": t_start, "end": t_end},
        source=source,
    )
    return Response(
        to_csv(events),
        media_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="karkhana-audit.csv"'},
    )


@router.get("/verify")
async def verify(rt: RuntimeDep, user: CurrentUser) -> VerifyOut:
    """Walk the whole hash chain: ``ok`` false names the first event that was tampered with."""
    r = await rt.audit.verify()
    return VerifyOut(ok=r.ok, checked=r.checked, first_bad_seq=r.first_bad_seq, reason=r.reason)
