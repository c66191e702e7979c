"""Maintenance service: condition monitoring of every machine, work orders, preventive
schedules and MTBF/MTTR, read and written through the store.

The monitor runs in the server: every ``interval_s`` it reads each machine's new samples, joins
its signals by time (the latest value of each, if fresh), learns the machine's normal running
behaviour from its first ``learn_ms`` of running data and then scores it. The health index is
written back as telemetry of the machine's device (``health_index``, ``health_alarm`` and
``run_hours``), so charts, rules and alarms use it like any other signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from itertools import groupby
from typing import Any

from karkhana.assets.model import Machine
from karkhana.assets.service import AssetService
from karkhana.assets.template import MachineTemplate
from karkhana.core.clock import SYSTEM_CLOCK, Clock
from karkhana.core.errors import InvalidPayload, KarkhanaError, NotFound
from karkhana.core.model import Point, Sample, Value
from karkhana.maintenance.cycles import Cycle, CycleBuilder, operating_state
from karkhana.maintenance.detector import Detector, MahalanobisDetector
from karkhana.maintenance.health import (
    DAY_MS,
    ConditionMonitor,
    HealthTracker,
    HealthUpdate,
    days_until,
    trend_per_day,
)
from karkhana.maintenance.model import (
    OPEN_STATUSES,
    Contribution,
    Due,
    Part,
    Priority,
    Reliability,
    Schedule,
    ScheduleBasis,
    WorkOrder,
    WorkOrderKind,
    WorkOrderSource,
    WorkOrderStatus,
)
from karkhana.maintenance.prognosis import Prognosis, RulEstimate
from karkhana.maintenance.registry import Manifest
from karkhana.maintenance.workorders import HOUR_MS, check_transition, due, reliability
from karkhana.security.audit import AuditLog
from karkhana.store.base import Store
from karkhana.store.database import Database

log = logging.getLogger(__name__)
MINUTE_MS = 60_000
SYSTEM_ACTOR = "karkhana"
HEALTH_KEY = "health_index"
ALARM_KEY = "health_alarm"
RUN_HOURS_KEY = "run_hours"
FAR_FUTURE_MS = 2**62
READ_LIMIT = 50_000
LEARN_MS = DAY_MS
"""Normal behaviour is learned from a machine's first day of running data (a daily cycle)."""
HEALTH_TAU_MS = 15 * MINUTE_MS
"""Time constant of the smoothing of anomaly scores into the health index."""
RUL_ORDER_HOURS = 48.0
"""A predictive work order is raised when the predicted remaining life falls below two days."""
CONFIRM_MS = HOUR_MS
"""The health index must stay below the alarm level this long before the alarm is raised."""

RulSource = Callable[[str], Awaitable[dict[str, Any] | None]]
"""Remaining useful life of a machine from a trained model, or None when there is none."""

_SITE_OF_MACHINE = (
    "SELECT a.site_id FROM machines m JOIN lines l ON l.id = m.line_id"
    " JOIN areas a ON a.id = l.area_id WHERE m.id = ?"
)
_WO_COLUMNS = (
    "id, machine_id, title, kind, source, priority, status, created_ms, updated_ms, source_ref,"
    " assignee, parts, notes, breakdown, down_start_ms, down_end_ms, started_ms, completed_ms,"
    " schedule_id"
)
_SCHEDULE_COLUMNS = (
    "id, machine_id, title, basis, interval, created_ms, last_done_ms, last_done_meter, signal,"
    " lead, active"
)


# -- pure helpers -------------------------------------------------------------------------
UNMONITORED_CATEGORIES = frozenset({"energy", "environment"})
"""Meters, power sources and room sensors measure the plant, not a machine's condition."""


def feature_signals(template: MachineTemplate, machine: Machine) -> tuple[str, ...]:
    """The numeric (not counter, flag or text) signals of a machine the detector watches; none
    for templates without operating states (the monitor needs to know when it runs) and for
    meters and sensors."""
    if not template.state_rules or template.category in UNMONITORED_CATEGORIES:
        return ()
    bound = {s.name for s in machine.signals}
    return tuple(s.key for s in template.signals if s.kind == "number" and s.key in bound)


def warm_up_ms(template: MachineTemplate) -> int | None:
    """The template's warm-up time after a long stop, for ``ConditionMonitor``."""
    return None if template.warm_up_min is None else round(template.warm_up_min * MINUTE_MS)


def align(
    series: Mapping[str, Sequence[Point]],
    current: dict[str, tuple[int, Value]],
    stale_ms: int,
) -> tuple[list[tuple[int, dict[str, Value | None]]], int | None]:
    """As-of join of several signals: one row per distinct timestamp with the latest value of
    each signal (None when older than ``stale_ms``).

    Rows go only up to the watermark, the oldest newest-timestamp of the signals still
    reporting, so a signal that arrives late is not missed; ``current`` carries the latest
    values from one call to the next. Returns the rows and the watermark.
    """
    lasts = {k: pts[-1].ts for k, pts in series.items() if pts}
    if not lasts:
        return [], None
    newest = max(lasts.values())
    watermark = min(t for t in lasts.values() if t >= newest - stale_ms)
    events = sorted(
        ((p.ts, k, p.value) for k, pts in series.items() for p in pts if p.ts <= watermark),
        key=lambda e: e[0],
    )
    rows: list[tuple[int, dict[str, Value | None]]] = []
    for ts, group in groupby(events, key=lambda e: e[0]):
        for _, key, value in group:
            if value is not None:
                current[key] = (ts, value)
        rows.append((ts, {k: (v if ts - t <= stale_ms else None) for k, (t, v) in current.items()}))
    return rows, watermark


