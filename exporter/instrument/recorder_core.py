"""What every recording method stands on: metric objects, bounded labels, bulk updates, caches.

:class:`exporter.instrument.recorder.Recorder` adds the typed entry points
(one per thing a Clary service reports); this base holds the state they
share, so that both stay small enough to read.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry

from exporter.catalog import TIER
from exporter.instrument._compat import count_elements
from exporter.instrument.deferred import DeferredUpdates, group_values, kept_pairs
from exporter.instrument.deferred import available as deferred_available
from exporter.instrument.hashing import Hasher
from exporter.instrument.metrics import CatalogMetrics
from exporter.instrument.sessions import MAX_SESSIONS, OpenSessions
from exporter.instrument.sketches import ActiveLicenses, ActiveUsers
from exporter.instrument.stale import (
    DEFAULT_LICENSE_STALE_AFTER,
    LICENSE_FAMILIES,
    StaleSeries,
)
from exporter.instrument.workflows import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_SESSIONS,
    Workflows,
)

DIGEST_CACHE_LIMIT = 10_000

OptOut = Callable[[str], bool]
"""Called with an HMAC-hashed user id; True when the user opted out of per-user state."""


class RecorderCore:
    """The recorder's machinery: metric objects, label bounds, bulk updates, hashing caches.

    Args:
        registry: where the catalog's metric objects are registered.
        hasher: HMAC for user ids, license keys and session ids.
        allow_lists: replacements for configurable label allow-lists.
        is_opted_out: per-user opt-out check on the HMAC-hashed user id
            (default: nobody opted out). Called on every per-user event, so
            it must be cheap (a set lookup); its answer is not cached.
        clock: monotonic clock for session durations (tests pass a fake).
        max_sessions: open sessions tracked at once; the oldest is
            forgotten past it.
        license_stale_after: seconds without a ``license_status`` report
            after which a license's expiry, usage and limit series are
            dropped (None: kept until restart); see :mod:`exporter.instrument.stale`.
        funnels, workflow_idle_timeout, workflow_max_sessions: user workflows
            (session transitions and funnels); see :mod:`exporter.instrument.workflows`.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        hasher: Hasher,
        allow_lists: Mapping[str, Iterable[str]] | None = None,
        *,
        is_opted_out: OptOut | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_sessions: int = MAX_SESSIONS,
        license_stale_after: float | None = DEFAULT_LICENSE_STALE_AFTER,
        funnels: Mapping[str, Iterable[str]] | None = None,
        workflow_idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        workflow_max_sessions: int = DEFAULT_MAX_SESSIONS,
    ):
        self.metrics = CatalogMetrics(registry, allow_lists)
        # Where batches sum counters and histograms; None where they must record directly (multiprocess).
        self._deferred = DeferredUpdates(self.metrics) if deferred_available() else None
        self.hasher = hasher
        self.active_users = ActiveUsers()
        self.active_licenses = ActiveLicenses()
        registry.register(self.active_users)
        registry.register(self.active_licenses)
        self._child = self.metrics.child
        self.is_opted_out = is_opted_out
        self._sessions = OpenSessions(clock, max_sessions)
        self.workflows = Workflows({name: tuple(steps) for name, steps in (funnels or {}).items()}, clock,
                                   workflow_idle_timeout, workflow_max_sessions)
        # Bound to this recorder, also in its batches (shallow copies): sessions idle past the
        # timeout end before a scrape, counted here. Registered on first use (exporter.instrument.recorder).
        self._expire_workflows = self._workflow_expiry
        self._license_gauges = StaleSeries(self.metrics, LICENSE_FAMILIES, license_stale_after, clock)
        self._http: dict[tuple, tuple] = {}
        self._digests: dict[str, str] = {}
        self._license_ids: dict[str, str] = {}
        self._tiers: dict[object, str] = {}
        self._held_back: list[Callable[[], None]] = []  # before_collect sources

    def _tier(self, tier: str) -> str:
        found = self._tiers.get(tier)
        if found is None:
            found = self.metrics.guard.value(TIER, tier)
            if len(self._tiers) < 1000:
                self._tiers[tier] = found
        return found

    # The three ways a method touches a metric: through here, so a batch can sum them.
    def _inc(self, name: str, labels: tuple, amount: float = 1) -> None:
        self._child(name, *labels).inc(amount)

    def _observe(self, name: str, labels: tuple, value: float) -> None:
        self._child(name, *labels).observe(value)

    def _set(self, name: str, labels: tuple, value: float) -> None:
        for source in self._held_back:  # what arrived before this set is recorded first: this value wins
            source()
        if name in self._license_gauges.families:
            self._license_gauges.set(((name, labels, value),))
        else:
            self._child(name, *labels).set(value)

    def count_each(self, name: str, labels: Iterable[tuple]) -> None:
        """Increment counter ``name`` once per label tuple of ``labels`` (raw values, as the methods take).

        The bulk form the ingestion API records whole event batches with;
        one update per distinct tuple.
        """
        counts: dict[tuple, int] = {}
        count_elements(counts, labels)
        for key, count in counts.items():
            self._inc(name, key, count)

    def add_each(self, name: str, labels: Iterable[tuple], amounts: Iterable[float]) -> None:
        """Add each amount to counter ``name`` under the label tuple beside it (summed per tuple first)."""
        for key, group in group_values(labels, amounts, bool).items():
            self._inc(name, key, sum(group))

    def set_each(self, name: str, labels: Iterable[tuple], values: Iterable[float | None]) -> None:
        """Set gauge ``name`` under each label tuple to the last value beside it; None is skipped.

        Tuples are set in the order of their last values, so where several
        fold into one series (``other``) the last value wins there too.
        """
        labels, values = kept_pairs(labels, values)
        last = dict(zip(labels, values))  # the last value per tuple
        for key in reversed(dict.fromkeys(reversed(labels))):
            self._set(name, key, last[key])

    def observe_each(self, name: str, labels: Iterable[tuple], values: Iterable[float | None]) -> None:
        """Observe each value in histogram ``name`` under the label tuple beside it; None is skipped."""
        for key, value in zip(labels, values):
            if value is not None:
                self._observe(name, key, value)

    def before_collect(self, source: Callable[[], None]) -> bool:
        """Run ``source`` before any catalog family is collected, to record what it held back.

        Also before every direct gauge ``set`` (not a batch's), so that a
        value set now wins over older values still held back. ``source``
        must be cheap when it holds nothing. Returns False, registering
        nothing, where no code runs before a scrape (prometheus_client's
        multiprocess mode): record at once there.
        """
        if self._deferred is None:
            return False
        self._deferred.add_source(source)
        self._held_back.append(source)
        return True

    def batch(self) -> RecorderCore:
        """This recorder for many calls in a row from one thread, at a fraction of the cost per call.

        Same methods, same label checks at call time (``LabelRejected`` is
        raised by the call, as here); counters and histograms are summed in
        plain per-thread totals that scrapes fold in (:mod:`exporter.instrument.deferred`),
        gauges are set at ``commit()``. The ingestion API records each event
        batch this way. Everything else (user sketches, sessions, caches) is
        this recorder's own state.
        """
        from exporter.instrument.recorder_batch import RecorderBatch  # a subclass: imported when first used

        return RecorderBatch(self)

    def _workflow_expiry(self) -> None:
        moves = self.workflows.expire()
        if moves:
            self._count_moves(moves)

    def _count_moves(self, moves) -> None:
        """Count what :class:`Workflows` found; the first time, also schedule expiry before every scrape."""
        if not self.workflows.scheduled:
            self.workflows.scheduled = True
            if self._deferred is not None:
                self._deferred.add_source(self._expire_workflows)
        self.count_each("clary_workflow_transitions_total", moves.transitions)
        self.count_each("clary_funnel_sessions_total", moves.steps)
        self.count_each("clary_workflow_sessions_evicted_total", moves.evicted)

    def _license_id(self, license_key: str) -> str:
        found = self._license_ids.get(license_key)
        if found is None:
            found = self.hasher.license_id(license_key)
            if len(self._license_ids) >= DIGEST_CACHE_LIMIT:
                self._license_ids.clear()
            self._license_ids[license_key] = found
        return found

    def opted_out(self, user_id: str) -> bool:
        """Whether ``user_id`` (raw) opted out, according to the ``is_opted_out`` hook."""
        return self.is_opted_out is not None and bool(self.is_opted_out(self.hasher.digest(user_id)))
