from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from karkhana.core import config
from karkhana.core.errors import ConfigError


def test_defaults() -> None:
    s = config.load({})
    assert (s.http_port, s.mqtt_port, s.data_dir, s.admin_password) == (
        8000,
        1883,
        Path("data"),
        "",
    )
    assert s.db_path == Path("data/karkhana.db")


def test_environment_then_flags() -> None:
    env = {
        "KARKHANA_HTTP_PORT": "9000",
        "KARKHANA_MQTT_PORT": "1884",
        "KARKHANA_DATA_DIR": "/tmp/x",
    }
    s = config.load(env)
    assert (s.http_port, s.mqtt_port, s.data_dir) == (9000, 1884, Path("/tmp/x"))
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    args = parser.parse_args(["--http-port", "9100"])
    s = config.from_args(args, env)
    assert (s.http_port, s.mqtt_port) == (9100, 1884)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KARKHANA_HTTP_PORT": "eighty"}, "expected int"),
        ({"KARKHANA_MQTT_PORT": "70000"}, "port number"),
        ({"KARKHANA_RAW_RETENTION_DAYS": "-1"}, "negative"),
        ({"KARKHANA_SQLITE_SYNCHRONOUS": "sometimes"}, "FULL, NORMAL or EXTRA"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        config.load(env)
    assert next(iter(env)) in str(err.value)


def test_configuration_doc_is_current() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
    assert config.describe() in doc
