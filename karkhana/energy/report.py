"""The monthly energy report: the bill estimate, energy by tariff period, cost per day and per
shift, energy per unit per day, outages and diesel, idle energy and savings, as CSV (English and
Urdu labels) and PDF (English)."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from typing import TYPE_CHECKING

from karkhana.core.pdf import latin1, table
from karkhana.energy.service import MonthData

if TYPE_CHECKING:
    pass

LABELS: dict[str, tuple[str, str]] = {
    "title": ("Monthly energy report", "ماہانہ بجلی رپورٹ"),
    "site": ("Site", "سائٹ"),
    "month": ("Billing month", "بلنگ کا مہینہ"),
    "tariff": ("Tariff", "ٹیرف"),
    "coverage": ("Data coverage", "ڈیٹا کوریج"),
    "bill": ("Bill estimate", "بل کا تخمینہ"),
    "total": ("Total", "کل"),
    "notes": ("Notes", "نوٹ"),
    "periods": ("Energy by tariff period", "ٹیرف اوقات کے لحاظ سے بجلی"),
    "peak": ("Peak", "پیک"),
    "off_peak": ("Off-peak", "آف پیک"),
    "flat": ("All hours", "تمام اوقات"),
    "days": ("Cost per day", "روزانہ لاگت"),
    "shifts": ("Energy and cost per shift", "فی شفٹ بجلی اور لاگت"),
    "intensity": ("Energy per unit produced, per day", "فی یونٹ پیداوار بجلی، روزانہ"),
    "supply": ("Outages and diesel", "لوڈ شیڈنگ اور ڈیزل"),
    "outages": ("Outages", "بجلی کی بندش"),
    "outage_hours": ("Outage hours", "بندش کے گھنٹے"),
    "generator_hours": ("Generator run hours", "جنریٹر کے گھنٹے"),
    "diesel_litres": ("Diesel (estimate)", "ڈیزل (اندازہ)"),
    "diesel_cost": ("Diesel cost (estimate)", "ڈیزل کی لاگت (اندازہ)"),
    "idle": ("Idle energy", "فارغ مشینوں کی بجلی"),
    "advice": ("Recommendations", "تجاویز"),
    "saving": ("Saving a month", "ماہانہ بچت"),
}
"""English and Urdu labels of the report's sections and rows."""


def _local(ms: int, data: MonthData) -> str:
    return datetime.fromtimestamp(ms / 1000, data.site.tz).strftime("%Y-%m-%d %H:%M")


def _day(ms: int, data: MonthData) -> str:
    return datetime.fromtimestamp(ms / 1000, data.site.tz).strftime("%Y-%m-%d")


def _money(x: float) -> str:
    return f"{x:,.0f}"


def _kwh(x: float) -> str:
    return f"{x:,.1f}"


def _sections(data: MonthData) -> list[tuple[str, list[str], list[list[str]]]]:
    """(label key, header, rows) of each table, shared by the CSV and the PDF."""
    s = data.summary
    bill = data.bill
    cur = bill.currency
    out: list[tuple[str, list[str], list[list[str]]]] = []
    out.append(
        (
            "bill",
            ["item", "quantity", "unit", "rate", f"amount ({cur})"],
            [
                [ln.label, f"{ln.quantity:,.2f}", ln.unit, f"{ln.rate:,.4g}", _money(ln.amount)]
                for ln in bill.lines
            ]
            + [[LABELS["total"][0], "", "", "", _money(bill.total)]],
        )
    )
    t = data.site.tariff
    if t.time_of_use:
        periods = [("peak", bill.kwh_peak), ("off_peak", bill.kwh_off_peak)]
    else:
        periods = [("flat", bill.kwh)]
    out.append(
        (
            "periods",
            ["period", "kWh", "share"],
            [
                [LABELS[p][0], _kwh(k), f"{k / bill.kwh:.1%}" if bill.kwh else "-"]
                for p, k in periods
            ],
        )
    )
    out.append(
        (
            "days",
            ["day", "kWh", "peak kWh", f"energy cost ({cur})", "coverage"],
            [
                [
                    _day(d.start_ms, data),
                    _kwh(d.kwh),
                    _kwh(d.kwh_peak),
                    _money(d.amount),
                    f"{d.coverage:.0%}",
                ]
                for d in data.days
                if d.start_ms < s.end_ms
            ],
        )
    )
    out.append(
        (
            "shifts",
            [
                "day",
                "shift",
                "kWh",
                "peak kWh",
                f"peak cost ({cur})",
                f"off-peak cost ({cur})",
                f"energy cost ({cur})",
                "coverage",
            ],
            [
                [
                    str(r["day"]),
                    str(r["shift_name"]),
                    _kwh(r["kwh"]),
                    _kwh(r["kwh_peak"]),
                    _money(r["cost_peak"]),
                    _money(r["cost_off_peak"]),
                    _money(r["cost"]),
                    f"{r['coverage']:.0%}",
                ]
                for r in data.shifts
            ],
        )
    )
    out.append(
        (
            "intensity",
            ["day", "machine or line", "kWh", "produced", "unit", "kWh per unit"],
            [
                [
                    str(r["day"]),
                    str(r["name"]) if r["level"] == "machine" else f"{r['name']} (line)",
                    _kwh(r["kwh"]),
                    "-" if r["units"] is None else f"{r['units']:,.0f}",
                    str(r["unit"] or "-"),
                    "-" if r["kwh_per_unit"] is None else f"{r['kwh_per_unit']:.4g}",
                ]
                for r in data.intensity_days
                if r["kwh"] > 0 or r["units"]
            ],
        )
    )
    outages = s.supply.outages()
    gen = s.generator
    supply_rows = [
        [LABELS["outages"][0], str(len(outages)), ""],
        [
            LABELS["outage_hours"][0],
            f"{sum(o.duration_ms for o in outages) / 3_600_000:.1f}",
            "h",
        ],
        [LABELS["generator_hours"][0], f"{s.generator_run_ms / 3_600_000:.1f}", "h"],
    ]
    if gen is not None:
        supply_rows += [
            [LABELS["diesel_litres"][0], f"{gen.litres:,.0f}", "L"],
            [LABELS["diesel_cost"][0], _money(gen.cost_pkr), cur],
        ]
    out.append(("supply", ["item", "value", "unit"], supply_rows))
    out.append(
        (
            "outages",
            ["start", "end", "minutes", "generator minutes", "without supply minutes"],
            [
                [
                    _local(o.start_ms, data),
                    "open" if o.open else _local(o.end_ms, data),
                    f"{o.duration_ms / 60_000:.0f}",
                    f"{o.generator_ms / 60_000:.0f}",
                    f"{o.unpowered_ms / 60_000:.0f}",
                ]
                for o in outages
            ],
        )
    )
    out.append(
        (
            "idle",
            ["machine", "idle hours", "kWh", f"cost ({cur})"],
            [
                [m.name, f"{m.idle.hours:.1f}", _kwh(m.idle.kwh), _money(m.idle.kwh * s.idle_rate)]
                for m in s.idle
            ],
        )
    )
    out.append(
        (
            "advice",
            ["recommendation", f"saving a month ({cur})", "how"],
            [
                [a.advice.title("en"), _money(a.advice.saving_pkr_month), a.advice.text("en")]
                for a in data.advice
            ],
        )
    )
    return out


