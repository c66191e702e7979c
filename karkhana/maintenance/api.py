"""REST API of maintenance: machine health, work orders, preventive schedules, MTBF/MTTR, and
vibration bursts from devices."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Query, Request
from pydantic import BaseModel, Field

from karkhana.api.deps import CurrentUser, RuntimeDep, Source, client_address, visible_sites
from karkhana.api.telemetry import _body
from karkhana.core.errors import Conflict, InvalidPayload, NotFound, Unauthorized
from karkhana.core.model import Sample
from karkhana.core.timeutil import parse_ts
from karkhana.maintenance import vibration
from karkhana.maintenance.model import (
    Part,
    Priority,
    ScheduleBasis,
    WorkOrderKind,
    WorkOrderSource,
    WorkOrderStatus,
)
from karkhana.maintenance.registry import Manifest, ModelRegistry
from karkhana.maintenance.service import (
    HealthStatus,
    MaintenanceService,
    schedule_dict,
    work_order_dict,
)
from karkhana.maintenance.train import train_failure, train_simulated
from karkhana.runtime import Runtime

router = APIRouter(prefix="/api/v1/maintenance", tags=["maintenance"])
DAY_MS = 86_400_000
MAX_BURST_BYTES = 2 * 1024 * 1024
MAX_MS = 2**53
Y2000_MS = 946_684_800_000


def _service(rt: Runtime) -> MaintenanceService:
    service: MaintenanceService = rt.maintenance
    return service


# -- health -------------------------------------------------------------------------------
class ContributionOut(BaseModel):
    signal: str
    share: float


class HealthOut(BaseModel):
    machine_id: str
    status: str = Field(description="learning, ok, alarm, no_data or not_monitored")
    index: float | None = Field(description="0-100; 100 is like the learned normal")
    score: float | None = Field(description="smoothed anomaly score; 1.0 is the threshold")
    ts: int | None
    trend_per_day: float | None = Field(description="index points per day over the last day")
    days_to_alarm: float | None = Field(description="at the present trend, days until 50")
    alarm: bool
    learning_progress: float
    contributions: list[ContributionOut] = Field(description="signals driving the score")
    signals: list[str]
    run_hours: float | None
    rul: dict[str, Any] | None = Field(description="remaining useful life, when a model exists")
    settling: bool = Field(
        description="back from a stop and not judged until its signals are at their running "
        "level again (warming up); the index is the one from before the stop"
    )


def _health_out(h: HealthStatus) -> HealthOut:
    return HealthOut(
        machine_id=h.machine_id,
        status=h.status,
        index=h.index,
        score=h.score,
        ts=h.ts,
        trend_per_day=h.trend_per_day,
        days_to_alarm=h.days_to_alarm,
        alarm=h.alarm,
        learning_progress=h.learning_progress,
        contributions=[ContributionOut(signal=c.signal, share=c.share) for c in h.contributions],
        signals=list(h.signals),
        run_hours=h.run_hours,
        rul=h.rul,
        settling=h.settling,
    )


@router.get("/health")
async def health_overview(rt: RuntimeDep, user: CurrentUser) -> list[HealthOut]:
    """Health of every machine the user may see."""
    service = _service(rt)
    return [
        _health_out(await service.health(m)) for m in await service.machines(visible_sites(user))
    ]


@router.get("/machines/{machine_id}/health")
async def machine_health(machine_id: str, rt: RuntimeDep, user: CurrentUser) -> HealthOut:
    """Health index, its trend, the signals driving the score and RUL when a model exists."""
    return _health_out(await _service(rt).health(machine_id))


@router.get("/machines/{machine_id}/reliability")
async def machine_reliability(
    machine_id: str,
    rt: RuntimeDep,
    user: CurrentUser,
    days: Annotated[float, Query(gt=0, le=3660, description="period ending now")] = 90,
) -> dict[str, Any]:
    """MTBF and MTTR from the machine's breakdown work orders."""
    end = rt.clock.now_ms() + 1
    r = await _service(rt).reliability(machine_id, end - max(1, int(days * DAY_MS)), end)
    return {
        "machine_id": r.machine_id,
        "start_ms": r.start_ms,
        "end_ms": r.end_ms,
        "failures": r.failures,
        "downtime_h": r.downtime_h,
        "operating_h": r.operating_h,
        "mtbf_h": r.mtbf_h,
        "mttr_h": r.mttr_h,
        "availability": r.availability,
    }


