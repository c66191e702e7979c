"""`karkhana demo`: a simulated factory feeding the server it runs beside.

The simulated devices are registered like real ones and publish over MQTT to the server's own
broker with their own credentials, so the demo exercises the same path a real factory uses.

On a new data folder the demo first writes ``--history-days`` of the plant's past straight into
the store (docs/simulator.md, "Demo history"): production states, the condition monitor and the
starter rules' alarms are brought up to date over it, then the live simulation carries on from
now. A marker file in the data folder keeps a restart from writing it twice.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import time
from bisect import bisect_left
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from itertools import groupby
from pathlib import Path
from typing import Any

from karkhana.alarms.engine import AlarmEvent, BoundRule, RuleSet
from karkhana.alarms.model import parse_rule
from karkhana.core.errors import ConfigError, Conflict, KarkhanaError
from karkhana.core.files import write_atomically
from karkhana.core.model import Sample
from karkhana.energy.config import FILE_NAME as ENERGY_CONFIG
from karkhana.maintenance.train import train_simulated
from karkhana.runtime import Runtime
from karkhana.sim.device import DAY_MS
from karkhana.sim.history import (
    COUNTED_REASONS,
    PERIOD_MS,
    chunks,
    fast_forward,
    plant_start,
    step_times,
    stop_reason,
    wear_fault,
)
from karkhana.sim.plant import Plant
from karkhana.sim.profiles import build_plant
from karkhana.sim.runner import run_simulation
from karkhana.sim.transport import MqttTransport

log = logging.getLogger(__name__)
DEFAULT_HISTORY_DAYS = 3.0
MARKER = "demo-history.json"
"""Per profile: the plant's seed, size and start, and how far its history got."""
PROGRESS_S = 5.0

SITE_NAMES = {
    "textile": ("demo-mill", "Demo textile mill", "weaving", "Weaving shed", "shed-a", "Shed A"),
    "auto": ("demo-plant", "Demo auto-parts plant", "press-shop", "Press shop", "cell-1", "Cell 1"),
    "food": ("demo-food", "Demo food plant", "processing", "Processing", "line-1", "Line 1"),
}


async def provision(rt: Runtime, plant: Plant) -> dict[str, str]:
    """Register every simulated device (new token each start) and model it as a machine."""
    site, site_name, area, area_name, line, line_name = SITE_NAMES[plant.profile]
    for create in (
        rt.assets.create_site(site, site_name),
        rt.assets.create_area(area, site, area_name),
        rt.assets.create_line(line, area, line_name),
    ):
        with contextlib.suppress(Conflict):
            await create
    tokens: dict[str, str] = {}
    for device in plant.devices:
        if rt.devices.exists(device.device_id):
            tokens[device.device_id] = await rt.devices.rotate(device.device_id)
        else:
            _, tokens[device.device_id] = await rt.devices.create(
                device.device_id, device.name, device.template
            )
        if device.template in rt.assets.templates:
            with contextlib.suppress(Conflict):
                await rt.assets.create_machine(
                    device.device_id, line, device.name, device.template, device.device_id
                )
    return tokens


LOOM_TEMPLATE = "power_loom"

STARTER_RULES: dict[str, tuple[dict[str, Any], ...]] = {
    "textile": (
        {
            "id": "demo-loom-bearing-hot",
            "name": "Loom bearing temperature above 70 °C for 2 minutes",
            "severity": "critical",
            "template": "power_loom",
            "condition": {
                "type": "threshold",
                "signal": "bearing_temp_c",
                "op": ">",
                "value": 70,
                "deadband": 2,
            },
            "for_s": 120,
        },
        {
            "id": "demo-loom-vibration",
            "name": "Loom vibration in ISO 10816 zone D (above 7.1 mm/s) for 1 minute",
            "severity": "warning",
            "template": "power_loom",
            "condition": {
                "type": "threshold",
                "signal": "vibration_rms_mm_s",
                "op": ">",
                "value": 7.1,
                "deadband": 0.5,
            },
            "for_s": 60,
        },
        {
            "id": "demo-loom-silent",
            "name": "Loom sends no data for 5 minutes",
            "severity": "warning",
            "template": "power_loom",
            "condition": {"type": "stale", "signal": "picks_per_min", "after_s": 300},
        },
    ),
}
"""Rules the demo starts with, so that the simulated faults raise alarms out of the box."""


async def starter_rules(rt: Runtime, profile: str) -> int:
    """Create the profile's starter rules that do not exist yet; returns how many were made."""
    made = 0
    for rule in STARTER_RULES.get(profile, ()):
        with contextlib.suppress(Conflict):
            await rt.alarms.create_rule(rule, "system", None)
            made += 1
    return made


