"""What the PDF reports share: text the built-in Helvetica can print, and a bordered table.

fpdf2 itself is imported by the callers when a PDF is made (a third of a second to import).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fpdf import FPDF


def latin1(text: str) -> str:
    """``text`` with what the core PDF fonts cannot print (Urdu, symbols) replaced by '?'."""
    return text.encode("latin-1", "replace").decode("latin-1")


def table(
    pdf: FPDF,
    header: Sequence[str],
    rows: Sequence[Sequence[object]],
    widths: Sequence[int],
    max_chars: int = 60,
) -> None:
    """A header row in bold and one bordered row per item, cells cut at ``max_chars``."""
    pdf.set_font("Helvetica", "B", 8)
    for text, width in zip(header, widths, strict=True):
        pdf.cell(width, 6, latin1(text), border=1)
    pdf.ln()
    pdf.set_font("Helvetica", "", 8)
    for row in rows:
        for value, width in zip(row, widths, strict=True):
            pdf.cell(width, 5, latin1(str(value))[:max_chars], border=1)
        pdf.ln()
    pdf.ln(3)
