from __future__ import annotations

import argparse
import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from karkhana.sim.cli import add_arguments, run_from_args, start_ms_from_args
from karkhana.sim.faults import from_json
from karkhana.sim.profiles import build_plant
from karkhana.sim.provision import load_credentials, save_credentials
from tests.sim.support import StandIn, Subscriber, free_port, start_broker, wait_for

NOW = 1_800_000_000_000


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="karkhana simulate")
    add_arguments(parser)
    return parser.parse_args(argv)


def test_defaults_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KARKHANA_MQTT_PORT", "2883")
    monkeypatch.setenv("KARKHANA_HTTP_PORT", "9000")
    monkeypatch.setenv("KARKHANA_ADMIN_PASSWORD", "pw")
    monkeypatch.setenv("KARKHANA_DATA_DIR", "/srv/karkhana")
    args = parse()
    assert (args.profile, args.devices, args.rate, args.speedup, args.seed) == (
        "textile",
        None,
        1.0,
        1.0,
        42,
    )
    assert (args.transport, args.mqtt_host, args.mqtt_port) == ("mqtt", "127.0.0.1", 2883)
    assert (args.server, args.username, args.password) == ("http://127.0.0.1:9000", "admin", "pw")
    assert args.credentials == Path("/srv/karkhana/sim-credentials.json")
    assert args.duration is None and args.export_truth is None and args.start is None


def test_start_time() -> None:
    assert start_ms_from_args(parse(), NOW) == NOW
    assert start_ms_from_args(parse("--speedup", "60", "--duration", "60"), NOW) == NOW - 3_600_000
    assert start_ms_from_args(parse("--start", "2024-01-01T00:00:00Z"), NOW) == 1_704_067_200_000


def test_simulate_over_mqtt_and_export_ground_truth(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    server = "http://127.0.0.1:9"
    creds = tmp_path / "creds.json"
    plant = build_plant("food", 2, 42, 0)
    save_credentials(creds, server, {d.device_id: "t" for d in plant.devices})
    truth = tmp_path / "out" / "truth.json"
    args = parse(
        "--profile", "food", "--devices", "2", "--rate", "0.2", "--speedup", "3600",
        "--duration", "1", "--mqtt-port", str(port), "--server", server,
        "--credentials", str(creds), "--export-truth", str(truth),
    )  # fmt: skip

    async def main() -> int:
        broker = await start_broker(port)
        subscriber = Subscriber(port)
        try:
            await subscriber.start()
            code = await run_from_args(args)
            await wait_for(lambda: subscriber.count() > 0)
            return code
        finally:
            await subscriber.stop()
            await broker.shutdown()

    assert asyncio.run(main()) == 0
    assert "samples in" in capsys.readouterr().out
    doc = json.loads(truth.read_text())
    assert doc["profile"] == "food" and doc["seed"] == 42
    assert doc["end_ms"] - doc["start_ms"] == 3_600_000
    assert all(r.start_ms < doc["end_ms"] for r in from_json(truth.read_text()))


def test_unreachable_broker_is_reported_not_raised(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = "http://127.0.0.1:9"
    creds = tmp_path / "creds.json"
    plant = build_plant("food", 2, 42, 0)
    save_credentials(creds, server, {d.device_id: "t" for d in plant.devices})
    args = parse(
        "--profile", "food", "--devices", "2", "--duration", "1", "--mqtt-port",
        str(free_port()), "--server", server, "--credentials", str(creds),
    )  # fmt: skip
    assert asyncio.run(run_from_args(args)) == 1
    assert "cannot connect to MQTT broker" in capsys.readouterr().err


def test_provisioning_needs_a_reachable_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = parse(
        "--server", f"http://127.0.0.1:{free_port()}", "--password", "x",
        "--credentials", str(tmp_path / "c.json"), "--duration", "1",
    )  # fmt: skip
    assert asyncio.run(run_from_args(args)) == 1
    assert "cannot reach" in capsys.readouterr().err


class _Bridge(BaseHTTPRequestHandler):
    """Serves a StandIn over real HTTP."""

    stand_in: StandIn

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        request = httpx.Request(
            "POST", f"http://test{self.path}", headers=dict(self.headers), content=body
        )
        response = self.stand_in.handle(request)
        self.send_response(response.status_code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(response.content)))
        self.end_headers()
        self.wfile.write(response.content)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_simulate_over_http_registers_devices_and_refreshes_stale_tokens(
    tmp_path: Path,
) -> None:
    stand_in = StandIn()
    handler = type("Handler", (_Bridge,), {"stand_in": stand_in})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    server = f"http://127.0.0.1:{httpd.server_address[1]}"
    creds = tmp_path / "creds.json"
    common = (
        "--profile", "food", "--devices", "2", "--transport", "http", "--server", server,
        "--password", "s3cret", "--credentials", str(creds), "--rate", "4", "--duration", "0.3",
    )  # fmt: skip
    try:
        assert asyncio.run(run_from_args(parse(*common))) == 0
        devices = set(stand_in.devices)
        assert devices == {d.device_id for d in build_plant("food", 2, 42, 0).devices}
        assert {d for d, _ in stand_in.telemetry} == devices
        sent = len(stand_in.telemetry)
        for record in stand_in.devices.values():
            record["token"] = "rotated elsewhere"
        assert asyncio.run(run_from_args(parse(*common))) == 0
        assert len(stand_in.telemetry) > sent
        assert load_credentials(creds, server) == {
            d: r["token"] for d, r in stand_in.devices.items()
        }
    finally:
        httpd.shutdown()
        httpd.server_close()
