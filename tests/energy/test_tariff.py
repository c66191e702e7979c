from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from karkhana.core.errors import ConfigError
from karkhana.energy.model import ClockWindow
from karkhana.energy.tariff import DATA_DIR, is_peak, load_tariff, load_tariffs, peak_spans

PKT = ZoneInfo("Asia/Karachi")


def ms(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> int:
    return int(datetime(y, mo, d, h, mi, tzinfo=PKT).timestamp() * 1000)


GOOD = """
id = "{id}"
name = "Test tariff"
note = "Example figures only"
currency = "PKR"

[energy]
peak = 50.0
off_peak = 40.0

[[seasons]]
name = "winter"
months = "dec-feb"
peak = ["17:00-21:00"]

[[seasons]]
name = "rest"
months = "mar-nov"
peak = ["22:00-02:00"]
"""


def write(tmp_path: Path, text: str, name: str = "t") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text.replace("{id}", name))
    return path


def test_every_shipped_tariff_loads_and_says_it_is_an_example() -> None:
    tariffs = load_tariffs()
    assert set(tariffs) == {
        "nepra_b1_flat_example",
        "nepra_b2b_tou_example",
        "nepra_b3_tou_example",
    }
    for tariff in tariffs.values():
        assert tariff.currency == "PKR"
        assert "example" in tariff.note.lower()
        text = (DATA_DIR / f"{tariff.id}.toml").read_text()
        assert text.startswith("# EXAMPLE TARIFF")
        gst = next(t for t in tariff.taxes if t.id == "gst")
        duty = next(t for t in tariff.taxes if t.id == "electricity_duty")
        assert (gst.percent, duty.percent) == (18.0, 1.5)
    b2 = tariffs["nepra_b2b_tou_example"]
    assert b2.peak_rate is not None and 40 <= b2.peak_rate <= 50
    assert b2.off_peak_rate is not None and 33 <= b2.off_peak_rate <= 40
    assert b2.demand is not None and 1200 <= b2.demand.per_kw <= 1500
    windows = {s.name: [str(w) for w in s.peak] for s in b2.seasons}
    assert windows == {
        "winter": ["17:00-21:00"],
        "spring": ["18:00-22:00"],
        "summer": ["19:00-23:00"],
        "autumn": ["18:00-22:00"],
    }
    assert b2.season_of(12) == b2.season_of(1) == b2.season_of(2)
    assert not tariffs["nepra_b1_flat_example"].time_of_use


def test_a_site_folder_replaces_a_shipped_tariff_by_id(tmp_path: Path) -> None:
    write(tmp_path, GOOD, "nepra_b3_tou_example")
    tariffs = load_tariffs(tmp_path)
    assert tariffs["nepra_b3_tou_example"].peak_rate == 50.0
    assert "nepra_b2b_tou_example" in tariffs


def test_month_ranges_wrap_past_december_and_windows_cross_midnight(tmp_path: Path) -> None:
    tariff = load_tariff(write(tmp_path, GOOD))
    winter, rest = tariff.seasons
    assert winter.months == {12, 1, 2}
    assert rest.months == set(range(3, 12))
    assert rest.peak == (ClockWindow(22 * 60, 2 * 60),)
    assert rest.peak[0].crosses_midnight and rest.peak[0].minutes == 240


def test_peak_windows_move_with_the_season_and_keep_their_day_past_midnight(
    tmp_path: Path,
) -> None:
    tariff = load_tariff(write(tmp_path, GOOD))
    # 30 November's window runs 22:00 -> 02:00 on 1 December (it belongs to November);
    # 1 December's own window is the winter one, 17:00 -> 21:00
    spans = peak_spans(tariff, ms(2026, 12, 1), ms(2026, 12, 2), PKT)
    assert spans.tolist() == [
        [ms(2026, 12, 1), ms(2026, 12, 1, 2)],
        [ms(2026, 12, 1, 17), ms(2026, 12, 1, 21)],
    ]
    # 28 February 17:00 -> 21:00 (winter), then 1 March 22:00 -> 2 March 02:00 (clipped)
    spans = peak_spans(tariff, ms(2027, 2, 28), ms(2027, 3, 2), PKT)
    assert spans.tolist() == [
        [ms(2027, 2, 28, 17), ms(2027, 2, 28, 21)],
        [ms(2027, 3, 1, 22), ms(2027, 3, 2)],
    ]
    assert is_peak(tariff, ms(2026, 12, 1, 1, 59), PKT)
    assert not is_peak(tariff, ms(2026, 12, 1, 2), PKT)
    assert not is_peak(tariff, ms(2026, 12, 1, 22, 30), PKT)


def test_shipped_windows_on_the_clock_of_karachi() -> None:
    b2 = load_tariffs()["nepra_b2b_tou_example"]
    # 30 November: 18:00-22:00 local = 13:00-17:00 UTC; 1 December: 17:00-21:00 local
    spans = peak_spans(b2, ms(2026, 11, 30), ms(2026, 12, 2), PKT)
    assert spans.tolist() == [
        [ms(2026, 11, 30, 18), ms(2026, 11, 30, 22)],
        [ms(2026, 12, 1, 17), ms(2026, 12, 1, 21)],
    ]
    assert spans[0][0] == int(datetime(2026, 11, 30, 13, tzinfo=ZoneInfo("UTC")).timestamp()) * 1000
    assert peak_spans(load_tariffs()["nepra_b1_flat_example"], 0, 10**12, PKT).size == 0