# -- history ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class HistoryMark:
    """What the marker file keeps per profile, so that a restart continues the same plant."""

    seed: int
    devices: int | None
    plant_start_ms: int
    history_start_ms: int
    complete: bool


@dataclass(frozen=True, slots=True)
class HistoryReport:
    """What writing the history did, for the log."""

    start_ms: int
    end_ms: int
    samples: int
    machines_rebuilt: int
    stops_labelled: int
    health_points: int
    alarms_raised: int
    write_s: float
    total_s: float


def read_mark(path: Path, profile: str) -> HistoryMark | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot read {path} ({exc}); remove it to start the demo afresh"
        ) from None
    entry = doc.get(profile) if isinstance(doc, dict) else None
    if entry is None:
        return None
    try:
        devices = entry["devices"]
        return HistoryMark(
            seed=int(entry["seed"]),
            devices=None if devices is None else int(devices),
            plant_start_ms=int(entry["plant_start_ms"]),
            history_start_ms=int(entry["history_start_ms"]),
            complete=bool(entry["complete"]),
        )
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"{path}: {profile} entry is damaged; remove the file") from None


def write_mark(path: Path, profile: str, mark: HistoryMark) -> None:
    doc: dict[str, Any] = {}
    with contextlib.suppress(FileNotFoundError, ValueError):
        loaded = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(loaded, dict):
            doc = loaded
    doc[profile] = asdict(mark)
    try:
        write_atomically(path, (json.dumps(doc, indent=2) + "\n").encode())
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None


async def last_stored(rt: Runtime, plant: Plant) -> int | None:
    """The newest sample time of any of the plant's devices (None: nothing stored yet)."""
    newest: int | None = None
    for device in plant.devices:
        for latest in await rt.store.latest(device.device_id):
            newest = latest.ts if newest is None else max(newest, latest.ts)
    return newest


def starter_bindings(rt: Runtime, profile: str) -> list[BoundRule]:
    """The profile's starter rules that do not exist yet, bound to the machines, so that the
    history is judged by them before they go live."""
    out: list[BoundRule] = []
    for body in STARTER_RULES.get(profile, ()):
        rule = parse_rule(body)
        if rule.id not in rt.alarms.rules:  # a live rule: the alarm service judges what is written
            out += rt.alarms.bind(rule)
    return out


def evaluate(ruleset: RuleSet, samples: list[Sample], steps: tuple[int, ...]) -> list[AlarmEvent]:
    """Feed samples (in time order) to the rules, with time passing at every step, as the
    alarm service would have seen them live."""
    events: list[AlarmEvent] = []
    by_ts = {ts: list(group) for ts, group in groupby(samples, key=lambda s: s.ts)}
    for t in steps:
        batch = by_ts.get(t)
        if batch:
            events += ruleset.feed(batch)
        events += ruleset.tick(t)
    return events


def _stepped(stamps: list[int], values: list[float], t_ms: int) -> bool:
    """Whether a counter went up between its last reading before ``t_ms`` and the next."""
    i = bisect_left(stamps, t_ms)
    return 0 < i < len(stamps) and values[i] > values[i - 1]


async def label_stops(rt: Runtime, plant: Plant, start_ms: int, end_ms: int) -> int:
    """Give the past stops of the plant the reasons its weavers and operators would have given
    (production's reason tree); returns how many were labelled."""
    site_id = SITE_NAMES[plant.profile][0]
    wear = wear_fault(plant)
    known = rt.production.reasons.by_id
    labelled = 0
    for m in [m for m in rt.production.machines.values() if m.site_id == site_id]:
        counters: dict[str, tuple[list[int], list[float]]] = {}
        for key, _ in COUNTED_REASONS.get(m.template_id, ()):
            if key in m.bindings:
                device, signal = m.bindings[key]
                points = await rt.store.query(device, signal, start_ms - PERIOD_MS, end_ms)
                numbers = [(p.ts, float(p.value)) for p in points if isinstance(p.value, float)]
                counters[key] = ([t for t, _ in numbers], [v for _, v in numbers])
        device = m.bindings.get("state", (m.id, ""))[0]
        for stop in await rt.production.stops([m], start_ms, end_ms):
            if stop.reason_id is not None or stop.end_ms is None or stop.end_ms > end_ms:
                continue
            counted = {k for k, (ts, vs) in counters.items() if _stepped(ts, vs, stop.start_ms)}
            failed = (
                wear is not None
                and wear.device_id == device
                and wear.failure_ms is not None
                and wear.failure_ms - PERIOD_MS <= stop.start_ms
                and (wear.end_ms is None or stop.start_ms < wear.end_ms)
            )
            reason = stop_reason(m.template_id, stop.state, counted, failed=failed)
            if reason is not None and reason in known:
                await rt.production.set_reason(stop.id, reason)
                labelled += 1
    return labelled


