"""Overall equipment effectiveness and the six big losses, as pure functions.

Planned production time is the shift calendar's working time in the range, less stops whose
reason is planned (maintenance). Within it:

- availability = run time / planned time. Run time is running time plus micro-stops (stops
  shorter than ``micro_stop_ms``), which are performance losses (small stops), not downtime.
- performance = ideal cycle time x total count / run time (at most 1).
- quality = good count / total count (1 when the machine has no reject count).

Losses: breakdowns (every other unplanned stop, and planned time without any data), setup (stops
whose reason is a setup or changeover), small stops, reduced speed (run time less small stops
less the ideal time of the output), startup rejects (rejects within ``startup_ms`` of production
starting after a real stop or a break) and production rejects. A stop is classified by its whole
length, not the part that falls in the range, so the losses of consecutive ranges add up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from karkhana.production.counts import CountSeries
from karkhana.production.model import STOP_STATES, CountBucket, Interval, Losses, Oee
from karkhana.production.spans import Cover, Span, clip, merge, subtract


@dataclass(frozen=True, slots=True)
class OeeParams:
    micro_stop_ms: int = 120_000
    startup_ms: int = 600_000


def _startups(intervals: Sequence[Interval], planned: Sequence[Span], params: OeeParams) -> Cover:
    """When production (re)starts: after a real stop, and at every planned window's start."""
    starts = [s for s, _ in merge(planned)]
    prev: Interval | None = None
    for iv in intervals:
        if (
            iv.state == "running"
            and prev is not None
            and prev.state in STOP_STATES
            and prev.duration_ms >= params.micro_stop_ms
        ):
            starts.append(iv.start_ms)
        prev = iv
    return Cover((t, t + params.startup_ms) for t in starts)


def compute(
    intervals: Sequence[Interval],
    planned: Sequence[Span],
    counts: Sequence[CountBucket] | CountSeries,
    ideal_cycle_s: float | None,
    start_ms: int,
    end_ms: int,
    *,
    quality_measured: bool,
    params: OeeParams = OeeParams(),
) -> Oee:
    """OEE of one machine over ``[start_ms, end_ms)``.

    ``intervals`` are the machine's stored states in time order, whole (not clipped to the
    range); ``planned`` the calendar's planned windows (also unclipped).
    """
    ordered = sorted(intervals, key=lambda iv: iv.start_ms)
    window = clip(merge(planned), start_ms, end_ms)
    maintenance = [
        (iv.start_ms, iv.end_ms)
        for iv in ordered
        if iv.loss == "planned" and iv.state in STOP_STATES
    ]
    cover = Cover(subtract(window, maintenance))
    planned_ms = cover.length
    running = small = setup = 0
    for iv in ordered:
        inside = cover.overlap(iv.start_ms, iv.end_ms)
        if not inside:
            continue
        if iv.state == "running":
            running += inside
        elif iv.state in STOP_STATES:
            if iv.state != "no_data" and iv.duration_ms < params.micro_stop_ms:
                small += inside
            elif iv.loss == "setup":
                setup += inside
    run_ms = running + small
    breakdowns = max(0, planned_ms - run_ms - setup)

    startups = _startups(ordered, planned, params)
    series = counts if isinstance(counts, CountSeries) else CountSeries.of(counts)
    inside_plan = cover.contains_all(series.minutes)
    total = float(series.totals[inside_plan].sum())
    rejects = float(series.rejects[inside_plan].sum())
    at_startup = inside_plan & startups.contains_all(series.minutes)
    startup_rejects = float(series.rejects[at_startup].sum())
    good = max(0.0, total - rejects)

    ideal_ms = None if ideal_cycle_s is None else ideal_cycle_s * 1000.0 * total
    performance: float | None = None
    reduced = 0
    if ideal_ms is not None:
        performance = min(1.0, ideal_ms / run_ms) if run_ms > 0 else 0.0
        reduced = max(0, round(running - ideal_ms))
    return Oee(
        start_ms=start_ms,
        end_ms=end_ms,
        planned_ms=planned_ms,
        run_ms=run_ms,
        total_count=total,
        good_count=good,
        availability=run_ms / planned_ms if planned_ms > 0 else None,
        performance=performance,
        quality=good / total if total > 0 else 1.0,
        losses=Losses(
            breakdowns_ms=breakdowns,
            setup_ms=setup,
            small_stops_ms=small,
            reduced_speed_ms=reduced,
            startup_rejects=startup_rejects,
            production_rejects=rejects - startup_rejects,
        ),
        quality_measured=quality_measured,
        ideal_ms=ideal_ms,
    )


def combine(results: Sequence[Oee], start_ms: int, end_ms: int) -> Oee:
    """OEE of several machines (a line, a plant) or of consecutive ranges of one machine.

    Time and counts add up; performance is the ideal time of all output over all run time, so it
    is known only when every part has an ideal cycle time.
    """
    planned = sum(r.planned_ms for r in results)
    run = sum(r.run_ms for r in results)
    total = sum(r.total_count for r in results)
    good = sum(r.good_count for r in results)
    ideal: float | None = None
    if results and all(r.ideal_ms is not None for r in results):
        ideal = sum(r.ideal_ms or 0.0 for r in results)
    performance = None
    if ideal is not None:
        performance = min(1.0, ideal / run) if run > 0 else 0.0
    losses = Losses(
        breakdowns_ms=sum(r.losses.breakdowns_ms for r in results),
        setup_ms=sum(r.losses.setup_ms for r in results),
        small_stops_ms=sum(r.losses.small_stops_ms for r in results),
        reduced_speed_ms=sum(r.losses.reduced_speed_ms for r in results),
        startup_rejects=sum(r.losses.startup_rejects for r in results),
        production_rejects=sum(r.losses.production_rejects for r in results),
    )
    return Oee(
        start_ms=start_ms,
        end_ms=end_ms,
        planned_ms=planned,
        run_ms=run,
        total_count=total,
        good_count=good,
        availability=run / planned if planned > 0 else None,
        performance=performance,
        quality=good / total if total > 0 else 1.0,
        losses=losses,
        quality_measured=bool(results) and all(r.quality_measured for r in results),
        ideal_ms=ideal,
    )
