"""Remaining useful life of the machines on the floor.

The maintenance service turns every machine's running data into hourly cycles
(``cycles.py``) and stores them. A machine's failures are its breakdown work orders (the time
it went down and the time it was back); they cut its history into lives. A remaining-life
model per machine template (``rul.py``, kept in the model registry) is trained from the lives
that ended in a failure, on every machine of the template, and scores each machine's current
life after each new cycle: hours left with an interval, written back as telemetry of the
machine's device (``rul_hours``, ``rul_low_hours``, ``rul_high_hours``) so that charts and
alarm rules see it like any other signal.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from karkhana.assets.service import AssetService
from karkhana.core.clock import SYSTEM_CLOCK, Clock
from karkhana.core.errors import InvalidPayload, KarkhanaError, NotFound
from karkhana.core.model import Sample
from karkhana.maintenance.cycles import (
    CYCLE_MS,
    HOUR_MS,
    Cycle,
    Life,
    lives,
    matrix,
    relative_names,
    template_features,
    with_relative,
)
from karkhana.maintenance.features import WindowSpec
from karkhana.maintenance.registry import Manifest, ModelRegistry
from karkhana.store.base import Store
from karkhana.store.database import Database

if TYPE_CHECKING:  # scikit-learn is imported when a model is trained or loaded, not at start
    from karkhana.maintenance.rul import RulModel, Run

log = logging.getLogger(__name__)
RUL_KEY = "rul_hours"
RUL_LOW_KEY = "rul_low_hours"
RUL_HIGH_KEY = "rul_high_hours"
CAP_HOURS = 120.0
"""Remaining life is learnt up to five days: further out a healthy machine looks the same."""
WINDOW = WindowSpec(windows=(3, 6, 12, 24, 48), alphas=(0.1, 0.3), include_age=False)
"""Trailing windows in hours. No age feature: a machine's data may begin long after its last
repair (when karkhana was installed), so its age in cycles is not known."""
HORIZON = 0.9
"""An estimate above this share of the cap reads "more than ..." (no sign of wear yet): near the
cap the model says only that the machine looks like one far from failure."""
MIN_FAILURES = 2


def live_model(seed: int = 0, cap: float = CAP_HOURS) -> RulModel:
    """The remaining-life model for machines on the floor (hourly cycles, no settings)."""
    from karkhana.maintenance.rul import RulModel

    return RulModel(cap=cap, regimes=1, window=WINDOW, bags=3, seed=seed)


def life_run(unit: str, cycles: Sequence[Cycle], signals: Sequence[str], life: Life) -> Run:
    """The model's input for one life: hourly signals beside their values relative to the
    machine's own normal."""
    from karkhana.maintenance.rul import Run

    x = matrix(cycles, signals, life.start_ms, life.end_ms, CYCLE_MS)
    return Run(unit, with_relative(x))


def holdout_metrics(
    make: Callable[[], RulModel],
    runs: Sequence[Run],
    *,
    holdout: float,
    seed: int,
    cap: float,
    min_cycles: int = 10,
    names: tuple[str, str] = ("holdout_units", "holdout_rmse"),
) -> dict[str, float]:
    """Metrics of a model fitted without ``holdout`` of the runs (whole units), scored on those
    cut at random cycles against their capped remaining life; none below five runs. ``names``
    are the keys of the held-out count and RMSE."""
    from karkhana.maintenance.rul import phm08_score, rmse, split_units, truncate

    if holdout <= 0 or len(runs) < 5:
        return {}
    train, held = split_units(runs, holdout, seed)
    cut, true = truncate(held, seed, min_cycles=min_cycles)
    pred = make().fit(train).predict(cut)
    capped = np.minimum(true, cap)
    return {
        names[0]: float(len(held)),
        names[1]: rmse(pred.rul, capped),
        "holdout_phm08_score": phm08_score(pred.rul, capped),
        "holdout_interval_coverage": float(
            np.mean((capped >= pred.lower) & (capped <= pred.upper))
        ),
    }


