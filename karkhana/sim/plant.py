"""A simulated plant: its devices, shared environment, and the faults injected into it."""

from __future__ import annotations

from collections.abc import Sequence

from karkhana.sim.device import Environment, Readings, SimDevice, Weather
from karkhana.sim.faults import DeliveryPlan, FaultRecord, sort_key
from karkhana.sim.power import PowerSchedule


class Plant:
    """Deterministic for a given seed, start and sequence of step times; no I/O, no wall clock."""

    def __init__(
        self,
        *,
        profile: str,
        seed: int,
        start_ms: int,
        devices: Sequence[SimDevice],
        power: PowerSchedule,
        power_device_id: str,
        weather: Weather,
        faults: Sequence[FaultRecord],
        delivery: DeliveryPlan,
    ) -> None:
        ids = [d.device_id for d in devices]
        if len(set(ids)) != len(ids):
            raise ValueError("device ids must be unique")
        self.profile = profile
        self.seed = seed
        self.start_ms = start_ms
        self.now_ms = start_ms
        self.devices = tuple(devices)
        self.power = power
        self.power_device_id = power_device_id
        self.delivery = delivery
        self._faults = tuple(faults)
        self._by_id = {d.device_id: d for d in devices}
        self._order = sorted(self.devices, key=lambda d: d.stage)
        self._env = Environment(power, weather)

    def device(self, device_id: str) -> SimDevice:
        return self._by_id[device_id]

    def step(self, t_ms: int) -> dict[str, Readings]:
        """Advance every device to ``t_ms`` and read it; readings are keyed by device id."""
        if t_ms < self.now_ms:
            raise ValueError(f"simulated time cannot go back ({t_ms} < {self.now_ms})")
        self._env.begin(t_ms)
        readings = {d.device_id: d.advance(t_ms, self._env) for d in self._order}
        self.now_ms = t_ms
        return {d.device_id: readings[d.device_id] for d in self.devices}

    def delivery_fault(self, device_id: str, t_ms: int) -> FaultRecord | None:
        return self.delivery.at(device_id, t_ms)

    def ground_truth(self, until_ms: int | None = None) -> list[FaultRecord]:
        """Faults that began before ``until_ms`` (default: the simulated time reached so far).

        Delivery faults carry no message counts here; the runner adds what it actually sent.
        """
        until = self.now_ms if until_ms is None else until_ms
        records = [f for f in self._faults if f.start_ms < until]
        records += self.power.records(self.power_device_id, self.start_ms, until)
        records += self.delivery.records(until)
        return sorted(records, key=sort_key)
