"""Energy per unit produced (kWh per metre of cloth, per kg, per part) for each shift or day.

Both energy and production are interval series; each is cut at the caller's edges pro rata, so
hourly energy and per-minute counts combine without resampling by hand. The unit is the
production series' own (``IntervalSeries.unit``): metres, kg, parts.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from karkhana.core.errors import InvalidPayload
from karkhana.energy.model import Intensity, IntervalSeries


def intensity(
    energy: IntervalSeries, produced: IntervalSeries, edges_ms: npt.ArrayLike
) -> list[Intensity]:
    """kWh per unit produced in each ``[edges[i], edges[i+1])``; ``kwh_per_unit`` is None when
    nothing was produced there (a stop, a holiday), not infinity. ``coverage`` is the share of
    the span with energy data: below 1 the figure understates the energy used."""
    edges = np.asarray(edges_ms, np.int64)
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise InvalidPayload("edges must be at least two increasing times")
    kwh = energy.split(edges)
    units = produced.split(edges)
    covered = energy.covered_ms(edges) / np.diff(edges)
    out = []
    for i in range(edges.size - 1):
        u = float(units[i])
        e = float(kwh[i])
        out.append(
            Intensity(
                int(edges[i]),
                int(edges[i + 1]),
                e,
                u,
                produced.unit,
                e / u if u > 1e-12 else None,
                float(covered[i]),
            )
        )
    return out
