"""Recommendations: savings worked out by hand, texts in English and Urdu that carry the figures."""

from __future__ import annotations

import string

import pytest

from karkhana.core.errors import ConfigError
from karkhana.core.model import Value
from karkhana.energy.advice import (
    TEMPLATES,
    Evidence,
    fix_air_leak,
    fix_air_leak_running,
    rank,
    shift_off_peak,
    stagger_startups,
    switch_off_idle,
)
from karkhana.energy.waste import (
    AirLeakEvidence,
    AirLeakFit,
    MonthDemand,
    WindowEnergy,
    daily_windows,
    energy_in_windows,
    idle_energy,
)

T0 = 1_704_067_200_000  # 2024-01-01T00:00Z, 05:00 in Pakistan
MIN = 60_000
H = 3_600_000
DAY = 24 * H


def leak_evidence(*, flagged: bool = True, flow: float | None = 0.6) -> AirLeakEvidence:
    return AirLeakEvidence(
        flagged=flagged,
        threshold_share=0.10,
        loaded_share=0.15,
        running_hours=27.0,
        loaded_hours=4.05,
        kwh=418.8,
        excess_kwh=108.0,
        unloaded_kw=11.84,
        leak_kw=4.0,
        leak_flow_m3_min=flow,
        windows=(),
    )


def test_shift_off_peak_from_a_measured_load() -> None:
    # a 30 kW washer running round the clock for two days; peak hours 17:00-21:00
    power: list[tuple[int, Value]] = [(t, 30.0) for t in range(T0, T0 + 2 * DAY + 1, 5 * MIN)]
    peak_windows = daily_windows(T0, T0 + 2 * DAY, 17, 21)
    peak = energy_in_windows(peak_windows, power_kw=power)
    assert peak.kwh == pytest.approx(240.0)  # 4 h x 30 kW x 2 days
    evidence = Evidence("washer-1 power_kw", T0, T0 + 2 * DAY, tuple(peak_windows))
    advice = shift_off_peak(
        "Washer 1",
        peak,
        peak_rate=48.5,
        off_peak_rate=41.2,
        evidence=evidence,
        hours="17:00-21:00",
    )
    # 240 kWh in 2 days -> 3,600 kWh in 30 days; x (48.5 - 41.2) = 26,280 PKR
    assert advice.figure("monthly_kwh") == pytest.approx(3600.0)
    assert advice.saving_pkr_month == pytest.approx(26_280.0)
    en = advice.text("en")
    assert "240 kWh in the peak hours (17:00-21:00) over 2 days" in en
    assert "3,600 kWh" in en and "(48.50 - 41.20)" in en
    assert "26,280 PKR a month" in en
    ur = advice.text("ur")
    assert "26,280" in ur and "روپے" in ur and "Washer 1" in ur and "17:00-21:00" in ur
    assert advice.title("en") == "Run Washer 1 off-peak"
    assert advice.evidence.windows == tuple(peak_windows)


def test_shift_off_peak_never_claims_a_loss_as_saving() -> None:
    evidence = Evidence("m", T0, T0 + DAY)
    advice = shift_off_peak(
        "x", WindowEnergy(10.0, H, H), peak_rate=40.0, off_peak_rate=45.0, evidence=evidence
    )
    assert advice.saving_pkr_month == 0.0
    assert rank([advice]) == []


def test_stagger_startups_by_hand() -> None:
    month = MonthDemand("2024-01", 520.0, T0 + 10 * H, 95.0, 440.0, 1400)
    evidence = Evidence("tx-meter-main power_kw", T0, T0 + 31 * DAY)
    advice = stagger_startups(
        month, mdi_rate=1_200.0, evidence=evidence, starting=["Loom 01", "Loom 02"]
    )
    # (520 - 440) kW x 1,200 PKR/kW = 96,000 PKR
    assert advice.figure("reduction_kw") == pytest.approx(80.0)
    assert advice.saving_pkr_month == pytest.approx(96_000.0)
    en = advice.text("en")
    assert "2024-01-01 15:00" in en  # 10:00Z is 15:00 in Pakistan
    assert "Loom 01, Loom 02" in en and "96,000 PKR" in en and "80.0 kW x 1,200.00" in en
    assert "Loom 01، Loom 02" in advice.text("ur")
    none_given = stagger_startups(month, mdi_rate=1_200.0, evidence=evidence)
    assert "none recorded" in none_given.text("en")


def test_fix_air_leak_by_hand() -> None:
    evidence = Evidence("tx-compressor-1 loaded, power_kw, flow_m3_min", T0, T0 + 3 * DAY)
    advice = fix_air_leak("Compressor 1", leak_evidence(), rate=45.0, evidence=evidence)
    assert advice is not None
    # 4 kW x 720 h = 2,880 kWh x 45 PKR/kWh = 129,600 PKR
    assert advice.figure("monthly_kwh") == pytest.approx(2880.0)
    assert advice.saving_pkr_month == pytest.approx(129_600.0)
    en = advice.text("en")
    assert "loaded 15.0 % of that time (limit 10.0 %)" in en
    assert "about 0.60 m³/min of air lost" in en and "129,600 PKR" in en
    assert "4.0 kW x 720 h = 2,880 kWh x 45.00 PKR/kWh" in en
    assert "0.60 m³/min" in advice.text("ur")
    unmeasured = fix_air_leak("C", leak_evidence(flow=None), rate=45.0, evidence=evidence)
    assert unmeasured is not None and "air flow not measured" in unmeasured.text("en")
    assert fix_air_leak("C", leak_evidence(flagged=False), rate=45.0, evidence=evidence) is None