BAD = [
    (
        'peak = ["17:00-21:00"]',
        'peak = ["17:00-21:00", "20:00-23:00"]',
        "seasons[0].peak[1]: window 20:00-23:00 overlaps window 17:00-21:00",
    ),
    (
        'peak = ["22:00-02:00"]',
        'peak = ["22:00-02:00", "01:00-03:00"]',
        "seasons[1].peak[1]: window 01:00-03:00 overlaps window 22:00-02:00",
    ),
    ('months = "dec-feb"', 'months = "dec-fbr"', "seasons[0].months: unknown month 'fbr'"),
    ('months = "dec-feb"', "months = [12, 1, 13]", "seasons[0].months: unknown month 13"),
    ('months = "dec-feb"', 'months = "dec-mar"', "seasons[1].months: mar is already in season"),
    ('months = "dec-feb"', 'months = "dec-jan"', "seasons: months in no season: feb"),
    ("peak = 50.0", "peak = -50.0", "energy.peak: must not be negative, got -50"),
    ("off_peak = 40.0", 'off_peak = "40"', "energy.off_peak: expected a number, got str"),
    ("off_peak = 40.0", "", "energy: give both peak and off_peak rates, or one flat rate"),
    ('peak = ["17:00-21:00"]', 'peak = ["17-21"]', "seasons[0].peak[0]: '17-21' is not a window"),
    ('peak = ["17:00-21:00"]', 'peak = ["17:00-17:00"]', "is empty or the whole day"),
    ('currency = "PKR"', 'currency = "rupees"', "currency: 'rupees' is not a currency code"),
    ('note = "Example figures only"\n', "", "note: missing"),
    ('name = "Test tariff"', 'name = "Test tariff"\ncolour = "red"', "colour: unknown field"),
]


@pytest.mark.parametrize(("old", "new", "message"), BAD)
def test_a_malformed_tariff_is_refused_naming_file_and_field(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(ConfigError) as err:
        load_tariff(path)
    assert str(path) in str(err.value)
    assert message in str(err.value)


EXTRA = """
[demand]
per_kw = 1000.0
minimum_fraction = 0.5

[[adjustments]]
id = "fpa"
name = "Fuel price adjustment"
per_kwh = -0.75

[[taxes]]
id = "ed"
name = "Electricity duty"
percent = 1.5
base = ["energy", "mdi"]

[[taxes]]
id = "gst"
name = "GST"
percent = 18.0
base = ["energy", "mdi", "fpa", "ed"]
"""


def test_charges_adjustments_and_taxes_load(tmp_path: Path) -> None:
    tariff = load_tariff(write(tmp_path, GOOD + EXTRA))
    assert tariff.demand is not None and tariff.demand.interval_min == 30
    assert tariff.adjustments[0].per_kwh == -0.75  # an adjustment may be a refund
    assert [t.base for t in tariff.taxes] == [("energy", "mdi"), ("energy", "mdi", "fpa", "ed")]


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            'base = ["energy", "mdi"]',
            'base = ["energy", "gst"]',
            "taxes[0].base: unknown base 'gst'",
        ),
        ("percent = 18.0", "percent = -18.0", "taxes[1].percent: must not be negative"),
        ("minimum_fraction = 0.5", "minimum_fraction = 2.0", "demand.minimum_fraction"),
        ("per_kw = 1000.0", "per_kw = 1000.0\ninterval_minutes = 7", "does not divide a day"),
        ('id = "ed"', 'id = "fpa"', "taxes[0].id: 'fpa' is already used"),
        ('id = "ed"', 'id = "mdi"', "taxes[0].id: 'mdi' is reserved"),
    ],
)
def test_malformed_charges_are_refused(tmp_path: Path, old: str, new: str, message: str) -> None:
    text = GOOD + EXTRA
    assert old in text
    path = write(tmp_path, text.replace(old, new, 1))
    with pytest.raises(ConfigError) as err:
        load_tariff(path)
    assert message in str(err.value)


def test_a_flat_tariff_has_no_seasons(tmp_path: Path) -> None:
    flat = GOOD.replace("peak = 50.0\noff_peak = 40.0", "flat = 44.0")
    with pytest.raises(ConfigError, match="flat-rate tariff has no peak windows"):
        load_tariff(write(tmp_path, flat))
    no_seasons = flat[: flat.index("[[seasons]]")]
    assert load_tariff(write(tmp_path, no_seasons)).flat_rate == 44.0


def test_unreadable_files_and_ids_that_do_not_match(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_tariff(write(tmp_path, "id = "))
    path = tmp_path / "other.toml"
    path.write_text(GOOD.replace("{id}", "t"))
    with pytest.raises(ConfigError, match="must match the file name"):
        load_tariff(path)
