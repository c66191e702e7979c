"""Energy routes: a site's energy and cost, meters, series, outages, bill, advice, energy per
unit and the monthly report.

Every route names its site in the path; the access policy checks the caller's sites before the
handler runs. Times are epoch ms or ISO 8601; the default range is today in the site's time zone,
from local midnight to now.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, Field

from karkhana.api.deps import RuntimeDep
from karkhana.core.timeutil import parse_query_ts
from karkhana.energy.advice import LANGS
from karkhana.energy.model import Bill, Tariff
from karkhana.energy.report import render_csv, render_pdf
from karkhana.energy.service import (
    DAY_MS,
    AdviceItem,
    EnergyService,
    Site,
    Summary,
)
from karkhana.runtime import Runtime

router = APIRouter(prefix="/api/v1/energy", tags=["energy"])
ADVICE_KINDS = {
    "shift_off_peak": "off_peak",
    "stagger_startups": "stagger",
    "fix_air_leak": "air_leak",
    "fix_air_leak_running": "air_leak",
    "switch_off_idle": "idle",
}
"""The advice module's kinds as the API names them."""

SiteId = Annotated[str, Path(max_length=64)]
Start = Query(None, max_length=40, description="epoch ms or ISO 8601 (default: local midnight)")
End = Query(None, max_length=40, description="epoch ms or ISO 8601 (default: now)")
Month = Query(None, max_length=7, description="YYYY-MM (default: the current billing month)")


class CompareIn(BaseModel):
    month: str = Field(max_length=7, examples=["2026-11"])
    actual_total: float = Field(ge=0, examples=[1_250_000.0])


def _service(rt: Runtime) -> EnergyService:
    service: EnergyService = rt.energy
    return service


def _range(
    service: EnergyService, site: Site, start: str | None, end: str | None, default_days: int = 0
) -> tuple[int, int]:
    day_start, now = service.today(site)
    t_end = now if end in (None, "") else parse_query_ts(end, "end")
    if start not in (None, ""):
        t_start = parse_query_ts(start, "start")
    elif default_days:
        t_start = t_end - default_days * DAY_MS
    else:
        t_start = day_start if t_end > day_start else t_end - DAY_MS
    service.check_range(t_start, t_end)
    return t_start, t_end


async def _site_range(
    rt: Runtime, site_id: str, start: str | None, end: str | None, default_days: int = 0
) -> tuple[EnergyService, Site, int, int]:
    """The service, the site and the range a request names (404 for an unknown site)."""
    service = _service(rt)
    site = await service.site(site_id)
    t0, t1 = _range(service, site, start, end, default_days)
    return service, site, t0, t1


def _tariff(t: Tariff) -> dict[str, Any]:
    return {"id": t.id, "name": t.name, "note": t.note}


