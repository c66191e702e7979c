"""MqttTransport against a real broker (amqtt, in-process) with a paho subscriber."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from karkhana.sim.profiles import build_plant
from karkhana.sim.runner import run_simulation
from karkhana.sim.transport import DeviceRefused, MqttTransport, TransportError
from tests.sim.support import MONDAY_MS, Subscriber, entries, free_port, start_broker, wait_for


def test_mqtt_transport_publishes_every_message_to_a_real_broker() -> None:
    port = free_port()
    plant = build_plant("textile", 1, 42, MONDAY_MS, faults=False)
    tokens = {d.device_id: f"token-{d.device_id}" for d in plant.devices}

    async def main() -> None:
        broker = await start_broker(port)
        subscriber = Subscriber(port)
        try:
            await subscriber.start()
            transport = MqttTransport("127.0.0.1", port, tokens)
            report = await run_simulation(plant, transport, 4.0, 1.0, 1.0)
            assert report.messages >= 3 * len(tokens)
            await wait_for(lambda: subscriber.count() >= report.messages)
            await asyncio.sleep(0.1)
            assert subscriber.count() == report.messages
            topics = {topic for topic, _ in subscriber.messages}
            assert topics == {f"karkhana/{d}/telemetry" for d in tokens}
            samples = sum(len(entries(payload)) for _, payload in subscriber.messages)
            assert samples == report.samples
        finally:
            await subscriber.stop()
            await broker.shutdown()

    asyncio.run(main())


def test_refused_credentials_and_unreachable_broker_are_domain_errors(tmp_path: Path) -> None:
    port = free_port()
    plant = build_plant("textile", 1, 42, MONDAY_MS)
    devices = [plant.device("tx-power"), plant.device("tx-loom-01")]
    hashed = PasswordHash((Argon2Hasher(time_cost=1, memory_cost=1024, parallelism=1),)).hash(
        "good"
    )
    password_file = tmp_path / "passwd"
    password_file.write_text(f"tx-power:{hashed}\n")

    async def main() -> None:
        broker = await start_broker(port, password_file)
        try:
            good = MqttTransport("127.0.0.1", port, {"tx-power": "good"})
            await good.open(devices[:1])
            await good.send("tx-power", b'{"ts":1,"values":{"a":1}}')
            await good.close()
            bad = MqttTransport("127.0.0.1", port, {"tx-power": "good", "tx-loom-01": "nope"})
            with pytest.raises(DeviceRefused) as refused:
                await bad.open(devices)
            assert refused.value.device_ids == ("tx-loom-01",)
            assert "refused the credentials of 1 device(s): tx-loom-01" in refused.value.message
        finally:
            await broker.shutdown()
        closed = MqttTransport("127.0.0.1", port, {"tx-power": "good"}, connect_timeout_s=2)
        with pytest.raises(TransportError, match=f"cannot connect to MQTT broker 127.0.0.1:{port}"):
            await closed.open(devices[:1])

    asyncio.run(main())
