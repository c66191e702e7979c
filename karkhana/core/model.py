"""Frozen domain values shared by every part of karkhana."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

Value = float | bool | str
"""A telemetry value: numbers and booleans are stored numerically, strings as text."""

DEVICE_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
KEY_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:/-]{0,127}$")


class Sample(NamedTuple):
    """One value of one signal of one device at one instant (epoch milliseconds, UTC).

    A named tuple rather than a frozen dataclass: it is just as immutable, and ingestion creates
    hundreds of thousands per second, where a tuple is built in half the time.
    """

    device_id: str
    key: str
    ts: int
    value: Value


@dataclass(frozen=True, slots=True)
class Point:
    """One point of a queried series: a bucket start (or raw timestamp) and its value."""

    ts: int
    value: Value | None


def is_valid_device_id(device_id: str) -> bool:
    return DEVICE_ID_PATTERN.fullmatch(device_id) is not None


def is_valid_key(key: str) -> bool:
    return KEY_PATTERN.fullmatch(key) is not None
