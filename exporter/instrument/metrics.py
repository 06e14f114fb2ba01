"""prometheus_client metric objects for the catalog, in a registry passed in.

One instance per registry: the recorder, middleware and ingestion API write
through it; tests build their own registry and instance. Children whose
labels all come from known sets are created at zero up front, because a
series that appears with its first increment is invisible to ``rate()``.

Collect hooks (:meth:`CatalogMetrics.add_collect_hook`) run before a family
is collected: the HTTP middlewares count into plain per-thread accumulators
and fold them into these metric objects only then, at scrape time.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from exporter import __version__
from exporter.catalog import CATALOG, Kind, MetricSpec, spec
from exporter.instrument import _compat
from exporter.labels import LabelGuard



class _Hooked:
    """A metric family that runs its owner's collect hooks before it is collected."""

    _before_collect: Callable[[], None] | None = None

    def collect(self):
        hook = self._before_collect
        if hook is not None:
            hook()
        return super().collect()


class HookedCounter(_Hooked, Counter):
    pass


class HookedGauge(_Hooked, Gauge):
    pass


class HookedHistogram(_Hooked, Histogram):
    pass


_TYPES = {Kind.COUNTER: HookedCounter, Kind.GAUGE: HookedGauge, Kind.HISTOGRAM: HookedHistogram}

# Bound on the raw-label -> child cache; past it, lookups still work uncached.
CHILD_CACHE_LIMIT = 50_000

# How each gauge combines across worker processes in prometheus_client's
# multiprocess mode (PROMETHEUS_MULTIPROC_DIR; ignored otherwise). Counters and
# histograms always sum. "live*" modes drop a worker's value when it exits
# (mark_process_dead); the others keep the last value a dead worker wrote.
# A gauge missing here gets "all" (one series per pid); tests/instrument/test_multiprocess.py
# asserts every catalog gauge is listed. See docs/deployment.md, Multiprocess workers.
MULTIPROCESS_MODES = {
    "clary_http_requests_in_flight": "livesum",  # requests being served by all live workers
    "clary_model_memory_bytes": "livesum",  # each worker holds its own copy of a model
    "clary_model_last_load_duration_seconds": "mostrecent",  # the latest load of any worker, alive or not
    "clary_queue_length": "livemostrecent",  # one shared queue: the freshest observation
    "clary_license_expiry_timestamp_seconds": "mostrecent",  # facts about a license, not a process
    "clary_license_usage": "mostrecent",
    "clary_license_limit": "mostrecent",
    "clary_exporter_build_info": "livemax",  # 1, not 1 per worker
}


def shared_series_dir() -> Path | None:
    """In multiprocess mode, prometheus_client's directory: the workers share series budgets there."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")  # exporter.instrument.multiprocess.ENV
    return Path(path) if path and _compat.multiprocess_mode() else None


class CatalogMetrics:
    """The catalog's metric objects plus the label guard in front of them."""

    def __init__(
        self,
        registry: CollectorRegistry,
        allow_lists: Mapping[str, Sequence[str]] | None = None,
    ):
        self.registry = registry
        self.families: dict[str, MetricWrapperBase] = {
            s.name: self._create(s, registry) for s in CATALOG if not s.collected
        }
        self.guard = LabelGuard(self.families["clary_exporter_label_overflow_total"], allow_lists,
                                shared_series_dir())
        self._children: dict[tuple, object] = {}
        self._hooks: dict[str, list[Callable[[], None]]] = {}
        self._hooks_lock = threading.Lock()
        self._prefill()
        self.child("clary_exporter_build_info", __version__).set(1)

    @staticmethod
    def _create(s: MetricSpec, registry: CollectorRegistry) -> MetricWrapperBase:
        kwargs = {"registry": registry}
        if s.labels:
            kwargs["labelnames"] = s.label_names
        if s.kind is Kind.HISTOGRAM:
            kwargs["buckets"] = s.buckets
        if s.kind is Kind.GAUGE:
            kwargs["multiprocess_mode"] = MULTIPROCESS_MODES.get(s.name, "all")
        return _TYPES[s.kind](s.name, s.help, **kwargs)

    def _prefill(self) -> None:
        overflow = self.families["clary_exporter_label_overflow_total"]
        for s in CATALOG:
            if not s.collected:
                for label in s.labels:  # any label folds once its family's last series is reached
                    overflow.labels(s.name, label.name)
        for s in CATALOG:
            if not s.prefill:
                continue
            # The fallback too: the first "unknown"-tier license failure must be visible to rate().
            value_sets = [
                sorted({*(self.guard.allowed(label) or ()), *((label.fallback,) if label.fallback else ())})
                for label in s.labels
            ]
            if not all(value_sets):
                raise ValueError(f"{s.name}: prefill needs every label to have a value set")
            for combo in itertools.product(*value_sets):
                self.child(s.name, *combo)

    def add_collect_hook(self, hook: Callable[[], None], families: Iterable[str]) -> None:
        """Run ``hook`` before any of ``families`` is collected.

        A hook folds values that were counted outside prometheus_client into
        the family's children; it runs on the scraping thread, so it must be
        thread-safe against the code that counts.
        """
        with self._hooks_lock:
            for name in families:
                family = self.families[name]
                self._hooks.setdefault(name, []).append(hook)
                family._before_collect = lambda name=name: self._run_hooks(name)

    def _run_hooks(self, name: str) -> None:
        with self._hooks_lock:
            hooks = tuple(self._hooks.get(name, ()))
        for hook in hooks:
            hook()

    def series_of(self, name: str, *raw_labels: object) -> tuple[str, ...] | None:
        """The label values of the series ``child(name, *raw_labels)`` writes to (None: none yet)."""
        return self.guard.series_of(spec(name), raw_labels)

    def remove(self, series: Iterable[tuple[str, tuple[str, ...]]]) -> int:
        """Drop each ``(family, label values)`` series (as :meth:`series_of` names it); returns how many.

        The series leaves the exposition (Prometheus marks it stale on the
        next scrape), its place in the family's budget is released and the
        cached children writing to it are forgotten, so a later ``child``
        call starts a new series. Gauges only: a counter that came back
        would restart at 0 and read as a reset.
        """
        gone: dict[str, set[tuple[str, ...]]] = {}
        for name, values in series:
            if spec(name).kind is not Kind.GAUGE:
                raise ValueError(f"{name} is a {spec(name).kind.value}: only gauge series are removed")
            gone.setdefault(name, set()).add(tuple(values))
        if not gone:
            return 0
        removed: dict[int, object] = {}  # the children dropped, by id (held, so no id is reused)
        for name, all_values in gone.items():
            family = self.families[name]
            for values in all_values:
                child = family.labels(*values)
                removed[id(child)] = child
                family.remove(*values)
                self.guard.release(spec(name), values)
        for key in [k for k, c in list(self._children.items()) if k[0] in gone and id(c) in removed]:
            self._children.pop(key, None)
        return len(removed)

    def child(self, name: str, *raw_labels: object):
        """The bound child for raw label values, normalised by the guard.

        Cached per raw tuple so the hot path is one dict lookup; raises
        ``LabelRejected`` for a value that has no fallback.
        """
        key = (name, raw_labels)
        found = self._children.get(key)
        if found is not None:
            return found
        family = self.families[name]
        s = spec(name)
        if not s.labels:
            return family
        found = family.labels(*self.guard.values(s, raw_labels))
        if len(self._children) < CHILD_CACHE_LIMIT:
            self._children[key] = found
        return found
