"""Scrape-time collectors and the set that reports each one's health.

As in node_exporter, every collector is small and independent; one that
fails costs its own families for that scrape and nothing else. The set
wraps them and yields ``clary_exporter_collector_up``,
``..._errors_total`` and ``..._duration_seconds`` once for all of them, so
the exposition never has a family twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol

from prometheus_client.core import Metric

from exporter.families import new_family

log = logging.getLogger(__name__)


class CollectorAbsent(Exception):
    """The thing a collector reads does not exist here (no GPU, no driver).

    Reported as ``collector_up 0`` without counting an error: absence is a
    fact about the machine, not a failure worth paging for.
    """


class Collector(Protocol):
    """A prometheus_client-style collector with a name.

    ``collect()`` raises to report failure; it must not swallow errors
    itself, the set does the reporting.
    """

    name: str

    def collect(self) -> Iterable[Metric]: ...


class CollectorSet:
    """Runs collectors at scrape time and reports each one's own success."""

    def __init__(self, collectors: Sequence[Collector]):
        names = [c.name for c in collectors]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate collector names: {names}")
        self._collectors = list(collectors)
        self._errors = {c.name: 0 for c in collectors}
        self._lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        return [c.name for c in self._collectors]

    def close(self) -> None:
        """Release what collectors hold (e.g. NVML) at shutdown."""
        for collector in self._collectors:
            close = getattr(collector, "close", None)
            if close is not None:
                close()

    def collect(self) -> Iterator[Metric]:
        up = new_family("clary_exporter_collector_up")
        duration = new_family("clary_exporter_collector_duration_seconds")
        results: list[Metric] = []
        for collector in self._collectors:
            start = time.perf_counter()
            ok = 0.0
            try:
                families = list(collector.collect())
            except CollectorAbsent as exc:
                log.debug("collector %s absent: %s", collector.name, exc)
            except Exception as exc:  # one collector never fails the scrape
                with self._lock:
                    self._errors[collector.name] += 1
                log.warning("collector %s failed: %s: %s", collector.name, type(exc).__name__, exc)
            else:
                results.extend(families)
                ok = 1.0
            up.add_metric([collector.name], ok)
            duration.add_metric([collector.name], time.perf_counter() - start)
        yield from results
        errors = new_family("clary_exporter_collector_errors_total")
        with self._lock:
            for name, count in self._errors.items():
                errors.add_metric([name], count)
        yield up
        yield errors
        yield duration
