"""Production routes: live overview, states, OEE, stops and their reasons, Pareto, reports.

Every list is limited to the user's sites; naming a machine, line or site of another site is
refused (403).
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, Field

from karkhana.api.deps import CurrentUser, RuntimeDep, Source, visible_sites
from karkhana.core.errors import Forbidden, InvalidPayload, NotFound
from karkhana.core.timeutil import parse_query_ts
from karkhana.production.calendar import local_date
from karkhana.production.downtime import Reason
from karkhana.production.model import Oee, Stop
from karkhana.production.report import render_csv, render_pdf
from karkhana.production.service import ProductionService, SiteInfo
from karkhana.runtime import Runtime
from karkhana.security.users import User

router = APIRouter(prefix="/api/v1/production", tags=["production"])
DAY_MS = 86_400_000


class ReasonIn(BaseModel):
    reason_id: str = Field(max_length=200, examples=["mechanical.warp_break"])


def _service(rt: Runtime) -> ProductionService:
    service: ProductionService = rt.production
    return service


def _range(rt: Runtime, start: str | None, end: str | None) -> tuple[int, int]:
    t_end = rt.clock.now_ms() if end in (None, "") else parse_query_ts(end, "end")
    t_start = t_end - DAY_MS if start in (None, "") else parse_query_ts(start, "start")
    if t_start >= t_end:
        raise InvalidPayload("start: must be before end")
    if t_end - t_start > 400 * DAY_MS:
        raise InvalidPayload("end: a range may span at most 400 days")
    return t_start, t_end


def _site_for(service: ProductionService, user: User, site_id: str | None) -> SiteInfo:
    """The named site, or the only site the user (or the plant) has."""
    sites = visible_sites(user)
    if site_id:
        if sites is not None and site_id not in sites:
            raise Forbidden("this belongs to a site you do not have access to")
        return service.site(site_id)
    candidates = sorted(s for s in service.sites if sites is None or s in sites)
    if not candidates:
        raise NotFound("no site yet: create a site and its machines first")
    if len(candidates) != 1:
        raise InvalidPayload("site_id: required when there is more than one site")
    return service.site(candidates[0])


def _oee_json(r: Oee) -> dict[str, Any]:
    return {
        "availability": r.availability,
        "performance": r.performance,
        "quality": r.quality,
        "oee": r.oee,
        "quality_measured": r.quality_measured,
        "planned_ms": r.planned_ms,
        "run_ms": r.run_ms,
        "total_count": r.total_count,
        "good_count": r.good_count,
        "losses": asdict(r.losses),
        "start_ms": r.start_ms,
        "end_ms": r.end_ms,
    }


def _reason_json(node: Reason) -> dict[str, Any]:
    return {
        "id": node.id,
        "label": {"en": node.label.en, "ur": node.label.ur},
        "loss": node.loss,
        "children": [_reason_json(c) for c in node.children],
    }


def _stop_json(service: ProductionService, s: Stop) -> dict[str, Any]:
    label = service.reasons.label(s.reason_id)
    return {
        "id": s.id,
        "machine_id": s.machine_id,
        "start_ms": s.start_ms,
        "end_ms": s.end_ms,
        "state": s.state,
        "reason_id": s.reason_id,
        "reason": None if label is None else {"en": label.en, "ur": label.ur},
        "auto": s.auto,
    }


@router.get("/overview")
async def overview(
    rt: RuntimeDep, user: CurrentUser, site_id: str | None = Query(None, max_length=64)
) -> dict[str, Any]:
    """Every production machine: state, speed, this shift's output and OEE."""
    service = _service(rt)
    await service.look_up(("site", site_id))
    sites = visible_sites(user)
    if site_id:
        service.site(site_id)
        if sites is not None and site_id not in sites:
            raise Forbidden("this belongs to a site you do not have access to")
        sites = frozenset({site_id})
    return {"now_ms": rt.clock.now_ms(), "machines": await service.overview(sites)}


@router.get("/machines/{machine_id}/states")
async def machine_states(
    machine_id: str,
    rt: RuntimeDep,
    user: CurrentUser,
    start: str | None = None,
    end: str | None = None,
) -> dict[str, Any]:
    """State intervals, with planned stops from the shift calendar laid over them."""
    t_start, t_end = _range(rt, start, end)
    service = _service(rt)
    await service.look_up(("machine", machine_id))
    return {"intervals": await service.states(machine_id, t_start, t_end)}


