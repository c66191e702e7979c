"""The pure part of the live view: bindings to machine signals, SSE framing."""

from __future__ import annotations

import json

from karkhana.assets.model import Machine, SignalBinding
from karkhana.core.model import Sample
from karkhana.web.live import KEEPALIVE, Routes, frame, opening


def machine(mid: str, *signals: tuple[str, str, str]) -> Machine:
    return Machine(mid, "line", mid, "power_loom", tuple(SignalBinding(*s, None) for s in signals))


def test_samples_become_machine_signals() -> None:
    routes = Routes.of(
        [
            machine("loom-1", ("speed", "dev-1", "picks_per_min"), ("temp", "dev-1", "t")),
            machine("loom-2", ("speed", "dev-2", "picks_per_min")),
        ]
    )
    assert routes.devices == {"dev-1", "dev-2"}
    events = routes.events(
        [
            Sample("dev-1", "picks_per_min", 1000, 512.0),
            Sample("dev-1", "unbound", 1000, 1.0),
            Sample("dev-2", "picks_per_min", 2000, True),
            Sample("dev-3", "picks_per_min", 2000, 3.0),
        ]
    )
    assert events == [
        {"machine_id": "loom-1", "signal": "speed", "ts": 1000, "value": 512.0},
        {"machine_id": "loom-2", "signal": "speed", "ts": 2000, "value": True},
    ]


def test_one_key_bound_to_two_machines_reaches_both() -> None:
    routes = Routes.of(
        [machine("a", ("power", "meter", "kw")), machine("b", ("input_power", "meter", "kw"))]
    )
    events = routes.events([Sample("meter", "kw", 5, 7.5)])
    assert [(e["machine_id"], e["signal"]) for e in events] == [
        ("a", "power"),
        ("b", "input_power"),
    ]


def test_frames_are_valid_server_sent_events() -> None:
    text = frame("samples", [{"machine_id": "m", "signal": "s", "ts": 1, "value": "a\nb"}])
    assert text.endswith("\n\n")
    lines = text.strip("\n").split("\n")
    assert lines[0] == "event: samples"
    assert lines[1].startswith("data: ") and len(lines) == 2
    assert json.loads(lines[1][6:])[0]["value"] == "a\nb"
    first = opening(["m1", "m2"])
    assert first.startswith("retry: 2000\n")
    assert json.loads(first.split("data: ")[1]) == {"machines": ["m1", "m2"]}
    assert KEEPALIVE.startswith(":")