def _number(value: Value | None) -> float | None:
    if value is None or isinstance(value, str):
        return None
    return float(value)


# -- per-machine monitoring state --------------------------------------------------------
@dataclass(slots=True)
class _Watch:
    machine_id: str
    device_id: str
    monitor: ConditionMonitor
    last_ts: int = 0
    run_ms: int = 0
    current: dict[str, tuple[int, Value]] = field(default_factory=dict)
    last_row_ts: int | None = None
    last_running: bool = False
    saved_ms: int = 0
    saved_learned: bool = False
    raised: HealthUpdate | None = None
    dirty: bool = False
    cycles: CycleBuilder | None = None
    completed: list[Cycle] = field(default_factory=list)
    """Hourly cycles completed since they were last stored."""


@dataclass(frozen=True, slots=True)
class HealthStatus:
    """What the API shows about a machine's condition."""

    machine_id: str
    status: str
    """``learning`` (normal behaviour not learned yet), ``ok``, ``alarm``, ``no_data`` or
    ``not_monitored`` (meters, sensors, templates without operating states)."""
    index: float | None
    score: float | None
    ts: int | None
    trend_per_day: float | None
    days_to_alarm: float | None
    alarm: bool
    learning_progress: float
    contributions: tuple[Contribution, ...]
    signals: tuple[str, ...]
    run_hours: float | None
    rul: dict[str, Any] | None = None
    settling: bool = False
    """Back from a stop and not judged until its signals are at their running level again
    (a bearing or a barrel warming up); the index is the one from before the stop."""


