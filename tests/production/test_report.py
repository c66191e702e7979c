"""Reports render as CSV and PDF from the same figures."""

from __future__ import annotations

import csv
import io
import zlib
from zoneinfo import ZoneInfo

from karkhana.production.downtime import Label, ParetoItem
from karkhana.production.model import Losses, Oee, Stop
from karkhana.production.report import build_report, render_csv, render_pdf

M = 60_000
T0 = 1_780_448_400_000  # 2026-06-03 06:00 in Karachi


def report_of() -> object:
    r = Oee(
        T0,
        T0 + 480 * M,
        450 * M,
        400 * M,
        20_000,
        19_800,
        400 / 450,
        0.9,
        0.99,
        Losses(40 * M, 10 * M, 5 * M, 35 * M, 50, 150),
        True,
        360 * 60_000.0,
    )
    return build_report(
        title="Shift report 2026-06-03 shift A (Morning)",
        site_name="Faisalabad mill",
        tz=ZoneInfo("Asia/Karachi"),
        start_ms=T0,
        end_ms=T0 + 480 * M,
        machines=[("F1", "Filler 1", r)],
        plant=r,
        pareto=[ParetoItem("jam", Label("Bottle jam", "بوتلیں پھنس جانا"), 30 * M, 3)],
        stops=[Stop(7, "F1", T0 + 60 * M, T0 + 75 * M, "stopped", "jam", False)],
        reason_label=lambda rid: Label("Bottle jam", "بوتلیں پھنس جانا") if rid == "jam" else None,
        names={"F1": "Filler 1"},
        now_ms=T0 + 480 * M,
    )


def test_csv_has_figures_losses_pareto_and_top_stops() -> None:
    rows = list(csv.reader(io.StringIO(render_csv(report_of()))))  # type: ignore[arg-type]
    assert rows[0] == ["Shift report 2026-06-03 shift A (Morning)"]
    assert ["period", "2026-06-03 06:00 to 2026-06-03 14:00 (Asia/Karachi)"] in rows
    filler = next(r for r in rows if r and r[0] == "Filler 1")
    assert filler == ["Filler 1", "20000", "19800", "88.9", "90.0", "99.0", "79.2", "7.50", "6.67"]
    assert ["startup rejects", "50", "units"] in rows
    assert ["Bottle jam", "30.0", "3", "بوتلیں پھنس جانا"] in rows
    assert [
        "Filler 1",
        "2026-06-03 07:00",
        "15.0",
        "stopped",
        "Bottle jam",
        "False",
        "بوتلیں پھنس جانا",
    ] in rows


def test_pdf_is_a_pdf_with_the_figures() -> None:
    data = render_pdf(report_of())  # type: ignore[arg-type]
    assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")
    text = b""
    for chunk in data.split(b"stream")[1:]:
        body = chunk.split(b"endstream")[0].strip(b"\r\n")
        try:
            text += zlib.decompress(body)
        except zlib.error:
            continue
    assert b"Filler 1" in text and b"Bottle jam" in text and b"88.9" in text
