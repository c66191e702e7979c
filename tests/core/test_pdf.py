from __future__ import annotations

from fpdf import FPDF

from karkhana.core.pdf import latin1, table


def test_text_the_core_fonts_cannot_print_is_replaced() -> None:
    assert latin1("Loom 1 (shed 2) café") == "Loom 1 (shed 2) café"
    assert latin1("لوم 1") == "??? 1"


def test_a_table_has_a_row_per_item_and_cuts_long_cells() -> None:
    pdf = FPDF()
    pdf.add_page()
    y0 = pdf.get_y()
    table(pdf, ["machine", "minutes"], [["Loom 1", 12.5], ["x" * 100, "لوم"]], [60, 30], 10)
    # header 6 mm, two rows of 5 mm, 3 mm after
    assert round(pdf.get_y() - y0, 3) == 6 + 5 + 5 + 3
    assert pdf.output()[:5] == b"%PDF-"