def render_csv(data: MonthData) -> str:
    """Sections one after another, each headed by its English and Urdu label."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow([LABELS["title"][0], LABELS["title"][1]])
    w.writerow([LABELS["site"][0], data.site.name, LABELS["site"][1]])
    w.writerow([LABELS["month"][0], data.month, LABELS["month"][1]])
    w.writerow([LABELS["tariff"][0], data.site.tariff.name, LABELS["tariff"][1]])
    w.writerow([LABELS["coverage"][0], f"{data.bill.coverage:.1%}", LABELS["coverage"][1]])
    for note in data.bill.notes:
        w.writerow([LABELS["notes"][0], note, LABELS["notes"][1]])
    for key, header, rows in _sections(data):
        w.writerow([])
        w.writerow([LABELS[key][0], LABELS[key][1]])
        w.writerow(header)
        w.writerows(rows)
    for a in data.advice:
        w.writerow([])
        w.writerow([LABELS["advice"][1], a.advice.title("ur")])
        w.writerow([LABELS["saving"][1], _money(a.advice.saving_pkr_month), a.advice.text("ur")])
    return buf.getvalue()


def render_pdf(data: MonthData) -> bytes:
    from fpdf import FPDF  # a third of a second to import: only when a PDF is made

    pdf = FPDF(orientation="portrait", format="A4")
    pdf.set_creator("karkhana")
    pdf.set_title(latin1(f"{LABELS['title'][0]} {data.month}"))
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 14)
    pdf.cell(0, 8, latin1(f"{LABELS['title'][0]}: {data.site.name}, {data.month}"))
    pdf.ln()
    pdf.set_font("Helvetica", "", 9)
    t = data.site.tariff
    lines = [
        f"Tariff: {t.name} ({t.id}). {t.note}",
        f"Period {_local(data.bill.start_ms, data)} to {_local(data.bill.end_ms, data)}; "
        f"data covers {data.bill.coverage:.1%} of it.",
        *data.bill.notes,
    ]
    for text in lines:
        pdf.multi_cell(0, 5, latin1(text), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)
    widths = {
        "bill": [80, 25, 15, 25, 30],
        "periods": [60, 40, 30],
        "days": [35, 30, 30, 40, 25],
        "shifts": [22, 20, 20, 20, 24, 26, 26, 20],
        "intensity": [24, 56, 24, 28, 18, 28],
        "supply": [70, 40, 20],
        "outages": [38, 38, 25, 35, 40],
        "idle": [70, 30, 30, 40],
    }
    for key, header, rows in _sections(data):
        pdf.set_font("Helvetica", "B", 10)
        pdf.cell(0, 6, latin1(LABELS[key][0]))
        pdf.ln()
        if key == "advice":
            pdf.set_font("Helvetica", "", 8)
            if not rows:
                pdf.cell(0, 5, "None found in this month's data.")
                pdf.ln()
            for title, saving, text in rows:
                pdf.set_font("Helvetica", "B", 8)
                pdf.multi_cell(
                    0,
                    5,
                    latin1(f"{title}: {saving} {data.bill.currency} a month"),
                    new_x="LMARGIN",
                    new_y="NEXT",
                )
                pdf.set_font("Helvetica", "", 8)
                pdf.multi_cell(0, 4, latin1(text), new_x="LMARGIN", new_y="NEXT")
                pdf.ln(1)
            continue
        table(pdf, header, rows, widths[key], max_chars=70)
    return bytes(pdf.output())