# -- work orders --------------------------------------------------------------------------
class PartIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    quantity: float = Field(default=1.0, gt=0, le=1e9)
    part_no: str | None = Field(default=None, max_length=100)


Millis = Annotated[int, Field(ge=0, le=MAX_MS)]
ItemId = Annotated[int, Path(ge=1, le=MAX_MS, description="work order or schedule id")]


class WorkOrderIn(BaseModel):
    title: str = Field(min_length=1, max_length=200)
    kind: WorkOrderKind = WorkOrderKind.CORRECTIVE
    source: WorkOrderSource = WorkOrderSource.MANUAL
    source_ref: str | None = Field(
        default=None, max_length=200, description="alarm id, prediction or model reference"
    )
    priority: Priority = Priority.MEDIUM
    assignee: str | None = Field(default=None, max_length=100)
    parts: list[PartIn] = Field(default_factory=list, max_length=200)
    notes: str = Field(default="", max_length=10_000)
    breakdown: bool = Field(
        default=False, description="the machine failed: its downtime counts for MTBF and MTTR"
    )
    down_start_ms: Millis | None = None
    down_end_ms: Millis | None = None


class WorkOrderPatch(BaseModel):
    title: str | None = Field(default=None, min_length=1, max_length=200)
    status: WorkOrderStatus | None = None
    priority: Priority | None = None
    assignee: str | None = Field(default=None, max_length=100)
    parts: list[PartIn] | None = Field(default=None, max_length=200)
    notes: str | None = Field(default=None, max_length=10_000)
    breakdown: bool | None = None
    down_start_ms: Millis | None = None
    down_end_ms: Millis | None = None


def _parts(parts: list[PartIn]) -> tuple[Part, ...]:
    return tuple(Part(p.name, p.quantity, p.part_no) for p in parts)