def _summary_json(s: Summary) -> dict[str, Any]:
    t = s.site.tariff
    adj = sum(a.per_kwh for a in t.adjustments)
    if t.time_of_use:
        assert t.peak_rate is not None and t.off_peak_rate is not None
        periods = [
            ("peak", s.cost.kwh_peak, t.peak_rate),
            ("off_peak", s.cost.kwh_off_peak, t.off_peak_rate),
        ]
    else:
        assert t.flat_rate is not None
        periods = [("flat", s.cost.kwh, t.flat_rate)]
    gen = None
    if s.generator is not None:
        g = s.generator
        gen = {
            "run_hours": g.run_hours,
            "litres": g.litres,
            "cost": g.cost_pkr,
            "diesel_price_per_litre": g.diesel_pkr_per_litre,
            "rated_kva": s.site.config.generator_kva,
            "assumed_load_hours": g.assumed_ms / 3_600_000,
            "generated_kwh": g.energy_kwh,
        }
    elif s.generator_run_ms:
        gen = {
            "run_hours": s.generator_run_ms / 3_600_000,
            "litres": None,
            "cost": None,
            "diesel_price_per_litre": s.site.config.diesel_price_pkr_per_litre,
            "rated_kva": None,
        }
    outages = s.supply.outages()
    rate = s.idle_rate
    return {
        "site_id": s.site.id,
        "start_ms": s.start_ms,
        "end_ms": s.end_ms,
        "timezone": str(s.site.tz),
        "currency": t.currency,
        "tariff": _tariff(t),
        "energy_kwh": s.cost.kwh,
        "cost": s.cost.amount,
        "by_period": [
            {
                "period": name,
                "kwh": kwh,
                "cost": kwh * (r + adj),
                "rate": r,
                "adjustments_per_kwh": adj,
            }
            for name, kwh, r in periods
        ],
        "demand_kw_max": s.demand_kw_max,
        "demand_max_at_ms": s.demand_max_at_ms,
        "power_factor": s.power_factor,
        "sources": [
            {"source": k, "hours": v} for k, v in sorted(s.supply.hours_by_source().items())
        ],
        "outages": {
            "count": len(outages),
            "hours": sum(min(o.end_ms, s.end_ms) - max(o.start_ms, s.start_ms) for o in outages)
            / 3_600_000,
            "open": any(o.open for o in outages),
        },
        "generator": gen,
        "idle": {
            "kwh": sum(m.idle.kwh for m in s.idle),
            "cost": sum(m.idle.kwh for m in s.idle) * rate,
            "rate": rate,
            "machines": [
                {
                    "machine_id": m.machine_id,
                    "name": m.name,
                    "kwh": m.idle.kwh,
                    "cost": m.idle.kwh * rate,
                    "idle_hours": m.idle.hours,
                }
                for m in s.idle
            ],
        },
        "unmetered_kwh": s.unmetered_kwh,
        "coverage": s.coverage,
        "base_load_kw": s.base_load_kw,
        "peak_events": [
            {
                "start_ms": e.start_ms,
                "end_ms": e.end_ms,
                "kw": e.demand_kw,
                "month_max_kw": e.month_max_kw,
                "running": list(e.running),
                "starting": list(e.starting),
            }
            for e in s.peak_events
        ],
    }


def _bill_json(month: str, bill: Bill, tariff: Tariff) -> dict[str, Any]:
    return {
        "month": month,
        "start_ms": bill.start_ms,
        "end_ms": bill.end_ms,
        "currency": bill.currency,
        "tariff": _tariff(tariff),
        "lines": [
            {
                "item": line.id,
                "kind": line.kind,
                "label": line.label,
                "quantity": line.quantity,
                "unit": line.unit,
                "rate": line.rate,
                "amount": line.amount,
            }
            for line in bill.lines
        ],
        "total": bill.total,
        "kwh": bill.kwh,
        "mdi_kw": bill.mdi_kw,
        "mdi_at_ms": bill.mdi_at_ms,
        "power_factor": bill.power_factor,
        "coverage": bill.coverage,
        "notes": list(bill.notes),
    }


def advice_json(item: AdviceItem, currency: str) -> dict[str, Any]:
    a = item.advice
    ev = a.evidence
    return {
        "id": f"{ADVICE_KINDS[a.kind]}:{item.subject_id}",
        "kind": ADVICE_KINDS[a.kind],
        "subject_id": item.subject_id,
        "saving_per_month": a.saving_pkr_month,
        "currency": currency,
        "title": {lang: a.title(lang) for lang in LANGS},  # type: ignore[arg-type]
        "text": {lang: a.text(lang) for lang in LANGS},  # type: ignore[arg-type]
        "evidence": {
            "source": ev.source,
            "start_ms": ev.start_ms,
            "end_ms": ev.end_ms,
            "windows": [list(w) for w in ev.windows[:50]],
            "window_count": len(ev.windows),
            "note": ev.note,
            "figures": [{"key": f.key, "value": f.value, "unit": f.unit} for f in a.figures],
        },
    }


@router.get("/sites/{site_id}/summary")
async def summary(
    rt: RuntimeDep, site_id: SiteId, start: str | None = Start, end: str | None = End
) -> dict[str, Any]:
    """Energy, cost by tariff period, demand, power factor, supply, outages, generator diesel,
    idle energy, the unmetered remainder, the base load and the peak-demand events over a
    range."""
    service, site, t0, t1 = await _site_range(rt, site_id, start, end)
    return _summary_json(await service.summary(site, t0, t1))


