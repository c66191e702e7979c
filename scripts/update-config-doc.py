"""Regenerate the settings table in docs/configuration.md from karkhana.core.config."""

from pathlib import Path

from karkhana.core.config import describe

doc = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
lines = doc.read_text().splitlines()
start = next(i for i, line in enumerate(lines) if line.startswith("| setting |"))
end = start
while end < len(lines) and lines[end].startswith("|"):
    end += 1
lines[start:end] = describe().splitlines()
doc.write_text("\n".join(lines) + "\n")