def leak_fit(*, flagged: bool = True, unit: str = "m3/min") -> AirLeakFit:
    flow = unit == "m3/min"
    return AirLeakFit(
        unit=unit,
        points=273,
        bucket_ms=15 * MIN,
        users=14,
        users_min=3.4,
        users_max=13.8,
        r2=0.8,
        intercept=1.2 if flow else 16.0,
        intercept_se=0.08 if flow else 0.5,
        slopes=(("power_loom", 0.25 if flow else 1.0),),
        own_use=0.3 if flow else 12.0,
        leak=0.9 if flow else 4.0,
        kw_per_m3_min=4.0 if flow else None,
        leak_kw=3.6 if flow else 4.0,
        hours=68.25,
        flagged=flagged,
        reason="" if flagged else "R² 0.10 is below 0.3",
    )


def test_fix_air_leak_while_production_runs_by_hand() -> None:
    evidence = Evidence("c flow_m3_min against 14 machines", T0, T0 + 3 * DAY)
    advice = fix_air_leak_running("Compressor 1", leak_fit(), rate=40.0, evidence=evidence)
    assert advice is not None and advice.kind == "fix_air_leak_running"
    # (1.2 - 0.3) m³/min x 4.0 kW per m³/min = 3.6 kW x 720 h = 2,592 kWh x 40 = 103,680 PKR
    assert advice.figure("monthly_kwh") == pytest.approx(2592.0)
    assert advice.saving_pkr_month == pytest.approx(103_680.0)
    en = advice.text("en")
    assert "delivered 1.20 m³/min with no machine running" in en
    assert "273 spans of 15 minutes" in en and "(3.4 to 13.8), R² 0.80" in en
    assert "Less 0.30 m³/min that it uses itself, 0.90 m³/min is air nobody uses" in en
    assert "3.6 kW x 720 h = 2,592 kWh x 40.00 PKR/kWh = 103,680 PKR a month" in en
    assert advice.title("en") == "Fix the compressed-air leaks on Compressor 1"
    ur = advice.text("ur")
    assert "103,680" in ur and "1.20 m³/min" in ur and "ہوا کا بہاؤ" in ur
    power = fix_air_leak_running("C", leak_fit(unit="kW"), rate=40.0, evidence=evidence)
    assert power is not None
    # 4 kW x 720 h x 40 PKR/kWh
    assert power.saving_pkr_month == pytest.approx(115_200.0)
    assert "drew 16.0 kW with no machine running" in power.text("en")
    assert "12.0 kW that it draws anyway" in power.text("en")
    assert fix_air_leak_running("C", leak_fit(flagged=False), rate=40.0, evidence=evidence) is None


def test_switch_off_idle_from_measured_idle_energy() -> None:
    states = [
        (T0, T0 + H, "running"),
        (T0 + H, T0 + 2 * H, "idle"),
        (T0 + 2 * H, T0 + 4 * H, "stopped"),
    ]
    power: list[tuple[int, Value]] = [
        (T0, 9.0),
        (T0 + H, 1.5),
        (T0 + 2 * H, 0.75),
        (T0 + 4 * H, 0.0),
    ]
    idle = idle_energy(states, power_kw=power, max_gap_ms=2 * H)
    assert idle.kwh == pytest.approx(3.0) and idle.hours == pytest.approx(3.0)
    evidence = Evidence("loom-07 motor power", T0, T0 + DAY)
    advice = switch_off_idle("Loom 07", idle, rate=40.0, evidence=evidence, keep_kw=0.2)
    # (3 kWh - 0.2 kW x 3 h) = 2.4 kWh a day x 30 = 72 kWh x 40 PKR = 2,880 PKR
    assert advice.figure("avoidable_kwh") == pytest.approx(2.4)
    assert advice.figure("monthly_kwh") == pytest.approx(72.0)
    assert advice.saving_pkr_month == pytest.approx(2_880.0)
    assert "72.0 kWh a month x 40.00 PKR/kWh = 2,880 PKR" in advice.text("en")


def test_rank_orders_by_saving_and_drops_small_ones() -> None:
    evidence = Evidence("m", T0, T0 + DAY)
    idle = idle_energy([(T0, T0 + H, "idle")], power_kw=[(T0, 1.0), (T0 + H, 1.0)], max_gap_ms=H)
    small = switch_off_idle("a", idle, rate=10.0, evidence=evidence)  # 30 kWh x 10 = 300
    leak = fix_air_leak("b", leak_evidence(), rate=10.0, evidence=evidence)  # 28,800
    assert small.saving_pkr_month == pytest.approx(300.0)
    assert [a.subject for a in rank([small, None, leak])] == ["b", "a"]
    assert [a.subject for a in rank([small, leak], min_saving_pkr=1_000)] == ["b"]


def test_every_template_has_the_same_placeholders_in_both_languages() -> None:
    for kind, langs in TEMPLATES.items():
        fields = {
            lang: {
                name
                for part in text
                for _, name, _, _ in string.Formatter().parse(part)
                if name is not None
            }
            for lang, text in langs.items()
        }
        assert fields["en"] == fields["ur"], kind


def test_bad_parameters_are_refused() -> None:
    evidence = Evidence("m", T0, T0 + DAY)
    with pytest.raises(ConfigError):
        fix_air_leak("c", leak_evidence(), rate=-1.0, evidence=evidence)
    with pytest.raises(ConfigError):
        shift_off_peak(
            "x",
            WindowEnergy(1.0, H, H),
            peak_rate=1.0,
            off_peak_rate=0.5,
            evidence=Evidence("m", T0, T0),
        )
    advice = fix_air_leak("c", leak_evidence(), rate=1.0, evidence=evidence)
    assert advice is not None
    with pytest.raises(ConfigError):
        advice.text("fr")  # type: ignore[arg-type]
