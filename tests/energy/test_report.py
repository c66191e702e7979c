"""The monthly energy report: its sections and figures, in CSV and PDF."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator

import pytest

from karkhana.core.clock import FakeClock
from karkhana.energy.report import LABELS, render_csv, render_pdf
from karkhana.energy.service import MonthData
from karkhana.runtime import Runtime
from tests.conftest import make_settings
from tests.energy.support import NOW, load, write_config

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def month(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[MonthData]:
    settings = make_settings(tmp_path_factory.mktemp("energy-report"))
    write_config(settings.data_dir)
    rt = Runtime(settings, FakeClock(NOW))
    await rt.start(mqtt=False)
    try:
        await load(rt)
        yield await rt.energy.month(await rt.energy.site("mill"), "2026-01")
    finally:
        await rt.stop()


def _section(rows: list[list[str]], key: str) -> list[list[str]]:
    """The rows under a section's heading (after its column header), up to the blank line."""
    at = rows.index([LABELS[key][0], LABELS[key][1]])
    out = []
    for row in rows[at + 2 :]:
        if not row:
            break
        out.append(row)
    return out


async def test_csv_sections_and_figures(month: MonthData) -> None:
    rows = list(csv.reader(io.StringIO(render_csv(month))))
    assert rows[0] == list(LABELS["title"])
    bill = {r[0]: r for r in _section(rows, "bill")}
    assert bill["Energy, peak"][1] == "1,225.00"
    assert bill["Energy, peak"][4] == f"{1225 * 46.50:,.0f}"
    assert bill["Energy, off-peak"][4] == "154,000"
    assert bill["Total"][4] == f"{month.bill.total:,.0f}"
    days = _section(rows, "days")
    # 1-6 January (the clock stands at midnight on the 7th); data from the 5th
    assert [d[0] for d in days] == [f"2026-01-0{i}" for i in range(1, 7)]
    assert [d[1] for d in days[4:]] == ["2,625.0", "2,600.0"]
    assert days[0][4] == "0%" and days[5][4] == "100%"
    shifts = _section(rows, "shifts")
    evening = next(r for r in shifts if r[0] == "2026-01-05" and r[1] == "Evening")
    # 14:00-22:00: 625 kWh in the peak hours (150 kW, 200 kW for half an hour), 400 off-peak
    assert evening[2:4] == ["1,025.0", "625.0"]
    assert evening[4:7] == [f"{625 * 50:,.0f}", f"{400 * 42:,.0f}", f"{625 * 50 + 400 * 42:,}"]
    assert not any(r[0] == "2026-01-04" for r in shifts)  # a Sunday: no shifts
    per_unit = _section(rows, "intensity")
    loom = next(r for r in per_unit if r[0] == "2026-01-05" and r[1] == "Loom 1")
    assert loom[3:5] == ["90,000", "picks"]
    assert float(loom[5]) == pytest.approx(float(loom[2].replace(",", "")) / 90_000, rel=1e-3)
    assert any(r[1] == "Line (line)" for r in per_unit)
    supply = {r[0]: r[1] for r in _section(rows, "supply")}
    assert supply["Outages"] == "1" and supply["Outage hours"] == "1.0"
    assert supply["Diesel (estimate)"] == "30"  # 31 L/h for 59 minutes
    idle = {r[0]: r for r in _section(rows, "idle")}
    assert "Loom 1" in idle
    advice = _section(rows, "advice")
    assert any(r[0].startswith("Fix the compressed-air leaks") for r in advice)
    text = render_csv(month)
    assert "ماہانہ بچت" in text and "لیکیج" in text  # Urdu saving label and leak advice


async def test_pdf_is_a_pdf(month: MonthData) -> None:
    pdf = render_pdf(month)
    assert pdf[:5] == b"%PDF-" and len(pdf) > 2000
