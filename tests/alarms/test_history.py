from __future__ import annotations

from typing import Any

from karkhana.alarms.history import Durations, durations, summary


def alarm(
    rule: str, machine: str, tta: int | None, ttc: int | None, count: int = 1
) -> dict[str, Any]:
    return {
        "rule_id": rule,
        "machine_id": machine,
        "tta_ms": tta,
        "ttc_ms": ttc,
        "acked_ms": None if tta is None else 1000 + tta,
        "state": "cleared" if ttc is not None else "raised",
        "count": count,
    }


def test_durations_by_hand() -> None:
    assert durations([None, None]) is None
    assert durations([4000, None, 1000, 2000, 3000]) == Durations(4, 2500.0, 2500.0, 3700.0, 4000)


def test_summary_overall_per_rule_and_per_machine() -> None:
    alarms = [
        alarm("hot", "L1", 60_000, 120_000, count=3),
        alarm("hot", "L2", None, None),
        alarm("stale", "L1", 30_000, None),
    ]
    got = summary(alarms)
    assert (got["count"], got["repeats"], got["open"], got["unacknowledged"]) == (3, 2, 2, 1)
    assert got["tta_ms"]["p50_ms"] == 45_000 and got["ttc_ms"]["count"] == 1
    assert [(r["rule_id"], r["count"]) for r in got["by_rule"]] == [("hot", 2), ("stale", 1)]
    assert [(r["machine_id"], r["count"]) for r in got["by_machine"]] == [("L1", 2), ("L2", 1)]
    assert got["by_machine"][1]["tta_ms"] is None
