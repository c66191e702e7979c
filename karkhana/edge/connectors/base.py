"""The connector contract: how the edge reads machines (Modbus, OPC UA, MQTT, the simulator).

A connector opens its link, then ``read`` waits for and returns the next samples, whether it
polls (Modbus registers every second) or is pushed to (an OPC UA subscription, MQTT messages),
and ``close`` ends the link. Turning raw registers or bytes into samples is a separate pure
decoder (a table of frozen register descriptions), so it is tested without a device.

The agent runs each connector in its own task: every list that ``read`` returns goes into the
durable buffer in one transaction. A connector that stamps samples with the edge's clock says
so (``stamps_time``), and the agent tags those samples so that a clock found wrong later can
correct them. Failures of the link are raised as :class:`ConnectorError`; the agent closes,
waits (exponential back-off) and opens again.

Built in: ``sim`` (the factory simulator). Modbus TCP/RTU, OPC UA and local MQTT connectors
implement this same protocol (docs/edge.md).
"""

from __future__ import annotations

from typing import Protocol

from karkhana.core.errors import KarkhanaError
from karkhana.core.model import Sample


class ConnectorError(KarkhanaError):
    """The connector's link failed (device unreachable, session lost); it will be reopened."""

    reason = "connector_error"


class Connector(Protocol):
    name: str
    """Short name for logs and status (``sim``, ``modbus:press-1``)."""
    stamps_time: bool
    """True when ``read`` stamps samples with the edge's clock (not the device's)."""

    async def open(self) -> None: ...

    async def read(self) -> list[Sample]:
        """Wait for the next samples (a poll, or what a subscription delivered)."""
        ...

    async def close(self) -> None: ...
