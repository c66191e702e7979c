"""``karkhana simulate``: options and the run, for the main command line to mount."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

from karkhana.core.clock import SYSTEM_CLOCK
from karkhana.core.errors import ConfigError, InvalidPayload, KarkhanaError
from karkhana.core.timeutil import parse_ts
from karkhana.sim.faults import to_json
from karkhana.sim.plant import Plant
from karkhana.sim.profiles import PROFILES, build_plant
from karkhana.sim.provision import HttpProvisioner
from karkhana.sim.runner import RunReport, run_simulation
from karkhana.sim.transport import DeviceRefused, HttpTransport, MqttTransport, Transport

log = logging.getLogger("karkhana.sim")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    env = os.environ
    http_port = env.get("KARKHANA_HTTP_PORT", "8000")
    data_dir = Path(env.get("KARKHANA_DATA_DIR", "data"))
    parser.add_argument("--profile", choices=PROFILES, default="textile", help="plant to simulate")
    parser.add_argument(
        "--devices",
        type=int,
        default=None,
        metavar="N",
        help="main machines (looms; presses/CNC/moulding; cold rooms + filling lines)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=1.0,
        metavar="HZ",
        help="samples per simulated second per device",
    )
    parser.add_argument(
        "--speedup", type=float, default=1.0, metavar="X", help="simulated seconds per real second"
    )
    parser.add_argument("--seed", type=int, default=42, help="same seed, same plant and faults")
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        metavar="SECONDS",
        help="real seconds to run (default: until interrupted); simulates SECONDS x speedup",
    )
    parser.add_argument(
        "--start",
        default=None,
        metavar="ISO8601",
        help="simulated start time (see docs/simulator.md for the default)",
    )
    parser.add_argument(
        "--no-faults", action="store_true", help="no injected faults (load shedding stays)"
    )
    parser.add_argument("--transport", choices=("mqtt", "http"), default="mqtt")
    parser.add_argument("--mqtt-host", default="127.0.0.1")
    parser.add_argument("--mqtt-port", type=int, default=int(env.get("KARKHANA_MQTT_PORT", "1883")))
    parser.add_argument("--mqtt-tls", action="store_true", help="connect to the broker with TLS")
    parser.add_argument(
        "--mqtt-ca", type=Path, default=None, metavar="FILE", help="CA certificate for --mqtt-tls"
    )
    parser.add_argument(
        "--server",
        default=f"http://127.0.0.1:{http_port}",
        metavar="URL",
        help="karkhana server (device registration and HTTP telemetry)",
    )
    parser.add_argument("--username", default="admin", help="admin user that registers the devices")
    parser.add_argument(
        "--password",
        default=env.get("KARKHANA_ADMIN_PASSWORD", ""),
        help="admin password (default: KARKHANA_ADMIN_PASSWORD)",
    )
    parser.add_argument(
        "--credentials",
        type=Path,
        default=data_dir / "sim-credentials.json",
        metavar="FILE",
        help="where device tokens are kept between runs",
    )
    parser.add_argument(
        "--export-truth",
        type=Path,
        default=None,
        metavar="FILE",
        help="write the ground truth of the simulated span as JSON when the run ends",
    )


def start_ms_from_args(args: argparse.Namespace, now_ms: int) -> int:
    """``--start``, or by default a start that makes a sped-up, bounded run end at ``now_ms``.

    Servers reject timestamps far in the future, so a run of one simulated week at speedup
    10080 for 60 s starts a week ago and fills the history up to now.
    """
    if args.start is not None:
        try:
            return parse_ts(args.start, "--start")
        except InvalidPayload as exc:
            raise ConfigError(exc.message) from None
    if args.duration is not None and args.speedup > 1:
        return now_ms - int(args.duration * 1000 * args.speedup)
    return now_ms


def plant_from_args(args: argparse.Namespace, now_ms: int) -> Plant:
    return build_plant(
        args.profile,
        args.devices,
        args.seed,
        start_ms_from_args(args, now_ms),
        faults=not args.no_faults,
    )


def _transport(args: argparse.Namespace, tokens: dict[str, str]) -> Transport:
    if args.transport == "http":
        return HttpTransport(args.server, tokens)
    return MqttTransport(
        args.mqtt_host, args.mqtt_port, tokens, tls=args.mqtt_tls, ca_file=args.mqtt_ca
    )


async def run_from_args(args: argparse.Namespace) -> int:
    """Register the devices, run the simulation, export ground truth; 0 on success."""
    try:
        report = await _run(args)
    except KarkhanaError as exc:
        print(f"karkhana simulate: {exc.message}", file=sys.stderr)
        return 1
    print(
        f"simulated {(report.end_ms - report.start_ms) / 3_600_000:.2f} h: "
        f"{report.samples} samples in {report.messages} messages "
        f"({report.duplicates} duplicated, {report.out_of_order} out of order, "
        f"{report.dropped} samples dropped)"
    )
    return 0


async def _run(args: argparse.Namespace) -> RunReport:
    if args.rate <= 0 or args.speedup <= 0:
        raise ConfigError("--rate and --speedup must be positive")
    now = SYSTEM_CLOCK.now_ms()
    plant = plant_from_args(args, now)
    if plant.start_ms > now or (args.duration is None and args.speedup > 1):
        log.warning("simulated time runs ahead of the clock; servers reject far-future samples")
    provisioner = HttpProvisioner(args.server, args.username, args.password, args.credentials)
    tokens = await provisioner.ensure(plant.devices)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
    try:
        try:
            report = await run_simulation(
                plant, _transport(args, tokens), args.rate, args.speedup, args.duration, stop
            )
        except DeviceRefused as exc:
            if plant.now_ms != plant.start_ms:
                raise
            log.warning("%s; registering the devices again", exc.message)
            tokens = await provisioner.refresh(plant.devices)
            report = await run_simulation(
                plant, _transport(args, tokens), args.rate, args.speedup, args.duration, stop
            )
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
    if args.export_truth is not None:
        text = to_json(
            report.ground_truth,
            profile=plant.profile,
            seed=plant.seed,
            start_ms=report.start_ms,
            end_ms=report.end_ms,
            rate_hz=args.rate,
        )
        try:
            args.export_truth.parent.mkdir(parents=True, exist_ok=True)
            args.export_truth.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"{args.export_truth}: cannot write ground truth: {exc.strerror}"
            ) from None
    return report
