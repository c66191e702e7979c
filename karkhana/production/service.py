"""Keeps machine states and output counts current from committed samples; answers the API.

The service subscribes to the bus, feeds each machine's state signals into a StateTracker and
its counters into per-minute counts, and writes both through the single database writer about
once a second. Samples that arrive out of order (an edge agent's backlog) or that the bus had to
drop mark the machine for a rebuild from stored telemetry, which the same task then does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from karkhana.assets.service import AssetService
from karkhana.assets.template import MachineState, MachineTemplate
from karkhana.core.bus import Bus, Subscription
from karkhana.core.clock import Clock
from karkhana.core.errors import Forbidden, InvalidPayload, KarkhanaError, NotFound
from karkhana.core.model import Sample, Value
from karkhana.production import oee as oee_calc
from karkhana.production.calendar import (
    Calendar,
    day_span,
    local_date,
    planned_windows,
    shift_at,
    shift_on,
    shifts_between,
)
from karkhana.production.counts import CountSeries, bucket, increment, minute_of
from karkhana.production.datafiles import (
    Profiles,
    calendar_for,
    load_calendars,
    load_profiles,
    load_reasons,
)
from karkhana.production.downtime import (
    POWER_OUTAGE,
    UNASSIGNED,
    UNASSIGNED_LABEL,
    Label,
    ParetoItem,
    ReasonTree,
    pareto,
    starts_in_outage,
)
from karkhana.production.model import (
    STOP_STATES,
    CountBucket,
    Interval,
    Oee,
    ShiftWindow,
    Stop,
)
from karkhana.production.report import Report, build_report, render_csv, render_pdf
from karkhana.production.spans import Cover, Span, merge
from karkhana.production.state import StateTracker, overlay_plan, rule_signals
from karkhana.store.base import Agg, Store
from karkhana.store.database import Database

log = logging.getLogger(__name__)
DAY_MS = 86_400_000
FLUSH_S = 1.0
TICK_S = 5.0
REFRESH_S = 30.0
NEW_MACHINE_LOOKBACK_MS = 7 * 86_400_000
"""How far back a machine found while running is derived from what its devices already sent."""
REPORT_CHECK_S = 60.0
LOOK_UP_S = 1.0
MAX_OUTAGES = 50
"""Outages remembered per site for labelling stops whose samples come late."""
FOREVER = 2**62
"""At most one refresh a second for requests that name unknown machines."""


@dataclass(slots=True)
class MachineInfo:
    id: str
    name: str
    line_id: str
    site_id: str
    template_id: str
    template: MachineTemplate | None
    bindings: dict[str, tuple[str, str]]
    """signal name -> (device id, key)"""
    state_signals: frozenset[str]
    count_key: str | None
    reject_key: str | None
    speed_key: str | None
    speed_unit: str | None
    modulus: float | None

    @property
    def produces(self) -> bool:
        return self.count_key is not None


@dataclass(slots=True)
class SiteInfo:
    id: str
    name: str
    tz: ZoneInfo
    calendar: Calendar
    power: list[tuple[str, str]] = field(default_factory=list)
    """(device id, key) of the power-source signals of this site."""
    outages: list[list[int | None]] = field(default_factory=list)
    """Recent grid outages as [start, end] (end None while the grid is out), oldest first."""
    power_seen: int = 0

    def outage_spans(self) -> list[Span]:
        return [(s or 0, FOREVER if e is None else e) for s, e in self.outages]


@dataclass(slots=True)
class _Pending:
    """What the next flush writes."""

    closed: dict[str, list[Interval]] = field(default_factory=lambda: defaultdict(list))
    opened: set[str] = field(default_factory=set)
    counts: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    counters: dict[tuple[str, str], tuple[int, float]] = field(default_factory=dict)
    outages: list[tuple[str, int]] = field(default_factory=list)
    """(site id, outage start) to label stops that began just before it."""

    def empty(self) -> bool:
        return not (self.closed or self.opened or self.counts or self.counters or self.outages)


@dataclass(frozen=True, slots=True)
class Scope:
    """The machines an OEE, Pareto or report covers."""

    machines: tuple[MachineInfo, ...]
    site: SiteInfo | None


class ProductionService:
    def __init__(
        self,
        db: Database,
        store: Store,
        bus: Bus,
        assets: AssetService,
        clock: Clock,
        data_dir: Path,
        *,
        profiles: Profiles | None = None,
        reports: bool = True,
    ) -> None:
        self.db = db
        self.store = store
        self.bus = bus
        self.assets = assets
        self.clock = clock
        self.data_dir = data_dir
        self.profiles = profiles or load_profiles()
        custom = data_dir / "calendars"
        self.calendars = load_calendars(custom if custom.is_dir() else None)
        custom_reasons = data_dir / "reasons"
        self.reasons: ReasonTree = load_reasons(custom_reasons if custom_reasons.is_dir() else None)
        self.params = oee_calc.OeeParams(
            self.profiles.micro_stop_ms, self.profiles.startup_window_ms
        )
        self.reports_dir = data_dir / "reports"
        self.write_reports = reports
        self.machines: dict[str, MachineInfo] = {}
        self.sites: dict[str, SiteInfo] = {}
        self._index: dict[tuple[str, str], list[tuple[str, str]]] = {}
        self._power_index: dict[tuple[str, str], str] = {}
        self.trackers: dict[str, StateTracker] = {}
        self._counters: dict[tuple[str, str], tuple[int, float]] = {}
        self._speed: dict[str, tuple[int, Value]] = {}
        self._dirty: dict[str, int] = {}
        self._known_devices: set[str] = set()
        self._unknown: set[str] = set()
        """Devices heard from that no machine binds (a new machine makes the next tick look)."""
        self._refresh_soon = False
        self._looked_up = -LOOK_UP_S
        self._auto: set[tuple[str, int]] = set()
        """Stops (machine, start) that began in a grid outage, until written."""
        self._pending = _Pending()
        self._lock = asyncio.Lock()
        self._sub: Subscription | None = None
        self._looked = False
        self._tasks: list[asyncio.Task[None]] = []
        self._dropped = 0

    # -- life cycle ------------------------------------------------------------------------
    async def start(self) -> None:
        self._sub = self.bus.subscribe(maxsize=10_000)
        await self.refresh()
        self._tasks.append(asyncio.create_task(self._consume()))
        self._tasks.append(asyncio.create_task(self._ticker()))
        for task in self._tasks:
            task.add_done_callback(_log_crash)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._sub is not None:
            self._sub.close()
            self._sub = None
        with contextlib.suppress(KarkhanaError):
            await self.flush()

    async def _consume(self) -> None:
        assert self._sub is not None
        sub = self._sub
        loop = asyncio.get_running_loop()
        last_flush = loop.time()
        while True:
            try:
                samples = await asyncio.wait_for(sub.get(), FLUSH_S)
            except TimeoutError:
                samples = None
            async with self._lock:
                if samples is not None:
                    self._take(samples)
                if sub.dropped != self._dropped:
                    self._dropped = sub.dropped
                    self._mark_all_dirty()
                if loop.time() - last_flush >= FLUSH_S:
                    last_flush = loop.time()
                    try:
                        await self._flush_locked()
                    except KarkhanaError as exc:
                        log.error("cannot store production states: %s", exc.message)

    async def _ticker(self) -> None:
        since_refresh = since_reports = 0.0
        while True:
            await asyncio.sleep(TICK_S)
            since_refresh += TICK_S
            since_reports += TICK_S
            try:
                if since_refresh >= REFRESH_S or self._refresh_soon:
                    since_refresh = 0.0
                    self._refresh_soon = False
                    await self.refresh()
                await self.tick()
                if self.write_reports and since_reports >= REPORT_CHECK_S:
                    since_reports = 0.0
                    await self.write_due_reports()
            except KarkhanaError as exc:
                log.error("production monitoring: %s", exc.message)

    async def tick(self) -> None:
        """Silent machines to no data, due rebuilds, then a flush."""
        now = self.clock.now_ms()
        async with self._lock:
            for mid, tracker in self.trackers.items():
                was = (tracker.state, tracker.since_ms)
                closed = tracker.silence(now)
                if closed or (tracker.state, tracker.since_ms) != was:
                    m = self.machines.get(mid)
                    # a device without a UPS falls silent when the grid goes
                    if m is not None and self._in_outage(m.site_id, tracker.since_ms):
                        self._auto.add((mid, tracker.since_ms))
                    self._note(mid, closed)
            dirty, self._dirty = self._dirty, {}
            for mid, since in dirty.items():
                if mid in self.machines:
                    await self._rebuild_locked(mid, since)
            await self._flush_locked()

    def _mark_all_dirty(self) -> None:
        for mid, tracker in self.trackers.items():
            since = tracker.last_seen if tracker.last_seen is not None else self.clock.now_ms()
            self._dirty[mid] = min(self._dirty.get(mid, since), since)

    # -- the asset model -----------------------------------------------------------------
    async def refresh(self) -> None:
        """Pick up machines and sites created or deleted since the last look."""
        tree = await self.assets.tree()
        seen: set[str] = set()
        sites: dict[str, SiteInfo] = {}
        placed: list[tuple[str, str, str, str, str]] = []
        for site in tree:
            old = self.sites.get(site["id"])
            calendar = calendar_for(self.calendars, site["id"])
            info = SiteInfo(site["id"], site["name"], _zone(site["timezone"]), calendar)
            if old is not None:
                info.outages, info.power_seen = old.outages, old.power_seen
            sites[site["id"]] = info
            for area in site["areas"]:
                for line in area["lines"]:
                    for m in line["machines"]:
                        placed.append((m["id"], m["name"], line["id"], site["id"], m["template"]))
        self.sites = sites
        first_look = not self._looked
        self._looked = True
        found: list[str] = []
        for mid, name, line_id, site_id, template_id in placed:
            seen.add(mid)
            known = self.machines.get(mid)
            if known is not None:
                known.name, known.line_id, known.site_id = name, line_id, site_id
                continue
            found.append(mid)
            try:
                machine = await self.assets.get_machine(mid)
            except NotFound:
                continue
            minfo = self._machine_info(
                mid,
                name,
                line_id,
                site_id,
                template_id,
                {s.name: (s.device_id, s.key) for s in machine.signals},
            )
            await self._load_machine(minfo)
        async with self._lock:
            for mid in set(self.machines) - seen:
                del self.machines[mid]
                self.trackers.pop(mid, None)
                self._speed.pop(mid, None)
                self._dirty.pop(mid, None)
            self._reindex()
        if not first_look:
            # a machine made while the server runs: what its devices sent before this look
            # (up to a week, e.g. a device that reported before it was made a machine) counts
            since = self.clock.now_ms() - NEW_MACHINE_LOOKBACK_MS
            for mid in found:
                if mid in self.machines:
                    await self.rebuild(mid, since)

    def _machine_info(
        self,
        mid: str,
        name: str,
        line_id: str,
        site_id: str,
        template_id: str,
        bindings: dict[str, tuple[str, str]],
    ) -> MachineInfo:
        template = self.assets.templates.get(template_id)
        profile = self.profiles.of(template_id)
        speed_unit = None
        if template is not None and profile.speed_key is not None:
            with contextlib.suppress(KeyError):
                speed_unit = template.signal(profile.speed_key).unit
        return MachineInfo(
            id=mid,
            name=name,
            line_id=line_id,
            site_id=site_id,
            template_id=template_id,
            template=template,
            bindings=bindings,
            state_signals=rule_signals(template.state_rules) if template else frozenset(),
            count_key=template.count_key if template else None,
            reject_key=profile.reject_key if template else None,
            speed_key=profile.speed_key,
            speed_unit=speed_unit,
            modulus=profile.counter_modulus,
        )

    async def _load_machine(self, info: MachineInfo) -> None:
        """Continue where the stored state and counters left off."""
        values: dict[str, Value] = {}
        last_seen: int | None = None
        by_device: dict[str, list[str]] = defaultdict(list)
        for signal, (device, _key) in info.bindings.items():
            by_device[device].append(signal)
        for device, signals in by_device.items():
            latest = {x.key: x for x in await self.store.latest(device)}
            for signal in signals:
                x = latest.get(info.bindings[signal][1])
                if x is None:
                    continue
                if signal in info.state_signals:
                    values[signal] = x.value
                    last_seen = x.ts if last_seen is None else max(last_seen, x.ts)
                if signal == info.speed_key:
                    self._speed[info.id] = (x.ts, x.value)

        def read(conn: sqlite3.Connection) -> tuple[Any, list[Any]]:
            open_row = conn.execute(
                "SELECT start_ms, state FROM production_intervals WHERE machine_id = ?"
                " AND end_ms IS NULL ORDER BY start_ms DESC LIMIT 1",
                (info.id,),
            ).fetchone()
            counters = conn.execute(
                "SELECT signal, ts, value FROM production_counters WHERE machine_id = ?",
                (info.id,),
            ).fetchall()
            return open_row, counters

        open_row, counters = await self.db.execute_read_fn(read)
        async with self._lock:
            self.machines[info.id] = info
            if info.state_signals:
                tracker = StateTracker(
                    info.template.state_rules if info.template else (),
                    self.profiles.no_data_timeout_ms,
                    values,
                )
                if open_row is not None:
                    tracker.state, tracker.since_ms = open_row[1], open_row[0]
                    tracker.last_seen = max(last_seen or 0, open_row[0])
                self.trackers[info.id] = tracker
            for signal, ts, value in counters:
                self._counters[(info.id, signal)] = (ts, value)

    def _reindex(self) -> None:
        index: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
        for m in self.machines.values():
            wanted = set(m.state_signals) | {
                k for k in (m.count_key, m.reject_key, m.speed_key) if k is not None
            }
            for signal in wanted:
                if signal in m.bindings:
                    index[m.bindings[signal]].append((m.id, signal))
        power: dict[tuple[str, str], str] = {}
        for site in self.sites.values():
            site.power = []
        spec = self.profiles.power
        for m in self.machines.values():
            if m.template_id == spec.template and spec.signal in m.bindings:
                binding = m.bindings[spec.signal]
                power[binding] = m.site_id
                if m.site_id in self.sites:
                    self.sites[m.site_id].power.append(binding)
        self._index = dict(index)
        self._power_index = power
        self._known_devices = {d for d, _ in self._index} | {d for d, _ in power}
        self._unknown -= self._known_devices

    # -- live processing -------------------------------------------------------------------
    def _take(self, samples: list[Sample]) -> None:
        """Apply a batch: the power supply first (so that a stop is judged against the supply
        at the moment it began), then each machine's samples in time order."""
        index, power_index, known = self._index, self._power_index, self._known_devices
        power: list[tuple[int, str, Value]] = []
        per_machine: dict[str, list[tuple[int, str, Value]]] = defaultdict(list)
        for s in samples:
            key = (s.device_id, s.key)
            targets = index.get(key)
            if targets is not None:
                for mid, signal in targets:
                    per_machine[mid].append((s.ts, signal, s.value))
            site_id = power_index.get(key)
            if site_id is not None:
                power.append((s.ts, site_id, s.value))
            if (
                targets is None
                and site_id is None
                and s.device_id not in known
                and s.device_id not in self._unknown
            ):
                self._unknown.add(s.device_id)
                self._refresh_soon = True
        power.sort(key=lambda x: x[0])
        for ts, site_id, value in power:
            self._power(site_id, ts, value)
        for mid, items in per_machine.items():
            items.sort(key=lambda x: x[0])
            self._machine_samples(self.machines[mid], items)

    def _power(self, site_id: str, ts: int, value: Value) -> None:
        site = self.sites.get(site_id)
        if site is None or ts < site.power_seen:
            return
        site.power_seen = ts
        out = value != self.profiles.power.normal
        ongoing = bool(site.outages) and site.outages[-1][1] is None
        if out and not ongoing:
            site.outages.append([ts, None])
            del site.outages[:-MAX_OUTAGES]
            self._pending.outages.append((site_id, ts))
            grace = self.profiles.outage_grace_ms
            for m in self.machines.values():
                tracker = self.trackers.get(m.id)
                if (
                    m.site_id == site_id
                    and tracker is not None
                    and tracker.state in STOP_STATES
                    and tracker.since_ms >= ts - grace
                ):
                    self._auto.add((m.id, tracker.since_ms))
        elif not out and ongoing:
            site.outages[-1][1] = ts

    def _machine_samples(self, m: MachineInfo, items: list[tuple[int, str, Value]]) -> None:
        tracker = self.trackers.get(m.id)
        closed: list[Interval] = []
        i = 0
        while i < len(items):
            ts = items[i][0]
            values: dict[str, Value] = {}
            while i < len(items) and items[i][0] == ts:
                _, signal, value = items[i]
                i += 1
                if signal in m.state_signals:
                    values[signal] = value
                if signal == m.speed_key:
                    prev = self._speed.get(m.id)
                    if prev is None or ts >= prev[0]:
                        self._speed[m.id] = (ts, value)
                if signal in (m.count_key, m.reject_key) and isinstance(value, int | float):
                    self._count(m, signal, ts, float(value))
            if tracker is not None and values:
                if tracker.last_seen is not None and ts < tracker.last_seen:
                    self._dirty[m.id] = min(self._dirty.get(m.id, ts), ts)
                    continue
                since = tracker.since_ms
                closed += tracker.feed(ts, values)
                if (
                    tracker.since_ms != since
                    and tracker.state in STOP_STATES
                    and self._in_outage(m.site_id, tracker.since_ms)
                ):
                    self._auto.add((m.id, tracker.since_ms))
                self._note(m.id, closed)
                closed = []

    def _count(self, m: MachineInfo, signal: str, ts: int, value: float) -> None:
        key = (m.id, signal)
        prev = self._counters.get(key)
        if prev is not None and ts < prev[0]:
            self._dirty[m.id] = min(self._dirty.get(m.id, ts), ts)
            return
        step = increment(None if prev is None else prev[1], value, m.modulus)
        self._counters[key] = (ts, value)
        self._pending.counters[key] = (ts, value)
        if step:
            cell = self._pending.counts.setdefault((m.id, minute_of(ts)), [0.0, 0.0])
            cell[0 if signal == m.count_key else 1] += step

    def _note(self, mid: str, closed: list[Interval]) -> None:
        self._pending.closed[mid].extend(closed)
        self._pending.opened.add(mid)

    async def flush(self) -> None:
        async with self._lock:
            await self._flush_locked()

    async def _flush_locked(self) -> None:
        pending, self._pending = self._pending, _Pending()
        if pending.empty():
            return
        grace = self.profiles.outage_grace_ms
        opened = []
        for mid in pending.opened:
            tracker = self.trackers.get(mid)
            m = self.machines.get(mid)
            if tracker is None or tracker.state is None or m is None:
                continue
            auto = (mid, tracker.since_ms) in self._auto
            opened.append((mid, tracker.since_ms, tracker.state, auto))
        closed = {
            mid: [(iv, (mid, iv.start_ms) in self._auto) for iv in ivs]
            for mid, ivs in pending.closed.items()
            if ivs
        }
        self._auto = {key for key in self._auto if key not in {(o[0], o[1]) for o in opened}}
        for mid, items in closed.items():
            for iv, _ in items:
                self._auto.discard((mid, iv.start_ms))
        outage_labels = [
            (ts, [m.id for m in self.machines.values() if m.site_id == site_id])
            for site_id, ts in pending.outages
        ]

        def write(conn: sqlite3.Connection) -> None:
            named = (
                {mid for mid in closed}
                | {o[0] for o in opened}
                | {key[0] for key in pending.counts}
                | {key[0] for key in pending.counters}
            )
            marks = ",".join("?" * len(named))
            existing = {
                row[0]
                for row in conn.execute(
                    f"SELECT id FROM machines WHERE id IN ({marks})", tuple(named)
                )
            }
            # a machine deleted since its samples came: its data goes with it
            for mid in named - existing:
                closed.pop(mid, None)
            opened[:] = [o for o in opened if o[0] in existing]
            for cell in [k for k in pending.counts if k[0] not in existing]:
                del pending.counts[cell]
            for counter in [k for k in pending.counters if k[0] not in existing]:
                del pending.counters[counter]
            for mid, items in closed.items():
                for iv, auto in items:
                    conn.execute(
                        "INSERT INTO production_intervals (machine_id, start_ms, end_ms, state,"
                        " reason_id, auto) VALUES (?, ?, ?, ?, ?, ?)"
                        " ON CONFLICT (machine_id, start_ms) DO UPDATE SET"
                        " end_ms = excluded.end_ms, state = excluded.state,"
                        " auto = CASE WHEN reason_id IS NULL THEN excluded.auto ELSE auto END,"
                        " reason_id = coalesce(reason_id, excluded.reason_id)",
                        (
                            mid,
                            iv.start_ms,
                            iv.end_ms,
                            iv.state,
                            POWER_OUTAGE if auto else None,
                            int(auto),
                        ),
                    )
            for mid, since, state, auto in opened:
                conn.execute(
                    "DELETE FROM production_intervals WHERE machine_id = ? AND start_ms > ?",
                    (mid, since),
                )
                conn.execute(
                    "UPDATE production_intervals SET end_ms = ? WHERE machine_id = ?"
                    " AND end_ms IS NULL AND start_ms < ?",
                    (since, mid, since),
                )
                conn.execute(
                    "INSERT INTO production_intervals (machine_id, start_ms, end_ms, state,"
                    " reason_id, auto) VALUES (?, ?, NULL, ?, ?, ?)"
                    " ON CONFLICT (machine_id, start_ms) DO UPDATE SET end_ms = NULL,"
                    " state = excluded.state,"
                    " auto = CASE WHEN reason_id IS NULL THEN excluded.auto ELSE auto END,"
                    " reason_id = coalesce(reason_id, excluded.reason_id)",
                    (mid, since, state, POWER_OUTAGE if auto else None, int(auto)),
                )
            for ts, mids in outage_labels:
                conn.executemany(
                    "UPDATE production_intervals SET reason_id = ?, auto = 1 WHERE machine_id = ?"
                    " AND reason_id IS NULL AND start_ms BETWEEN ? AND ?"
                    " AND (end_ms IS NULL OR end_ms > ?) AND state IN"
                    " ('idle', 'stopped', 'fault', 'no_data')",
                    [(POWER_OUTAGE, mid, ts - grace, ts, ts) for mid in mids],
                )
            conn.executemany(
                "INSERT INTO production_counts (machine_id, minute_ms, total, rejects)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (machine_id, minute_ms) DO UPDATE SET"
                " total = total + excluded.total, rejects = rejects + excluded.rejects",
                [(mid, minute, t, r) for (mid, minute), (t, r) in pending.counts.items()],
            )
            conn.executemany(
                "INSERT INTO production_counters (machine_id, signal, ts, value) VALUES"
                " (?, ?, ?, ?) ON CONFLICT (machine_id, signal) DO UPDATE SET ts = excluded.ts,"
                " value = excluded.value",
                [(mid, sig, ts, v) for (mid, sig), (ts, v) in pending.counters.items()],
            )

        try:
            await self.db.execute_write_fn(write)
        except KarkhanaError:
            # nothing of it was written: derive it again from stored telemetry once the
            # database takes writes again
            for mid, t in _earliest(pending, opened).items():
                self._dirty[mid] = min(self._dirty.get(mid, t), t)
            raise

    def _in_outage(self, site_id: str, start_ms: int) -> bool:
        site = self.sites.get(site_id)
        if site is None or not site.outages:
            return False
        return starts_in_outage(start_ms, site.outage_spans(), self.profiles.outage_grace_ms)

    # -- rebuilding from stored telemetry ----------------------------------------------------
    async def rebuild(self, machine_id: str, start_ms: int) -> None:
        """Derive the machine's states and counts again from stored telemetry, from ``start_ms``
        to now; reasons given to stops that are still there are kept."""
        if machine_id not in self.machines:
            raise NotFound(f"no production machine {machine_id}")
        async with self._lock:
            await self._flush_locked()
            await self._rebuild_locked(machine_id, start_ms)

    async def _last_before(
        self, binding: tuple[str, str], t: int, within_ms: int = 7 * DAY_MS
    ) -> tuple[int, Value] | None:
        """The last value before ``t`` and when it came (to the hour, when looking back further
        than six hours)."""
        width = 60_000 if within_ms <= 6 * 3_600_000 else 3_600_000
        points = await self.store.query(binding[0], binding[1], t - within_ms, t, width, Agg.LAST)
        if not points or points[-1].value is None:
            return None
        if width == 60_000:  # the exact instant, from the last minute's raw samples
            raw = await self.store.query(binding[0], binding[1], points[-1].ts, t)
            if raw and raw[-1].value is not None:
                return raw[-1].ts, raw[-1].value
        return points[-1].ts, points[-1].value

    async def _samples(
        self, m: MachineInfo, signals: Iterable[str], start: int, end: int
    ) -> list[tuple[int, str, Value]]:
        out: list[tuple[int, str, Value]] = []
        for signal in signals:
            binding = m.bindings.get(signal)
            if binding is None:
                continue
            points = await self.store.query(binding[0], binding[1], start, end)
            out += [(p.ts, signal, p.value) for p in points if p.value is not None]
        out.sort(key=lambda x: x[0])
        return out

    async def _outages(self, site_id: str, start: int, end: int) -> list[Span]:
        site = self.sites.get(site_id)
        if site is None:
            return []
        normal = self.profiles.power.normal
        spans: list[Span] = []
        for binding in site.power:
            before = await self._last_before(binding, start)
            since = start if before is not None and before[1] != normal else None
            for p in await self.store.query(binding[0], binding[1], start, end):
                out = p.value != normal
                if out and since is None:
                    since = p.ts
                elif not out and since is not None:
                    spans.append((since, p.ts))
                    since = None
            if since is not None:
                spans.append((since, end + 1))
        return merge(spans)

    async def _rebuild_locked(self, mid: str, since: int) -> None:
        m = self.machines[mid]
        now = self.clock.now_ms()

        def first_start(conn: sqlite3.Connection) -> int | None:
            row = conn.execute(
                "SELECT start_ms FROM production_intervals WHERE machine_id = ? AND start_ms <= ?"
                " AND (end_ms IS NULL OR end_ms > ?) ORDER BY start_ms DESC LIMIT 1",
                (mid, since, since),
            ).fetchone()
            return None if row is None else int(row[0])

        start = await self.db.execute_read_fn(first_start) or since
        timeout = self.profiles.no_data_timeout_ms
        tracker = StateTracker(m.template.state_rules if m.template else (), timeout)
        intervals: list[Interval] = []
        if m.state_signals:
            seed_ts: int | None = None
            for signal in m.state_signals:
                binding = m.bindings.get(signal)
                found = (
                    None
                    if binding is None
                    else await self._last_before(binding, start, timeout + 60_000)
                )
                if found is not None:
                    tracker.values[signal] = found[1]
                    seed_ts = found[0] if seed_ts is None else max(seed_ts, found[0])
            if seed_ts is not None:
                intervals += tracker.feed(seed_ts, {})
            for ts, group in _by_ts(await self._samples(m, m.state_signals, start, now + 1)):
                intervals += tracker.feed(ts, group)
            intervals += tracker.silence(now)
            intervals += tracker.flush()
        intervals = [
            Interval(max(iv.start_ms, start), iv.end_ms, iv.state)
            for iv in intervals
            if iv.end_ms > start
        ]
        if tracker.since_ms < start:
            tracker.since_ms = start
        outages = await self._outages(m.site_id, start, now)

        minute = minute_of(start)
        buckets: dict[str, dict[int, float]] = {}
        lasts: dict[str, tuple[int, float]] = {}
        for counter in (m.count_key, m.reject_key):
            if counter is None or counter not in m.bindings:
                continue
            signal = counter
            before = await self._last_before(m.bindings[signal], minute)
            prev = float(before[1]) if before is not None and _number(before[1]) else None
            readings = [
                (ts, float(v))
                for ts, _, v in await self._samples(m, [signal], minute, now + 1)
                if _number(v)
            ]
            buckets[signal], last = bucket(readings, prev, m.modulus)
            if last is not None:
                lasts[signal] = (
                    readings[-1][0] if readings else before[0] if before else minute,
                    last,
                )
        total = buckets.get(m.count_key or "", {})
        rejects = buckets.get(m.reject_key or "", {})
        grace = self.profiles.outage_grace_ms
        open_state = tracker.state

        def write(conn: sqlite3.Connection) -> int | None:
            old = {
                row[0]: row[1:]
                for row in conn.execute(
                    "SELECT start_ms, id, state, reason_id, auto FROM production_intervals"
                    " WHERE machine_id = ? AND start_ms >= ?",
                    (mid, start),
                )
            }
            conn.execute(
                "DELETE FROM production_intervals WHERE machine_id = ? AND start_ms >= ?",
                (mid, start),
            )
            rows: list[tuple[int, int | None, MachineState]] = [
                (iv.start_ms, iv.end_ms, iv.state) for iv in intervals
            ]
            if open_state is not None:
                rows.append((tracker.since_ms, None, open_state))
            before = conn.execute(
                "SELECT id, start_ms, state, reason_id, auto FROM production_intervals"
                " WHERE machine_id = ? AND end_ms = ?",
                (mid, start),
            ).fetchone()
            merged = None
            if before is not None and rows and rows[0][0] == start and rows[0][2] == before[2]:
                # the same state goes on across the start of the rebuild: one interval
                conn.execute("DELETE FROM production_intervals WHERE id = ?", (before[0],))
                old[before[1]] = (before[0], before[2], before[3], before[4])
                rows[0] = (before[1], rows[0][1], rows[0][2])
                merged = before[1]
            inserts = []
            for s, e, state in rows:
                kept = old.get(s)
                reason, auto, row_id = None, 0, None
                if kept is not None and (kept[1] == state or {kept[1], state} <= STOP_STATES):
                    row_id, reason, auto = kept[0], kept[2], kept[3]
                if reason is None and state in STOP_STATES and starts_in_outage(s, outages, grace):
                    reason, auto = POWER_OUTAGE, 1
                inserts.append((row_id, mid, s, e, state, reason, auto))
            # rows that keep their id first, so that new ids are drawn above them
            inserts.sort(key=lambda row: row[0] is None)
            conn.executemany(
                "INSERT INTO production_intervals (id, machine_id, start_ms, end_ms, state,"
                " reason_id, auto) VALUES (?, ?, ?, ?, ?, ?, ?)",
                inserts,
            )
            conn.execute(
                "DELETE FROM production_counts WHERE machine_id = ? AND minute_ms >= ?",
                (mid, minute),
            )
            conn.executemany(
                "INSERT INTO production_counts (machine_id, minute_ms, total, rejects)"
                " VALUES (?, ?, ?, ?)",
                [(mid, b.minute_ms, b.total, b.rejects) for b in _buckets(total, rejects)],
            )
            conn.executemany(
                "INSERT INTO production_counters (machine_id, signal, ts, value) VALUES"
                " (?, ?, ?, ?) ON CONFLICT (machine_id, signal) DO UPDATE SET ts = excluded.ts,"
                " value = excluded.value",
                [(mid, sig, ts, v) for sig, (ts, v) in lasts.items()],
            )
            return merged

        merged = await self.db.execute_write_fn(write)
        if m.state_signals:
            if merged is not None and tracker.since_ms == start:
                tracker.since_ms = merged
            self.trackers[mid] = tracker
        for signal, reading in lasts.items():
            self._counters[(mid, signal)] = reading
        self._pending.closed.pop(mid, None)
        self._pending.opened.discard(mid)
        for key in [k for k in self._pending.counts if k[0] == mid]:
            del self._pending.counts[key]

    # -- reading -----------------------------------------------------------------------------
    async def look_up(self, *ids: tuple[str, str | None]) -> None:
        """Refresh from the asset model when a request names a machine, line or site this
        service has not seen yet (created in the last seconds), or wants the only site (None)
        while it knows of none yet (just after the server started)."""
        known = {
            "machine": self.machines.keys(),
            "line": {m.line_id for m in self.machines.values()},
            "site": self.sites.keys(),
        }
        now = time.monotonic()
        if now - self._looked_up >= LOOK_UP_S and any(
            (value and value not in known[kind]) or (kind == "site" and not known["site"])
            for kind, value in ids
        ):
            self._looked_up = now
            await self.refresh()

    def machine(self, machine_id: str) -> MachineInfo:
        m = self.machines.get(machine_id)
        if m is None:
            raise NotFound(f"no machine {machine_id}")
        return m

    def site(self, site_id: str) -> SiteInfo:
        site = self.sites.get(site_id)
        if site is None:
            raise NotFound(f"no site {site_id}")
        return site

    def production_machines(self, sites: frozenset[str] | None) -> list[MachineInfo]:
        return sorted(
            (
                m
                for m in self.machines.values()
                if m.produces and (sites is None or m.site_id in sites)
            ),
            key=lambda m: m.id,
        )

    async def intervals(
        self, machine_ids: Sequence[str], start: int, end: int
    ) -> dict[str, list[tuple[int, Interval]]]:
        """Stored intervals (with their row id) overlapping ``[start, end)``, whole."""
        now = self.clock.now_ms()
        return await self.db.execute_read_fn(
            lambda conn: self._read_intervals(conn, machine_ids, start, end, now)
        )

    def _read_intervals(
        self, conn: sqlite3.Connection, machine_ids: Sequence[str], start: int, end: int, now: int
    ) -> dict[str, list[tuple[int, Interval]]]:
        out: dict[str, list[tuple[int, Interval]]] = {mid: [] for mid in machine_ids}
        if not machine_ids:
            return out
        marks = ",".join("?" * len(machine_ids))
        loss = {rid: r.loss for rid, r in self.reasons.by_id.items()}
        for row_id, mid, s, e, state, reason in conn.execute(
            "SELECT id, machine_id, start_ms, end_ms, state, reason_id FROM"
            f" production_intervals WHERE machine_id IN ({marks}) AND start_ms < ?"
            " AND (end_ms IS NULL OR end_ms > ?) ORDER BY machine_id, start_ms",
            (*machine_ids, end, start),
        ):
            stop = max(now, s) if e is None else e
            out[mid].append((row_id, Interval(s, stop, state, reason, loss.get(reason))))
        return out

    async def counts(
        self, machine_ids: Sequence[str], start: int, end: int
    ) -> dict[str, CountSeries]:
        """Per-minute counts of each machine in ``[start, end)``, as columns."""
        return await self.db.execute_read_fn(
            lambda conn: _read_counts(conn, machine_ids, start, end)
        )

    def planned(self, site_id: str, start: int, end: int) -> list[Span]:
        site = self.sites.get(site_id)
        if site is None:
            return []
        return planned_windows(site.calendar, site.tz, start, end)

    async def oee_of(self, machines: Sequence[MachineInfo], start: int, end: int) -> dict[str, Oee]:
        ids = [m.id for m in machines]
        now = self.clock.now_ms()
        lookback = start - self.profiles.micro_stop_ms

        def read(
            conn: sqlite3.Connection,
        ) -> tuple[dict[str, list[tuple[int, Interval]]], dict[str, CountSeries], dict[str, int]]:
            return (
                self._read_intervals(conn, ids, lookback, end, now),
                _read_counts(conn, ids, start, end),
                _read_first_seen(conn, ids),
            )

        ivs, counts, first = await self.db.execute_read_fn(read)
        plans: dict[str, list[Span]] = {}
        out: dict[str, Oee] = {}
        for m in machines:
            if m.site_id not in plans:
                plans[m.site_id] = self.planned(m.site_id, start, end)
            # a machine is not blamed for the time before it first reported
            since = first.get(m.id, end)
            planned = [(max(s, since), e) for s, e in plans[m.site_id] if e > since]
            out[m.id] = oee_calc.compute(
                [iv for _, iv in ivs.get(m.id, [])],
                planned,
                counts.get(m.id, CountSeries.of([])),
                m.template.ideal_cycle_time_s if m.template else None,
                start,
                end,
                quality_measured=m.reject_key is not None and m.reject_key in m.bindings,
                params=self.params,
            )
        return out

    async def oee(self, machines: Sequence[MachineInfo], start: int, end: int) -> Oee:
        """OEE of one machine, or of several combined. A group leaves out the machines without an
        ideal cycle time (a ring frame's doffs), whose performance cannot be known, unless no
        machine has one."""
        results = await self.oee_of(machines, start, end)
        if len(machines) == 1:
            return results[machines[0].id]
        known = [r for r in results.values() if r.ideal_ms is not None]
        return oee_calc.combine(known or list(results.values()), start, end)

    def scope(
        self,
        sites: frozenset[str] | None,
        machine_id: str | None = None,
        line_id: str | None = None,
        site_id: str | None = None,
    ) -> Scope:
        """The production machines named by one of the ids, refused outside the user's sites."""
        given = [x for x in (machine_id, line_id, site_id) if x]
        if len(given) > 1:
            raise InvalidPayload("give one of machine_id, line_id and site_id")
        if machine_id:
            m = self.machine(machine_id)
            chosen = [m]
        elif line_id:
            chosen = [m for m in self.machines.values() if m.line_id == line_id and m.produces]
            if not chosen and not any(m.line_id == line_id for m in self.machines.values()):
                raise NotFound(f"no line {line_id} with machines")
        elif site_id:
            self.site(site_id)
            chosen = [m for m in self.machines.values() if m.site_id == site_id and m.produces]
        else:
            chosen = self.production_machines(sites)
        if sites is not None and any(m.site_id not in sites for m in chosen):
            raise Forbidden("this belongs to a site you do not have access to")
        if site_id and sites is not None and site_id not in sites:
            raise Forbidden("this belongs to a site you do not have access to")
        site_ids = {m.site_id for m in chosen} | ({site_id} if site_id else set())
        site = self.sites.get(next(iter(site_ids))) if len(site_ids) == 1 else None
        return Scope(tuple(sorted(chosen, key=lambda m: m.id)), site)

    def current_shift(self, site: SiteInfo, now: int | None = None) -> ShiftWindow | None:
        return shift_at(site.calendar, site.tz, self.clock.now_ms() if now is None else now)

    async def overview(self, sites: frozenset[str] | None) -> list[dict[str, Any]]:
        now = self.clock.now_ms()
        machines = self.production_machines(sites)
        by_shift: dict[tuple[int, int], list[MachineInfo]] = defaultdict(list)
        shift_of: dict[str, ShiftWindow | None] = {}
        for site_id in {m.site_id for m in machines}:
            site = self.sites.get(site_id)
            shift_of[site_id] = None if site is None else self.current_shift(site, now)
        for m in machines:
            shift = shift_of.get(m.site_id)
            if shift is not None:
                by_shift[(shift.start_ms, now)].append(m)
        results: dict[str, Oee] = {}
        for (start, end), group in by_shift.items():
            if end > start:
                results.update(await self.oee_of(group, start, end))
        out = []
        plans: dict[str, Cover] = {}
        for m in machines:
            state, since = self.current_state(m, now, plans)
            speed = self._speed.get(m.id)
            shift = shift_of.get(m.site_id)
            r = results.get(m.id)
            out.append(
                {
                    "machine_id": m.id,
                    "name": m.name,
                    "line_id": m.line_id,
                    "site_id": m.site_id,
                    "template": m.template_id,
                    "state": state,
                    "state_since_ms": since,
                    "speed": (
                        {"value": float(speed[1]), "unit": m.speed_unit or ""}
                        if speed is not None and _number(speed[1]) and state != "no_data"
                        else None
                    ),
                    "shift": None
                    if shift is None
                    else {
                        "id": shift.id,
                        "name": shift.name,
                        "start_ms": shift.start_ms,
                        "end_ms": shift.end_ms,
                    },
                    "output": r.total_count if r else 0.0,
                    "good": r.good_count if r else 0.0,
                    "oee": oee_factors(r),
                    "quality_measured": m.reject_key is not None and m.reject_key in m.bindings,
                }
            )
        return out

    def current_state(
        self, m: MachineInfo, now: int, plans: dict[str, Cover] | None = None
    ) -> tuple[MachineState, int | None]:
        """The live state, ``planned_stop`` outside planned time unless running; ``plans``
        caches each site's planned time around now."""
        tracker = self.trackers.get(m.id)
        if tracker is None or tracker.state is None:
            return "no_data", None
        state, since = tracker.state, tracker.since_ms
        if tracker.last_seen is not None and now - tracker.last_seen > tracker.timeout_ms:
            state, since = "no_data", tracker.last_seen
        if state != "running":
            plans = {} if plans is None else plans
            plan = plans.get(m.site_id)
            if plan is None:
                plan = plans[m.site_id] = Cover(self.planned(m.site_id, now - DAY_MS, now + 1))
            if not plan.contains(now):
                ended = max([e for _, e in plan.spans if e <= now], default=since)
                return "planned_stop", max(since, ended)
        return state, since

    async def states(self, machine_id: str, start: int, end: int) -> list[dict[str, Any]]:
        m = self.machine(machine_id)
        rows = (await self.intervals([m.id], start, end))[m.id]
        plan = self.planned(m.site_id, start, end)
        clipped = [
            Interval(max(iv.start_ms, start), min(iv.end_ms, end), iv.state, iv.reason_id)
            for _, iv in rows
        ]
        out = []
        for iv in overlay_plan([iv for iv in clipped if iv.end_ms > iv.start_ms], plan):
            out.append(
                {
                    "start_ms": iv.start_ms,
                    "end_ms": iv.end_ms,
                    "state": iv.state,
                    "reason_id": iv.reason_id if iv.state != "planned_stop" else None,
                }
            )
        return out

    async def stops(self, machines: Sequence[MachineInfo], start: int, end: int) -> list[Stop]:
        """Stops overlapping ``[start, end)`` that touch planned production time."""
        ids = [m.id for m in machines]
        marks = ",".join("?" * len(ids))
        if not ids:
            return []

        def read(conn: sqlite3.Connection) -> list[Any]:
            return conn.execute(
                "SELECT id, machine_id, start_ms, end_ms, state, reason_id, auto FROM"
                f" production_intervals WHERE machine_id IN ({marks}) AND start_ms < ?"
                " AND (end_ms IS NULL OR end_ms > ?) AND state IN"
                " ('idle', 'stopped', 'fault', 'no_data') ORDER BY start_ms, machine_id",
                (*ids, end, start),
            ).fetchall()

        site_of = {m.id: m.site_id for m in machines}
        plans = {s: Cover(self.planned(s, start, end)) for s in set(site_of.values())}
        now = self.clock.now_ms()
        out = []
        for row in await self.db.execute_read_fn(read):
            row_id, mid, s, e, state, reason, auto = row
            if plans[site_of[mid]].overlap(max(s, start), min(now if e is None else e, end)) > 0:
                out.append(Stop(row_id, mid, s, e, state, reason, bool(auto)))
        return out

    async def stop_by_id(self, stop_id: int) -> Stop:
        def read(conn: sqlite3.Connection) -> Any:
            return conn.execute(
                "SELECT id, machine_id, start_ms, end_ms, state, reason_id, auto FROM"
                " production_intervals WHERE id = ?",
                (stop_id,),
            ).fetchone()

        row = await self.db.execute_read_fn(read)
        if row is None or row[4] not in STOP_STATES:
            raise NotFound(f"no stop {stop_id}")
        return Stop(row[0], row[1], row[2], row[3], row[4], row[5], bool(row[6]))

    async def set_reason(self, stop_id: int, reason_id: str) -> tuple[Stop, Stop]:
        """Give a stop its reason (an operator's choice replaces an automatic one)."""
        self.reasons.get(reason_id)

        def write(conn: sqlite3.Connection) -> None:
            changed = conn.execute(
                "UPDATE production_intervals SET reason_id = ?, auto = 0 WHERE id = ? AND state"
                " IN ('idle', 'stopped', 'fault', 'no_data')",
                (reason_id, stop_id),
            ).rowcount
            if not changed:
                raise NotFound(f"no stop {stop_id}")

        async with self._lock:
            before = await self.stop_by_id(stop_id)
            await self.db.execute_write_fn(write)
        return before, await self.stop_by_id(stop_id)

    async def pareto(
        self, machines: Sequence[MachineInfo], by: str, start: int, end: int
    ) -> list[ParetoItem]:
        """Downtime in planned production time by reason or by machine, longest first."""
        stops = await self.stops(machines, start, end)
        now = self.clock.now_ms()
        site_of = {m.id: m.site_id for m in machines}
        plans = {s: Cover(self.planned(s, start, end)) for s in set(site_of.values())}
        items: list[tuple[str, int]] = []
        for stop in stops:
            inside = plans[site_of[stop.machine_id]].overlap(
                max(stop.start_ms, start), min(now if stop.end_ms is None else stop.end_ms, end)
            )
            key = stop.machine_id if by == "machine" else (stop.reason_id or UNASSIGNED)
            items.append((key, inside))
        labels: dict[str, Label] = {UNASSIGNED: UNASSIGNED_LABEL}
        if by == "machine":
            labels.update({m.id: Label(m.name, m.name) for m in machines})
        else:
            labels.update({rid: r.label for rid, r in self.reasons.by_id.items()})
        return pareto(items, labels)

    def shifts_on(self, site: SiteInfo, day: date) -> list[ShiftWindow]:
        """The working shifts that start on a local date (none on a day off)."""
        return [
            w
            for w in shifts_between(site.calendar, site.tz, *day_span(day, site.tz))
            if w.day == day.isoformat()
        ]

    # -- reports -------------------------------------------------------------------------
    def report_range(
        self, site: SiteInfo, kind: str, day: date, shift_id: str | None
    ) -> tuple[int, int, str]:
        """The time a shift or daily report covers, and its title."""
        if kind == "daily":
            shifts = self.shifts_on(site, day)
            if shifts:
                return shifts[0].start_ms, shifts[-1].end_ms, f"Daily report {day.isoformat()}"
            start, end = day_span(day, site.tz)
            return start, end, f"Daily report {day.isoformat()} (no shifts)"
        if shift_id is None:
            now = self.clock.now_ms()
            begun = [w for w in self.shifts_on(site, day) if w.start_ms <= now]
            if not begun and day == local_date(now, site.tz):
                # after midnight, before today's first shift: the shift begun last (a night
                # shift is named for the day it started)
                yesterday = day - timedelta(days=1)
                begun = [w for w in self.shifts_on(site, yesterday) if w.start_ms <= now]
            if not begun:
                raise NotFound(f"no shift of {day.isoformat()} has begun")
            window = begun[-1]
        else:
            if not any(s.id == shift_id for s in site.calendar.shifts):
                raise NotFound(f"no shift {shift_id} in calendar {site.calendar.id}")
            found = shift_on(site.calendar, site.tz, day, shift_id)
            if found is None:
                raise NotFound(f"{day.isoformat()} is not a working day")
            window = found
        return (
            window.start_ms,
            window.end_ms,
            f"Shift report {window.day} shift {window.id} ({window.name})",
        )

    async def report(self, site: SiteInfo, kind: str, day: date, shift_id: str | None) -> Report:
        return await self.report_between(site, *self.report_range(site, kind, day, shift_id))

    async def report_between(self, site: SiteInfo, start: int, end: int, title: str) -> Report:
        """The report of ``[start, end)`` (a range from ``report_range``), up to now."""
        end_now = min(end, max(start + 1, self.clock.now_ms()))
        machines = self.production_machines(frozenset({site.id}))
        results = await self.oee_of(machines, start, end_now)
        stops = await self.stops(machines, start, end_now)
        by_reason = await self.pareto(machines, "reason", start, end_now)
        return build_report(
            title=title,
            site_name=site.name,
            tz=site.tz,
            start_ms=start,
            end_ms=end,
            machines=[(m.id, m.name, results[m.id]) for m in machines],
            plant=oee_calc.combine(list(results.values()), start, end_now),
            pareto=by_reason,
            stops=stops,
            reason_label=self.reasons.label,
            names={m.id: m.name for m in machines},
            now_ms=self.clock.now_ms(),
        )

    async def write_due_reports(self) -> list[Path]:
        """CSV and PDF of every shift and day that ended in the last day and has none yet."""
        now = self.clock.now_ms()
        written: list[Path] = []
        for site in list(self.sites.values()):
            if not self.production_machines(frozenset({site.id})):
                continue
            folder = self.reports_dir / site.id
            for w in shifts_between(site.calendar, site.tz, now - DAY_MS, now):
                if w.end_ms > now:
                    continue
                day = date.fromisoformat(w.day)
                written += await self._write(
                    site, folder, f"{w.day}-shift-{w.id}", "shift", day, w.id
                )
            yesterday = local_date(now, site.tz) - timedelta(days=1)
            _, end, _ = self.report_range(site, "daily", yesterday, None)
            if end <= now:
                written += await self._write(
                    site, folder, f"{yesterday.isoformat()}-daily", "daily", yesterday, None
                )
        return written

    async def _write(
        self, site: SiteInfo, folder: Path, stem: str, kind: str, day: date, shift: str | None
    ) -> list[Path]:
        csv_path, pdf_path = folder / f"{stem}.csv", folder / f"{stem}.pdf"
        if csv_path.exists() and pdf_path.exists():
            return []
        report = await self.report(site, kind, day, shift)
        csv_data, pdf_data = render_csv(report).encode(), render_pdf(report)

        def save() -> None:
            folder.mkdir(parents=True, exist_ok=True)
            for path, data in ((csv_path, csv_data), (pdf_path, pdf_data)):
                tmp = path.with_suffix(path.suffix + ".tmp")
                tmp.write_bytes(data)
                tmp.replace(path)

        try:
            await asyncio.to_thread(save)
        except OSError as exc:
            raise KarkhanaError(f"cannot write report {stem}: {exc.strerror}") from None
        log.info("wrote production report %s/%s", site.id, stem)
        return [csv_path, pdf_path]


