"""Alarm history figures: how long alarms waited for acknowledgement and took to clear.

Pure: takes alarms as the API shows them and returns plain numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Durations:
    count: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    max_ms: int


def _quantile(data: Sequence[int], q: float) -> float:
    pos = (len(data) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def durations(values: Iterable[int | None]) -> Durations | None:
    """Count, mean, median, 90th percentile and maximum of the known values (None: none known)."""
    data = sorted(v for v in values if v is not None)
    if not data:
        return None
    return Durations(
        len(data), sum(data) / len(data), _quantile(data, 0.5), _quantile(data, 0.9), data[-1]
    )


def _figures(alarms: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    tta = durations(a["tta_ms"] for a in alarms)
    ttc = durations(a["ttc_ms"] for a in alarms)
    return {
        "count": len(alarms),
        "repeats": sum(int(a["count"]) - 1 for a in alarms),
        "open": sum(1 for a in alarms if a["state"] != "cleared"),
        "unacknowledged": sum(1 for a in alarms if a["acked_ms"] is None),
        "tta_ms": None if tta is None else asdict(tta),
        "ttc_ms": None if ttc is None else asdict(ttc),
    }


def summary(alarms: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Figures for all the alarms, per rule and per machine (most alarms first)."""

    def grouped(key: str) -> list[dict[str, Any]]:
        groups: dict[str, list[Mapping[str, Any]]] = {}
        for a in alarms:
            groups.setdefault(str(a[key]), []).append(a)
        rows = [{key: k, **_figures(v)} for k, v in groups.items()]
        return sorted(rows, key=lambda r: (-r["count"], r[key]))

    return {**_figures(alarms), "by_rule": grouped("rule_id"), "by_machine": grouped("machine_id")}