@router.post("/machines/{machine_id}/rebuild")
async def rebuild(
    machine_id: str,
    rt: RuntimeDep,
    user: CurrentUser,
    source: Source,
    start: str = Query(..., description="epoch ms or ISO 8601; rebuilds from here to now"),
) -> dict[str, Any]:
    """Derive a machine's states and counts again from stored telemetry."""
    t_start = parse_query_ts(start, "start")
    now = rt.clock.now_ms()
    if not now - 400 * DAY_MS <= t_start < now:
        raise InvalidPayload("start: must be in the past 400 days")
    await _service(rt).look_up(("machine", machine_id))
    await _service(rt).rebuild(machine_id, t_start)
    await rt.audit.record(
        user.username,
        "production.rebuild",
        f"machine:{machine_id}",
        after={"start_ms": t_start},
        source=source,
    )
    return {"machine_id": machine_id, "start_ms": t_start, "end_ms": now}


@router.get("/oee")
async def oee(
    rt: RuntimeDep,
    user: CurrentUser,
    machine_id: str | None = Query(None, max_length=64),
    line_id: str | None = Query(None, max_length=64),
    site_id: str | None = Query(None, max_length=64),
    start: str | None = None,
    end: str | None = None,
    shift: Literal["current"] | None = None,
) -> dict[str, Any]:
    """OEE of a machine, line or site (default: every production machine the user sees)."""
    service = _service(rt)
    await service.look_up(("machine", machine_id), ("line", line_id), ("site", site_id))
    scope = service.scope(visible_sites(user), machine_id, line_id, site_id)
    if shift == "current":
        if scope.site is None:
            raise InvalidPayload("shift=current needs machines of one site")
        window = service.current_shift(scope.site)
        if window is None:
            raise NotFound("no shift is on now")
        t_start, t_end = window.start_ms, max(window.start_ms + 1, rt.clock.now_ms())
    else:
        t_start, t_end = _range(rt, start, end)
    return _oee_json(await service.oee(scope.machines, t_start, t_end))


@router.get("/stops")
async def stops(
    rt: RuntimeDep,
    user: CurrentUser,
    machine_id: str | None = Query(None, max_length=64),
    site_id: str | None = Query(None, max_length=64),
    start: str | None = None,
    end: str | None = None,
    limit: int = Query(1000, ge=1, le=10_000, description="the newest this many"),
) -> dict[str, Any]:
    """Stops in planned production time, oldest first; ``end_ms`` null while a stop lasts."""
    service = _service(rt)
    await service.look_up(("machine", machine_id), ("site", site_id))
    scope = service.scope(visible_sites(user), machine_id, None, site_id)
    t_start, t_end = _range(rt, start, end)
    found = await service.stops(scope.machines, t_start, t_end)
    return {"stops": [_stop_json(service, s) for s in found[-limit:]]}


@router.put("/stops/{stop_id}/reason")
async def set_reason(
    stop_id: Annotated[int, Path(ge=1, le=2**62)],
    body: ReasonIn,
    rt: RuntimeDep,
    user: CurrentUser,
    source: Source,
) -> dict[str, Any]:
    """An operator names why a machine stopped."""
    service = _service(rt)
    stop = await service.stop_by_id(stop_id)
    sites = visible_sites(user)
    machine = service.machines.get(stop.machine_id)
    if sites is not None and (machine is None or machine.site_id not in sites):
        raise Forbidden("this belongs to a site you do not have access to")
    before, after = await service.set_reason(stop_id, body.reason_id)
    await rt.audit.record(
        user.username,
        "stop.reason",
        f"stop:{stop_id}",
        before={"reason_id": before.reason_id, "auto": before.auto},
        after={"reason_id": after.reason_id, "machine_id": after.machine_id},
        source=source,
    )
    return _stop_json(service, after)


@router.get("/shifts")
async def shifts(
    rt: RuntimeDep,
    user: CurrentUser,
    site_id: str | None = Query(None, max_length=64),
    date: str | None = Query(None, max_length=10, description="local date (default: today)"),
) -> dict[str, Any]:
    """A site's working shifts starting on a date, for per-shift OEE and reports."""
    service = _service(rt)
    await service.look_up(("site", site_id))
    site = _site_for(service, user, site_id)
    day = _day(date, rt, site)
    return {
        "site_id": site.id,
        "timezone": site.tz.key,
        "calendar": {"id": site.calendar.id, "name": site.calendar.name},
        "date": day.isoformat(),
        "shifts": [
            {"id": w.id, "name": w.name, "start_ms": w.start_ms, "end_ms": w.end_ms}
            for w in service.shifts_on(site, day)
        ],
    }


