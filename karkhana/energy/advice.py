"""Recommendations that save money, each with its monthly PKR saving and the evidence behind it.

Every recommendation keeps the figures it was computed from (measured ones first, then the
rates given, then the results) and the data it rests on (which signal, which span, which hours),
so that a reader can redo the arithmetic. The wording lives in :data:`TEMPLATES`, in English and
Urdu, with named placeholders filled from those same figures.

Rates are parameters (PKR per kWh, PKR per kW of maximum demand per month): this module knows no
tariff. Observed figures are scaled to a month of ``days_per_month`` days.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, get_args
from zoneinfo import ZoneInfo

from karkhana.core.errors import ConfigError
from karkhana.energy.waste import (
    AirLeakEvidence,
    AirLeakFit,
    IdleEnergy,
    MonthDemand,
    WindowEnergy,
)

DAY_MS = 86_400_000

Lang = Literal["en", "ur"]
LANGS: tuple[str, ...] = get_args(Lang)
AdviceKind = Literal[
    "shift_off_peak",
    "stagger_startups",
    "fix_air_leak",
    "fix_air_leak_running",
    "switch_off_idle",
]

TEMPLATES: dict[str, dict[str, tuple[str, str]]] = {
    "shift_off_peak": {
        "en": (
            "Run {subject} off-peak",
            "{subject} used {peak_kwh} kWh in the peak hours ({hours}) over {observed_days} "
            "days ({monthly_kwh} kWh a month). Run it off-peak: {monthly_kwh} kWh x "
            "({peak_rate} - {off_peak_rate}) PKR/kWh = {saving} PKR a month.",
        ),
        "ur": (
            "{subject} کو پیک اوقات کے بعد چلائیں",
            "{subject} نے {observed_days} دن میں پیک اوقات ({hours}) میں {peak_kwh} kWh بجلی "
            "استعمال کی "
            "(مہینے میں {monthly_kwh} kWh)۔ اسے آف پیک اوقات میں چلائیں: {monthly_kwh} kWh x "  # noqa: RUF001
            "({peak_rate} - {off_peak_rate}) روپے فی kWh = ماہانہ {saving} روپے کی بچت۔",  # noqa: RUF001
        ),
    },
    "stagger_startups": {
        "en": (
            "Stagger start-ups to cut the maximum demand",
            "The maximum demand of {month} was {max_kw} kW in the half hour from {time}; "
            "machines starting then: {machines}. Starting them one after another to keep the "
            "demand near {target_kw} kW (the {percentile}th percentile of the month's half "
            "hours) cuts {reduction_kw} kW: {reduction_kw} kW x {mdi_rate} PKR/kW = "
            "{saving} PKR a month.",
        ),
        "ur": (
            "زیادہ سے زیادہ ڈیمانڈ کم کرنے کے لیے مشینیں باری باری چالو کریں",
            "{month} میں زیادہ سے زیادہ ڈیمانڈ {max_kw} kW تھی، {time} سے شروع ہونے والے آدھے "
            "گھنٹے میں؛ اس وقت چالو ہونے والی مشینیں: {machines}۔ انہیں ایک ایک کر کے چالو کریں "  # noqa: RUF001
            "تاکہ ڈیمانڈ {target_kw} kW کے قریب رہے (مہینے کے آدھے گھنٹوں کا {percentile}واں "
            "پرسنٹائل)، اس سے {reduction_kw} kW کمی ہو گی: {reduction_kw} kW x {mdi_rate} روپے "
            "فی kW = ماہانہ {saving} روپے کی بچت۔",  # noqa: RUF001
        ),
    },
    "fix_air_leak": {
        "en": (
            "Fix the compressed-air leaks on {subject}",
            "With production stopped, {subject} ran {running_hours} h and was loaded "
            "{loaded_pct} % of that time (limit {threshold_pct} %): nothing used the air, so "
            "leaks did. The leaks cost {leak_kw} kW ({flow}). A leak runs all month: "
            "{leak_kw} kW x {hours_per_month} h = {monthly_kwh} kWh x {rate} PKR/kWh = "
            "{saving} PKR a month.",
        ),
        "ur": (
            "{subject} پر کمپریسڈ ہوا کی لیکیج ٹھیک کریں",
            "پیداوار بند ہونے کے دوران {subject} {running_hours} گھنٹے چلا اور اس میں سے "
            "{loaded_pct} % وقت لوڈ پر رہا (حد {threshold_pct} %): ہوا کوئی استعمال نہیں کر "
            "رہا تھا، یہ لیکیج میں گئی۔ لیکیج پر {leak_kw} kW خرچ ہو رہے ہیں ({flow})۔ لیکیج "  # noqa: RUF001
            "پورا مہینہ چلتی ہے: {leak_kw} kW x {hours_per_month} گھنٹے = {monthly_kwh} kWh x "
            "{rate} روپے فی kWh = ماہانہ {saving} روپے کی بچت۔",  # noqa: RUF001
        ),
    },
    "fix_air_leak_running": {
        "en": (
            "Fix the compressed-air leaks on {subject}",
            "While production ran, {subject} {delivered} with no machine running: the line "
            "through {points} spans of {bucket_min} minutes, its {measure} against the machines "
            "running ({users_min} to {users_max}), R² {r2}. Less {own_use} {unit} {own_use_is}, "
            "{leak} {unit} is air nobody uses: leaks costing {leak_kw} kW. A leak runs all "
            "month: {leak_kw} kW x {hours_per_month} h = {monthly_kwh} kWh x {rate} PKR/kWh = "
            "{saving} PKR a month.",
        ),
        "ur": (
            "{subject} پر کمپریسڈ ہوا کی لیکیج ٹھیک کریں",
            "پیداوار چلتے ہوئے، کوئی مشین نہ چلنے پر {subject} {delivered}: {bucket_min} منٹ "
            "کے {points} حصوں میں اس کا {measure} چلتی مشینوں ({users_min} سے {users_max}) کے "
            "مقابلے میں سیدھی لکیر پر، R² {r2}۔ اس میں سے {own_use} {unit} {own_use_is} نکال "  # noqa: RUF001
            "کر {leak} {unit} ہوا کوئی استعمال نہیں کرتا: لیکیج پر {leak_kw} kW خرچ ہو رہے "
            "ہیں۔ لیکیج پورا مہینہ چلتی ہے: {leak_kw} kW x {hours_per_month} گھنٹے = "  # noqa: RUF001
            "{monthly_kwh} kWh x {rate} روپے فی kWh = ماہانہ {saving} روپے کی بچت۔",  # noqa: RUF001
        ),
    },
    "switch_off_idle": {
        "en": (
            "Switch off {subject} in stops of {min_stop} minutes or more",
            "{subject} drew {idle_kwh} kWh while idle or stopped for {min_stop} minutes or "
            "more: {idle_hours} h in {observed_days} days, {mean_kw} kW on average, of which "
            "{keep_kw} kW must stay on. Switching the rest off saves {monthly_kwh} kWh a month "
            "x {rate} PKR/kWh = {saving} PKR a month.",
        ),
        "ur": (
            "{subject} کو {min_stop} منٹ یا زیادہ رکنے پر بند کر دیں",
            "{subject} نے {min_stop} منٹ یا زیادہ رکے یا فارغ رہتے ہوئے {idle_kwh} kWh بجلی "
            "لی: {observed_days} دن "
            "میں {idle_hours} گھنٹے، اوسطاً {mean_kw} kW، جس میں سے {keep_kw} kW چالو رہنا "
            "ضروری ہے۔ باقی بند کرنے سے ماہانہ {monthly_kwh} kWh x {rate} روپے فی kWh = "  # noqa: RUF001
            "ماہانہ {saving} روپے کی بچت۔",  # noqa: RUF001
        ),
    },
}
"""Title and body per recommendation and language; placeholders are figure keys and labels."""

PHRASES: dict[str, dict[str, str]] = {
    "flow_measured": {
        "en": "about {leak_flow} m³/min of air lost",
        "ur": "اندازاً {leak_flow} m³/min ہوا ضائع",
    },
    "flow_unmeasured": {"en": "air flow not measured", "ur": "ہوا کا بہاؤ ناپا نہیں گیا"},
    "delivered_m3/min": {
        "en": "delivered {intercept} m³/min",
        "ur": "نے {intercept} m³/min ہوا دی",
    },
    "delivered_kW": {"en": "drew {intercept} kW", "ur": "نے {intercept} kW بجلی لی"},
    "measure_m3/min": {"en": "air flow", "ur": "ہوا کا بہاؤ"},
    "measure_kW": {"en": "power", "ur": "بجلی"},
    "own_use_m3/min": {"en": "that it uses itself", "ur": "جو یہ خود استعمال کرتا ہے"},
    "own_use_kW": {
        "en": "that it draws anyway (running unloaded, its own use)",
        "ur": "جو یہ ویسے بھی لیتا ہے (بغیر لوڈ چلنا، اپنا استعمال)",
    },
    "none_recorded": {"en": "none recorded", "ur": "کوئی درج نہیں"},
    "list_separator": {"en": ", ", "ur": "، "},
}


@dataclass(frozen=True, slots=True)
class Figure:
    """One number of a recommendation: measured, given (a rate) or computed."""

    key: str
    value: float
    unit: str


@dataclass(frozen=True, slots=True)
class Evidence:
    """The data a recommendation rests on: which signal, over which span, which hours counted."""

    source: str
    start_ms: int
    end_ms: int
    windows: tuple[tuple[int, int], ...] = ()
    note: str = ""

    @property
    def days(self) -> float:
        return (self.end_ms - self.start_ms) / DAY_MS


@dataclass(frozen=True, slots=True)
class Advice:
    """One recommendation: what to do, what it saves a month, and how that was worked out."""

    kind: AdviceKind
    subject: str
    saving_pkr_month: float
    figures: tuple[Figure, ...]
    evidence: Evidence
    labels: tuple[tuple[str, str], ...] = ()
    """Words in the text that are not figures (month, time); machines go in ``names``."""
    names: tuple[str, ...] = ()

    def figure(self, key: str) -> float:
        for f in self.figures:
            if f.key == key:
                return f.value
        raise KeyError(key)

    def _values(self, lang: Lang) -> dict[str, str]:
        values = {f.key: _fmt(f.value, f.unit) for f in self.figures}
        values.update(self.labels)
        values["subject"] = self.subject
        values["saving"] = _fmt(self.saving_pkr_month, "PKR")
        sep = PHRASES["list_separator"][lang]
        values["machines"] = sep.join(self.names) or PHRASES["none_recorded"][lang]
        if self.kind == "fix_air_leak":
            key = "flow_measured" if "leak_flow" in values else "flow_unmeasured"
            values["flow"] = PHRASES[key][lang].format(**values)
        if self.kind == "fix_air_leak_running":
            unit = "kW" if values["unit"] == "kW" else "m3/min"
            for phrase in ("delivered", "measure", "own_use_is"):
                key = f"{'own_use' if phrase == 'own_use_is' else phrase}_{unit}"
                values[phrase] = PHRASES[key][lang].format(**values)
        return values

    def title(self, lang: Lang = "en") -> str:
        return TEMPLATES[self.kind][_lang(lang)][0].format(**self._values(lang))

    def text(self, lang: Lang = "en") -> str:
        return TEMPLATES[self.kind][_lang(lang)][1].format(**self._values(lang))


def _lang(lang: str) -> str:
    if lang not in LANGS:
        raise ConfigError(f"unknown language {lang!r} (expected {', '.join(LANGS)})")
    return lang


def _fmt(value: float, unit: str) -> str:
    if unit == "PKR":
        return f"{value:,.0f}"
    if unit in ("PKR/kWh", "PKR/kW"):
        return f"{value:,.2f}"
    if unit == "kWh":
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.1f}"
    if unit in ("h", "days"):
        return f"{value:,.1f}".removesuffix(".0")
    if unit in ("kW", "%"):
        return f"{value:,.1f}"
    if unit in ("m3/min", "R2", "kW/(m3/min)"):
        return f"{value:,.2f}"
    if unit == "machines":
        return f"{value:,.1f}".removesuffix(".0")
    return f"{value:g}"


def _month_scale(evidence: Evidence, days_per_month: float) -> float:
    if evidence.end_ms <= evidence.start_ms:
        raise ConfigError("the evidence must cover a span of time to scale it to a month")
    if days_per_month <= 0:
        raise ConfigError("days_per_month must be positive")
    return days_per_month / evidence.days


def _rate(value: float, name: str) -> float:
    if value < 0:
        raise ConfigError(f"{name} must not be negative")
    return value


def shift_off_peak(
    subject: str,
    peak: WindowEnergy,
    *,
    peak_rate: float,
    off_peak_rate: float,
    evidence: Evidence,
    hours: str = "",
    days_per_month: float = 30.0,
) -> Advice:
    """Move a flexible load out of the peak-tariff hours: peak kWh a month x (peak - off-peak).

    ``peak`` is the load's energy in the peak windows over ``evidence``'s span; ``hours`` names
    those windows in local time (``"17:00-21:00"``).
    """
    _rate(peak_rate, "peak_rate")
    _rate(off_peak_rate, "off_peak_rate")
    scale = _month_scale(evidence, days_per_month)
    monthly = peak.kwh * scale
    saving = monthly * (peak_rate - off_peak_rate)
    return Advice(
        kind="shift_off_peak",
        subject=subject,
        saving_pkr_month=max(0.0, saving),
        figures=(
            Figure("peak_kwh", peak.kwh, "kWh"),
            Figure("observed_days", evidence.days, "days"),
            Figure("peak_hours", peak.window_ms / 3_600_000, "h"),
            Figure("days_per_month", days_per_month, "days"),
            Figure("peak_rate", peak_rate, "PKR/kWh"),
            Figure("off_peak_rate", off_peak_rate, "PKR/kWh"),
            Figure("monthly_kwh", monthly, "kWh"),
        ),
        evidence=evidence,
        labels=(("hours", hours or "-"),),
    )


def stagger_startups(
    month: MonthDemand,
    *,
    mdi_rate: float,
    evidence: Evidence,
    starting: Sequence[str] = (),
    subject: str = "plant",
    tz: str = "Asia/Karachi",
) -> Advice:
    """Cut the month's maximum demand to the level of its ``percentile`` half-hour by starting
    machines one after another: (max - that level) kW x the MDI rate (PKR per kW a month).

    ``starting``: the machines that started in the maximum's half hour (a peak event's
    ``starting``).
    """
    _rate(mdi_rate, "mdi_rate")
    reduction = max(0.0, month.max_kw - month.percentile_kw)
    when = datetime.fromtimestamp(month.max_start_ms / 1000, UTC).astimezone(ZoneInfo(tz))
    return Advice(
        kind="stagger_startups",
        subject=subject,
        saving_pkr_month=reduction * mdi_rate,
        figures=(
            Figure("max_kw", month.max_kw, "kW"),
            Figure("percentile", month.percentile, ""),
            Figure("target_kw", month.percentile_kw, "kW"),
            Figure("mdi_rate", mdi_rate, "PKR/kW"),
            Figure("reduction_kw", reduction, "kW"),
        ),
        evidence=evidence,
        labels=(("month", month.month), ("time", when.strftime("%Y-%m-%d %H:%M"))),
        names=tuple(starting),
    )


def fix_air_leak(
    subject: str,
    leak: AirLeakEvidence,
    *,
    rate: float,
    evidence: Evidence,
    hours_per_month: float = 720.0,
) -> Advice | None:
    """Fix the leaks a compressor feeds: leak kW x the hours of a month x the energy rate.

    None unless the leak signature was flagged.
    """
    _rate(rate, "rate")
    if not leak.flagged:
        return None
    monthly = leak.leak_kw * hours_per_month
    figures = [
        Figure("running_hours", leak.running_hours, "h"),
        Figure("loaded_pct", leak.loaded_share * 100.0, "%"),
        Figure("threshold_pct", leak.threshold_share * 100.0, "%"),
        Figure("excess_kwh", leak.excess_kwh, "kWh"),
        Figure("leak_kw", leak.leak_kw, "kW"),
    ]
    if leak.leak_flow_m3_min is not None:
        figures.append(Figure("leak_flow", leak.leak_flow_m3_min, "m3/min"))
    figures += [
        Figure("hours_per_month", hours_per_month, "h"),
        Figure("rate", rate, "PKR/kWh"),
        Figure("monthly_kwh", monthly, "kWh"),
    ]
    return Advice(
        kind="fix_air_leak",
        subject=subject,
        saving_pkr_month=monthly * rate,
        figures=tuple(figures),
        evidence=evidence,
    )


def fix_air_leak_running(
    subject: str,
    fit: AirLeakFit,
    *,
    rate: float,
    evidence: Evidence,
    hours_per_month: float = 720.0,
) -> Advice | None:
    """Fix the leaks found while production runs (:func:`~karkhana.energy.waste.air_leak_in_production`):
    leak kW x the hours of a month x the energy rate. None unless the fit flagged a leak."""
    _rate(rate, "rate")
    if not fit.flagged or fit.leak_kw is None:
        return None
    monthly = fit.leak_kw * hours_per_month
    unit = fit.unit
    figures = [
        Figure("points", fit.points, ""),
        Figure("bucket_min", fit.bucket_ms / 60_000, ""),
        Figure("users_min", fit.users_min, "machines"),
        Figure("users_max", fit.users_max, "machines"),
        Figure("r2", fit.r2, "R2"),
        Figure("intercept", fit.intercept, unit),
        Figure("intercept_se", fit.intercept_se, unit),
        Figure("own_use", fit.own_use, unit),
        Figure("leak", fit.leak, unit),
    ]
    if fit.kw_per_m3_min is not None:
        figures.append(Figure("kw_per_m3_min", fit.kw_per_m3_min, "kW/(m3/min)"))
    figures += [
        Figure("leak_kw", fit.leak_kw, "kW"),
        Figure("hours_per_month", hours_per_month, "h"),
        Figure("rate", rate, "PKR/kWh"),
        Figure("monthly_kwh", monthly, "kWh"),
    ]
    return Advice(
        kind="fix_air_leak_running",
        subject=subject,
        saving_pkr_month=monthly * rate,
        figures=tuple(figures),
        evidence=evidence,
        labels=(("unit", "m³/min" if unit == "m3/min" else unit),),
    )


def switch_off_idle(
    subject: str,
    idle: IdleEnergy,
    *,
    rate: float,
    evidence: Evidence,
    keep_kw: float = 0.0,
    days_per_month: float = 30.0,
    min_stop_min: float = 0.0,
) -> Advice:
    """Switch a machine off when it stops: idle kWh (less ``keep_kw`` that must stay on,
    controls and heaters) scaled to a month x the energy rate. ``idle`` should hold only the
    stops of ``min_stop_min`` minutes or more (a weaver mends a broken end in a minute or two
    with the loom on; a stop worth switching off for is a long one)."""
    _rate(rate, "rate")
    if keep_kw < 0:
        raise ConfigError("keep_kw must not be negative")
    scale = _month_scale(evidence, days_per_month)
    avoidable = max(0.0, idle.kwh - keep_kw * idle.hours)
    monthly = avoidable * scale
    return Advice(
        kind="switch_off_idle",
        subject=subject,
        saving_pkr_month=monthly * rate,
        figures=(
            Figure("idle_kwh", idle.kwh, "kWh"),
            Figure("idle_hours", idle.hours, "h"),
            Figure("min_stop", min_stop_min, "min"),
            Figure("observed_days", evidence.days, "days"),
            Figure("mean_kw", idle.mean_kw, "kW"),
            Figure("keep_kw", keep_kw, "kW"),
            Figure("avoidable_kwh", avoidable, "kWh"),
            Figure("days_per_month", days_per_month, "days"),
            Figure("rate", rate, "PKR/kWh"),
            Figure("monthly_kwh", monthly, "kWh"),
        ),
        evidence=evidence,
    )


def rank(advice: Iterable[Advice | None], *, min_saving_pkr: float = 0.0) -> list[Advice]:
    """Recommendations worth more than ``min_saving_pkr`` a month, largest saving first."""
    kept = [a for a in advice if a is not None and a.saving_pkr_month > min_saving_pkr]
    return sorted(kept, key=lambda a: (-a.saving_pkr_month, a.kind, a.subject))
