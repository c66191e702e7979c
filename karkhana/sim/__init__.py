"""Factory simulator: plants of devices that behave like real machines, with injected faults.

The plant, its devices and the fault plan are pure and deterministic (``profiles.build_plant``);
``runner`` drives a plant against a clock and sends through a ``transport`` (MQTT, HTTP, memory);
``provision`` registers the simulated devices with a server; ``cli`` is ``karkhana simulate``.
"""
