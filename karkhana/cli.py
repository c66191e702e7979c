"""Command line: ``karkhana serve | demo | simulate | edge | set-password | certs | audit |
mosquitto | settings``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import logging
import socket
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from karkhana import __version__
from karkhana.core import config
from karkhana.core.config import Settings
from karkhana.core.errors import ConfigError, KarkhanaError

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI

    from karkhana.security.tls import ServerTls


def _port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # as the real listeners do: connections of an earlier run in TIME_WAIT must not count
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return True


def check_ports(settings: Settings) -> None:
    """Fail with one clear line (not a traceback) when a port is taken."""
    from karkhana.security.tls import plain_mqtt, server_tls

    wanted = [("http", settings.http_host, settings.http_port, "KARKHANA_HTTP_PORT / --http-port")]
    tls = server_tls(settings.tls, settings.data_dir)
    if not settings.mqtt_url and plain_mqtt(tls, settings.mqtt_plain):
        wanted.append(
            ("MQTT", settings.mqtt_host, settings.mqtt_port, "KARKHANA_MQTT_PORT / --mqtt-port")
        )
    if not settings.mqtt_url and tls is not None:
        wanted.append(
            ("MQTTS", settings.mqtt_host, settings.mqtts_port, "KARKHANA_MQTTS_PORT / --mqtts-port")
        )
    for what, host, port, how in wanted:
        if not _port_free(host, port):
            raise ConfigError(
                f"{what} port {port} is already in use by another program; choose another with {how}"
            )


def _banner(
    settings: Settings, mqtt: str, password: str | None, tls: ServerTls | None = None
) -> str:
    host = "127.0.0.1" if settings.http_host in ("0.0.0.0", "::") else settings.http_host
    url = f"{'http' if tls is None else 'https'}://{host}:{settings.http_port}"
    if tls is None:
        trust = []
    elif tls.cafile is not None:
        trust = [f"  TLS       : devices and browsers trust {tls.cafile.resolve()}"]
    else:
        trust = [f"  TLS       : certificate {tls.certfile.resolve()}"]
    if password:
        login = f"admin / {password}   (shown only now: write it down)"
    elif settings.admin_password:
        login = "admin / the password in KARKHANA_ADMIN_PASSWORD"
    else:
        login = "admin / the password printed on first start (reset: karkhana set-password admin)"
    return "\n".join(
        [
            "",
            f"  karkhana {__version__} is running",
            f"  dashboard : {url}/",
            f"  API docs  : {url}/docs",
            f"  login     : {login}",
            f"  MQTT      : {mqtt}",
            *trust,
            f"  data      : {settings.data_dir.resolve()}",
            "  stop with Ctrl+C",
            "",
        ]
    )


def uvicorn_config(app: FastAPI, settings: Settings, tls: ServerTls | None) -> uvicorn.Config:
    """The HTTP server: HTTPS on the same port when TLS is on (no plain HTTP beside it).

    Slow clients: request headers have a deadline (api/server.py) and at most 16 KiB, idle
    kept-alive connections close after 5 s, and stopping waits at most 10 s for open requests.
    """
    import uvicorn

    from karkhana.api.server import header_timeout_protocol

    return uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_level="warning",
        lifespan="off",
        http=header_timeout_protocol(settings.http_header_timeout_s),
        h11_max_incomplete_event_size=16 * 1024,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=10,
        limit_concurrency=settings.http_max_connections or None,
        ssl_certfile=None if tls is None else str(tls.certfile),
        ssl_keyfile=None if tls is None else str(tls.keyfile),
    )


async def serve(settings: Settings, demo: argparse.Namespace | None = None) -> int:
    import uvicorn

    from karkhana.api.app import create_app
    from karkhana.runtime import Runtime

    check_ports(settings)
    rt = Runtime(settings)
    try:
        info = await rt.start()
        server = uvicorn.Server(uvicorn_config(create_app(rt), settings, rt.tls))
        print(_banner(settings, info.mqtt, info.generated_admin_password, rt.tls), flush=True)
        tasks = []
        if demo is not None:
            from karkhana.demo import run_demo

            tasks.append(asyncio.create_task(run_demo(rt, demo)))
        try:
            await server.serve()
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, KarkhanaError):
                    await task
    finally:
        await rt.stop()
    return 0


async def set_password(settings: Settings, username: str, password: str) -> str:
    from karkhana.runtime import Runtime
    from karkhana.security.secrets import new_password

    rt = Runtime(settings)
    try:
        chosen = password or new_password()
        if username == "admin":
            await rt.users.ensure_admin(chosen)  # a fresh install has no admin yet
        await rt.users.set_password(username, chosen, actor="cli", source="local")
        return chosen
    finally:
        await rt.stop()


async def audit(args: argparse.Namespace, settings: Settings) -> tuple[int, str]:
    """``karkhana audit verify | export``; returns the exit code and what to print."""
    from pathlib import Path

    from karkhana.runtime import Runtime
    from karkhana.security.audit import to_csv, to_json

    rt = Runtime(settings)
    try:
        if args.audit_command == "verify":
            result = await rt.audit.verify()
            if result.ok:
                return 0, result.reason
            return 1, (
                f"audit log damaged at event {result.first_bad_seq}: {result.reason}"
                f" ({result.checked} events intact before it)"
            )
        events = await rt.audit.events(limit=None)
        text = to_csv(events) if args.format == "csv" else to_json(events) + "\n"
        await rt.audit.record(
            "cli",
            "audit.export",
            "audit",
            after={"format": args.format, "events": len(events)},
            source="local",
        )
        if args.out is None:
            return 0, text.rstrip("\n")
        await asyncio.to_thread(Path(args.out).write_text, text, encoding="utf-8", newline="")
        return 0, f"{len(events)} audit events written to {args.out}"
    finally:
        await rt.stop()


def _history_days(text: str) -> float:
    try:
        days = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of days: {text!r}") from None
    if not 0 <= days <= 30:
        # raw samples are kept 30 days by default (KARKHANA_RAW_RETENTION_DAYS)
        raise argparse.ArgumentTypeError("history days must be between 0 and 30")
    return days


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="karkhana", description="Industrial IoT for factories")
    parser.add_argument("--version", action="version", version=f"karkhana {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the server: HTTP API, dashboard and MQTT ingestion")
    config.add_arguments(p)

    p = sub.add_parser("demo", help="run the server with a simulated factory feeding it")
    config.add_arguments(p)
    p.add_argument("--profile", choices=["textile", "auto", "food"], default="textile")
    p.add_argument("--devices", type=int, default=None, help="number of main machines")
    p.add_argument("--rate", type=float, default=1.0, help="samples per second per device")
    p.add_argument(
        "--speedup", type=float, default=1.0, help="simulated time runs this much faster"
    )
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--history-days",
        type=_history_days,
        default=3.0,
        metavar="N",
        help="days of simulated history written on a new data folder (default 3; 0: none)",
    )
    p.add_argument(
        "--rul-lives",
        type=int,
        default=40,
        metavar="N",
        help="simulated run-to-failure lives the looms' remaining-life model is trained on "
        "when none is stored yet (default 40; 0: do not train)",
    )

    p = sub.add_parser("simulate", help="simulate a factory's devices sending to a server")
    from karkhana.sim.cli import add_arguments as sim_arguments

    sim_arguments(p)

    p = sub.add_parser(
        "simulate-meter", help="serve a simulated energy meter over Modbus TCP (for the edge)"
    )
    from karkhana.sim.modbus import add_arguments as meter_arguments

    meter_arguments(p)

    p = sub.add_parser(
        "edge", help="run the edge agent (store-and-forward to a server), or show its status"
    )
    from karkhana.edge.cli import add_arguments as edge_arguments

    edge_arguments(p)

    p = sub.add_parser("set-password", help="set a user's password (random if none given)")
    config.add_arguments(p, ("data_dir",))
    p.add_argument("username")
    p.add_argument("--password", default="", help="new password (default: random, printed)")

    p = sub.add_parser("certs", help="local CA, server and device certificates for TLS")
    certs = p.add_subparsers(dest="certs_command", required=True)
    c = certs.add_parser("init", help="create the CA and the server certificate (HTTPS, MQTTS)")
    config.add_arguments(c, ("data_dir",))
    c.add_argument(
        "--hosts",
        action="append",
        default=[],
        metavar="NAME,IP,...",
        help="more host names and IP addresses that devices and browsers use to reach this server",
    )
    c.add_argument(
        "--force",
        action="store_true",
        help="replace an existing CA (devices must trust the new one)",
    )
    c = certs.add_parser("device", help="a client certificate for a device, signed by the CA")
    config.add_arguments(c, ("data_dir",))
    c.add_argument("device_id")
    c.add_argument("--days", type=int, default=825, help="validity in days (default 825)")
    c.add_argument("--force", action="store_true", help="replace an existing certificate")
    c = certs.add_parser("show", help="subjects, expiry and fingerprints of the certificates")
    config.add_arguments(c, ("data_dir",))
    c = certs.add_parser(
        "revoke", help="revoke a device's certificate (the broker closes its connections)"
    )
    config.add_arguments(c, ("data_dir",))
    c.add_argument("device_id")

    p = sub.add_parser("audit", help="check or export the audit log")
    audits = p.add_subparsers(dest="audit_command", required=True)
    c = audits.add_parser("verify", help="check the hash chain; exit 1 if it was tampered with")
    config.add_arguments(c, ("data_dir",))
    c = audits.add_parser("export", help="every audit event as CSV or JSON")
    config.add_arguments(c, ("data_dir",))
    c.add_argument("--format", choices=["csv", "json"], default="csv")
    c.add_argument("--out", default=None, metavar="FILE", help="write here (default: stdout)")

    p = sub.add_parser("mosquitto", help="device accounts and topic ACLs for a Mosquitto broker")
    mosq = p.add_subparsers(dest="mosquitto_command", required=True)
    c = mosq.add_parser(
        "init", help="write the Mosquitto config snippet, password and ACL files; print mqtt_url"
    )
    config.add_arguments(c, ("data_dir", "mosquitto_pid_file"))
    c.add_argument("--port", type=int, default=1883, help="Mosquitto's listener port (1883)")
    c.add_argument(
        "--bind", default="", metavar="ADDRESS", help="listen only on this address (default: all)"
    )

    p = sub.add_parser(
        "maintenance", help="train, score and list remaining-life and failure models"
    )
    from karkhana.maintenance.train import add_arguments as maintenance_arguments

    maintenance_arguments(p)

    p = sub.add_parser("settings", help="print every setting with its environment variable")
    return parser


def certs(args: argparse.Namespace, settings: Settings) -> str:
    """``karkhana certs init | device | show | revoke``; returns what to print."""
    from karkhana.security import tls

    def line(label: str, info: tls.CertInfo, created: bool | None = None) -> str:
        state = "" if created is None else ("created  " if created else "kept     ")
        names = f"  names {', '.join(info.names)}" if info.names else ""
        return (
            f"{label:<8}{state}{info.path}  CN={info.subject}  "
            f"until {info.not_after:%Y-%m-%d}{names}\n{'':8}SHA-256 {info.sha256}"
        )

    if args.certs_command == "init":
        result = tls.init(settings.data_dir, args.hosts, force=args.force)
        out = [
            line("CA", result.ca, result.created_ca),
            line("server", result.server, result.created_server),
        ]
        if not result.created_ca:
            out.append("the CA already existed and was kept (--force replaces it)")
        elif args.force and any(tls.TlsPaths.of(settings.data_dir).devices.glob("*.pem")):
            out.append(
                "device certificates of the old CA no longer work: karkhana certs device ID --force"
            )
        if result.created_server:
            out.append(
                "(re)start karkhana serve to use it; with tls=auto it serves HTTPS and MQTTS"
            )
        out.append(f"devices, the edge and browsers must trust {result.ca.path} (docs/tls.md)")
        return "\n".join(out)
    if args.certs_command == "device":
        made = tls.issue_device(settings.data_dir, args.device_id, force=args.force, days=args.days)
        return "\n".join(
            [
                line("device", made.cert, made.created),
                f"{'':8}key {made.key_path}; the device also needs {tls.TlsPaths.of(settings.data_dir).ca_cert}",
            ]
        )
    if args.certs_command == "revoke":
        info = tls.revoke_device(settings.data_dir, args.device_id)
        return "\n".join(
            [
                line("revoked", info),
                f"{'':8}listed in {tls.TlsPaths.of(settings.data_dir).crl}; a running server"
                " closes its connections within seconds",
            ]
        )
    now = datetime.now(UTC)
    out = []
    for info in tls.show(settings.data_dir):
        kind = {"ca.pem": "CA", "server.pem": "server"}.get(info.path.name, "device")
        out.append(line(kind, info))
        if info.not_after <= now:
            out.append(f"{'':8}EXPIRED")
        if not info.signed_by_ca:
            out.append(f"{'':8}not signed by the current CA: it will be refused")
    revoked = tls.revocations(settings.data_dir)
    if revoked:
        out.append(
            f"revoked {len(revoked)} device certificate(s) in {tls.TlsPaths.of(settings.data_dir).crl}"
        )
    return "\n".join(out)


async def mosquitto(args: argparse.Namespace, settings: Settings) -> str:
    """``karkhana mosquitto init``; returns what to print."""
    from pathlib import Path

    from karkhana.security import mosquitto as mq
    from karkhana.security.devices import DeviceRegistry
    from karkhana.store.database import Database

    db = Database(settings.db_path, synchronous=settings.sqlite_synchronous)
    try:
        pid = settings.mosquitto_pid_file
        result = await mq.init(
            DeviceRegistry(db),
            settings.data_dir,
            port=args.port,
            bind=args.bind,
            pid_file=Path(pid) if pid not in ("", "off") else None,
        )
    finally:
        await asyncio.to_thread(db.close)
    paths = result.paths
    out = [
        f"written to {paths.root.resolve()}:",
        f"  {paths.conf.name:<15}include it in Mosquitto: "
        f"ln -s {paths.conf.resolve()} /etc/mosquitto/conf.d/",
        f"  {paths.passwords.name:<15}device accounts, kept current by karkhana serve",
        f"  {paths.acl.name:<15}topic ACLs, kept current by karkhana serve",
        f"  {paths.server_secret.name:<15}the server's own password"
        + (" (new)" if result.created_secret else " (kept)"),
        "start the server with (an environment variable keeps the password out of `ps`):",
        f"  KARKHANA_MQTT_URL='{result.url}' karkhana serve",
    ]
    if result.reload_error:
        out.append(f"Mosquitto not reloaded: {result.reload_error}")
    if result.without_credential:
        out.append(
            "devices made before Mosquitto support cannot log in there until their token is"
            f" rotated: {', '.join(result.without_credential)}"
        )
    out.append("see docs/mosquitto.md")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "settings":
            print(config.describe())
            return 0
        if args.command == "simulate":
            from karkhana.sim.cli import run_from_args

            logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
            logging.getLogger("httpx").setLevel(logging.WARNING)
            return asyncio.run(run_from_args(args))
        if args.command == "simulate-meter":
            from karkhana.sim.modbus import run_from_args as run_meter

            return run_meter(args)
        if args.command == "edge":
            from karkhana.edge.cli import run_from_args as run_edge

            return run_edge(args)
        settings = config.from_args(args)
        logging.basicConfig(
            level=settings.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        for noisy in ("amqtt", "transitions"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        if args.command == "maintenance":
            from karkhana.maintenance.train import run as run_maintenance

            return run_maintenance(args, settings)
        if args.command == "certs":
            print(certs(args, settings))
            return 0
        if args.command == "mosquitto":
            print(asyncio.run(mosquitto(args, settings)))
            return 0
        if args.command == "audit":
            code, text = asyncio.run(audit(args, settings))
            print(text)
            return code
        if args.command == "set-password":
            chosen = asyncio.run(set_password(settings, args.username, args.password))
            print(f"password of {args.username} set" + ("" if args.password else f": {chosen}"))
            return 0
        return asyncio.run(serve(settings, args if args.command == "demo" else None))
    except KarkhanaError as exc:
        print(f"karkhana: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