@dataclass(frozen=True, slots=True)
class TrainedRul:
    model: RulModel
    metrics: dict[str, float]
    data: dict[str, Any]


def fit_lives(
    runs: Sequence[Run], *, seed: int = 0, cap: float = CAP_HOURS, holdout: float = 0.2
) -> TrainedRul:
    """Fit the live model on run-to-failure lives; held-out lives (cut at random hours) give
    the stored metrics when there are five or more."""
    if len(runs) < MIN_FAILURES:
        raise InvalidPayload(
            f"training needs at least {MIN_FAILURES} lives that ended in a failure; "
            f"found {len(runs)}"
        )
    metrics = holdout_metrics(
        lambda: live_model(seed, cap),
        runs,
        holdout=holdout,
        seed=seed,
        cap=cap,
        min_cycles=24,
        names=("holdout_lives", "holdout_rmse_hours"),
    )
    model = live_model(seed, cap).fit(runs)
    metrics["fit_seconds"] = model.fit_seconds
    data = {
        "lives": len(runs),
        "rows": int(sum(len(r) for r in runs)),
        "hours_min": min(len(r) for r in runs),
        "hours_max": max(len(r) for r in runs),
    }
    return TrainedRul(model, metrics, data)


@dataclass(frozen=True, slots=True)
class RulEstimate:
    machine_id: str
    ts: int
    """End of the last cycle scored."""
    hours: float
    lower: float
    upper: float
    coverage: float
    cap: float
    template: str
    version: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "rul": round(self.hours, 1),
            "unit": "h",
            "lower": round(self.lower, 1),
            "upper": round(self.upper, 1),
            "coverage": self.coverage,
            "cap": self.cap,
            "horizon": round(HORIZON * self.cap, 1),
            "beyond_cap": self.hours >= HORIZON * self.cap,
            "ts": self.ts,
            "failure_expected_ms": self.ts + round(self.hours * HOUR_MS),
            "model": f"{self.template} v{self.version}",
            "template": self.template,
            "version": self.version,
        }


