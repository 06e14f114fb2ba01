"""The per-request path both integrations share: per-thread accumulators folded at scrape time.

Both middlewares take their labels from bounded sources only (the tier from
the API-key resolver, the route from the router's template, the method from
a fixed set) and report through :class:`RequestMetrics`, whose per-request
path is a handful of dict lookups and integer additions into per-thread
lists that scrapes fold into the metric objects.
"""

from __future__ import annotations

import threading
import time
import weakref
from bisect import bisect_left
from collections.abc import Callable

from prometheus_client.samples import Exemplar

from exporter.catalog import spec
from exporter.instrument import _compat
from exporter.instrument.identity import Identity
from exporter.instrument.recorder import Recorder
from exporter.instrument.tracing import trace_id
from exporter.labels import LabelRejected

DEFAULT_EXCLUDED = ("/metrics", "/healthz", "/readyz")
UNMATCHED = "unmatched"
CLIENT_CLOSED = 499  # nginx's convention for "client went away"

# --- the per-request path ------------------------------------------------------

_HTTP_FAMILIES = (
    "clary_http_requests_total",
    "clary_http_request_duration_seconds",
    "clary_http_requests_in_flight",
)
# Distinct (tier, method, route, code) keys and users per minute kept per thread.
SERIES_LIMIT = 10_000
USERS_PER_MINUTE_LIMIT = 10_000
# A bucket's exemplar is replaced at most this often (seconds); the first one at once.
EXEMPLAR_INTERVAL = 0.1
_ACTIVE_SLOT_SECONDS = 60.0  # the active-user sketches' smallest bucket


class _Table:
    """One thread's accumulators; only that thread writes them."""

    __slots__ = ("in_flight", "series", "children", "flushed", "users", "users_until", "exemplar_at")

    def __init__(self):
        self.in_flight = 0
        # (tier, method, route, code) -> [count, sum, bucket counts...]
        self.series: dict[tuple, list] = {}
        self.children: dict[tuple, tuple] = {}  # same key -> (counter child, histogram child)
        self.flushed: dict[tuple, list] = {}  # what the last flush already folded in
        self.users: dict[str, str] = {}  # user id -> tier, recorded in the current minute
        self.users_until = 0.0
        self.exemplar_at: dict[tuple, list[float]] = {}  # same key -> when each bucket last got one


_SHARED_LOCK = threading.Lock()
# One instance per recorder, without a slot on the recorder: the layer below knows nothing of this one.
_INSTANCES: weakref.WeakKeyDictionary[Recorder, RequestMetrics] = weakref.WeakKeyDictionary()
INF = float("inf")


