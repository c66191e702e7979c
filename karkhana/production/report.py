"""Shift and daily production reports: one table of figures, rendered as CSV or PDF.

The PDF uses fpdf2's built-in Helvetica, which covers Latin-1 only, so the PDF is in English;
characters outside it (an Urdu machine name) print as '?'. The CSV is UTF-8 and also carries the
Urdu labels of reasons. Printing Urdu needs a TrueType font
with Arabic-script glyphs and text shaping, which karkhana does not ship.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from karkhana.core.pdf import latin1, table
from karkhana.production.downtime import Label, ParetoItem
from karkhana.production.model import Oee, Stop

if TYPE_CHECKING:
    pass

TOP_STOPS = 10
TOP_REASONS = 10


@dataclass(frozen=True, slots=True)
class MachineRow:
    machine_id: str
    name: str
    oee: Oee


@dataclass(frozen=True, slots=True)
class StopRow:
    machine: str
    start: str
    minutes: float
    state: str
    reason: str
    reason_ur: str
    auto: bool


@dataclass(frozen=True, slots=True)
class Report:
    title: str
    site_name: str
    period: str
    generated: str
    machines: tuple[MachineRow, ...]
    plant: Oee
    pareto: tuple[ParetoItem, ...]
    stops: tuple[StopRow, ...]


def _local(ms: int, tz: ZoneInfo) -> str:
    return datetime.fromtimestamp(ms / 1000, tz).strftime("%Y-%m-%d %H:%M")


def build_report(
    *,
    title: str,
    site_name: str,
    tz: ZoneInfo,
    start_ms: int,
    end_ms: int,
    machines: Sequence[tuple[str, str, Oee]],
    plant: Oee,
    pareto: Sequence[ParetoItem],
    stops: Sequence[Stop],
    reason_label: Callable[[str | None], Label | None],
    names: dict[str, str],
    now_ms: int,
) -> Report:
    longest = sorted(
        stops,
        key=lambda s: -((now_ms if s.end_ms is None else s.end_ms) - s.start_ms),
    )[:TOP_STOPS]
    rows = []
    for s in longest:
        label = reason_label(s.reason_id)
        rows.append(
            StopRow(
                names.get(s.machine_id, s.machine_id),
                _local(s.start_ms, tz),
                round(((now_ms if s.end_ms is None else s.end_ms) - s.start_ms) / 60_000, 1),
                s.state,
                label.en if label else "",
                label.ur if label else "",
                s.auto,
            )
        )
    return Report(
        title=title,
        site_name=site_name,
        period=f"{_local(start_ms, tz)} to {_local(end_ms, tz)} ({tz.key})",
        generated=_local(now_ms, tz),
        machines=tuple(MachineRow(mid, name, r) for mid, name, r in machines),
        plant=plant,
        pareto=tuple(pareto[:TOP_REASONS]),
        stops=tuple(rows),
    )


def _pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.1f}"


def _h(ms: int) -> str:
    return f"{ms / 3_600_000:.2f}"


def _figures(name: str, r: Oee) -> list[str]:
    return [
        name,
        f"{r.total_count:g}",
        f"{r.good_count:g}",
        _pct(r.availability),
        _pct(r.performance),
        _pct(r.quality) + ("" if r.quality_measured else "*"),
        _pct(r.oee),
        _h(r.planned_ms),
        _h(r.run_ms),
    ]


FIGURE_HEADER = [
    "machine",
    "total count",
    "good count",
    "availability %",
    "performance %",
    "quality %",
    "OEE %",
    "planned h",
    "run h",
]
QUALITY_NOTE = "* quality not measured (no reject count): taken as 100%"


def render_csv(report: Report) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([report.title])
    w.writerow(["site", report.site_name])
    w.writerow(["period", report.period])
    w.writerow(["generated", report.generated])
    w.writerow([])
    w.writerow(FIGURE_HEADER)
    for row in report.machines:
        w.writerow(_figures(row.name, row.oee))
    w.writerow(_figures("Plant", report.plant))
    w.writerow([QUALITY_NOTE])
    w.writerow([])
    losses = report.plant.losses
    w.writerow(["loss", "value", "unit"])
    w.writerow(["breakdowns", _h(losses.breakdowns_ms), "h"])
    w.writerow(["setup and adjustments", _h(losses.setup_ms), "h"])
    w.writerow(["small stops", _h(losses.small_stops_ms), "h"])
    w.writerow(["reduced speed", _h(losses.reduced_speed_ms), "h"])
    w.writerow(["startup rejects", f"{losses.startup_rejects:g}", "units"])
    w.writerow(["production rejects", f"{losses.production_rejects:g}", "units"])
    w.writerow([])
    w.writerow(["downtime reason", "minutes", "stops", "reason (Urdu)"])
    for item in report.pareto:
        w.writerow([item.label.en, f"{item.duration_ms / 60_000:.1f}", item.count, item.label.ur])
    w.writerow([])
    w.writerow(
        ["top stops: machine", "start", "minutes", "state", "reason", "automatic", "reason (Urdu)"]
    )
    for s in report.stops:
        w.writerow([s.machine, s.start, f"{s.minutes:.1f}", s.state, s.reason, s.auto, s.reason_ur])
    return buf.getvalue()


def render_pdf(report: Report) -> bytes:
    from fpdf import FPDF  # a third of a second to import: only when a PDF is made

    pdf = FPDF(orientation="landscape", format="A4")
    pdf.set_creator("karkhana")
    pdf.set_title(latin1(report.title))
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 14)
    pdf.cell(0, 8, latin1(f"{report.title}: {report.site_name}"))
    pdf.ln()
    pdf.set_font("Helvetica", "", 9)
    pdf.cell(0, 5, latin1(f"Period: {report.period}. Generated {report.generated}."))
    pdf.ln(8)
    rows = [_figures(m.name, m.oee) for m in report.machines]
    rows.append(_figures("Plant", report.plant))
    table(pdf, FIGURE_HEADER, rows, [60, 28, 28, 28, 28, 24, 22, 22, 22])
    pdf.set_font("Helvetica", "I", 8)
    pdf.cell(0, 5, QUALITY_NOTE)
    pdf.ln(7)
    losses = report.plant.losses
    table(
        pdf,
        ["six big losses", "value"],
        [
            ["breakdowns", f"{_h(losses.breakdowns_ms)} h"],
            ["setup and adjustments", f"{_h(losses.setup_ms)} h"],
            ["small stops", f"{_h(losses.small_stops_ms)} h"],
            ["reduced speed", f"{_h(losses.reduced_speed_ms)} h"],
            ["startup rejects", f"{losses.startup_rejects:g} units"],
            ["production rejects", f"{losses.production_rejects:g} units"],
        ],
        [60, 40],
    )
    table(
        pdf,
        ["downtime reason (Pareto)", "minutes", "stops"],
        [[i.label.en, f"{i.duration_ms / 60_000:.1f}", str(i.count)] for i in report.pareto],
        [90, 30, 20],
    )
    table(
        pdf,
        ["top stops: machine", "start", "minutes", "state", "reason"],
        [
            [
                s.machine,
                s.start,
                f"{s.minutes:.1f}",
                s.state,
                s.reason + (" (auto)" if s.auto else ""),
            ]
            for s in report.stops
        ],
        [60, 35, 20, 20, 90],
    )
    return bytes(pdf.output())
