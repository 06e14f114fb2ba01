"""Clary AI Prometheus exporter and instrumentation library."""

__version__ = "0.1.0"