class RequestMetrics:
    """The hot path both middlewares share; one per recorder (:meth:`of`).

    ``enter()`` counts a request in flight; ``leave(...)`` records it (the
    middlewares call these; ``started()``/``finished()`` wrap them).
    Counting goes into plain per-thread lists (no locks, no ``labels()``,
    no method calls on metric objects): request
    count, duration sum and the duration's bucket per label combination,
    and the in-flight level. Scrapes fold those into the catalog's metric
    objects (a collect hook, run before the HTTP families are collected),
    so the exposition is always up to date. A traced request also sets its
    bucket's exemplar (at most every ``EXEMPLAR_INTERVAL`` per bucket: a
    scrape only sees the latest). A known caller enters the active-user
    sketches once per minute.

    Under prometheus_client's multiprocess mode, where values live in
    files written at increment time, it records directly instead.
    """

    def __init__(self, recorder: Recorder, clock: Callable[[], float] = time.perf_counter):
        self._recorder = recorder
        self.clock = clock
        metrics = recorder.metrics
        self._in_flight_gauge = metrics.families["clary_http_requests_in_flight"]
        self._local = threading.local()
        self._tables: list[_Table] = []
        self._lock = threading.Lock()
        self._flushed_in_flight = 0
        self._epoch = time.time() - clock()
        # Multiprocess values live in files written at increment time: nothing to defer to.
        bounds: tuple[float, ...] = ()
        if _compat.deferred_available():
            bounds = tuple(spec("clary_http_request_duration_seconds").buckets)
            if bounds[-1] != INF:
                bounds += (INF,)
        self._bounds = bounds
        self._deferred = bool(bounds)
        self._hooked = False
        if self._deferred:
            self._hook()
        self._build_hot_path()

    def _hook(self) -> None:
        if not self._hooked:
            self._recorder.metrics.add_collect_hook(self.flush, _HTTP_FAMILIES)
            self._hooked = True

    @property
    def deferred(self) -> bool:
        """Whether requests are counted in accumulators (False: straight into the metric objects)."""
        return self._deferred

    @deferred.setter
    def deferred(self, value: bool) -> None:
        if value and not self._bounds:
            raise ValueError("deferred counting needs prometheus_client's in-memory histogram layout")
        if value:
            self._hook()
        self._deferred = bool(value)
        self._build_hot_path()

    # What a middleware that inlines the hot path needs (see exporter.instrument.aiohttp_middleware).
    @property
    def local(self) -> threading.local:
        """Per-thread holder of the accumulator table (``.table``)."""
        return self._local

    @property
    def bounds(self) -> tuple[float, ...]:
        """The duration histogram's bucket bounds, ``+Inf`` last."""
        return self._bounds

    def new_table(self) -> _Table:
        """This thread's accumulator table, on its first request."""
        return self._table()

    def new_series(self, table: _Table, key: tuple) -> list:
        """The accumulator for a label combination this thread sees for the first time."""
        return self._new_series(table, key)

    @classmethod
    def of(cls, recorder: Recorder, clock: Callable[[], float] | None = None) -> RequestMetrics:
        """The recorder's instance: every middleware on one recorder shares it.

        ``clock`` (seconds, monotonic) only takes effect for the first caller;
        tests pass one to place durations exactly on bucket bounds.
        """
        with _SHARED_LOCK:
            found = _INSTANCES.get(recorder)
            if found is None:
                found = _INSTANCES[recorder] = cls(recorder, clock or time.perf_counter)
            return found

    # -- per request --

    def _table(self) -> _Table:
        table = _Table()
        self._local.table = table
        with self._lock:
            self._tables.append(table)
        return table

    def _build_hot_path(self) -> None:
        """``enter`` and ``leave`` as closures: locals instead of attribute lookups per request.

        The aiohttp integrations inline the same steps (see ``exporter.instrument.aiohttp_middleware``);
        the rare branches (a new label combination, a trace id, a caller's first
        request in a minute) are the methods both call.
        """
        deferred = self._deferred
        local = self._local
        new_table = self._table
        new_series = self._new_series
        bounds = self._bounds
        first_bound = bounds[0] if bounds else 0.0
        user_seen = self._recorder.user_seen
        saw_user = self.saw_user
        exemplar = self.exemplar
        perf_counter = self.clock
        tracer_configured = _compat.tracer_configured
        gauge = self._in_flight_gauge
        record_direct = self._record_direct

        def enter() -> _Table | None:
            """Count a request in flight; pass the result to ``leave``."""
            if deferred:
                try:
                    table = local.table
                except AttributeError:
                    table = new_table()
                table.in_flight += 1
                return table
            gauge.inc()
            return None

        def leave(
            table: _Table | None,
            identity: Identity,
            method: str,
            route: str,
            code: int,
            start: float,
            traceparent: str | None = None,
        ) -> None:
            """Record a finished request (``table`` from ``enter``, ``start`` from ``perf_counter``)."""
            end = perf_counter()
            duration = end - start
            traced = traceparent or tracer_configured()
            tier = identity.tier
            user = identity.user
            if table is None:
                gauge.dec()
                record_direct(tier, method, route, code, duration, trace_id(traceparent) if traced else None)
                if user:
                    user_seen(tier, user)
                return
            table.in_flight -= 1
            key = (tier, method, route, code)
            counts = table.series.get(key)
            if counts is None:
                counts = new_series(table, key)
            counts[0] += 1
            counts[1] += duration
            if duration <= first_bound:  # most requests: no search
                counts[2] += 1
            else:
                counts[2 + bisect_left(bounds, duration)] += 1
            if traced:
                exemplar(table, key, duration, end, traceparent)
            if user and (end >= table.users_until or table.users.get(user) != tier):
                saw_user(table, tier, user, end)

        self.enter = enter
        self.leave = leave

    def exemplar(self, table: _Table, key: tuple, duration: float, end: float, traceparent: str | None) -> None:
        """Give the request's bucket its trace id as exemplar, at most every ``EXEMPLAR_INTERVAL``.

        A bucket keeps one exemplar and a scrape sees the latest: replacing it
        more often would only cost time.
        """
        bounds = self._bounds
        bucket = bisect_left(bounds, duration)
        stamps = table.exemplar_at.get(key)
        if stamps is None:
            stamps = table.exemplar_at[key] = [-EXEMPLAR_INTERVAL] * len(bounds)
        if end - stamps[bucket] >= EXEMPLAR_INTERVAL:
            trace = trace_id(traceparent)
            if trace is not None:
                stamps[bucket] = end
                _compat.set_bucket_exemplar(table.children[key][1], bucket,
                                            Exemplar({"trace_id": trace}, duration, time.time()))

    def saw_user(self, table: _Table, tier: str, user: str, end: float) -> None:
        """A known caller's first request in this minute (or in this tier): into the sketches."""
        if end >= table.users_until:
            table.users.clear()
            epoch = self._epoch
            table.users_until = ((end + epoch) // _ACTIVE_SLOT_SECONDS + 1) * _ACTIVE_SLOT_SECONDS - epoch
        users = table.users
        if users.get(user) != tier:
            if len(users) >= USERS_PER_MINUTE_LIMIT:
                users.clear()
            users[user] = tier
            self._recorder.user_seen(tier, user)

    def started(self) -> tuple[_Table | None, float]:
        """Count a request in flight; returns what :meth:`finished` needs."""
        return self.enter(), self.clock()

    def finished(
        self,
        started: tuple[_Table | None, float],
        identity: Identity,
        method: str,
        route: str,
        code: int,
        traceparent: str | None = None,
    ) -> None:
        """Record a finished request (``started`` from :meth:`started`)."""
        table, start = started
        self.leave(table, identity, method, route, code, start, traceparent)

    def _record_direct(self, tier, method, route, code, duration, trace) -> None:
        try:
            self._recorder.http_request(tier, method, route, code, duration, trace)
        except LabelRejected:  # a status outside 100..599 is the server's fault
            self._recorder.http_request(tier, method, route, 500, duration, trace)

    def _new_series(self, table: _Table, key: tuple) -> list:
        """Children for a new label combination (validated now), and a fresh accumulator."""
        tier, method, route, code = key
        child = self._recorder.metrics.child
        try:
            counter = child("clary_http_requests_total", tier, method, route, code)
        except LabelRejected:  # a status outside 100..599 is the server's fault
            counter = child("clary_http_requests_total", tier, method, route, 500)
        histogram = child("clary_http_request_duration_seconds", tier, method, route)
        if len(table.series) >= SERIES_LIMIT:
            # Pathological key churn: fold what this thread holds, then start over.
            with self._lock:
                self._flush_locked()
                table.series = {}
                table.children = {}
                table.flushed = {}
                table.exemplar_at = {}
        counts = [0, 0.0] + [0] * len(self._bounds)
        table.children[key] = (counter, histogram)  # before series: a flush looks it up
        table.series[key] = counts
        return counts

    # -- at scrape time --

    def flush(self) -> None:
        """Fold what was counted since the last flush into the metric objects."""
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        zero = [0, 0.0] + [0] * len(self._bounds)
        in_flight = 0
        for table in self._tables:
            in_flight += table.in_flight
            # Copies are taken without releasing the GIL: a consistent view per list.
            for key, counts in list(table.series.items()):
                now = counts[:]
                before = table.flushed.get(key, zero)
                if before == now:
                    continue
                counter, histogram = table.children[key]
                if now[0] != before[0]:
                    counter.inc(now[0] - before[0])
                _compat.fold_histogram(histogram, now, before, 2)
                table.flushed[key] = now
        if in_flight != self._flushed_in_flight:
            self._in_flight_gauge.inc(in_flight - self._flushed_in_flight)
            self._flushed_in_flight = in_flight

