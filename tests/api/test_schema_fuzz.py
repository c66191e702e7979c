"""Every operation of the OpenAPI schema, fuzzed by schemathesis: never a 5xx.

Once as an admin and once as a manager of one site (whose requests take the site checks that
read request bodies), with the telemetry route called with a real device token.

The app runs in-process (schemathesis's ASGI client, on its own event-loop thread); the runtime
behind it is started on this test's loop and only its thread-safe parts (database, registries)
are used by the requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode

from karkhana.api.app import create_app
from karkhana.runtime import Runtime
from karkhana.security.users import Role
from tests.conftest import make_settings

EXAMPLES = 12
PASSWORD = "fuzz-user-password"
INGEST = ("POST", "/api/v1/telemetry/{device_id}")
DEVICE_AUTH = {INGEST, ("POST", "/api/v1/edge/batches")}
SENDER = "fuzz-sender-9d2a"  # a name the fuzzer will not guess: it deletes and rotates devices
SKIP = {
    ("POST", "/api/v1/auth/logout"),  # would revoke the token the fuzzing uses
}


@pytest.fixture(params=[Role.ADMIN, Role.MANAGER])
def app_and_tokens(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Any, str, str]]:
    loop = asyncio.new_event_loop()
    rt = Runtime(make_settings(tmp_path))
    role: Role = request.param

    async def prepare() -> tuple[str, str]:
        await rt.start(mqtt=False)
        await rt.assets.create_site("site-a", "Site A")
        await rt.assets.create_area("area-a", "site-a", "Area")
        await rt.devices.create("loom-01", site_id="site-a")
        _, device_token = await rt.devices.create(SENDER, site_id="site-a")
        # a user of its own, with a name the fuzzer will not guess (it may change passwords)
        name = f"fuzz-{role}-4c1e"
        await rt.users.create(name, PASSWORD, role, [] if role is Role.ADMIN else ["site-a"])
        return (await rt.users.login(name, PASSWORD)).token, device_token

    try:
        token, device_token = loop.run_until_complete(prepare())
        yield create_app(rt), token, device_token
    finally:
        loop.run_until_complete(rt.stop())
        loop.close()


def _binary_bodies(raw: dict[str, Any]) -> None:
    """Send random bytes as bodies of media types schemathesis cannot build (binary formats)."""
    for path in raw.get("paths", {}).values():
        for operation in path.values():
            for media_type in operation.get("requestBody", {}).get("content", {}):
                if media_type != "application/json" and not media_type.endswith("+json"):
                    schemathesis.serializer.alias(media_type, "application/octet-stream")


def _fuzz(strategy: Any, headers: dict[str, str]) -> None:
    @hypothesis.given(case=strategy)
    @hypothesis.settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case: Any) -> None:
        response = case.call(headers=headers)
        case.validate_response(response, checks=[not_a_server_error], headers=headers)

    fuzz()


def test_no_operation_answers_5xx(app_and_tokens: tuple[Any, str, str]) -> None:
    app, token, device_token = app_and_tokens
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    _binary_bodies(schema.raw_schema)
    failures: list[str] = []
    checked = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        key = (operation.method.upper(), operation.path)
        if key in SKIP:
            continue
        checked += 1
        headers = {"Authorization": f"Bearer {device_token if key in DEVICE_AUTH else token}"}
        fixed = {"device_id": SENDER} if key == INGEST else None
        strategy = operation.as_strategy(
            GenerationMode.POSITIVE, path_parameters=fixed
        ) | operation.as_strategy(GenerationMode.NEGATIVE, path_parameters=fixed)
        try:
            _fuzz(strategy, headers)
        except Exception as exc:  # collect every operation's failure, then report them all
            failures.append(f"{operation.label}: {exc}")
    assert checked > 30
    assert not failures, "\n\n".join(failures)


# What the fuzzing found, kept as plain tests.


@pytest.mark.anyio
async def test_csv_download_of_a_key_with_any_characters(
    admin: httpx.AsyncClient, runtime: Runtime
) -> None:
    await runtime.devices.create("loom-01")
    key = quote('t\u00ebmp\U000b6042"; x=1')
    r = await admin.get(f"/api/v1/telemetry/loom-01/{key}?format=csv")
    assert r.status_code == 200
    assert r.headers["content-disposition"] == 'attachment; filename="loom-01_t_mp____x_1.csv"'


@pytest.mark.anyio
async def test_deeply_nested_body_from_a_site_user_is_a_client_error(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await runtime.assets.create_site("site-a", "A")
    await runtime.users.create("eng", PASSWORD, Role.ENGINEER, ["site-a"])
    r = await client.post("/api/v1/auth/login", json={"username": "eng", "password": PASSWORD})
    headers = {"Authorization": f"Bearer {r.json()['token']}", "Content-Type": "application/json"}
    for body in [b"[" * 100_000, b'{"site_id": ' + b"[" * 100_000]:
        r = await client.post("/api/v1/areas", content=body, headers=headers)
        assert 400 <= r.status_code < 500
