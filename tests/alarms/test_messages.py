from __future__ import annotations

from pathlib import Path

import pytest

from karkhana.alarms.messages import (
    Subject,
    default_catalogue,
    load_catalogue,
    number,
    render,
    wrap,
)
from karkhana.core.errors import ConfigError

TS = 1_764_166_500_000  # 19:15 in Karachi
LOOM = Subject("Loom 3", "power_loom", "bearing_temp_c", "Bearing temperature")


def test_urdu_threshold_message_is_plain_urdu() -> None:
    text = render(default_catalogue(), "ur", "above", LOOM, 72.0, 70.0, "°C", TS)
    assert text.startswith("لوم 3 کے بیئرنگ کا درجہ حرارت 72 °C ہے، حد 70 °C سے زیادہ")
    assert "19:15" in text


def test_english_names_machine_signal_value_limit_and_time() -> None:
    text = render(default_catalogue(), "en", "below", LOOM, 12.25, 15.0, "°C", TS)
    assert text == "Loom 3 bearing temperature is 12.25 °C, below the limit of 15 °C (19:15)"


def test_state_and_stale_messages() -> None:
    cat = default_catalogue()
    state = Subject("Loom 3", "power_loom", "state", "State")
    assert render(cat, "ur", "state", state, "fault", 10, "min", TS).startswith(
        "لوم 3 10 منٹ سے زیادہ دیر سے خرابی کی حالت میں ہے"
    )
    assert "fault for more than 10 min" in render(cat, "en", "state", state, "fault", 10, "min", TS)
    assert render(cat, "en", "stale", LOOM, 30, 20, "s", TS).startswith(
        "No data from Loom 3 bearing temperature for 30 s (limit 20 s)"
    )
    assert "سیکنڈ" in render(cat, "ur", "stale", LOOM, 30, 20, "s", TS)


def test_machine_without_a_number_keeps_its_name_and_unknown_signals_their_own() -> None:
    odd = Subject("North compressor", "air_compressor", "oil_temp", "Oil temperature")
    text = render(default_catalogue(), "ur", "above", odd, 90.0, 85.0, "°C", TS)
    assert text.startswith("North compressor کا Oil temperature 90 °C ہے")


def test_escalation_wrapper() -> None:
    assert (
        wrap(default_catalogue(), "ur", "escalated", "x", 15)
        == "15 منٹ سے کسی نے تسلیم نہیں کیا: x"
    )


def test_numbers_read_naturally() -> None:
    assert [number(x) for x in (72.0, 72.456, 0.85, 12345.6, -3.5)] == [
        "72", "72.46", "0.85", "12346", "-3.5",
    ]  # fmt: skip


def test_a_broken_catalogue_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "messages.toml"
    bad.write_text('[en.messages]\nabove = "x"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"messages\.toml"):
        load_catalogue(bad)
