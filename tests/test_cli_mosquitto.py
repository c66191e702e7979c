"""`karkhana mosquitto init` as a user runs it."""

from __future__ import annotations

from pathlib import Path

from tests.test_cli import run


def test_mosquitto_init_prints_the_url_and_keeps_the_password(tmp_path: Path) -> None:
    args = ["mosquitto", "init", "--port", "1884", "--mosquitto-pid-file", "off"]
    first = run(args, tmp_path)
    assert first.returncode == 0, first.stderr
    url = next(w for w in first.stdout.split() if "mqtt://" in w)
    assert url.startswith("KARKHANA_MQTT_URL='mqtt://_karkhana-server:")
    assert url.endswith("@127.0.0.1:1884'") and "(new)" in first.stdout
    root = tmp_path / "data" / "mosquitto"
    assert {p.name for p in root.iterdir()} == {
        "karkhana.conf",
        "passwords",
        "acl",
        "server.secret",
    }
    assert "listener 1884\n" in (root / "karkhana.conf").read_text()

    second = run(args, tmp_path)
    assert second.returncode == 0, second.stderr
    assert url in second.stdout and "(kept)" in second.stdout


def test_mosquitto_init_says_when_mosquitto_was_not_reloaded(tmp_path: Path) -> None:
    gone = tmp_path / "nothing.pid"
    r = run(["mosquitto", "init", "--mosquitto-pid-file", str(gone)], tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"Mosquitto not reloaded: Mosquitto pid file {gone} not found" in r.stdout