@router.get("/sites/{site_id}/meters")
async def meters(
    rt: RuntimeDep, site_id: SiteId, start: str | None = Start, end: str | None = End
) -> list[dict[str, Any]]:
    """Every meter of the site with its role, energy and cost, and the unmetered remainder."""
    service, site, t0, t1 = await _site_range(rt, site_id, start, end)
    return await service.meters(site, t0, t1)


@router.get("/sites/{site_id}/series")
async def series(
    rt: RuntimeDep,
    site_id: SiteId,
    start: str | None = Start,
    end: str | None = End,
    bucket: str = Query(
        "hour", max_length=8, description="hour, day or shift (the production calendar's)"
    ),
) -> list[dict[str, Any]]:
    """Energy, cost (peak and off-peak parts), tariff period, demand and source per local hour,
    day or shift."""
    service, site, t0, t1 = await _site_range(rt, site_id, start, end)
    return await service.series(site, t0, t1, bucket)


@router.get("/sites/{site_id}/outages")
async def outages(
    rt: RuntimeDep, site_id: SiteId, start: str | None = Start, end: str | None = End
) -> list[dict[str, Any]]:
    """Grid outages from the changeover panel, with the stops production labelled with them."""
    service, site, t0, t1 = await _site_range(rt, site_id, start, end)
    return await service.outages(site, t0, t1)


@router.get("/sites/{site_id}/bill")
async def bill(rt: RuntimeDep, site_id: SiteId, month: str | None = Month) -> dict[str, Any]:
    """The estimated bill of a billing month, itemised."""
    service = _service(rt)
    site = await service.site(site_id)
    label, got = await service.bill(site, month)
    return _bill_json(label, got, site.tariff)


@router.post("/sites/{site_id}/bill/compare")
async def bill_compare(rt: RuntimeDep, site_id: SiteId, body: CompareIn) -> dict[str, Any]:
    """The estimate against the utility's bill: difference = estimate - actual."""
    service = _service(rt)
    site = await service.site(site_id)
    label, c = await service.compare_bill(site, body.month, body.actual_total)
    return {
        "month": label,
        "estimate": c.estimate,
        "actual": c.actual,
        "difference": c.difference,
        "percent": c.percent,
    }


@router.get("/sites/{site_id}/advice")
async def advice(
    rt: RuntimeDep, site_id: SiteId, start: str | None = Start, end: str | None = End
) -> list[dict[str, Any]]:
    """Savings with their monthly figure and evidence, largest first (default: the last 7 days)."""
    service, site, t0, t1 = await _site_range(rt, site_id, start, end, default_days=7)
    return [advice_json(i, site.tariff.currency) for i in await service.advice(site, t0, t1)]


@router.get("/sites/{site_id}/intensity")
async def intensity(
    rt: RuntimeDep,
    site_id: SiteId,
    start: str | None = Start,
    end: str | None = End,
    by: str | None = Query(
        None, max_length=8, description="shift or day (default: one row per machine and line)"
    ),
) -> list[dict[str, Any]]:
    """Energy per unit produced of each production machine and line (from the machines' own
    power signals), over the range or per shift or day."""
    service, site, t0, t1 = await _site_range(rt, site_id, start, end)
    return await service.intensity(site, t0, t1, by)


async def _report(rt: Runtime, site_id: str, month: str | None, fmt: str) -> Response:
    service = _service(rt)
    site = await service.site(site_id)
    data = await service.month(site, month)
    headers = {"Content-Disposition": f'attachment; filename="{site.id}-energy-{data.month}.{fmt}"'}
    if fmt == "csv":
        return Response(render_csv(data), media_type="text/csv; charset=utf-8", headers=headers)
    return Response(render_pdf(data), media_type="application/pdf", headers=headers)


@router.get("/sites/{site_id}/report.csv", response_class=Response)
async def report_csv(rt: RuntimeDep, site_id: SiteId, month: str | None = Month) -> Response:
    """The monthly energy report as CSV, labels in English and Urdu."""
    return await _report(rt, site_id, month, "csv")


@router.get("/sites/{site_id}/report.pdf", response_class=Response)
async def report_pdf(rt: RuntimeDep, site_id: SiteId, month: str | None = Month) -> Response:
    """The monthly energy report as PDF (English)."""
    return await _report(rt, site_id, month, "pdf")
