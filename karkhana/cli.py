"""Command line: ``karkhana serve | demo | simulate | set-password | settings``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import logging
import socket
import sys
from collections.abc import Sequence

from karkhana import __version__
from karkhana.core import config
from karkhana.core.config import Settings
from karkhana.core.errors import ConfigError, KarkhanaError


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
    wanted = [("http", settings.http_host, settings.http_port, "KARKHANA_HTTP_PORT / --http-port")]
    if not settings.mqtt_url:
        wanted.append(
            ("MQTT", settings.mqtt_host, settings.mqtt_port, "KARKHANA_MQTT_PORT / --mqtt-port")
        )
    for what, host, port, how in wanted:
        if not _port_free(host, port):
            raise ConfigError(
                f"{what} port {port} is already in use by another program; choose another with {how}"
            )


def _banner(settings: Settings, mqtt: str, password: str | None) -> str:
    host = "127.0.0.1" if settings.http_host in ("0.0.0.0", "::") else settings.http_host
    url = f"http://{host}:{settings.http_port}"
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
            f"  data      : {settings.data_dir.resolve()}",
            "  stop with Ctrl+C",
            "",
        ]
    )


async def serve(settings: Settings, demo: argparse.Namespace | None = None) -> int:
    import uvicorn

    from karkhana.api.app import create_app
    from karkhana.runtime import Runtime

    check_ports(settings)
    rt = Runtime(settings)
    try:
        info = await rt.start()
        app = create_app(rt)
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=settings.http_host,
                port=settings.http_port,
                log_level="warning",
                lifespan="off",
                timeout_keep_alive=5,
                limit_concurrency=1000,
            )
        )
        print(_banner(settings, info.mqtt, info.generated_admin_password), flush=True)
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
        await rt.users.set_password(username, chosen)
        return chosen
    finally:
        await rt.stop()


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

    p = sub.add_parser("simulate", help="simulate a factory's devices sending to a server")
    from karkhana.sim.cli import add_arguments as sim_arguments

    sim_arguments(p)

    p = sub.add_parser("set-password", help="set a user's password (random if none given)")
    config.add_arguments(p, ("data_dir",))
    p.add_argument("username")
    p.add_argument("--password", default="", help="new password (default: random, printed)")

    p = sub.add_parser("settings", help="print every setting with its environment variable")
    return parser


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
        settings = config.from_args(args)
        logging.basicConfig(
            level=settings.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        for noisy in ("amqtt", "transitions"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
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