def _log_crash(task: asyncio.Task[None]) -> None:
    """A production task that ended by an error says so in the log at once."""
    if not task.cancelled() and task.exception() is not None:
        log.error("production monitoring stopped", exc_info=task.exception())


def _read_counts(
    conn: sqlite3.Connection, machine_ids: Sequence[str], start: int, end: int
) -> dict[str, CountSeries]:
    return {
        mid: CountSeries.of_rows(
            conn.execute(
                "SELECT minute_ms, total, rejects FROM production_counts"
                " WHERE machine_id = ? AND minute_ms >= ? AND minute_ms < ?"
                " ORDER BY minute_ms",
                (mid, start - start % 60_000, end),
            ).fetchall()
        )
        for mid in machine_ids
    }


def _read_first_seen(conn: sqlite3.Connection, machine_ids: Sequence[str]) -> dict[str, int]:
    """When each machine's first stored interval began."""
    if not machine_ids:
        return {}
    marks = ",".join("?" * len(machine_ids))
    return {
        mid: first
        for mid, first in conn.execute(
            "SELECT machine_id, min(start_ms) FROM production_intervals"
            f" WHERE machine_id IN ({marks}) GROUP BY machine_id",
            tuple(machine_ids),
        )
    }


def _earliest(
    pending: _Pending, opened: Sequence[tuple[str, int, MachineState, bool]]
) -> dict[str, int]:
    """The earliest instant each machine's pending writes touch."""
    out: dict[str, int] = {}

    def note(mid: str, t: int) -> None:
        out[mid] = min(out.get(mid, t), t)

    for mid, ivs in pending.closed.items():
        for iv in ivs:
            note(mid, iv.start_ms)
    for mid, since, _, _ in opened:
        note(mid, since)
    for mid, minute in pending.counts:
        note(mid, minute)
    return out


def oee_factors(r: Oee | None) -> dict[str, float] | None:
    if r is None or r.oee is None or r.availability is None or r.performance is None:
        return None
    return {
        "availability": r.availability,
        "performance": r.performance,
        "quality": r.quality,
        "oee": r.oee,
    }


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError):
        return ZoneInfo("Asia/Karachi")


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _by_ts(samples: list[tuple[int, str, Value]]) -> Iterable[tuple[int, dict[str, Value]]]:
    i = 0
    while i < len(samples):
        ts = samples[i][0]
        group: dict[str, Value] = {}
        while i < len(samples) and samples[i][0] == ts:
            group[samples[i][1]] = samples[i][2]
            i += 1
        yield ts, group


def _buckets(total: Mapping[int, float], rejects: Mapping[int, float]) -> list[CountBucket]:
    return [
        CountBucket(minute, total.get(minute, 0.0), rejects.get(minute, 0.0))
        for minute in sorted(set(total) | set(rejects))
    ]
