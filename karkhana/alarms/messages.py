"""Alarm messages in plain English and Urdu from a message catalogue (templates/messages.toml).

Pure: the caller passes the machine, signal, value, limit and time; nothing is read but the
catalogue file.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from karkhana.core.errors import ConfigError
from karkhana.core.model import Value

Language = Literal["en", "ur"]
LANGUAGES: tuple[Language, ...] = ("en", "ur")
CATALOGUE = Path(__file__).resolve().parent / "templates" / "messages.toml"
KINDS = (
    "above",
    "below",
    "rate",
    "deviation",
    "stale",
    "state",
    "state_now",
    "escalated",
    "cleared",
)
_TRAILING_NUMBER = re.compile(r"(\d+)\s*$")


@dataclass(frozen=True, slots=True)
class Catalogue:
    messages: Mapping[str, Mapping[str, str]]
    units: Mapping[str, Mapping[str, str]]
    states: Mapping[str, str]
    machines: Mapping[str, str]
    signals: Mapping[str, tuple[str, str]]


def load_catalogue(path: Path = CATALOGUE) -> Catalogue:
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
        messages: dict[str, dict[str, str]] = {
            lang: dict(data[lang]["messages"]) for lang in LANGUAGES
        }
        units: dict[str, dict[str, str]] = {
            lang: dict(data[lang].get("units", {})) for lang in LANGUAGES
        }
        ur = data["ur"]
        signals = {k: (str(v[0]), str(v[1])) for k, v in ur.get("signals", {}).items()}
        for lang in LANGUAGES:
            missing = [k for k in KINDS if k not in messages[lang]]
            if missing:
                raise ConfigError(f"{path}: {lang}.messages lacks {', '.join(missing)}")
        return Catalogue(
            messages, units, dict(ur.get("states", {})), dict(ur.get("machines", {})), signals
        )
    except (OSError, tomllib.TOMLDecodeError, KeyError, IndexError, TypeError) as exc:
        raise ConfigError(f"{path}: not a usable message catalogue: {exc}") from None


@cache
def default_catalogue() -> Catalogue:
    return load_catalogue()


def number(x: float) -> str:
    """A value as people read it: 72, 72.5, 0.85, 1234."""
    if abs(x) >= 1000:
        return f"{x:.0f}"
    return f"{x:.2f}".rstrip("0").rstrip(".")


@dataclass(frozen=True, slots=True)
class Subject:
    """What a message is about."""

    machine_name: str
    template: str | None
    signal: str
    signal_name: str
    """English name of the signal (from the machine template)."""


def _with_unit(cat: Catalogue, lang: Language, value: float, unit: str | None) -> str:
    if not unit:
        return number(value)
    return f"{number(value)} {cat.units[lang].get(unit, unit)}"


def render(
    cat: Catalogue,
    lang: Language,
    kind: str,
    subject: Subject,
    value: Value | None,
    limit: float | None,
    unit: str | None,
    ts_ms: int,
    timezone: str = "Asia/Karachi",
) -> str:
    """One message of ``kind`` (above, below, rate, deviation, stale, state) in ``lang``."""
    time = clock_time(ts_ms, timezone)
    if kind == "stale" and isinstance(value, int | float) and value >= 120:
        value, limit, unit = value / 60, None if limit is None else limit / 60, "min"
    if kind == "state" and not limit:
        kind = "state_now"
    if isinstance(value, bool | str):
        shown = str(value).lower()
    elif value is None:
        shown = "-"
    else:
        shown = _with_unit(cat, lang, float(value), unit)
    state = shown
    if lang == "ur":
        state = cat.states.get(shown, shown)
        machine = subject.machine_name
        noun = cat.machines.get(subject.template or "")
        found = _TRAILING_NUMBER.search(subject.machine_name)
        if noun and found:
            machine = f"{noun} {found.group(1)}"
        of, signal = cat.signals.get(subject.signal, ("کا", subject.signal_name))
    else:
        machine, of = subject.machine_name, ""
        signal = subject.signal_name[:1].lower() + subject.signal_name[1:]
    text = cat.messages[lang][kind].format(
        machine=machine,
        signal=signal,
        of=of,
        value=shown,
        state=state,
        limit="-" if limit is None else _with_unit(cat, lang, limit, unit),
        time=time,
    )
    return " ".join(text.split())


def wrap(
    cat: Catalogue, lang: Language, kind: str, text: str, minutes: int = 0, time: str = ""
) -> str:
    """An escalation or all-clear around an alarm's message."""
    return cat.messages[lang][kind].format(text=text, minutes=minutes, time=time)


def clock_time(ts_ms: int, timezone: str) -> str:
    """HH:MM of an instant in a time zone."""
    return datetime.fromtimestamp(ts_ms / 1000, ZoneInfo(timezone)).strftime("%H:%M")
