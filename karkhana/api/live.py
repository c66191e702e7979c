"""Live samples for the dashboard: Server-Sent Events from the in-process bus."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from karkhana.api.deps import CurrentUser, RuntimeDep, visible_sites
from karkhana.assets.model import Machine
from karkhana.core.errors import Forbidden, InvalidPayload, NotFound
from karkhana.runtime import Runtime
from karkhana.web.live import KEEPALIVE, Routes, frame, opening

router = APIRouter(prefix="/api/v1", tags=["live"])

KEEPALIVE_S = 15.0
MAX_STREAM_S = 600.0
"""A stream ends after this long and the browser reconnects: access and the machine list are
checked again, so a revoked session or a new machine takes effect within this time."""


async def _machines(
    rt: Runtime, user: CurrentUser, machine_id: str | None, site_ids: list[str]
) -> list[Machine]:
    if (machine_id is None) == (not site_ids):
        raise InvalidPayload("give exactly one of machine_id and site_id")
    allowed = visible_sites(user)
    if machine_id is not None:
        site = await rt.assets.site_of("machines", machine_id)
        if allowed is not None and site not in allowed:
            raise Forbidden("this belongs to a site you do not have access to")
        return [await rt.assets.get_machine(machine_id)]
    tree = {s["id"]: s for s in await rt.assets.tree()}
    ids: list[str] = []
    for site_id in dict.fromkeys(site_ids):
        found = tree.get(site_id)
        if found is None:
            raise NotFound(f"no site {site_id}")
        if allowed is not None and site_id not in allowed:
            raise Forbidden("this belongs to a site you do not have access to")
        ids += [m["id"] for a in found["areas"] for ln in a["lines"] for m in ln["machines"]]
    return [await rt.assets.get_machine(i) for i in ids]


async def _stream(
    rt: Runtime, request: Request, routes: Routes, ids: list[str]
) -> AsyncIterator[str]:
    deadline = time.monotonic() + MAX_STREAM_S
    # the bus reads "no devices" as all of them: a site without machines gets an empty stream
    devices = sorted(routes.devices) or ["\x00none"]
    with rt.bus.subscribe(devices, maxsize=256) as sub:
        yield opening(ids)
        while time.monotonic() < deadline:
            try:
                samples = await asyncio.wait_for(sub.get(), KEEPALIVE_S)
            except TimeoutError:
                if await request.is_disconnected():
                    return
                yield KEEPALIVE
                continue
            events = routes.events(samples)
            if events:
                yield frame("samples", events)


@router.get(
    "/live",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def live(
    request: Request,
    rt: RuntimeDep,
    user: CurrentUser,
    machine_id: Annotated[str | None, Query(max_length=64)] = None,
    site_id: Annotated[
        list[str] | None,
        Query(max_length=100, description="a site, or several (site_id=a&site_id=b)"),
    ] = None,
) -> StreamingResponse:
    """Committed samples of one machine or of every machine of some sites, as Server-Sent Events.

    Several sites share one stream: a browser holds only a few connections to a server at once.

    Opens with a ``ready`` event listing the machines watched; then ``samples`` events, each a
    list of ``{"machine_id", "signal", "ts", "value"}``. Send ``Accept: text/event-stream``
    (browsers' EventSource does). A slow reader loses its oldest batches, never the server's pace.
    """
    if "text/event-stream" not in request.headers.get("accept", ""):
        raise InvalidPayload(
            "this route streams Server-Sent Events: send Accept: text/event-stream"
        )
    machines = await _machines(rt, user, machine_id, site_id or [])
    routes = Routes.of(machines)
    return StreamingResponse(
        _stream(rt, request, routes, [m.id for m in machines]),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
