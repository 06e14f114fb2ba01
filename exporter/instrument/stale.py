"""License series that go away when their license stops reporting.

License expiry, usage and limit are gauges set from ``license_status``
reports. A gauge keeps its last value until the process restarts, so a
customer who left would stay "expired" (and page) for ever. Here every
license series remembers when it was last set; before the license families
are collected (a collect hook, so on the scrape that would expose them),
series not set for ``after`` seconds are removed. Prometheus then marks them
stale, the recording rules and alerts on them resolve by themselves.

Setting and pruning hold one lock, so a report racing a prune either lands
before it (and the series is fresh) or after it (and starts a new series);
it is never written to a series that was just removed. Recorder batches set
their gauges at commit through :meth:`StaleSeries.set`, under the same lock.

In prometheus_client's multiprocess mode the values live in per-process
files that a removal cannot reach, and nothing runs before a scrape: send
license status to the exporter's events API there (docs/deployment.md).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from exporter.instrument.metrics import CatalogMetrics

LICENSE_FAMILIES = (
    "clary_license_expiry_timestamp_seconds",
    "clary_license_usage",
    "clary_license_limit",
)
DEFAULT_LICENSE_STALE_AFTER = 86400.0


class StaleSeries:
    """Gauge series of ``families`` removed when not set for ``after`` seconds (None: never)."""

    def __init__(
        self,
        metrics: CatalogMetrics,
        families: Iterable[str],
        after: float | None,
        clock: Callable[[], float],
    ):
        self.families = frozenset(families)
        self.after = after
        self._metrics = metrics
        self._clock = clock
        # (family, series label values) -> when last set: one entry per series, so bounded by the budgets.
        self._last: dict[tuple[str, tuple[str, ...]], float] = {}
        self._lock = threading.Lock()
        if after is not None:
            metrics.add_collect_hook(self.prune, sorted(self.families))

    def set(self, gauges: Iterable[tuple[str, tuple, float]]) -> None:
        """Set each ``(family, raw labels, value)`` and note the time; family must be one of ours."""
        metrics = self._metrics
        with self._lock:
            now = self._clock()
            for name, labels, value in gauges:
                metrics.child(name, *labels).set(value)
                if self.after is not None:
                    self._last[name, metrics.series_of(name, *labels)] = now

    def prune(self) -> int:
        """Remove the series not set for ``after`` seconds; returns how many went."""
        if self.after is None:
            return 0
        with self._lock:
            cutoff = self._clock() - self.after
            stale = [key for key, last in self._last.items() if last <= cutoff]
            if not stale:
                return 0
            for key in stale:
                del self._last[key]
            return self._metrics.remove(stale)
