"""Predictive maintenance: condition monitoring, anomaly detectors, health, vibration, work orders."""
