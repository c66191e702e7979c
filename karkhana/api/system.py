from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from karkhana import __version__
from karkhana.api.deps import CurrentUser, RuntimeDep

router = APIRouter(prefix="/api/v1", tags=["system"])


@router.get("/health")
async def health(rt: RuntimeDep) -> dict[str, Any]:
    """Liveness for load balancers and the edge agent; needs no login. ``time_ms`` is the
    server's clock, from which edge agents estimate their own clock's offset."""
    return {
        "status": "ok",
        "version": __version__,
        "writer_queue": rt.db.queue_depth,
        "time_ms": rt.clock.now_ms(),
    }


@router.get("/ingest/stats")
async def ingest_stats(rt: RuntimeDep, user: CurrentUser) -> dict[str, Any]:
    """Per-device counts of stored, duplicate and rejected messages with the last reason."""
    return {"devices": rt.ingestor.snapshot(), "commits": rt.db.commits}
