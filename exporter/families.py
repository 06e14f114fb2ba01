"""Metric families for scrape-time collectors, built from the catalog.

Collectors never retype a name, help text or label list: they ask for the
family by name, so a collector cannot drift from the contract.
"""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from exporter.catalog import Kind, spec

_FAMILY_TYPES = {Kind.COUNTER: CounterMetricFamily, Kind.GAUGE: GaugeMetricFamily}


def new_family(name: str) -> CounterMetricFamily | GaugeMetricFamily:
    """An empty family for the catalog metric ``name`` (counter or gauge)."""
    s = spec(name)
    try:
        family_type = _FAMILY_TYPES[s.kind]
    except KeyError:
        raise TypeError(f"{name} is a {s.kind.value}; collectors emit counters and gauges") from None
    return family_type(s.name, s.help, labels=list(s.label_names))
