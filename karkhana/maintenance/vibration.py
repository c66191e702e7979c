"""Vibration features of an accelerometer burst: time-domain statistics, spectrum bands,
bearing-fault frequency bands and the ISO 10816-3 severity zone. Pure; no I/O.

The bearing defect frequencies follow the usual kinematic formulas (shaft frequency ``fr``,
``n`` rolling elements of diameter ``d`` on pitch diameter ``D``, contact angle ``phi``):

- BPFO = n/2 * fr * (1 - d/D cos phi)      outer race
- BPFI = n/2 * fr * (1 + d/D cos phi)      inner race
- BSF  = D/(2d) * fr * (1 - (d/D cos phi)^2)   rolling element (ball spin)
- FTF  = fr/2 * (1 - d/D cos phi)          cage
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from karkhana.core.errors import InvalidPayload

G = 9.80665
MAX_SAMPLES = 65_536
MAX_ABS = 1e6
"""Largest accepted sample (m/s² or g): far above any real accelerometer, low enough that no
feature overflows."""
ISO_BAND_HZ = (10.0, 1000.0)
"""ISO 10816-3 measures broadband velocity from 10 Hz to 1 kHz (machines above 600 rpm)."""
DEFAULT_BANDS_HZ: tuple[tuple[float, float], ...] = (
    (10.0, 100.0),
    (100.0, 500.0),
    (500.0, 1000.0),
    (1000.0, 2000.0),
    (2000.0, 5000.0),
    (5000.0, 10000.0),
)


class MachineGroup(StrEnum):
    LARGE = "group1"
    """ISO 10816-3 group 1: 300 kW to 50 MW, or shaft height above 315 mm."""
    MEDIUM = "group2"
    """ISO 10816-3 group 2: 15 kW to 300 kW, or shaft height 160 to 315 mm."""


class Foundation(StrEnum):
    RIGID = "rigid"
    FLEXIBLE = "flexible"


ZONE_LIMITS_MM_S: dict[tuple[MachineGroup, Foundation], tuple[float, float, float]] = {
    (MachineGroup.LARGE, Foundation.RIGID): (2.3, 4.5, 7.1),
    (MachineGroup.LARGE, Foundation.FLEXIBLE): (3.5, 7.1, 11.0),
    (MachineGroup.MEDIUM, Foundation.RIGID): (1.4, 2.8, 4.5),
    (MachineGroup.MEDIUM, Foundation.FLEXIBLE): (2.3, 4.5, 7.1),
}
"""Velocity RMS boundaries (mm/s) between zones A/B, B/C and C/D of ISO 10816-3."""


def iso_zone(
    velocity_rms_mm_s: float,
    group: MachineGroup = MachineGroup.MEDIUM,
    foundation: Foundation = Foundation.RIGID,
) -> str:
    """A (new machine), B (unrestricted operation), C (restricted, plan a repair) or D (damage)."""
    ab, bc, cd = ZONE_LIMITS_MM_S[(group, foundation)]
    if velocity_rms_mm_s < ab:
        return "A"
    if velocity_rms_mm_s < bc:
        return "B"
    if velocity_rms_mm_s < cd:
        return "C"
    return "D"


@dataclass(frozen=True, slots=True)
class Bearing:
    """Rolling bearing geometry (any length unit, the same for both diameters)."""

    rolling_elements: int
    ball_diameter: float
    pitch_diameter: float
    contact_angle_deg: float = 0.0

    def __post_init__(self) -> None:
        if self.rolling_elements < 3 or not 0 < self.ball_diameter < self.pitch_diameter:
            raise InvalidPayload(
                "bearing: need at least 3 rolling elements and 0 < ball diameter < pitch diameter"
            )
        if not 0.0 <= self.contact_angle_deg < 90.0:
            raise InvalidPayload("bearing: contact angle must be in [0, 90) degrees")


@dataclass(frozen=True, slots=True)
class FaultFrequencies:
    bpfo: float
    bpfi: float
    bsf: float
    ftf: float

    def as_dict(self) -> dict[str, float]:
        return {"bpfo": self.bpfo, "bpfi": self.bpfi, "bsf": self.bsf, "ftf": self.ftf}


def fault_frequencies(bearing: Bearing, shaft_hz: float) -> FaultFrequencies:
    """Bearing defect frequencies (Hz) at shaft frequency ``shaft_hz``."""
    ratio = (
        bearing.ball_diameter
        / bearing.pitch_diameter
        * math.cos(math.radians(bearing.contact_angle_deg))
    )
    n = bearing.rolling_elements
    return FaultFrequencies(
        bpfo=n / 2.0 * shaft_hz * (1.0 - ratio),
        bpfi=n / 2.0 * shaft_hz * (1.0 + ratio),
        bsf=bearing.pitch_diameter / (2.0 * bearing.ball_diameter) * shaft_hz * (1.0 - ratio**2),
        ftf=shaft_hz / 2.0 * (1.0 - ratio),
    )


@dataclass(frozen=True, slots=True)
class Burst:
    """A burst of acceleration samples at a fixed rate, in m/s² (``unit='g'`` is converted)."""

    sample_rate_hz: float
    values: tuple[float, ...]
    unit: str = "m/s2"

    def __post_init__(self) -> None:
        if not math.isfinite(self.sample_rate_hz) or not 1.0 <= self.sample_rate_hz <= 1e6:
            raise InvalidPayload("sample_rate_hz: must be between 1 and 1,000,000")
        if not 16 <= len(self.values) <= MAX_SAMPLES:
            raise InvalidPayload(f"values: need between 16 and {MAX_SAMPLES} samples")
        if self.unit not in ("m/s2", "g"):
            raise InvalidPayload("unit: must be 'm/s2' or 'g'")

    def acceleration(self) -> npt.NDArray[np.float64]:
        a = np.asarray(self.values, dtype=np.float64)
        if not np.isfinite(a).all() or np.abs(a).max() > MAX_ABS:
            raise InvalidPayload(f"values: must be finite numbers within ±{MAX_ABS:g}")
        return a * G if self.unit == "g" else a


@dataclass(frozen=True, slots=True)
class VibrationFeatures:
    rms: float
    """Acceleration RMS (m/s², mean removed)."""
    peak: float
    crest_factor: float
    kurtosis: float
    """Pearson kurtosis (3 for Gaussian noise; impacts of a damaged bearing raise it)."""
    velocity_rms_mm_s: float
    """Velocity RMS in the ISO band (10 Hz - 1 kHz, or up to Nyquist)."""
    iso_zone: str
    bands: dict[str, float] = field(default_factory=dict)
    """Acceleration energy (mean square, (m/s²)²) per frequency band, named ``<lo>_<hi>hz``."""
    fault_bands: dict[str, float] = field(default_factory=dict)
    """Energy near BPFO, BPFI, BSF and FTF (and their first harmonics), when known."""
    fault_frequencies: dict[str, float] = field(default_factory=dict)

    def as_values(self, prefix: str = "vibration") -> dict[str, float | str]:
        """Flat telemetry keys, e.g. ``vibration.rms`` and ``vibration.band.10_100hz``."""
        out: dict[str, float | str] = {
            f"{prefix}.rms": self.rms,
            f"{prefix}.peak": self.peak,
            f"{prefix}.crest_factor": self.crest_factor,
            f"{prefix}.kurtosis": self.kurtosis,
            f"{prefix}.velocity_rms_mm_s": self.velocity_rms_mm_s,
            f"{prefix}.iso_zone": self.iso_zone,
        }
        out.update({f"{prefix}.band.{k}": v for k, v in self.bands.items()})
        out.update({f"{prefix}.{k}": v for k, v in self.fault_bands.items()})
        return out


def _band_name(lo: float, hi: float) -> str:
    return f"{lo:g}_{hi:g}hz"


def spectrum(a: npt.NDArray[np.float64], rate: float) -> tuple[npt.NDArray[np.float64], ...]:
    """One-sided power spectrum (Hann window) scaled so bins add up to the mean square."""
    n = len(a)
    window = np.hanning(n)
    spec = np.fft.rfft((a - a.mean()) * window)
    power = np.abs(spec) ** 2 / (np.sum(window**2) * n)
    power[1 : (n + 1) // 2] *= 2.0  # fold the negative frequencies in (not DC or Nyquist)
    freqs = np.asarray(np.fft.rfftfreq(n, 1.0 / rate), dtype=np.float64)
    return freqs, np.asarray(power, dtype=np.float64)


def band_energy(
    freqs: npt.NDArray[np.float64], power: npt.NDArray[np.float64], lo: float, hi: float
) -> float:
    mask = (freqs >= lo) & (freqs < hi)
    return float(power[mask].sum())


def features(
    burst: Burst,
    *,
    shaft_hz: float | None = None,
    bearing: Bearing | None = None,
    group: MachineGroup = MachineGroup.MEDIUM,
    foundation: Foundation = Foundation.RIGID,
    bands: Sequence[tuple[float, float]] = DEFAULT_BANDS_HZ,
    tolerance: float = 0.03,
    harmonics: int = 2,
) -> VibrationFeatures:
    """Every feature of one burst. Fault bands need ``shaft_hz`` and ``bearing``; each spans
    ``±tolerance`` (relative, for slip and speed error) around the frequency and its harmonics."""
    a = burst.acceleration()
    rate = burst.sample_rate_hz
    centred = a - a.mean()
    rms = float(np.sqrt(np.mean(centred**2)))
    peak = float(np.max(np.abs(centred)))
    m2 = float(np.mean(centred**2))
    kurt = float(np.mean(centred**4) / m2**2) if m2 > 0 else 0.0
    freqs, power = spectrum(a, rate)
    nyquist = rate / 2.0
    lo_iso, hi_iso = ISO_BAND_HZ[0], min(ISO_BAND_HZ[1], nyquist)
    in_iso = (freqs >= lo_iso) & (freqs <= hi_iso) & (freqs > 0)
    velocity_ms = math.sqrt(float(np.sum(power[in_iso] / (2 * np.pi * freqs[in_iso]) ** 2)))
    velocity = velocity_ms * 1000.0
    named = {
        _band_name(lo, hi): band_energy(freqs, power, lo, hi) for lo, hi in bands if lo < nyquist
    }
    fault: dict[str, float] = {}
    known: dict[str, float] = {}
    if shaft_hz is not None and bearing is not None:
        if not math.isfinite(shaft_hz) or shaft_hz <= 0:
            raise InvalidPayload("shaft_hz: must be a positive number")
        known = fault_frequencies(bearing, shaft_hz).as_dict()
        resolution = rate / len(a)
        for name, f0 in known.items():
            total = 0.0
            for h in range(1, harmonics + 1):
                f = f0 * h
                half = max(tolerance * f, resolution * 1.5)
                if f + half <= nyquist:
                    total += band_energy(freqs, power, f - half, f + half)
            fault[name] = total
    return VibrationFeatures(
        rms=rms,
        peak=peak,
        crest_factor=peak / rms if rms > 0 else 0.0,
        kurtosis=kurt,
        velocity_rms_mm_s=velocity,
        iso_zone=iso_zone(velocity, group, foundation),
        bands=named,
        fault_bands=fault,
        fault_frequencies=known,
    )
