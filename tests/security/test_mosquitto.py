"""Mosquitto's password format, the rendered files, and keeping them equal to the registry."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from karkhana.core.errors import ConfigError, NotFound
from karkhana.security import mosquitto as mq
from karkhana.security.devices import DeviceRegistry, MqttAccount
from karkhana.security.secrets import mosquitto_hash, mosquitto_hash_matches
from karkhana.store.database import Database
from tests.conftest import need

pytestmark = pytest.mark.anyio

# made by `mosquitto_passwd -b pw alice secret1` (Mosquitto 2.0.11)
MOSQUITTO_PASSWD_LINE = (
    "alice:$7$101$qI71MiD1dV3DWwS5$LAPnMojSBafDgwRueanIKjNBSpCnF8eNBY8t1/hjstGaQ+kQgP2jcdL0Jmux"
    "Q/5aMrMHv/5WyLe6jAkmvzlMeg=="
)


def test_hash_is_mosquitto_passwd_format() -> None:
    hashed = MOSQUITTO_PASSWD_LINE.split(":", 1)[1]
    assert mosquitto_hash_matches("secret1", hashed)
    assert not mosquitto_hash_matches("secret2", hashed)
    salt = base64.b64decode(hashed.split("$")[3])
    assert mosquitto_hash("secret1", salt=salt) == hashed
    fresh = mosquitto_hash("kd_token")
    assert fresh.startswith("$7$101$") and fresh != mosquitto_hash("kd_token")
    assert mosquitto_hash_matches("kd_token", fresh)
    for broken in ["", "$6$101$x$y", "$7$x$y$z", "$7$101$!!!$y"]:
        assert not mosquitto_hash_matches("kd_token", broken)


def test_mosquitto_passwd_agrees(tmp_path: Path) -> None:
    tool = shutil.which("mosquitto_passwd")
    need(tool is not None, "mosquitto_passwd is not installed (package mosquitto)")
    assert tool is not None
    pw = tmp_path / "pw"
    pw.touch()
    subprocess.run([tool, "-b", str(pw), "dev", "kd_abc"], check=True, timeout=10)
    user, hashed = pw.read_text().strip().split(":", 1)
    assert user == "dev" and mosquitto_hash_matches("kd_abc", hashed)


def test_rendered_files() -> None:
    accounts = [
        MqttAccount("gw-1", None, "$7$h1"),
        MqttAccount("old", None, None),
        MqttAccount("plc-1", "gw-1", "$7$h2"),
        MqttAccount("plc-2", "gw-1", "$7$h3"),
    ]
    assert mq.render_passwords("$7$srv", accounts) == (
        "_karkhana-server:$7$srv\ngw-1:$7$h1\nplc-1:$7$h2\nplc-2:$7$h3\n"
    )
    acl = mq.render_acl(accounts).splitlines()
    assert acl[1:] == [
        "user _karkhana-server",
        "topic read karkhana/+/telemetry",
        "",
        "user gw-1",
        "topic readwrite karkhana/gw-1/#",
        "topic readwrite karkhana/plc-1/#",
        "topic readwrite karkhana/plc-2/#",
        "",
        "user plc-1",
        "topic readwrite karkhana/plc-1/#",
        "",
        "user plc-2",
        "topic readwrite karkhana/plc-2/#",
    ]
    assert not any(line.startswith("pattern") for line in acl)
    assert mq.server_url("a/b", "::1", 1883) == "mqtt://_karkhana-server:a%2Fb@[::1]:1883"


async def test_parents_and_stored_hashes(tmp_path: Path) -> None:
    db = Database(tmp_path / "k.db", synchronous="NORMAL")
    reg = DeviceRegistry(db)
    _, gw_token = await reg.create("gw-1")
    child, child_token = await reg.create("plc-1", parent_id="gw-1")
    assert child.parent_id == "gw-1" and (await reg.get("plc-1")).parent_id == "gw-1"
    with pytest.raises(NotFound):
        await reg.create("plc-2", parent_id="nobody")
    assert reg.may_act_for("plc-1", "plc-1") and reg.may_act_for("gw-1", "plc-1")
    assert not reg.may_act_for("plc-1", "gw-1") and not reg.may_act_for(None, "plc-1")
    hashes = {a.id: a.mqtt_hash for a in await reg.mqtt_accounts()}
    assert mosquitto_hash_matches(gw_token, hashes["gw-1"] or "")
    assert mosquitto_hash_matches(child_token, hashes["plc-1"] or "")
    new = await reg.rotate("plc-1")
    hashed = {a.id: a.mqtt_hash for a in await reg.mqtt_accounts()}["plc-1"] or ""
    assert mosquitto_hash_matches(new, hashed) and not mosquitto_hash_matches(child_token, hashed)

    reloaded = DeviceRegistry(db)
    await reloaded.load()
    assert reloaded.may_act_for("gw-1", "plc-1")
    await reloaded.delete("gw-1")  # the child stays, without a gateway
    assert not reloaded.may_act_for("gw-1", "plc-1")
    assert (await reloaded.get("plc-1")).parent_id is None
    db.close()


async def test_sync_writes_only_changes_and_follows_the_registry(tmp_path: Path) -> None:
    db = Database(tmp_path / "data" / "k.db", synchronous="NORMAL")
    reg = DeviceRegistry(db)
    made = await mq.init(reg, tmp_path / "data", port=1884, bind="127.0.0.1")
    paths = made.paths
    assert made.created_secret and made.url.endswith("@127.0.0.1:1884")
    assert "listener 1884 127.0.0.1" in paths.conf.read_text()
    assert paths.server_secret.stat().st_mode & 0o777 == 0o600
    assert paths.passwords.stat().st_mode & 0o777 == 0o640
    first = paths.passwords.read_text()

    again = await mq.init(reg, tmp_path / "data", port=1884, bind="127.0.0.1")
    assert not again.created_secret and again.url == made.url
    assert paths.passwords.read_text() == first  # the server's hash is kept, not remade

    sync = mq.MosquittoSync(reg, paths, None)
    await sync.start()
    assert not await sync.sync()
    await reg.create("meter-1")
    assert "meter-1:$7$" in paths.passwords.read_text()
    assert "user meter-1" in paths.acl.read_text()
    await reg.delete("meter-1")
    assert paths.passwords.read_text() == first

    await reg.create("legacy")
    await db.execute_write_fn(lambda c: c.execute("UPDATE devices SET mqtt_hash = NULL"))
    assert (await mq.init(reg, tmp_path / "data")).without_credential == ("legacy",)
    assert "legacy" not in paths.passwords.read_text()
    db.close()


def test_reload_never_signals_another_program(tmp_path: Path) -> None:
    pid_file = tmp_path / "mosquitto.pid"
    with pytest.raises(ConfigError, match="not found"):
        mq.reload_broker(pid_file)
    pid_file.write_text(f"{os.getpid()}\n")  # this test runner, not mosquitto
    if Path("/proc/self/comm").exists():
        with pytest.raises(ConfigError, match="not mosquitto"):
            mq.reload_broker(pid_file)
    pid_file.write_text("many\n")
    with pytest.raises(ConfigError, match="cannot read"):
        mq.reload_broker(pid_file)


async def test_a_failed_reload_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = Database(tmp_path / "data" / "k.db", synchronous="NORMAL")
    reg = DeviceRegistry(db)
    made = await mq.init(reg, tmp_path / "data")
    await mq.MosquittoSync(reg, made.paths, tmp_path / "gone.pid").start()
    caplog.clear()
    await reg.create("meter-1")  # committed even though Mosquitto could not be told
    assert reg.exists("meter-1")
    assert "Mosquitto not updated after a change to device meter-1" in caplog.text
    db.close()