class Prognosis:
    """Hourly cycles in the store, lives from breakdown work orders, training and scoring."""

    def __init__(
        self,
        db: Database,
        store: Store,
        assets: AssetService,
        registry: ModelRegistry,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.db = db
        self.store = store
        self.assets = assets
        self.registry = registry
        self.clock = clock
        self._models: dict[str, tuple[Manifest, RulModel] | None] = {}
        self._estimates: dict[str, RulEstimate | None] = {}
        """The latest score of each machine, None when it had none (no model, no data, down):
        the health view asks every 30 s, the answer changes only with a new cycle, a new
        model or a work order (``update`` and ``forget``)."""

    # -- cycles -------------------------------------------------------------------------
    async def save_cycles(self, machine_id: str, cycles: Sequence[Cycle]) -> None:
        """Store completed cycles; a cycle already stored with more rows is kept (after a
        restart the first hour may be seen only in part)."""
        if not cycles:
            return
        rows = [
            (machine_id, c.start_ms, json.dumps(c.means, allow_nan=False), c.rows) for c in cycles
        ]

        def write(conn: sqlite3.Connection) -> None:
            if conn.execute("SELECT 1 FROM machines WHERE id = ?", (machine_id,)).fetchone():
                conn.executemany(
                    "INSERT INTO condition_cycles (machine_id, start_ms, means, rows)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (machine_id, start_ms) DO UPDATE SET"
                    " means = excluded.means, rows = excluded.rows"
                    " WHERE excluded.rows > condition_cycles.rows",
                    rows,
                )

        await self.db.execute_write_fn(write)

    async def cycles(self, machine_id: str, start_ms: int, end_ms: int) -> list[Cycle]:
        def read(conn: sqlite3.Connection) -> list[Cycle]:
            return [
                Cycle(int(r[0]), json.loads(r[1]), int(r[2]))
                for r in conn.execute(
                    "SELECT start_ms, means, rows FROM condition_cycles"
                    " WHERE machine_id = ? AND start_ms >= ? AND start_ms < ? ORDER BY start_ms",
                    (machine_id, start_ms, end_ms),
                )
            ]

        return await self.db.execute_read_fn(read)

    async def _span(self, machine_id: str) -> tuple[int, int] | None:
        row = await self.db.execute_read_fn(
            lambda c: c.execute(
                "SELECT MIN(start_ms), MAX(start_ms) FROM condition_cycles WHERE machine_id = ?",
                (machine_id,),
            ).fetchone()
        )
        if row is None or row[0] is None:
            return None
        return int(row[0]), int(row[1]) + CYCLE_MS

    async def failures(self, machine_id: str) -> list[tuple[int, int | None]]:
        """(went down, back in service) of the machine's breakdown work orders."""
        rows = await self.db.execute_read_fn(
            lambda c: c.execute(
                "SELECT down_start_ms, down_end_ms FROM work_orders WHERE machine_id = ?"
                " AND breakdown = 1 AND down_start_ms IS NOT NULL AND status != 'cancelled'",
                (machine_id,),
            ).fetchall()
        )
        return [(int(a), None if b is None else int(b)) for a, b in rows]

    async def lives(self, machine_id: str, now_ms: int | None = None) -> list[Life]:
        span = await self._span(machine_id)
        if span is None:
            return []
        now = span[1] if now_ms is None else now_ms
        return lives(machine_id, span[0], now, await self.failures(machine_id))

    # -- models -------------------------------------------------------------------------
    def model(self, template: str) -> tuple[Manifest, RulModel] | None:
        """The newest remaining-life model of a template (cached; a newer version is picked
        up), or None."""
        try:
            versions = self.registry.versions(template)
        except InvalidPayload:
            return None
        cached = self._models.get(template)
        for version in reversed(versions):
            if cached is not None and cached[0].version == version:
                return cached
            try:
                manifest = self.registry.manifest(template, version)
                if manifest.kind != "rul":
                    continue
                manifest, model = self.registry.load(template, version)
            except KarkhanaError as exc:
                log.error("remaining-life model %s v%s not usable: %s", template, version, exc)
                continue
            from karkhana.maintenance.rul import RulModel

            if not isinstance(model, RulModel):
                continue
            self._models[template] = (manifest, model)
            return manifest, model
        self._models[template] = None
        return None

    async def train(
        self, template: str, *, seed: int = 0, holdout: float = 0.2, cap: float = CAP_HOURS
    ) -> Manifest:
        """Train the template's next model version from the recorded failures of all its
        machines."""
        self.assets.template(template)  # NotFound for an unknown template
        machines: list[str] = await self.db.execute_read_fn(
            lambda c: [
                r[0]
                for r in c.execute(
                    "SELECT id FROM machines WHERE template = ? ORDER BY id", (template,)
                )
            ]
        )
        signals = self._signals(template)
        runs: list[Run] = []
        for machine_id in machines:
            for life in await self.lives(machine_id):
                if life.failed:
                    cycles = await self.cycles(machine_id, life.start_ms, life.end_ms)
                    runs.append(life_run(f"{machine_id}@{life.end_ms}", cycles, signals, life))
        trained = await asyncio.to_thread(fit_lives, runs, seed=seed, holdout=holdout, cap=cap)
        data = {"source": "recorded failures", "machines": len(machines), **trained.data}
        manifest = await asyncio.to_thread(
            self.registry.save,
            template,
            trained.model,
            metrics=trained.metrics,
            data=data,
            signals=relative_names(signals),
        )
        self._models.pop(template, None)
        return manifest

    def _signals(self, template: str) -> list[str]:
        return list(template_features(self.assets.template(template)))

    # -- scoring ------------------------------------------------------------------------
    async def estimate(self, machine_id: str, now_ms: int | None = None) -> RulEstimate | None:
        """Score the machine's current life with its template's newest model (None: no model,
        no data, or the machine is down)."""
        machine = await self.assets.get_machine(machine_id)
        found = self.model(machine.template)
        if found is None:
            return None
        manifest, model = found
        current = [life for life in await self.lives(machine_id, now_ms) if not life.failed]
        if not current:
            return None
        life = current[-1]
        signals = manifest.signals[: len(manifest.signals) // 2]
        cycles = await self.cycles(machine_id, life.start_ms, life.end_ms)
        if not cycles:
            return None
        run = life_run(machine_id, cycles, signals, life)
        if run.signals.shape[1] != model.n_signals:
            log.error("machine %s: the %s model expects other signals", machine_id, manifest)
            return None
        pred = await asyncio.to_thread(model.predict, [run])
        estimate = RulEstimate(
            machine_id=machine_id,
            ts=life.end_ms,
            hours=float(pred.rul[0]),
            lower=float(pred.lower[0]),
            upper=float(pred.upper[0]),
            coverage=pred.coverage,
            cap=model.cap,
            template=manifest.template,
            version=manifest.version,
        )
        self._estimates[machine_id] = estimate
        return estimate

    async def update(self, machine_id: str, device_id: str) -> RulEstimate | None:
        """Score after new cycles and write the estimate as telemetry of ``device_id``."""
        try:
            estimate = await self.estimate(machine_id)
        except NotFound:
            return None
        if estimate is None:
            self._estimates[machine_id] = None
            return None
        await self.store.write(
            [
                Sample(device_id, RUL_KEY, estimate.ts, round(estimate.hours, 2)),
                Sample(device_id, RUL_LOW_KEY, estimate.ts, round(estimate.lower, 2)),
                Sample(device_id, RUL_HIGH_KEY, estimate.ts, round(estimate.upper, 2)),
            ]
        )
        return estimate

    async def backfill(self, machine_id: str, device_id: str) -> int:
        """Score every hour of the machine's current life as if it had been scored then (after
        a model is first trained), writing the estimates as telemetry; returns how many."""
        machine = await self.assets.get_machine(machine_id)
        found = self.model(machine.template)
        if found is None:
            return 0
        manifest, model = found
        current = [life for life in await self.lives(machine_id) if not life.failed]
        if not current:
            return 0
        life = current[-1]
        signals = manifest.signals[: len(manifest.signals) // 2]
        cycles = await self.cycles(machine_id, life.start_ms, life.end_ms)
        run = life_run(machine_id, cycles, signals, life)
        if not cycles or run.signals.shape[1] != model.n_signals:
            return 0
        from karkhana.maintenance.rul import Run

        prefixes = [Run(f"{machine_id}:{n}", run.signals[:n]) for n in range(1, len(run) + 1)]
        pred = await asyncio.to_thread(model.predict, prefixes)
        samples = []
        for n in range(len(prefixes)):
            ts = life.start_ms + n * CYCLE_MS + CYCLE_MS
            samples += [
                Sample(device_id, RUL_KEY, ts, round(float(pred.rul[n]), 2)),
                Sample(device_id, RUL_LOW_KEY, ts, round(float(pred.lower[n]), 2)),
                Sample(device_id, RUL_HIGH_KEY, ts, round(float(pred.upper[n]), 2)),
            ]
        await self.store.write(samples)
        self.forget(machine_id)
        return len(prefixes)

    async def current(self, machine_id: str) -> dict[str, Any] | None:
        """The latest estimate of a machine, for the health view (scored now if not yet)."""
        if machine_id not in self._estimates:
            try:
                self._estimates[machine_id] = await self.estimate(machine_id)
            except NotFound:
                return None
        estimate = self._estimates[machine_id]
        return None if estimate is None else estimate.as_dict()

    def forget(self, machine_id: str) -> None:
        self._estimates.pop(machine_id, None)
