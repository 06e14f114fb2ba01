"""Helpers of the recorder tests: what an action moved, and the histogram samples one observation moves."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from exporter.catalog import CATALOG

SECRET = "recorder-test-secret-0123456789"
"""The HMAC secret of the ``rec`` fixture (tests/instrument/conftest.py)."""


class Clock:
    def __init__(self, now: float = 1_700_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def snapshot(registry: CollectorRegistry) -> dict[tuple, float]:
    """Every catalog sample (collected families excluded) as {(name, labels): value}."""
    names = {s.name for s in CATALOG if not s.collected}
    out = {}
    for family in registry.collect():
        if family.name not in names and f"{family.name}_total" not in names:
            continue
        for s in family.samples:
            if s.name.endswith("_created"):
                continue
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def changes(before: dict, after: dict) -> dict[tuple[str, frozenset], float]:
    """Samples whose value moved, with the delta; new samples count from 0."""
    moved = {}
    for key, value in after.items():
        delta = value - before.get(key, 0.0)
        if delta:
            name, labels = key
            moved[(name, frozenset(labels))] = delta
    return moved


def key(name: str, **labels) -> tuple[str, frozenset]:
    return name, frozenset(labels.items())


def hist(name: str, observed: float, buckets: tuple[float, ...], count: int = 1, **labels) -> dict:
    """The samples one or more observations of ``observed`` move in a histogram."""
    moved = {key(f"{name}_count", **labels): count, key(f"{name}_sum", **labels): observed * count}
    for le in (*buckets, float("inf")):
        if observed <= le:
            text = "+Inf" if le == float("inf") else str(float(le))
            moved[key(f"{name}_bucket", le=text, **labels)] = count
    return moved


def record(registry, action) -> dict:
    before = snapshot(registry)
    result = action()
    moved = changes(before, snapshot(registry))
    return moved if result is None else (moved, result)


def session_totals(registry, tier: str) -> tuple[float, float]:
    """(count, sum) of clary_session_duration_seconds for ``tier``."""
    count = registry.get_sample_value("clary_session_duration_seconds_count", {"tier": tier})
    total = registry.get_sample_value("clary_session_duration_seconds_sum", {"tier": tier})
    return count, total


HTTP_B = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
DOC_B = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
FPD_B = (1, 2, 3, 5, 8, 13, 21)
INF_B = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
LOAD_B = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
LLM_B = (0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120)
TTFT_B = (0.05, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 10)
LIC_B = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
RATING_B = (1, 2, 3, 4, 5)
SESSION_B = (30, 60, 300, 600, 1800, 3600, 7200, 14400, 28800)