class MaintenanceService:
    def __init__(
        self,
        db: Database,
        store: Store,
        assets: AssetService,
        clock: Clock = SYSTEM_CLOCK,
        audit: AuditLog | None = None,
        *,
        interval_s: float = 60.0,
        learn_ms: int = LEARN_MS,
        stale_ms: int = 10 * MINUTE_MS,
        detector: Callable[[Sequence[str]], Detector] | None = None,
        health_tau_ms: int = HEALTH_TAU_MS,
        confirm_ms: int = CONFIRM_MS,
        save_every_ms: int = 15 * MINUTE_MS,
        work_orders_on_alarm: bool = True,
        prognosis: Prognosis | None = None,
    ) -> None:
        self.db = db
        self.store = store
        self.assets = assets
        self.clock = clock
        self.audit = audit
        self.interval_s = interval_s
        self.learn_ms = learn_ms
        self.stale_ms = stale_ms
        self.make_detector = detector or (lambda signals: MahalanobisDetector(signals))
        self.health_tau_ms = health_tau_ms
        self.confirm_ms = confirm_ms
        self.save_every_ms = save_every_ms
        self.work_orders_on_alarm = work_orders_on_alarm
        self.prognosis = prognosis
        self.rul_source: RulSource | None = prognosis.current if prognosis is not None else None
        self._watches: dict[str, _Watch] = {}
        self._lock = asyncio.Lock()

    # -- the monitoring loop -----------------------------------------------------------
    async def run(self) -> None:
        while True:
            try:
                await self.update_all()
            except KarkhanaError as exc:
                log.error("condition monitoring pass failed: %s", exc.message)
            await asyncio.sleep(self.interval_s)

    async def update_all(self) -> list[HealthUpdate]:
        """One monitoring pass over every machine; returns the health updates written."""
        ids = await self.db.execute_read_fn(
            lambda c: [r[0] for r in c.execute("SELECT id FROM machines ORDER BY id")]
        )
        written = []
        for machine_id in ids:
            try:
                update = await self.update_machine(machine_id)
            except NotFound:
                continue  # deleted meanwhile
            if update is not None:
                written.append(update)
        await self.open_due_work_orders()
        return written

    async def update_machine(self, machine_id: str) -> HealthUpdate | None:
        """Read a machine's new data, learn or score it, write its health; the last update."""
        async with self._lock:
            machine = await self.assets.get_machine(machine_id)
            if machine.template not in self.assets.templates:
                return None
            template = self.assets.template(machine.template)
            features = feature_signals(template, machine)
            if not features:
                return None
            watch = await self._watch(machine, features, warm_up_ms(template))
            conditions = {c.signal for rule in template.state_rules for c in rule.when}
            wanted = [s for s in machine.signals if s.name in set(features) | conditions]
            series = {
                s.name: await self.store.query(
                    s.device_id, s.key, watch.last_ts + 1, FAR_FUTURE_MS, limit=READ_LIMIT
                )
                for s in wanted
            }
            last = await asyncio.to_thread(self._consume, watch, template, features, series)
            if last is not None:
                await self._publish(watch, last)
            if watch.completed and self.prognosis is not None:
                completed, watch.completed = watch.completed, []
                await self.prognosis.save_cycles(machine_id, completed)
                estimate = await self.prognosis.update(machine_id, watch.device_id)
                if estimate is not None and self.work_orders_on_alarm:
                    await self._order_for_rul(estimate)
            await self._save(watch)
            return last

    def _consume(
        self,
        watch: _Watch,
        template: MachineTemplate,
        features: tuple[str, ...],
        series: Mapping[str, Sequence[Point]],
    ) -> HealthUpdate | None:
        rows, watermark = align(series, watch.current, self.stale_ms)
        if watermark is None:
            return None
        last: HealthUpdate | None = None
        for ts, values in rows:
            running = operating_state(template, values) == "running"
            if watch.last_row_ts is not None and running and watch.last_running:
                watch.run_ms += min(ts - watch.last_row_ts, self.stale_ms)
            watch.last_row_ts, watch.last_running = ts, running
            row = {k: _number(values.get(k)) for k in features}
            if watch.cycles is not None:
                cycle = watch.cycles.add(ts, row, running)
                if cycle is not None:
                    watch.completed.append(cycle)
            update = watch.monitor.update(ts, row, running)
            if update is not None:
                last = update
                if update.raised:
                    watch.raised = update
                    log.warning(
                        "machine %s: health index %.0f, alarm", watch.machine_id, update.index
                    )
        watch.last_ts = watermark
        watch.dirty = watch.dirty or bool(rows)
        return last

    async def _publish(self, watch: _Watch, update: HealthUpdate) -> None:
        samples = [
            Sample(watch.device_id, HEALTH_KEY, update.ts, round(update.index, 2)),
            Sample(watch.device_id, ALARM_KEY, update.ts, update.alarm),
            Sample(watch.device_id, RUN_HOURS_KEY, update.ts, round(watch.run_ms / HOUR_MS, 4)),
        ]
        await self.store.write(samples)
        raised, watch.raised = watch.raised, None
        if raised is not None and self.work_orders_on_alarm:
            await self._order_for_alarm(watch, raised)

    async def _order_for_alarm(self, watch: _Watch, update: HealthUpdate) -> None:
        open_orders = await self.list_work_orders(
            machine_id=watch.machine_id, statuses=OPEN_STATUSES
        )
        if any(o.source is WorkOrderSource.HEALTH for o in open_orders):
            return
        top = sorted(watch.monitor.explanation.items(), key=lambda kv: -kv[1])[:3]
        drivers = ", ".join(f"{k} {v:.0%}" for k, v in top)
        await self.create_work_order(
            watch.machine_id,
            f"Inspect: health index {update.index:.0f}",
            kind=WorkOrderKind.PREDICTIVE,
            source=WorkOrderSource.HEALTH,
            source_ref=f"health:{update.ts}",
            priority=Priority.HIGH,
            notes=f"Condition monitoring alarm; signals driving it: {drivers}.",
            actor=SYSTEM_ACTOR,
        )

    async def _order_for_rul(self, estimate: RulEstimate) -> None:
        """A predictive work order when the predicted remaining life falls below
        ``RUL_ORDER_HOURS`` (one open at a time per machine, with a health one)."""
        if estimate.hours > RUL_ORDER_HOURS:
            return
        await self.order_from_rul(estimate, actor=SYSTEM_ACTOR, once=True)

    async def order_from_rul(
        self,
        estimate: RulEstimate,
        *,
        actor: str,
        once: bool = False,
        source_address: str | None = None,
    ) -> WorkOrder | None:
        """Raise a predictive work order from a remaining-life estimate; with ``once``, not
        when the machine already has an open predictive one (returns None then)."""
        if once:
            open_orders = await self.list_work_orders(
                machine_id=estimate.machine_id, statuses=OPEN_STATUSES
            )
            if any(o.kind is WorkOrderKind.PREDICTIVE for o in open_orders):
                return None
        due = estimate.ts + round(estimate.hours * HOUR_MS)
        priority = Priority.URGENT if estimate.hours <= 24 else Priority.HIGH
        return await self.create_work_order(
            estimate.machine_id,
            f"Plan the repair: about {estimate.hours:.0f} h of life left",
            kind=WorkOrderKind.PREDICTIVE,
            source=WorkOrderSource.PREDICTION,
            source_ref=f"rul:{estimate.template}:v{estimate.version}:{estimate.ts}",
            priority=priority,
            notes=(
                f"Remaining-life model {estimate.template} v{estimate.version}: "
                f"{estimate.hours:.0f} h ({estimate.lower:.0f}-{estimate.upper:.0f} h, "
                f"{estimate.coverage:.0%} interval) from {_iso(estimate.ts)}; "
                f"failure expected around {_iso(due)}."
            ),
            actor=actor,
            source_address=source_address,
        )

    async def _watch(
        self, machine: Machine, features: tuple[str, ...], warm_up: int | None
    ) -> _Watch:
        watch = self._watches.get(machine.id)
        if watch is not None and watch.monitor.detector.signals == features:
            watch.monitor.warm_up_ms = warm_up  # the template may have changed
            return watch
        device = next(s.device_id for s in machine.signals if s.name == features[0])
        row = await self.db.execute_read_fn(
            lambda c: c.execute(
                "SELECT detector, first_ts, last_ts, score, run_ms FROM condition_models"
                " WHERE machine_id = ?",
                (machine.id,),
            ).fetchone()
        )
        tracker = HealthTracker(tau_ms=self.health_tau_ms, confirm_ms=self.confirm_ms)
        monitor = None
        last_ts, run_ms = 0, 0
        if row is not None:
            try:
                detector = Detector.from_bytes(row[0])
            except InvalidPayload as exc:
                log.error(
                    "machine %s: saved model unreadable (%s); learning again", machine.id, exc
                )
            else:
                if detector.signals == features:
                    monitor = ConditionMonitor(
                        detector,
                        learn_ms=self.learn_ms,
                        tracker=tracker,
                        first_ts=row[1],
                        warm_up_ms=warm_up,
                    )
                    monitor.last_ts = row[2]
                    tracker.ewma.value, tracker.ewma.last_ts = row[3], row[2]
                    last_ts, run_ms = row[2], row[4]
                    latest = {x.key: x.value for x in await self.store.latest(device)}
                    tracker.alarm = bool(latest.get(ALARM_KEY))
        if monitor is None:
            monitor = ConditionMonitor(
                self.make_detector(features),
                learn_ms=self.learn_ms,
                tracker=tracker,
                warm_up_ms=warm_up,
            )
        watch = _Watch(
            machine.id,
            device,
            monitor,
            last_ts=last_ts,
            run_ms=run_ms,
            cycles=CycleBuilder(features) if self.prognosis is not None else None,
        )
        self._watches[machine.id] = watch
        return watch

    async def _save(self, watch: _Watch) -> None:
        now = self.clock.now_ms()
        m = watch.monitor
        learned = not m.learning
        if not watch.dirty or (
            watch.saved_ms > 0
            and now - watch.saved_ms < self.save_every_ms
            and learned == watch.saved_learned
        ):
            return
        blob = await asyncio.to_thread(m.detector.to_bytes)
        args = (
            watch.machine_id,
            blob,
            m.first_ts or 0,
            watch.last_ts,
            m.tracker.ewma.value,
            watch.run_ms,
            now,
        )

        def write(conn: sqlite3.Connection) -> None:
            if conn.execute("SELECT 1 FROM machines WHERE id = ?", (watch.machine_id,)).fetchone():
                conn.execute(
                    "INSERT OR REPLACE INTO condition_models (machine_id, detector, first_ts,"
                    " last_ts, score, run_ms, updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    args,
                )

        await self.db.execute_write_fn(write)
        watch.saved_ms, watch.dirty, watch.saved_learned = now, False, learned

    # -- remaining life -----------------------------------------------------------------
    async def _machines_of(self, template: str) -> list[str]:
        return await self.db.execute_read_fn(
            lambda c: [
                r[0]
                for r in c.execute(
                    "SELECT id FROM machines WHERE template = ? ORDER BY id", (template,)
                )
            ]
        )

    async def rul_backfill(self, template: str) -> int:
        """Score the current life of every machine of ``template`` hour by hour with its newest
        remaining-life model (after training); returns the estimates written."""
        if self.prognosis is None:
            return 0
        written = 0
        for machine_id in await self._machines_of(template):
            try:
                machine = await self.assets.get_machine(machine_id)
            except NotFound:
                continue
            features = feature_signals(self.assets.template(template), machine)
            if not features:
                continue
            device = next(s.device_id for s in machine.signals if s.name == features[0])
            written += await self.prognosis.backfill(machine_id, device)
        return written

    async def train_rul(self, template: str, *, seed: int = 0, holdout: float = 0.2) -> Manifest:
        """Train the template's next remaining-life model from its machines' recorded failures
        and score their current lives with it."""
        if self.prognosis is None:
            raise InvalidPayload("remaining-life models are not enabled")
        await self.update_all()  # the cycles up to now, not up to the last monitoring pass
        manifest = await self.prognosis.train(template, seed=seed, holdout=holdout)
        await self.rul_backfill(template)
        return manifest

    async def forget(self, machine_id: str) -> None:
        """Drop what was learned about a machine (after a repair: a new normal)."""
        async with self._lock:
            self._watches.pop(machine_id, None)
            await self.db.execute_write_fn(
                lambda c: c.execute(
                    "DELETE FROM condition_models WHERE machine_id = ?", (machine_id,)
                )
            )

    # -- health -------------------------------------------------------------------------
    async def health(self, machine_id: str) -> HealthStatus:
        """Index, trend, alarm and the signals driving the score of one machine."""
        machine = await self.assets.get_machine(machine_id)
        template = self.assets.templates.get(machine.template)
        features = feature_signals(template, machine) if template else ()
        watch = self._watches.get(machine_id)
        device = next(
            (s.device_id for s in machine.signals if features and s.name == features[0]), None
        )
        index = ts = score = None
        stored_alarm = False
        trend = None
        run_hours = None
        if device is not None:
            latest = {x.key: x for x in await self.store.latest(device)}
            if HEALTH_KEY in latest:
                h = latest[HEALTH_KEY]
                index, ts = _number(h.value), h.ts
                points = await self.store.query(
                    device, HEALTH_KEY, h.ts - DAY_MS, h.ts + 1, bucket=10 * MINUTE_MS
                )
                trend = trend_per_day(
                    [(p.ts, float(p.value)) for p in points if isinstance(p.value, float)]
                )
            if RUN_HOURS_KEY in latest:
                run_hours = _number(latest[RUN_HOURS_KEY].value)
            stored_alarm = bool(ALARM_KEY in latest and latest[ALARM_KEY].value)
        alarm = device is not None and stored_alarm
        progress = 0.0
        settling = False
        contributions: tuple[Contribution, ...] = ()
        if watch is not None:
            m = watch.monitor
            alarm = m.tracker.alarm
            progress = m.progress
            score = m.tracker.ewma.value
            if trend is None:  # too few stored points yet: the rows of this process
                trend = m.tracker.trend(DAY_MS)
            contributions = tuple(
                Contribution(k, round(v, 4))
                for k, v in sorted(m.explanation.items(), key=lambda kv: -kv[1])
            )
            learning = m.learning
            settling = m.settling
        else:
            learning = index is None
        if not features:
            status = "not_monitored"
        elif learning and index is None:
            status = "learning" if watch is not None and watch.last_row_ts else "no_data"
        else:
            status = "alarm" if alarm else "ok"
            progress = 1.0
        rul = await self.rul_source(machine_id) if self.rul_source is not None else None
        return HealthStatus(
            machine_id=machine_id,
            status=status,
            index=index,
            score=score,
            ts=ts,
            trend_per_day=trend,
            days_to_alarm=days_until(index, trend) if index is not None else None,
            alarm=alarm,
            learning_progress=progress,
            contributions=contributions,
            signals=features,
            run_hours=run_hours,
            rul=rul,
            settling=settling,
        )

    async def alarms(self) -> list[HealthStatus]:
        """Machines whose health is in alarm now (for the alarm system and the dashboard)."""
        return [
            await self.health(w.machine_id)
            for w in list(self._watches.values())
            if w.monitor.tracker.alarm
        ]

    # -- sites ---------------------------------------------------------------------------
    async def site_of_machine(self, machine_id: str) -> str:
        row = await self.db.execute_read_fn(
            lambda c: c.execute(_SITE_OF_MACHINE, (machine_id,)).fetchone()
        )
        if row is None:
            raise NotFound(f"no machine {machine_id}")
        site: str = row[0]
        return site

    async def machines(self, sites: frozenset[str] | None) -> list[str]:
        rows = await self.db.execute_read_fn(
            lambda c: c.execute(
                "SELECT m.id, a.site_id FROM machines m JOIN lines l ON l.id = m.line_id"
                " JOIN areas a ON a.id = l.area_id ORDER BY m.id"
            ).fetchall()
        )
        return [m for m, site in rows if sites is None or site in sites]

    # -- work orders --------------------------------------------------------------------
    async def create_work_order(
        self,
        machine_id: str,
        title: str,
        *,
        kind: WorkOrderKind = WorkOrderKind.CORRECTIVE,
        source: WorkOrderSource = WorkOrderSource.MANUAL,
        source_ref: str | None = None,
        priority: Priority = Priority.MEDIUM,
        assignee: str | None = None,
        parts: Iterable[Part] = (),
        notes: str = "",
        breakdown: bool = False,
        down_start_ms: int | None = None,
        down_end_ms: int | None = None,
        schedule_id: int | None = None,
        actor: str | None = None,
        source_address: str | None = None,
    ) -> WorkOrder:
        """A new open work order; audited when ``actor`` is given."""
        await self.assets.get_machine(machine_id)
        _check_downtime(down_start_ms, down_end_ms)
        now = self.clock.now_ms()
        if breakdown and down_start_ms is None:
            down_start_ms = now
        wo = WorkOrder(
            id=0,
            machine_id=machine_id,
            title=title,
            kind=kind,
            source=source,
            priority=priority,
            status=WorkOrderStatus.OPEN,
            created_ms=now,
            updated_ms=now,
            source_ref=source_ref,
            assignee=assignee,
            parts=tuple(parts),
            notes=notes,
            breakdown=breakdown,
            down_start_ms=down_start_ms,
            down_end_ms=down_end_ms,
            schedule_id=schedule_id,
        )

        def insert(conn: sqlite3.Connection) -> WorkOrder:
            cur = conn.execute(
                f"INSERT INTO work_orders ({_WO_COLUMNS.removeprefix('id, ')})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                _wo_row(wo)[1:],
            )
            made = replace(wo, id=int(cur.lastrowid or 0))
            self._audit(
                conn,
                actor,
                "work_order.create",
                f"work_order:{made.id}",
                after=work_order_dict(made),
                source=source_address,
                ts_ms=now,
            )
            return made

        made = await self.db.execute_write_fn(insert)
        if made.breakdown and self.prognosis is not None:
            self.prognosis.forget(machine_id)  # a failure ends the life being scored
        return made

    async def create_from_alarm(
        self, machine_id: str, alarm_ref: str, message: str, priority: Priority = Priority.HIGH
    ) -> WorkOrder:
        """A corrective work order for an alarm (the alarm engine calls this)."""
        return await self.create_work_order(
            machine_id,
            message,
            kind=WorkOrderKind.CORRECTIVE,
            source=WorkOrderSource.ALARM,
            source_ref=alarm_ref,
            priority=priority,
            actor=SYSTEM_ACTOR,
        )

    async def create_from_prediction(
        self, machine_id: str, model_ref: str, message: str, priority: Priority = Priority.HIGH
    ) -> WorkOrder:
        """A predictive work order for a failure prediction or a short remaining life."""
        return await self.create_work_order(
            machine_id,
            message,
            kind=WorkOrderKind.PREDICTIVE,
            source=WorkOrderSource.PREDICTION,
            source_ref=model_ref,
            priority=priority,
            actor=SYSTEM_ACTOR,
        )

    async def get_work_order(self, order_id: int, machine_id: str | None = None) -> WorkOrder:
        row = await self.db.execute_read_fn(
            lambda c: c.execute(
                f"SELECT {_WO_COLUMNS} FROM work_orders WHERE id = ?", (order_id,)
            ).fetchone()
        )
        if row is None or (machine_id is not None and row[1] != machine_id):
            raise NotFound(
                f"no work order {order_id}" + (f" on {machine_id}" if machine_id else "")
            )
        return _work_order(row)

    async def list_work_orders(
        self,
        *,
        machine_id: str | None = None,
        statuses: Iterable[WorkOrderStatus] | None = None,
        sites: frozenset[str] | None = None,
        limit: int = 500,
    ) -> list[WorkOrder]:
        where, args = [], []
        if machine_id is not None:
            where.append("machine_id = ?")
            args.append(machine_id)
        if statuses is not None:
            wanted = [str(s) for s in statuses]
            where.append(f"status IN ({', '.join('?' * len(wanted))})")
            args += wanted
        sql = f"SELECT {_WO_COLUMNS} FROM work_orders"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC"
        rows = await self.db.execute_read_fn(lambda c: c.execute(sql, args).fetchall())
        orders = [_work_order(r) for r in rows]
        if sites is not None:
            allowed = set(await self.machines(sites))
            orders = [o for o in orders if o.machine_id in allowed]
        return orders[:limit]

    async def update_work_order(
        self,
        machine_id: str,
        order_id: int,
        changes: Mapping[str, Any],
        *,
        actor: str | None = None,
        source_address: str | None = None,
    ) -> WorkOrder:
        """Apply ``changes`` (title, status, priority, assignee, parts, notes, breakdown,
        down_start_ms, down_end_ms); status changes stamp the start and completion times."""
        allowed = {
            "title",
            "status",
            "priority",
            "assignee",
            "parts",
            "notes",
            "breakdown",
            "down_start_ms",
            "down_end_ms",
        }
        unknown = set(changes) - allowed
        if unknown:
            raise InvalidPayload(f"cannot change {', '.join(sorted(unknown))}")
        now = self.clock.now_ms()

        def update(conn: sqlite3.Connection) -> WorkOrder:
            row = conn.execute(
                f"SELECT {_WO_COLUMNS} FROM work_orders WHERE id = ? AND machine_id = ?",
                (order_id, machine_id),
            ).fetchone()
            if row is None:
                raise NotFound(f"no work order {order_id} on {machine_id}")
            old = _work_order(row)
            new = replace(old, **dict(changes), updated_ms=now)
            if new.status != old.status:
                check_transition(old.status, new.status)
                if new.status is WorkOrderStatus.IN_PROGRESS and new.started_ms is None:
                    new = replace(new, started_ms=now)
                if new.status is WorkOrderStatus.DONE:
                    new = replace(new, completed_ms=now)
                    if new.breakdown and new.down_end_ms is None:
                        new = replace(new, down_end_ms=now)
                elif old.status is WorkOrderStatus.DONE:
                    new = replace(new, completed_ms=None)
            if new.breakdown and new.down_start_ms is None:
                new = replace(new, down_start_ms=old.created_ms)
            _check_downtime(new.down_start_ms, new.down_end_ms)
            conn.execute(
                "UPDATE work_orders SET title = ?, priority = ?, status = ?, assignee = ?,"
                " parts = ?, notes = ?, breakdown = ?, down_start_ms = ?, down_end_ms = ?,"
                " started_ms = ?, completed_ms = ?, updated_ms = ? WHERE id = ?",
                (
                    new.title,
                    str(new.priority),
                    str(new.status),
                    new.assignee,
                    _parts_json(new.parts),
                    new.notes,
                    int(new.breakdown),
                    new.down_start_ms,
                    new.down_end_ms,
                    new.started_ms,
                    new.completed_ms,
                    now,
                    order_id,
                ),
            )
            if (
                new.status is WorkOrderStatus.DONE
                and old.status is not WorkOrderStatus.DONE
                and new.schedule_id is not None
            ):
                conn.execute(
                    "UPDATE maintenance_schedules SET last_done_ms = ? WHERE id = ?",
                    (now, new.schedule_id),
                )
            self._audit(
                conn,
                actor,
                "work_order.update",
                f"work_order:{order_id}",
                before=work_order_dict(old),
                after=work_order_dict(new),
                source=source_address,
                ts_ms=now,
            )
            return new

        updated = await self.db.execute_write_fn(update)
        if self.prognosis is not None:
            self.prognosis.forget(machine_id)
        if (
            updated.schedule_id is not None
            and updated.status is WorkOrderStatus.DONE
            and updated.completed_ms == now
        ):
            await self._stamp_meter(updated.schedule_id)
        return updated

    def _audit(
        self,
        conn: sqlite3.Connection,
        actor: str | None,
        action: str,
        target: str,
        *,
        source: str | None,
        ts_ms: int,
        before: dict[str, Any] | None = None,
        after: dict[str, Any] | None = None,
    ) -> None:
        """An audit event in the caller's write transaction, when a person or token acted and the
        audit log is on (the monitoring loop's own work orders have no actor)."""
        if actor is not None and self.audit is not None:
            self.audit.append(
                conn, actor, action, target, before=before, after=after, source=source, ts_ms=ts_ms
            )

    async def delete_work_order(
        self,
        machine_id: str,
        order_id: int,
        *,
        actor: str | None = None,
        source_address: str | None = None,
    ) -> None:
        now = self.clock.now_ms()

        def delete(conn: sqlite3.Connection) -> None:
            row = conn.execute(
                f"SELECT {_WO_COLUMNS} FROM work_orders WHERE id = ? AND machine_id = ?",
                (order_id, machine_id),
            ).fetchone()
            if row is None:
                raise NotFound(f"no work order {order_id} on {machine_id}")
            conn.execute("DELETE FROM work_orders WHERE id = ?", (order_id,))
            self._audit(
                conn,
                actor,
                "work_order.delete",
                f"work_order:{order_id}",
                before=work_order_dict(_work_order(row)),
                source=source_address,
                ts_ms=now,
            )

        await self.db.execute_write_fn(delete)

    async def reliability(self, machine_id: str, start_ms: int, end_ms: int) -> Reliability:
        await self.assets.get_machine(machine_id)
        orders = await self.list_work_orders(machine_id=machine_id, limit=1_000_000)
        return reliability(machine_id, orders, start_ms, end_ms)

    # -- preventive schedules ------------------------------------------------------------
    async def meter(self, schedule: Schedule) -> float | None:
        """The reading a run-hours or count schedule is measured against (None: no data)."""
        if schedule.basis is ScheduleBasis.CALENDAR:
            return None
        machine = await self.assets.get_machine(schedule.machine_id)
        if schedule.signal is not None:
            binding = machine.signal(schedule.signal)
            if binding is None:
                return None
            device, key = binding.device_id, binding.key
        else:
            template = self.assets.templates.get(machine.template)
            features = feature_signals(template, machine) if template else ()
            if not features:
                return None
            device = next(s.device_id for s in machine.signals if s.name == features[0])
            key = RUN_HOURS_KEY
        latest = {x.key: x.value for x in await self.store.latest(device)}
        return _number(latest.get(key))

    async def create_schedule(
        self,
        machine_id: str,
        title: str,
        basis: ScheduleBasis,
        interval: float,
        *,
        signal: str | None = None,
        lead: float = 0.1,
        actor: str | None = None,
        source_address: str | None = None,
    ) -> Schedule:
        machine = await self.assets.get_machine(machine_id)
        if not interval > 0:
            raise InvalidPayload("interval: must be positive")
        if not 0 <= lead < 1:
            raise InvalidPayload("lead: must be in [0, 1)")
        if basis is ScheduleBasis.COUNT and signal is None:
            raise InvalidPayload("signal: a count schedule needs the counter signal")
        if basis is ScheduleBasis.CALENDAR:
            signal = None
        if signal is not None and machine.signal(signal) is None:
            raise InvalidPayload(f"signal: machine {machine_id} has no signal {signal}")
        now = self.clock.now_ms()
        draft = Schedule(0, machine_id, title, basis, float(interval), now, now, 0.0, signal, lead)
        meter = await self.meter(draft)
        draft = replace(draft, last_done_meter=meter or 0.0)

        def insert(conn: sqlite3.Connection) -> Schedule:
            cur = conn.execute(
                f"INSERT INTO maintenance_schedules ({_SCHEDULE_COLUMNS.removeprefix('id, ')})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                _schedule_row(draft)[1:],
            )
            made = replace(draft, id=int(cur.lastrowid or 0))
            self._audit(
                conn,
                actor,
                "schedule.create",
                f"schedule:{made.id}",
                after=schedule_dict(made),
                source=source_address,
                ts_ms=now,
            )
            return made

        return await self.db.execute_write_fn(insert)

    async def get_schedule(self, schedule_id: int, machine_id: str | None = None) -> Schedule:
        row = await self.db.execute_read_fn(
            lambda c: c.execute(
                f"SELECT {_SCHEDULE_COLUMNS} FROM maintenance_schedules WHERE id = ?",
                (schedule_id,),
            ).fetchone()
        )
        if row is None or (machine_id is not None and row[1] != machine_id):
            raise NotFound(
                f"no schedule {schedule_id}" + (f" on {machine_id}" if machine_id else "")
            )
        return _schedule(row)

    async def list_schedules(
        self, machine_id: str | None = None, sites: frozenset[str] | None = None
    ) -> list[Schedule]:
        sql = f"SELECT {_SCHEDULE_COLUMNS} FROM maintenance_schedules"
        args: tuple[str, ...] = ()
        if machine_id is not None:
            sql += " WHERE machine_id = ?"
            args = (machine_id,)
        rows = await self.db.execute_read_fn(
            lambda c: c.execute(sql + " ORDER BY id", args).fetchall()
        )
        schedules = [_schedule(r) for r in rows]
        if sites is not None:
            allowed = set(await self.machines(sites))
            schedules = [s for s in schedules if s.machine_id in allowed]
        return schedules

    async def due_of(self, schedule: Schedule) -> Due:
        return due(schedule, self.clock.now_ms(), await self.meter(schedule))

    async def complete_schedule(
        self,
        machine_id: str,
        schedule_id: int,
        *,
        actor: str | None = None,
        source_address: str | None = None,
    ) -> Schedule:
        """Record that the scheduled job was done now (at the present meter reading)."""
        old = await self.get_schedule(schedule_id, machine_id)
        meter = await self.meter(old)
        now = self.clock.now_ms()
        new = replace(
            old,
            last_done_ms=now,
            last_done_meter=meter if meter is not None else old.last_done_meter,
        )

        def update(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE maintenance_schedules SET last_done_ms = ?, last_done_meter = ?"
                " WHERE id = ?",
                (new.last_done_ms, new.last_done_meter, schedule_id),
            )
            self._audit(
                conn,
                actor,
                "schedule.done",
                f"schedule:{schedule_id}",
                before=schedule_dict(old),
                after=schedule_dict(new),
                source=source_address,
                ts_ms=now,
            )

        await self.db.execute_write_fn(update)
        return new

    async def _stamp_meter(self, schedule_id: int) -> None:
        with contextlib.suppress(NotFound):
            schedule = await self.get_schedule(schedule_id)
            meter = await self.meter(schedule)
            if meter is not None:
                await self.db.execute_write_fn(
                    lambda c: c.execute(
                        "UPDATE maintenance_schedules SET last_done_meter = ? WHERE id = ?",
                        (meter, schedule_id),
                    )
                )

    async def delete_schedule(
        self,
        machine_id: str,
        schedule_id: int,
        *,
        actor: str | None = None,
        source_address: str | None = None,
    ) -> None:
        old = await self.get_schedule(schedule_id, machine_id)
        now = self.clock.now_ms()

        def delete(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM maintenance_schedules WHERE id = ?", (schedule_id,))
            self._audit(
                conn,
                actor,
                "schedule.delete",
                f"schedule:{schedule_id}",
                before=schedule_dict(old),
                source=source_address,
                ts_ms=now,
            )

        await self.db.execute_write_fn(delete)

    async def open_due_work_orders(self) -> list[WorkOrder]:
        """A preventive work order for every schedule at or past its due point that has none
        open yet (the monitoring loop calls this each pass)."""
        made = []
        for schedule in await self.list_schedules():
            if not schedule.active:
                continue
            state = await self.due_of(schedule)
            if state.status != "overdue":
                continue
            open_orders = await self.list_work_orders(
                machine_id=schedule.machine_id, statuses=OPEN_STATUSES
            )
            if any(o.schedule_id == schedule.id for o in open_orders):
                continue
            made.append(
                await self.create_work_order(
                    schedule.machine_id,
                    schedule.title,
                    kind=WorkOrderKind.PREVENTIVE,
                    source=WorkOrderSource.SCHEDULE,
                    source_ref=f"schedule:{schedule.id}",
                    schedule_id=schedule.id,
                    actor=SYSTEM_ACTOR,
                )
            )
        return made


# -- rows <-> values ----------------------------------------------------------------------
def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _check_downtime(start: int | None, end: int | None) -> None:
    if end is not None and start is None:
        raise InvalidPayload("down_end_ms: needs down_start_ms")
    if start is not None and end is not None and end < start:
        raise InvalidPayload("down_end_ms: must not be before down_start_ms")


def _parts_json(parts: Iterable[Part]) -> str:
    return json.dumps(
        [{"name": p.name, "quantity": p.quantity, "part_no": p.part_no} for p in parts]
    )


def _wo_row(wo: WorkOrder) -> tuple[Any, ...]:
    return (
        wo.id,
        wo.machine_id,
        wo.title,
        str(wo.kind),
        str(wo.source),
        str(wo.priority),
        str(wo.status),
        wo.created_ms,
        wo.updated_ms,
        wo.source_ref,
        wo.assignee,
        _parts_json(wo.parts),
        wo.notes,
        int(wo.breakdown),
        wo.down_start_ms,
        wo.down_end_ms,
        wo.started_ms,
        wo.completed_ms,
        wo.schedule_id,
    )


def _work_order(row: Sequence[Any]) -> WorkOrder:
    parts = tuple(Part(p["name"], p["quantity"], p.get("part_no")) for p in json.loads(row[11]))
    return WorkOrder(
        id=row[0],
        machine_id=row[1],
        title=row[2],
        kind=WorkOrderKind(row[3]),
        source=WorkOrderSource(row[4]),
        priority=Priority(row[5]),
        status=WorkOrderStatus(row[6]),
        created_ms=row[7],
        updated_ms=row[8],
        source_ref=row[9],
        assignee=row[10],
        parts=parts,
        notes=row[12],
        breakdown=bool(row[13]),
        down_start_ms=row[14],
        down_end_ms=row[15],
        started_ms=row[16],
        completed_ms=row[17],
        schedule_id=row[18],
    )


def work_order_dict(wo: WorkOrder) -> dict[str, Any]:
    return {
        "id": wo.id,
        "machine_id": wo.machine_id,
        "title": wo.title,
        "kind": str(wo.kind),
        "source": str(wo.source),
        "source_ref": wo.source_ref,
        "priority": str(wo.priority),
        "status": str(wo.status),
        "assignee": wo.assignee,
        "parts": [{"name": p.name, "quantity": p.quantity, "part_no": p.part_no} for p in wo.parts],
        "notes": wo.notes,
        "breakdown": wo.breakdown,
        "down_start_ms": wo.down_start_ms,
        "down_end_ms": wo.down_end_ms,
        "downtime_ms": wo.downtime_ms,
        "started_ms": wo.started_ms,
        "completed_ms": wo.completed_ms,
        "schedule_id": wo.schedule_id,
        "created_ms": wo.created_ms,
        "updated_ms": wo.updated_ms,
    }


def _schedule_row(s: Schedule) -> tuple[Any, ...]:
    return (
        s.id,
        s.machine_id,
        s.title,
        str(s.basis),
        s.interval,
        s.created_ms,
        s.last_done_ms,
        s.last_done_meter,
        s.signal,
        s.lead,
        int(s.active),
    )


def _schedule(row: Sequence[Any]) -> Schedule:
    return Schedule(
        id=row[0],
        machine_id=row[1],
        title=row[2],
        basis=ScheduleBasis(row[3]),
        interval=row[4],
        created_ms=row[5],
        last_done_ms=row[6],
        last_done_meter=row[7],
        signal=row[8],
        lead=row[9],
        active=bool(row[10]),
    )


def schedule_dict(s: Schedule) -> dict[str, Any]:
    return {
        "id": s.id,
        "machine_id": s.machine_id,
        "title": s.title,
        "basis": str(s.basis),
        "interval": s.interval,
        "signal": s.signal,
        "lead": s.lead,
        "last_done_ms": s.last_done_ms,
        "last_done_meter": s.last_done_meter,
        "created_ms": s.created_ms,
        "active": s.active,
    }