def _reports(rt: Runtime, site_id: str) -> set[Path]:
    folder = rt.production.reports_dir / site_id
    return set(folder.iterdir()) if folder.is_dir() else set()


async def load_history(
    rt: Runtime, plant: Plant, start_ms: int, period_ms: int = PERIOD_MS
) -> HistoryReport:
    """Write the plant's readings from ``start_ms`` until now into the store (continuing after
    what an interrupted run left), then bring production, condition monitoring and the starter
    rules' alarms up to date over them. The plant must not be past ``start_ms``."""
    began = time.monotonic()
    site_id = SITE_NAMES[plant.profile][0]
    await rt.production.refresh()
    reports_before = _reports(rt, site_id)
    ruleset = RuleSet(starter_bindings(rt, plant.profile))
    first = start_ms
    last = await last_stored(rt, plant)
    if last is not None and last >= start_ms:
        first = start_ms + ((last - start_ms) // period_ms + 1) * period_ms
        log.info("demo history: continuing an interrupted run from %s", _iso(first))
    if plant.now_ms < first - period_ms:
        fast_forward(plant, first - period_ms)
    samples = health = raised = 0
    next_log = began + PROGRESS_S
    begin = first
    while step_times(begin, rt.clock.now_ms(), period_ms):
        for chunk in chunks(plant, begin, rt.clock.now_ms(), period_ms):
            await rt.store.write(chunk.samples)
            samples += len(chunk.samples)
            if ruleset.rules:
                events = evaluate(ruleset, chunk.samples, chunk.steps)
                if events:
                    await rt.alarms.import_events(events)
                    raised += sum(1 for e in events if e.kind == "raised")
            health += len(await rt.maintenance.update_all())
            begin = chunk.end_ms
            if time.monotonic() >= next_log:
                next_log = time.monotonic() + PROGRESS_S
                total = max(1, rt.clock.now_ms() - start_ms)
                log.info(
                    "demo history: %.0f%% written (%s samples, %.0f s)",
                    100.0 * (chunk.end_ms - start_ms) / total,
                    f"{samples:,}",
                    time.monotonic() - began,
                )
    written = time.monotonic() - began
    machines = [m.id for m in rt.production.machines.values() if m.site_id == site_id]
    for machine_id in machines:
        await rt.production.rebuild(machine_id, start_ms)
    labelled = await label_stops(rt, plant, start_ms, plant.now_ms)
    # reports written while the history was still coming in are incomplete: write them again
    for path in _reports(rt, site_id) - reports_before:
        path.unlink(missing_ok=True)
    await rt.production.write_due_reports()
    return HistoryReport(
        start_ms=start_ms,
        end_ms=plant.now_ms,
        samples=samples,
        machines_rebuilt=len(machines),
        stops_labelled=labelled,
        health_points=health,
        alarms_raised=raised,
        write_s=written,
        total_s=time.monotonic() - began,
    )


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


async def prepare(rt: Runtime, args: argparse.Namespace) -> tuple[Plant, dict[str, str]]:
    """Build the plant (continuing the one of an earlier run), register its devices, write its
    history when the data folder is new, and bring it to now; returns it and the tokens."""
    days = float(getattr(args, "history_days", 0.0) or 0.0)
    if days < 0:
        raise ConfigError("--history-days must not be negative")
    history_ms = round(days * DAY_MS)
    now = rt.clock.now_ms()
    path = rt.settings.data_dir / MARKER
    mark = read_mark(path, args.profile)
    history_from: int | None = None
    if mark is not None and (mark.seed, mark.devices) == (args.seed, args.devices):
        start = mark.plant_start_ms
        if not mark.complete and history_ms > 0:
            history_from = mark.history_start_ms
    else:
        probe = build_plant(args.profile, args.devices, args.seed, now)
        mark = None
        start = now
        if history_ms > 0:
            if await last_stored(rt, probe) is None:
                start = plant_start(args.profile, args.devices, args.seed, now, history_ms)
                history_from = now - history_ms
                mark = HistoryMark(args.seed, args.devices, start, history_from, False)
                write_mark(path, args.profile, mark)
            else:
                log.info("demo history: the data folder already holds this plant's data")
    plant = build_plant(args.profile, args.devices, args.seed, start)
    tokens = await provision(rt, plant)
    await rt.alarms.refresh_machines(force=True)
    if history_from is not None and mark is not None:
        log.info(
            "demo history: writing the plant's readings from %s until now, one every %d s"
            " (the dashboard answers meanwhile and fills as it goes)",
            _iso(history_from),
            PERIOD_MS // 1000,
        )
        try:
            report = await load_history(rt, plant, history_from)
        except KarkhanaError as exc:
            log.error("demo history stopped: %s", exc.message)
        else:
            write_mark(
                path,
                args.profile,
                HistoryMark(mark.seed, mark.devices, start, history_from, True),
            )
            log.info(
                "demo history: %.1f days, %s samples written in %.1f s; states and counts of %d"
                " machines rebuilt, %d stops given reasons, %d health index points,"
                " %d alarms raised; %.1f s in all",
                (report.end_ms - report.start_ms) / DAY_MS,
                f"{report.samples:,}",
                report.write_s,
                report.machines_rebuilt,
                report.stops_labelled,
                report.health_points,
                report.alarms_raised,
                report.total_s,
            )
    fast_forward(plant, rt.clock.now_ms(), max(5 * 60_000, (rt.clock.now_ms() - start) // 2000))
    await starter_rules(rt, plant.profile)
    return plant, tokens


async def train_models(rt: Runtime, profile: str, lives: int) -> int:
    """Train the looms' remaining-life model on simulated run-to-failure lives when none is
    stored yet (a real mill trains it from its own recorded breakdowns), then score the looms'
    data so far with it; returns the model version (0: none trained)."""
    if profile != "textile" or lives <= 0 or rt.prognosis.model(LOOM_TEMPLATE) is not None:
        return 0
    log.info(
        "training the looms' remaining-life model on %d simulated run-to-failure lives"
        " (once: it is stored under %s)",
        lives,
        rt.models.root,
    )
    began = time.monotonic()
    manifest = await asyncio.to_thread(
        train_simulated, rt.models, rt.assets.template(LOOM_TEMPLATE), lives=lives
    )
    scored = await rt.maintenance.rul_backfill(LOOM_TEMPLATE)
    log.info(
        "remaining-life model %s v%d trained in %.0f s (held-out error %.1f h);"
        " %d hourly estimates written",
        manifest.template,
        manifest.version,
        time.monotonic() - began,
        manifest.metrics.get("holdout_rmse_hours", float("nan")),
        scored,
    )
    return manifest.version


async def _train_in_background(rt: Runtime, profile: str, lives: int) -> None:
    try:
        await train_models(rt, profile, lives)
    except KarkhanaError as exc:
        log.error("the remaining-life model could not be trained: %s", exc.message)


async def run_demo(rt: Runtime, args: argparse.Namespace) -> None:
    lives = int(getattr(args, "rul_lives", 0) or 0)
    training = asyncio.create_task(_train_in_background(rt, args.profile, lives))
    try:
        await _run_demo(rt, args)
    finally:
        if not training.done():
            training.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await training


DEMO_ENERGY = {
    "textile": (
        "# Written by `karkhana demo`: the simulated mill's standby generator (docs/energy.md).\n"
        "[sites.demo-mill]\n"
        "generator_kva = 200\n"
        "# the compressor's own air (dryer purge, drains), not counted as leaks\n"
        'air_own_use_m3_min = { "tx-compressor-1" = 0.3 }\n'
        "# loads that can run outside the peak hours get the off-peak advice; the looms and\n"
        "# ring frames run three shifts, so none is listed\n"
        "flexible = []\n"
    ),
}
"""The demo plants' energy configuration, written once where the data folder has none."""


def write_energy_config(rt: Runtime, profile: str) -> None:
    path = rt.settings.data_dir / ENERGY_CONFIG
    if profile in DEMO_ENERGY and not path.exists():
        write_atomically(path, DEMO_ENERGY[profile].encode())


async def _run_demo(rt: Runtime, args: argparse.Namespace) -> None:
    write_energy_config(rt, args.profile)
    try:
        plant, tokens = await prepare(rt, args)
    except KarkhanaError as exc:
        log.error("the demo cannot start: %s", exc.message)
        return
    s = rt.settings
    if rt.tls is not None and s.mqtt_plain != "on":
        transport = MqttTransport(
            "127.0.0.1", s.mqtts_port, tokens, tls=True, ca_file=rt.tls.cafile
        )
    else:
        transport = MqttTransport("127.0.0.1", s.mqtt_port, tokens)
    log.info(
        "simulating a %s plant: %d devices at %.3g Hz, %gx speed",
        plant.profile,
        len(plant.devices),
        args.rate,
        args.speedup,
    )
    try:
        await run_simulation(plant, transport, args.rate, args.speedup)
    except KarkhanaError as exc:
        log.error("the simulator stopped: %s", exc.message)
