"""Outage labels and the Pareto of downtime."""

from __future__ import annotations

from karkhana.production.downtime import Label, pareto, starts_in_outage


def test_a_stop_just_before_the_outage_report_is_still_the_outage() -> None:
    outages = [(1000, 5000)]
    assert starts_in_outage(1000, outages, 60)
    assert starts_in_outage(950, outages, 60)  # the loom reported its stop first
    assert not starts_in_outage(900, outages, 60)
    assert not starts_in_outage(5000, outages, 60)


def test_pareto_sums_and_sorts_longest_first() -> None:
    labels = {"a": Label("A", "اے")}
    items = pareto([("a", 10), ("b", 30), ("a", 25), ("c", 0)], labels)
    assert [(i.key, i.duration_ms, i.count) for i in items] == [("a", 35, 2), ("b", 30, 1)]
    assert items[0].label.ur == "اے" and items[1].label == Label("b", "b")
