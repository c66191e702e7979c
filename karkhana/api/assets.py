from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from karkhana.api.deps import CurrentUser, RuntimeDep, Source, visible_sites
from karkhana.api.telemetry import SeriesOut, _series
from karkhana.core.errors import NotFound
from karkhana.store.base import Agg

router = APIRouter(prefix="/api/v1", tags=["assets"])
Kind = Literal["sites", "areas", "lines", "machines"]


class SiteIn(BaseModel):
    id: str = Field(max_length=64)
    name: str = Field(max_length=200)
    timezone: str = Field(default="Asia/Karachi", max_length=64)


class AreaIn(BaseModel):
    id: str = Field(max_length=64)
    site_id: str = Field(max_length=64)
    name: str = Field(max_length=200)


class LineIn(BaseModel):
    id: str = Field(max_length=64)
    area_id: str = Field(max_length=64)
    name: str = Field(max_length=200)


class Binding(BaseModel):
    device_id: str = Field(max_length=64)
    key: str = Field(max_length=128)


class MachineIn(BaseModel):
    id: str = Field(max_length=64)
    line_id: str = Field(max_length=64)
    name: str = Field(max_length=200)
    template: str = Field(max_length=64, examples=["power_loom"])
    device_id: str | None = Field(
        default=None, max_length=64, description="bind every template signal to this device"
    )
    bindings: dict[str, Binding] = Field(default_factory=dict, description="per-signal overrides")


class SignalOut(BaseModel):
    name: str
    device_id: str
    key: str
    unit: str | None


class MachineOut(BaseModel):
    id: str
    line_id: str
    name: str
    template: str
    signals: list[SignalOut]


@router.get("/templates")
async def list_templates(rt: RuntimeDep, user: CurrentUser) -> list[dict[str, Any]]:
    """Machine templates shipped as data files (power loom, compressor, energy meter, ...);
    ``count_key`` is the counter of produced units (null for utilities: meters, compressors)."""
    return [
        {
            "id": t.id,
            "name": t.name,
            "category": t.category,
            "description": t.description,
            "count_key": t.count_key,
        }
        for t in sorted(rt.assets.templates.values(), key=lambda t: t.id)
    ]


@router.get("/templates/{template_id}")
async def get_template(template_id: str, rt: RuntimeDep, user: CurrentUser) -> dict[str, Any]:
    t = rt.assets.template(template_id)
    return {
        "id": t.id,
        "name": t.name,
        "category": t.category,
        "description": t.description,
        "ideal_cycle_time_s": t.ideal_cycle_time_s,
        "count_key": t.count_key,
        "warm_up_min": t.warm_up_min,
        "signals": [
            {
                "key": s.key,
                "name": s.name,
                "unit": s.unit,
                "kind": s.kind,
                "description": s.description,
            }
            for s in t.signals
        ],
    }


@router.get("/assets")
async def asset_tree(rt: RuntimeDep, user: CurrentUser) -> list[dict[str, Any]]:
    """Every site with its areas, lines and machines."""
    return await rt.assets.tree(visible_sites(user))


@router.post("/sites", status_code=201)
async def create_site(body: SiteIn, rt: RuntimeDep, user: CurrentUser, source: Source) -> SiteIn:
    await rt.assets.create_site(body.id, body.name, body.timezone)
    await rt.audit.record(
        user.username, "site.create", f"site:{body.id}", after=body.model_dump(), source=source
    )
    return body


@router.post("/areas", status_code=201)
async def create_area(body: AreaIn, rt: RuntimeDep, user: CurrentUser, source: Source) -> AreaIn:
    await rt.assets.create_area(body.id, body.site_id, body.name)
    await rt.audit.record(
        user.username, "area.create", f"area:{body.id}", after=body.model_dump(), source=source
    )
    return body


@router.post("/lines", status_code=201)
async def create_line(body: LineIn, rt: RuntimeDep, user: CurrentUser, source: Source) -> LineIn:
    await rt.assets.create_line(body.id, body.area_id, body.name)
    await rt.audit.record(
        user.username, "line.create", f"line:{body.id}", after=body.model_dump(), source=source
    )
    return body


def _machine_out(m: Any) -> MachineOut:
    return MachineOut(
        id=m.id,
        line_id=m.line_id,
        name=m.name,
        template=m.template,
        signals=[
            SignalOut(name=s.name, device_id=s.device_id, key=s.key, unit=s.unit) for s in m.signals
        ],
    )


@router.post("/machines", status_code=201)
async def create_machine(
    body: MachineIn, rt: RuntimeDep, user: CurrentUser, source: Source
) -> MachineOut:
    machine = await rt.assets.create_machine(
        body.id,
        body.line_id,
        body.name,
        body.template,
        body.device_id,
        {k: (b.device_id, b.key) for k, b in body.bindings.items()},
    )
    out = _machine_out(machine)
    await rt.audit.record(
        user.username, "machine.create", f"machine:{body.id}", after=out.model_dump(), source=source
    )
    return out


@router.get("/machines/{machine_id}")
async def get_machine(machine_id: str, rt: RuntimeDep, user: CurrentUser) -> MachineOut:
    return _machine_out(await rt.assets.get_machine(machine_id))


@router.get("/machines/{machine_id}/signals/{signal}")
async def machine_signal(
    machine_id: str,
    signal: str,
    rt: RuntimeDep,
    user: CurrentUser,
    start: str | None = None,
    end: str | None = None,
    bucket: str | None = None,
    agg: Agg | None = None,
    points: int | None = None,
    limit: int | None = None,
) -> SeriesOut:
    """A machine's signal by its template name, resolved to the bound device key."""
    machine = await rt.assets.get_machine(machine_id)
    binding = machine.signal(signal)
    if binding is None:
        raise NotFound(f"machine {machine_id} has no signal {signal}")
    return await _series(rt, binding.device_id, binding.key, start, end, bucket, agg, points, limit)


@router.delete("/{kind}/{item_id}", status_code=204)
async def delete_asset(
    kind: Kind, item_id: str, rt: RuntimeDep, user: CurrentUser, source: Source
) -> None:
    """Delete a site, area, line or machine with everything under it."""
    before: dict[str, Any] | None
    if kind == "machines":
        before = _machine_out(await rt.assets.get_machine(item_id)).model_dump()
    else:
        before = _subtree(await rt.assets.tree(), 0, _LEVELS.index(kind), item_id)
    await rt.assets.delete(kind, item_id)
    noun = kind[:-1]
    await rt.audit.record(
        user.username, f"{noun}.delete", f"{noun}:{item_id}", before=before, source=source
    )


_LEVELS = ("sites", "areas", "lines", "machines")


def _subtree(
    nodes: list[dict[str, Any]], level: int, wanted: int, item_id: str
) -> dict[str, Any] | None:
    """The asset at level ``wanted`` of the tree with everything under it (what a delete
    removes)."""
    for node in nodes:
        if level == wanted:
            if node["id"] == item_id:
                return node
        else:
            found = _subtree(node.get(_LEVELS[level + 1], []), level + 1, wanted, item_id)
            if found is not None:
                return found
    return None
