from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path


def run(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "KARKHANA_DATA_DIR": str(tmp_path / "data"), **env}
    return subprocess.run(
        [sys.executable, "-m", "karkhana", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=full_env,
    )


def test_port_taken_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = run(["serve", "--http-host", "127.0.0.1", "--http-port", str(port)], tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0, r.stderr
    assert f"http port {port} is already in use" in r.stderr
    assert "Traceback" not in r.stderr


def test_bad_setting_is_one_clear_line(tmp_path: Path) -> None:
    r = run(["serve"], tmp_path, KARKHANA_HTTP_PORT="lots")
    assert r.returncode == 2
    assert "KARKHANA_HTTP_PORT" in r.stderr and "Traceback" not in r.stderr


def test_settings_and_set_password(tmp_path: Path) -> None:
    r = run(["settings"], tmp_path)
    assert "KARKHANA_MQTT_PORT" in r.stdout
    r = run(["set-password", "admin", "--password", "brand-new-password"], tmp_path)
    assert r.returncode == 0, r.stderr
    r = run(["set-password", "nobody"], tmp_path)
    assert r.returncode == 2 and "no user nobody" in r.stderr