@router.get("/work-orders")
async def list_work_orders(
    rt: RuntimeDep,
    user: CurrentUser,
    status: Annotated[list[WorkOrderStatus] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> list[dict[str, Any]]:
    """Work orders of every machine the user may see, newest first."""
    orders = await _service(rt).list_work_orders(
        statuses=status, sites=visible_sites(user), limit=limit
    )
    return [work_order_dict(o) for o in orders]


@router.get("/machines/{machine_id}/work-orders")
async def machine_work_orders(
    machine_id: str,
    rt: RuntimeDep,
    user: CurrentUser,
    status: Annotated[list[WorkOrderStatus] | None, Query()] = None,
) -> list[dict[str, Any]]:
    await rt.assets.get_machine(machine_id)
    orders = await _service(rt).list_work_orders(machine_id=machine_id, statuses=status)
    return [work_order_dict(o) for o in orders]


@router.post("/machines/{machine_id}/work-orders", status_code=201)
async def create_work_order(
    machine_id: str, body: WorkOrderIn, rt: RuntimeDep, user: CurrentUser, source: Source
) -> dict[str, Any]:
    """Open a work order by hand, or for an alarm or a prediction (``source``, ``source_ref``)."""
    wo = await _service(rt).create_work_order(
        machine_id,
        body.title,
        kind=body.kind,
        source=body.source,
        source_ref=body.source_ref,
        priority=body.priority,
        assignee=body.assignee,
        parts=_parts(body.parts),
        notes=body.notes,
        breakdown=body.breakdown,
        down_start_ms=body.down_start_ms,
        down_end_ms=body.down_end_ms,
        actor=user.username,
        source_address=source,
    )
    return work_order_dict(wo)


@router.get("/machines/{machine_id}/work-orders/{item_id}")
async def get_work_order(
    machine_id: str, item_id: ItemId, rt: RuntimeDep, user: CurrentUser
) -> dict[str, Any]:
    return work_order_dict(await _service(rt).get_work_order(item_id, machine_id))


@router.patch("/machines/{machine_id}/work-orders/{item_id}")
async def update_work_order(
    machine_id: str,
    item_id: ItemId,
    body: WorkOrderPatch,
    rt: RuntimeDep,
    user: CurrentUser,
    source: Source,
) -> dict[str, Any]:
    """Assign, start, finish, cancel or reopen a work order; record parts, notes, downtime."""
    changes: dict[str, Any] = body.model_dump(exclude_unset=True)
    if "parts" in changes:
        changes["parts"] = _parts(body.parts or [])
    for name in ("title", "status", "priority", "notes", "breakdown", "parts"):
        if name in changes and changes[name] is None:
            raise InvalidPayload(f"{name}: may not be null")
    wo = await _service(rt).update_work_order(
        machine_id, item_id, changes, actor=user.username, source_address=source
    )
    return work_order_dict(wo)


@router.delete("/machines/{machine_id}/work-orders/{item_id}", status_code=204)
async def delete_work_order(
    machine_id: str, item_id: ItemId, rt: RuntimeDep, user: CurrentUser, source: Source
) -> None:
    await _service(rt).delete_work_order(
        machine_id, item_id, actor=user.username, source_address=source
    )


# -- schedules ----------------------------------------------------------------------------
class ScheduleIn(BaseModel):
    title: str = Field(min_length=1, max_length=200)
    basis: ScheduleBasis
    interval: float = Field(
        ge=0.001, le=1e12, description="days (calendar), run hours or counts between jobs"
    )
    signal: str | None = Field(
        default=None,
        max_length=128,
        description="counter signal for 'count' (and optionally 'run_hours'); by default run"
        " hours are those the condition monitor counts",
    )
    lead: float = Field(default=0.1, ge=0, lt=1, description="share of the interval: due soon")


async def _schedule_out(service: MaintenanceService, schedule: Any) -> dict[str, Any]:
    state = await service.due_of(schedule)
    return {
        **schedule_dict(schedule),
        "due": {
            "status": state.status,
            "used": state.used,
            "remaining": state.remaining,
            "unit": state.unit,
            "meter": state.meter,
        },
    }


@router.get("/schedules/due")
async def due_schedules(rt: RuntimeDep, user: CurrentUser) -> list[dict[str, Any]]:
    """Every schedule the user may see that is due soon or overdue, most urgent first."""
    service = _service(rt)
    out = [
        await _schedule_out(service, s)
        for s in await service.list_schedules(sites=visible_sites(user))
    ]
    out = [s for s in out if s["due"]["status"] in ("due_soon", "overdue")]
    return sorted(out, key=lambda s: -s["due"]["used"])


@router.get("/machines/{machine_id}/schedules")
async def machine_schedules(
    machine_id: str, rt: RuntimeDep, user: CurrentUser
) -> list[dict[str, Any]]:
    await rt.assets.get_machine(machine_id)
    service = _service(rt)
    return [await _schedule_out(service, s) for s in await service.list_schedules(machine_id)]


@router.post("/machines/{machine_id}/schedules", status_code=201)
async def create_schedule(
    machine_id: str, body: ScheduleIn, rt: RuntimeDep, user: CurrentUser, source: Source
) -> dict[str, Any]:
    """Preventive maintenance every N days, run hours or counts."""
    service = _service(rt)
    schedule = await service.create_schedule(
        machine_id,
        body.title,
        body.basis,
        body.interval,
        signal=body.signal,
        lead=body.lead,
        actor=user.username,
        source_address=source,
    )
    return await _schedule_out(service, schedule)


@router.post("/machines/{machine_id}/schedules/{item_id}/done")
async def schedule_done(
    machine_id: str, item_id: ItemId, rt: RuntimeDep, user: CurrentUser, source: Source
) -> dict[str, Any]:
    """Record that the scheduled job was done now; the next interval starts."""
    service = _service(rt)
    schedule = await service.complete_schedule(
        machine_id, item_id, actor=user.username, source_address=source
    )
    return await _schedule_out(service, schedule)


@router.delete("/machines/{machine_id}/schedules/{item_id}", status_code=204)
async def delete_schedule(
    machine_id: str, item_id: ItemId, rt: RuntimeDep, user: CurrentUser, source: Source
) -> None:
    await _service(rt).delete_schedule(
        machine_id, item_id, actor=user.username, source_address=source
    )


# -- vibration bursts from devices ---------------------------------------------------------
class BearingIn(BaseModel):
    rolling_elements: int = Field(ge=3, le=100)
    ball_diameter: float = Field(gt=0, le=1e4)
    pitch_diameter: float = Field(gt=0, le=1e5)
    contact_angle_deg: float = Field(default=0.0, ge=0, lt=90)


class BurstIn(BaseModel):
    ts: int | str | None = Field(default=None, description="epoch ms or ISO 8601; default now")
    sample_rate_hz: float = Field(ge=1, le=1e6)
    values: list[float] = Field(min_length=16, max_length=vibration.MAX_SAMPLES)
    unit: str = Field(default="m/s2", pattern="^(m/s2|g)$")
    key: str = Field(
        default="vibration",
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.:/-]{0,63}$",
        description="prefix of the stored keys (one per sensor position)",
    )
    shaft_rpm: float | None = Field(default=None, gt=0, le=1e6)
    bearing: BearingIn | None = None
    group: vibration.MachineGroup = vibration.MachineGroup.MEDIUM
    foundation: vibration.Foundation = vibration.Foundation.RIGID


class BurstOut(BaseModel):
    stored: int
    ts: int
    features: dict[str, float | str]


@router.post("/vibration/{device_id}")
async def vibration_burst(
    device_id: str,
    request: Request,
    rt: RuntimeDep,
    authorization: Annotated[str | None, Header(description="Bearer <device token>")] = None,
) -> BurstOut:
    """Accept an accelerometer burst from a device (authenticated with its own token), compute
    its vibration features and store them as the device's telemetry (``<key>.rms``,
    ``<key>.velocity_rms_mm_s``, ``<key>.iso_zone``, ``<key>.bpfo``, ...)."""
    token = ""
    if authorization and authorization[:7].lower() == "bearer ":
        token = authorization[7:].strip()
    if not rt.devices.verify(device_id, token):
        await rt.audit.refused(
            device_id,
            "device.auth",
            f"device:{device_id}",
            source=client_address(request),
            details={"transport": "http", "route": "vibration"},
        )
        raise Unauthorized("unknown device or wrong token")
    raw = await _body(request, MAX_BURST_BYTES, rt.settings.http_body_timeout_s)
    try:
        body = BurstIn.model_validate(json.loads(raw))
    except (ValueError, RecursionError) as exc:
        raise InvalidPayload(f"not a vibration burst: {str(exc)[:300]}") from None
    ts = rt.clock.now_ms() if body.ts in (None, "") else parse_ts(body.ts, "ts")
    if not Y2000_MS <= ts <= rt.clock.now_ms() + rt.settings.max_future_s * 1000:
        raise InvalidPayload("ts: before 2000 or too far in the future")
    bearing = (
        vibration.Bearing(
            body.bearing.rolling_elements,
            body.bearing.ball_diameter,
            body.bearing.pitch_diameter,
            body.bearing.contact_angle_deg,
        )
        if body.bearing is not None
        else None
    )
    burst = vibration.Burst(body.sample_rate_hz, tuple(body.values), body.unit)
    found = vibration.features(
        burst,
        shaft_hz=body.shaft_rpm / 60.0 if body.shaft_rpm is not None else None,
        bearing=bearing,
        group=body.group,
        foundation=body.foundation,
    )
    values = {
        k: (round(v, 6) if isinstance(v, float) else v)
        for k, v in found.as_values(body.key).items()
    }
    result = await rt.store.write([Sample(device_id, k, ts, v) for k, v in values.items()])
    return BurstOut(stored=result.stored, ts=ts, features=values)


# -- remaining life and trained models ----------------------------------------------------
@router.get("/machines/{machine_id}/rul")
async def machine_rul(machine_id: str, rt: RuntimeDep, user: CurrentUser) -> dict[str, Any]:
    """The machine's predicted remaining life in hours with its interval, from the newest
    remaining-life model of its template (404 when there is no model or no data yet)."""
    await rt.assets.get_machine(machine_id)
    found = await rt.prognosis.current(machine_id)
    if found is None:
        raise NotFound(
            f"no remaining-life estimate for {machine_id}: its template has no trained model"
            " or the machine has no hourly data since its last repair"
        )
    return found


@router.post("/machines/{machine_id}/rul/work-order", status_code=201)
async def work_order_from_rul(
    machine_id: str, rt: RuntimeDep, user: CurrentUser, source: Source
) -> dict[str, Any]:
    """Raise a predictive work order from the machine's current remaining-life estimate."""
    await rt.assets.get_machine(machine_id)
    estimate = await rt.prognosis.estimate(machine_id)
    if estimate is None:
        raise NotFound(f"no remaining-life estimate for {machine_id}")
    wo = await _service(rt).order_from_rul(estimate, actor=user.username, source_address=source)
    assert wo is not None
    return work_order_dict(wo)


def _manifest_out(m: Manifest) -> dict[str, Any]:
    return {
        "template": m.template,
        "version": m.version,
        "kind": m.kind,
        "created_at": m.created_at,
        "metrics": m.metrics,
        "data": m.data,
        "params": m.params,
        "signals": m.signals,
        "settings": m.settings,
        "libraries": m.libraries,
    }


@router.get("/models")
async def list_models(rt: RuntimeDep, user: CurrentUser) -> list[dict[str, Any]]:
    """Every stored model version with its training metrics and data range."""
    registry: ModelRegistry = rt.models
    out = []
    for template in registry.templates():
        for version in registry.versions(template):
            out.append(_manifest_out(registry.manifest(template, version)))
    return out


@router.get("/models/{template}")
async def template_models(template: str, rt: RuntimeDep, user: CurrentUser) -> list[dict[str, Any]]:
    registry: ModelRegistry = rt.models
    versions = registry.versions(template)
    if not versions:
        raise NotFound(f"no trained model for template {template!r}")
    return [_manifest_out(registry.manifest(template, v)) for v in versions]


class TrainIn(BaseModel):
    kind: Literal["rul", "failure"]
    source: Literal["recorded", "simulated", "table"] = Field(
        description="rul: 'recorded' (the machines' breakdown work orders and hourly data) or "
        "'simulated' (power_loom only); failure: 'table' (the rows given here)"
    )
    seed: int = Field(default=0, ge=0, le=2**31)
    holdout: float = Field(default=0.2, ge=0.0, le=0.5)
    lives: int = Field(default=40, ge=2, le=200, description="simulated: lives to simulate")
    rows: list[dict[str, float]] | None = Field(
        default=None, max_length=100_000, description="table: one object per row"
    )
    label: str | None = Field(default=None, description="table: the 0/1 failure column")


_training = asyncio.Lock()


@router.post("/models/{template}/train", status_code=201)
async def train_model(
    template: str, body: TrainIn, rt: RuntimeDep, user: CurrentUser, source: Source
) -> dict[str, Any]:
    """Train the template's next model version (one training at a time) and store it."""
    tpl = rt.assets.template(template)
    if _training.locked():
        raise Conflict("a model is being trained; try again when it is done")
    async with _training:
        if body.kind == "rul" and body.source == "recorded":
            manifest = await _service(rt).train_rul(template, seed=body.seed, holdout=body.holdout)
        elif body.kind == "rul" and body.source == "simulated":
            await _service(rt).update_all()  # score the machines' data up to now
            manifest = await asyncio.to_thread(
                train_simulated,
                rt.models,
                tpl,
                lives=body.lives,
                seed=body.seed,
                holdout=body.holdout,
            )
            await _service(rt).rul_backfill(template)
        elif body.kind == "failure" and body.source == "table":
            table = _rows_table(body.rows or [], body.label)
            manifest = await asyncio.to_thread(
                train_failure,
                rt.models,
                template,
                table,
                seed=body.seed,
                holdout=body.holdout,
                data={"source": "api rows"},
            )
        else:
            raise InvalidPayload(f"a {body.kind} model cannot be trained from {body.source!r}")
    await rt.audit.record(
        user.username,
        "model.train",
        f"model:{template}:{manifest.version}",
        after={"kind": manifest.kind, "source": body.source, "metrics": manifest.metrics},
        source=source,
    )
    return _manifest_out(manifest)


def _rows_table(rows: list[dict[str, float]], label: str | None) -> Any:
    import numpy as np

    from karkhana.maintenance.datasets import Table

    if not rows:
        raise InvalidPayload("rows: none given")
    columns = [c for c in rows[0] if c != label]
    x = np.array([[r.get(c, np.nan) for c in columns] for r in rows], dtype=np.float64)
    y = None
    if label is not None:
        if any(label not in r for r in rows):
            raise InvalidPayload(f"rows: every row needs the label {label!r}")
        y = np.array([r[label] for r in rows], dtype=np.float64)
    if not np.isfinite(np.nan_to_num(x, nan=0.0)).all() or (
        y is not None and not np.isfinite(y).all()
    ):
        raise InvalidPayload("rows: values must be finite numbers")
    return Table(tuple(columns), x, y)


class RunIn(BaseModel):
    unit: str = Field(min_length=1, max_length=200)
    signals: list[list[float | None]] = Field(
        min_length=1, max_length=100_000, description="cycles x signals, oldest first"
    )


class ScoreIn(BaseModel):
    version: int | None = Field(default=None, ge=1, description="default: the newest")
    runs: list[RunIn] | None = Field(default=None, max_length=10_000, description="rul models")
    rows: list[dict[str, float]] | None = Field(
        default=None, max_length=100_000, description="failure models: one object per row"
    )


@router.post("/models/{template}/score")
async def score_model(
    template: str, body: ScoreIn, rt: RuntimeDep, user: CurrentUser
) -> list[dict[str, Any]]:
    """Score data with a stored model: remaining life of each run at its last cycle, or the
    failure probability of each row."""
    import numpy as np

    from karkhana.maintenance.rul import Run

    registry: ModelRegistry = rt.models
    manifest, model = await asyncio.to_thread(registry.load, template, body.version)
    if manifest.kind == "rul":
        if not body.runs:
            raise InvalidPayload("runs: a remaining-life model scores runs")
        runs = []
        for r in body.runs:
            x = np.array([[np.nan if v is None else v for v in row] for row in r.signals])
            if x.ndim != 2 or (manifest.signals and x.shape[1] != len(manifest.signals)):
                raise InvalidPayload(
                    f"run {r.unit}: each cycle needs {len(manifest.signals)} values "
                    f"({', '.join(manifest.signals)})"
                )
            if not np.isfinite(np.nan_to_num(x, nan=0.0)).all():
                raise InvalidPayload(f"run {r.unit}: values must be finite numbers or null")
            runs.append(Run(r.unit, x))
        pred = await asyncio.to_thread(model.predict, runs)
        return [
            {
                "unit": u,
                "rul": round(float(a), 3),
                "lower": round(float(lo), 3),
                "upper": round(float(hi), 3),
                "coverage": pred.coverage,
            }
            for u, a, lo, hi in zip(pred.units, pred.rul, pred.lower, pred.upper, strict=True)
        ]
    if not body.rows:
        raise InvalidPayload("rows: a failure model scores rows")
    table = _rows_table(body.rows, None)
    missing = [c for c in manifest.signals if c not in table.columns]
    if missing:
        raise InvalidPayload(f"rows: missing columns {', '.join(missing)}")
    proba = await asyncio.to_thread(model.predict_proba, table.x, table.columns)
    return [
        {
            "row": i + 1,
            "failure_probability": round(float(p), 4),
            "failure": bool(p >= model.threshold),
        }
        for i, p in enumerate(proba)
    ]
