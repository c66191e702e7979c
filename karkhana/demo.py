"""`karkhana demo`: a simulated factory feeding the server it runs beside.

The simulated devices are registered like real ones and publish over MQTT to the server's own
broker with their own credentials, so the demo exercises the same path a real factory uses.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
from typing import Any

from karkhana.core.errors import Conflict, KarkhanaError
from karkhana.runtime import Runtime
from karkhana.sim.plant import Plant
from karkhana.sim.profiles import build_plant
from karkhana.sim.runner import run_simulation
from karkhana.sim.transport import MqttTransport

log = logging.getLogger(__name__)

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


async def run_demo(rt: Runtime, args: argparse.Namespace) -> None:
    plant = build_plant(args.profile, args.devices, args.seed, rt.clock.now_ms())
    tokens = await provision(rt, plant)
    await rt.alarms.refresh_machines(force=True)
    await starter_rules(rt, plant.profile)
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
