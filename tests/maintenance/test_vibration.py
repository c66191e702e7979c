from __future__ import annotations

import math

import numpy as np
import pytest

from karkhana.core.errors import InvalidPayload
from karkhana.maintenance.vibration import (
    Bearing,
    Burst,
    Foundation,
    MachineGroup,
    fault_frequencies,
    features,
    iso_zone,
)

RATE = 10_000.0
N = 8192
T = np.arange(N) / RATE
# SKF 6205: 9 balls of 7.94 mm on a 39.04 mm pitch circle
SKF_6205 = Bearing(9, 7.94, 39.04)


def burst(values: np.ndarray, unit: str = "m/s2") -> Burst:
    return Burst(RATE, tuple(float(v) for v in values), unit)


def test_pure_sine_rms_peak_crest() -> None:
    f = features(burst(3.0 * np.sin(2 * np.pi * 50.0 * T)))
    assert f.rms == pytest.approx(3.0 / math.sqrt(2), rel=1e-3)
    assert f.peak == pytest.approx(3.0, rel=1e-3)
    assert f.crest_factor == pytest.approx(math.sqrt(2), rel=2e-3)
    assert f.kurtosis == pytest.approx(1.5, rel=1e-2)  # a sine's kurtosis


def test_gaussian_noise_kurtosis_is_three() -> None:
    rng = np.random.default_rng(1)
    f = features(Burst(RATE, tuple(rng.normal(0.0, 1.0, 60_000)), "m/s2"))
    assert f.kurtosis == pytest.approx(3.0, abs=0.1)
    # white noise spreads its energy evenly: the band energies add up to the mean square
    assert sum(f.bands.values()) == pytest.approx(f.rms**2, rel=0.02)


def test_impacts_raise_kurtosis_and_crest() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(0.0, 1.0, N)
    x[::400] += 25.0
    f = features(burst(x))
    assert f.kurtosis > 8.0
    assert f.crest_factor > 5.0


def test_g_is_converted() -> None:
    f = features(burst(np.sin(2 * np.pi * 80.0 * T), unit="g"))
    assert f.rms == pytest.approx(9.80665 / math.sqrt(2), rel=1e-3)


def test_velocity_from_acceleration_and_iso_zone() -> None:
    # 2 mm/s RMS at 100 Hz: a = v * 2 pi f
    v_peak = 2.0e-3 * math.sqrt(2)
    a = v_peak * 2 * np.pi * 100.0 * np.cos(2 * np.pi * 100.0 * T)
    f = features(burst(a))
    assert f.velocity_rms_mm_s == pytest.approx(2.0, rel=0.02)
    assert f.iso_zone == "B"  # group 2, rigid: 1.4 < 2.0 < 2.8
    big_flexible = features(burst(a), group=MachineGroup.LARGE, foundation=Foundation.FLEXIBLE)
    assert big_flexible.iso_zone == "A"


def test_iso_zone_boundaries() -> None:
    assert iso_zone(1.39) == "A"
    assert iso_zone(1.4) == "B"
    assert iso_zone(4.49) == "C"
    assert iso_zone(4.5) == "D"
    assert iso_zone(7.0, MachineGroup.LARGE, Foundation.RIGID) == "C"
    assert iso_zone(11.0, MachineGroup.LARGE, Foundation.FLEXIBLE) == "D"


def test_fault_frequencies_of_a_known_bearing() -> None:
    ff = fault_frequencies(SKF_6205, shaft_hz=29.95)  # 1797 rpm, the CWRU test rig
    # published multiples of shaft speed for the 6205: BPFO 3.5848, BPFI 5.4152, BSF 4.7135
    # (ball spin, often quoted doubled as 2xBSF), FTF 0.39828
    assert ff.bpfo / 29.95 == pytest.approx(3.5848, rel=2e-3)
    assert ff.bpfi / 29.95 == pytest.approx(5.4152, rel=2e-3)
    assert ff.bsf / 29.95 == pytest.approx(2.357, rel=3e-3)
    assert ff.ftf / 29.95 == pytest.approx(0.39828, rel=2e-3)


def test_a_tone_at_bpfo_shows_in_the_bpfo_band() -> None:
    shaft = 25.0
    ff = fault_frequencies(SKF_6205, shaft)
    rng = np.random.default_rng(3)
    noise = rng.normal(0.0, 0.05, N)
    healthy = features(burst(noise), shaft_hz=shaft, bearing=SKF_6205)
    faulty = features(
        burst(noise + np.sin(2 * np.pi * ff.bpfo * T)), shaft_hz=shaft, bearing=SKF_6205
    )
    assert faulty.fault_bands["bpfo"] == pytest.approx(0.5, rel=0.1)  # a unit sine: 1/2
    assert faulty.fault_bands["bpfo"] > 50 * healthy.fault_bands["bpfo"]
    assert faulty.fault_bands["bpfi"] < 0.01
    values = faulty.as_values("vib")
    assert values["vib.bpfo"] == faulty.fault_bands["bpfo"]
    assert values["vib.iso_zone"] in "ABCD"


@pytest.mark.parametrize(
    ("rate", "values", "unit"),
    [
        (0.0, [0.0] * 64, "m/s2"),
        (math.nan, [0.0] * 64, "m/s2"),
        (1000.0, [0.0] * 4, "m/s2"),
        (1000.0, [0.0] * 64, "mm/s"),
    ],
)
def test_bad_bursts_are_refused(rate: float, values: list[float], unit: str) -> None:
    with pytest.raises(InvalidPayload):
        Burst(rate, tuple(values), unit)


def test_bad_bearing_and_values_are_refused() -> None:
    with pytest.raises(InvalidPayload):
        Bearing(9, 40.0, 39.0)
    with pytest.raises(InvalidPayload):
        features(Burst(1000.0, (math.nan,) * 64))
    with pytest.raises(InvalidPayload):
        features(burst(np.zeros(N)), shaft_hz=-1.0, bearing=SKF_6205)