@router.get("/reasons")
async def reasons(rt: RuntimeDep, user: CurrentUser) -> dict[str, Any]:
    """The downtime reason tree, labelled in English and Urdu."""
    return {"reasons": [_reason_json(r) for r in _service(rt).reasons.roots]}


@router.get("/pareto")
async def pareto(
    rt: RuntimeDep,
    user: CurrentUser,
    by: Literal["reason", "machine"] = "reason",
    start: str | None = None,
    end: str | None = None,
    site_id: str | None = Query(None, max_length=64),
) -> dict[str, Any]:
    """Downtime in planned production time by reason or by machine, longest first."""
    service = _service(rt)
    await service.look_up(("site", site_id))
    scope = service.scope(visible_sites(user), None, None, site_id)
    t_start, t_end = _range(rt, start, end)
    items = await service.pareto(scope.machines, by, t_start, t_end)
    return {
        "items": [
            {
                "key": i.key,
                "label": {"en": i.label.en, "ur": i.label.ur},
                "duration_ms": i.duration_ms,
                "count": i.count,
            }
            for i in items
        ]
    }


def _day(value: str | None, rt: Runtime, site: SiteInfo) -> date:
    if not value:
        return local_date(rt.clock.now_ms(), site.tz)
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise InvalidPayload(f"date: {value[:20]!r} is not a date (YYYY-MM-DD)") from None
    if not 2000 <= day.year < 2100:
        raise InvalidPayload("date: must lie between the years 2000 and 2100")
    return day


async def _report(
    rt: Runtime,
    user: User,
    kind: Literal["shift", "daily"],
    fmt: Literal["csv", "pdf"],
    day: str | None,
    shift: str | None,
    site_id: str | None,
) -> Response:
    service = _service(rt)
    await service.look_up(("site", site_id))
    site = _site_for(service, user, site_id)
    when = _day(day, rt, site)
    shift = shift if kind == "shift" else None
    start, end, title = service.report_range(site, kind, when, shift)
    report = await service.report_between(site, start, end, title)
    named = local_date(start, site.tz) if kind == "shift" else when  # the day the shift began
    name = f"{site.id}-{named.isoformat()}-{kind}{'-' + shift if shift else ''}"
    headers = {"Content-Disposition": f'attachment; filename="{name}.{fmt}"'}
    if fmt == "csv":
        return Response(render_csv(report), media_type="text/csv; charset=utf-8", headers=headers)
    return Response(render_pdf(report), media_type="application/pdf", headers=headers)


_DATE = Query(None, max_length=10, description="local date YYYY-MM-DD (default: today)")
_SHIFT = Query(None, max_length=64, description="shift id (default: the latest begun)")
_SITE = Query(None, max_length=64)


@router.get("/reports/shift.csv", response_class=Response)
async def shift_csv(
    rt: RuntimeDep,
    user: CurrentUser,
    date: str | None = _DATE,
    shift: str | None = _SHIFT,
    site_id: str | None = _SITE,
) -> Response:
    return await _report(rt, user, "shift", "csv", date, shift, site_id)


@router.get("/reports/shift.pdf", response_class=Response)
async def shift_pdf(
    rt: RuntimeDep,
    user: CurrentUser,
    date: str | None = _DATE,
    shift: str | None = _SHIFT,
    site_id: str | None = _SITE,
) -> Response:
    return await _report(rt, user, "shift", "pdf", date, shift, site_id)


@router.get("/reports/daily.csv", response_class=Response)
async def daily_csv(
    rt: RuntimeDep, user: CurrentUser, date: str | None = _DATE, site_id: str | None = _SITE
) -> Response:
    return await _report(rt, user, "daily", "csv", date, None, site_id)


@router.get("/reports/daily.pdf", response_class=Response)
async def daily_pdf(
    rt: RuntimeDep, user: CurrentUser, date: str | None = _DATE, site_id: str | None = _SITE
) -> Response:
    return await _report(rt, user, "daily", "pdf", date, None, site_id)
