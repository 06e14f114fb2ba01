"""What the aiohttp and ASGI middlewares share: identities, trace ids, error records.

Both middlewares take their labels from bounded sources only (the tier from
the API-key resolver, the route from the router's template, the method from
a fixed set) and report through :class:`RequestMetrics`, whose per-request
path is a handful of dict lookups and integer additions into per-thread
lists that scrapes fold into the metric objects.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import traceback
import uuid
from bisect import bisect_left
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from prometheus_client import Histogram
from prometheus_client import values as prometheus_values
from prometheus_client.samples import Exemplar

from exporter.catalog import METHODS as _METHODS
from exporter.catalog import TIER as _TIER_LABEL
from exporter.catalog import spec
from exporter.deferred import fold_histogram
from exporter.labels import LabelRejected
from exporter.recorder import Recorder

try:  # optional: an active OpenTelemetry span supplies the exemplar's trace id
    from opentelemetry import trace as _otel_trace
except ImportError:  # pragma: no cover - depends on the environment
    _otel_trace = None
# Without a configured tracer provider every span is invalid: the hot path checks this global
# (where this OpenTelemetry version has it) before it looks for a span.
_OTEL_UNCHECKABLE = _otel_trace is not None and not hasattr(_otel_trace, "_TRACER_PROVIDER")

API_KEY_HEADER = "X-API-Key"
TRACEPARENT_HEADER = "traceparent"
DEFAULT_EXCLUDED = ("/metrics", "/healthz", "/readyz")
UNMATCHED = "unmatched"
CLIENT_CLOSED = 499  # nginx's convention for "client went away"
INTERNAL_ERROR = "internal_error"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is calling, as far as metrics care: a tier and an optional user id.

    The user id is only ever used as input to the HMAC (active users); it
    never reaches a label or a log record.
    """

    tier: str
    user: str | None = None


ANONYMOUS = Identity("unknown")
Resolver = Callable[[str | None], Identity]
"""Maps the raw ``X-API-Key`` header value (None when absent) to an :class:`Identity`."""


def key_table_resolver(table: Mapping[str, object]) -> Resolver:
    """Resolve API keys from a table of key -> object with ``tier`` and ``user``.

    Identities are built once, so a resolved request costs one dict lookup;
    a missing or unknown key is :data:`ANONYMOUS` (tier ``unknown``).
    """
    identities = {key: Identity(entry.tier, entry.user) for key, entry in table.items() if key}
    get = identities.get

    def resolve(api_key: str | None) -> Identity:
        return get(api_key, ANONYMOUS) if api_key else ANONYMOUS

    # The middlewares look keys up in this dict directly (one C call per request);
    # it has no empty key, so a missing or empty header is ANONYMOUS either way.
    resolve.identities = identities  # type: ignore[attr-defined]
    return resolve


def lookup(resolver: Resolver) -> Callable[[str | None, Identity], Identity]:
    """``resolver`` as ``get(api_key, ANONYMOUS)``: a dict's ``get`` for key-table resolvers."""
    identities = getattr(resolver, "identities", None)
    if isinstance(identities, dict) and "" not in identities and None not in identities:
        return identities.get
    return lambda api_key, default: resolver(api_key)


# --- trace ids for exemplars -------------------------------------------------

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}(-.*)?")
_ZERO_TRACE = "0" * 32
_ZERO_PARENT = "0" * 16


def parse_traceparent(value: str | None) -> str | None:
    """The trace id of a W3C ``traceparent`` header, or None when it is invalid.

    Follows W3C Trace Context: version ``ff`` and all-zero ids are invalid;
    version ``00`` has exactly four fields, later versions may append more.
    """
    if not value or len(value) > 512:
        return None
    match = _TRACEPARENT.fullmatch(value.strip(" \t"))
    if match is None:
        return None
    version, trace_id, parent_id, rest = match.groups()
    if version == "ff" or trace_id == _ZERO_TRACE or parent_id == _ZERO_PARENT:
        return None
    if version == "00" and rest:
        return None
    return trace_id


def otel_module():
    """``opentelemetry.trace`` when installed, else None."""
    return _otel_trace


def otel_trace_id() -> str | None:
    """The trace id of the active OpenTelemetry span, when opentelemetry is installed."""
    if _otel_trace is None:
        return None
    context = _otel_trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def trace_id(traceparent: str | None) -> str | None:
    """The request's trace id: the ``traceparent`` header's, else the active span's.

    An OpenTelemetry server span continues the header's trace, so both agree
    when both exist; the header is checked first because it is cheaper.
    """
    if traceparent:
        found = parse_traceparent(traceparent)
        if found is not None:
            return found
    return otel_trace_id()


# --- unhandled exceptions -----------------------------------------------------


REDACTED = "[redacted]"
_MIN_SECRET = 4  # shorter values (a path "/") would mangle every message


def _redact(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return text


def _exception_text(exc: BaseException) -> str:
    try:
        return "".join(traceback.format_exception(exc))
    except Exception:  # pragma: no cover - a broken __str__
        return repr(exc)


def _redacted_exception(exc: BaseException, secrets: tuple[str, ...], depth: int = 0) -> BaseException:
    """A stand-in for ``exc`` (same type name, traceback and chain) whose messages are redacted."""
    cls = type(exc)
    stand_in_type = type(cls.__name__, (Exception,), {"__module__": cls.__module__, "__qualname__": cls.__qualname__})
    try:
        message = str(exc)
    except Exception:  # pragma: no cover - a broken __str__
        message = ""
    stand_in = stand_in_type(_redact(message, secrets))
    stand_in.__traceback__ = exc.__traceback__
    stand_in.__suppress_context__ = exc.__suppress_context__
    notes = getattr(exc, "__notes__", None)
    if notes:
        stand_in.__notes__ = [_redact(str(note), secrets) for note in notes]
    if depth < 8:
        if exc.__cause__ is not None:
            stand_in.__cause__ = _redacted_exception(exc.__cause__, secrets, depth + 1)
        if exc.__context__ is not None and exc.__context__ is not exc.__cause__:
            stand_in.__context__ = _redacted_exception(exc.__context__, secrets, depth + 1)
    return stand_in


def record_unhandled(
    recorder: Recorder,
    logger: logging.Logger,
    exc: BaseException,
    route: str,
    method: str,
    tier: str,
    secrets: tuple[str | None, ...] = (),
) -> str:
    """Count an unhandled exception and log it once; returns its new error id.

    The log record carries the error id, exception type, message, stack trace,
    route template, method and tier: never an API key, user id or raw path.
    ``secrets`` (the request's API key, user id and raw path) are replaced by
    ``[redacted]`` wherever the exception's messages repeat them, as
    ``KeyError(api_key)`` would.
    """
    error_id = str(uuid.uuid4())
    error_type = type(exc).__name__
    recorder.error(tier, error_type, route)
    found = tuple(sorted({s for s in secrets if s and len(s) >= _MIN_SECRET}, key=len, reverse=True))
    logged: BaseException = exc
    if found and any(secret in _exception_text(exc) for secret in found):
        logged = _redacted_exception(exc, found)
    try:
        message = str(exc)
    except Exception:  # pragma: no cover - a broken __str__
        message = ""
    logger.error(
        "unhandled exception",
        exc_info=logged,
        extra={
            "fields": {
                "error_id": error_id,
                "error_type": error_type,
                "error": _redact(message, found)[:500],
                "route": route,
                "method": method.upper() if method.upper() in _METHODS else "other",
                "tier": recorder.metrics.guard.value(_TIER_LABEL, tier),
            }
        },
    )
    return error_id


def error_body(error_id: str) -> dict[str, str]:
    """The JSON body of a 500 caused by an unhandled exception."""
    return {"error": INTERNAL_ERROR, "error_id": error_id}


def error_body_bytes(error_id: str) -> bytes:
    return json.dumps(error_body(error_id)).encode()


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

    def __init__(self, recorder: Recorder):
        self._recorder = recorder
        metrics = recorder.metrics
        self._in_flight_gauge = metrics.families["clary_http_requests_in_flight"]
        self._local = threading.local()
        self._tables: list[_Table] = []
        self._lock = threading.Lock()
        self._flushed_in_flight = 0
        self._epoch = time.time() - time.perf_counter()
        # Multiprocess values live in files written at increment time: nothing to defer to.
        multiprocess = getattr(prometheus_values.ValueClass, "_multiprocess", True)
        bounds = None
        if not multiprocess:
            # An unregistered histogram of the same layout: are its internals as expected?
            probe = Histogram("probe", "Probe.", buckets=spec("clary_http_request_duration_seconds").buckets,
                              registry=None)
            if hasattr(probe, "_sum") and len(getattr(probe, "_buckets", ())) == len(probe._upper_bounds):
                bounds = probe._upper_bounds
        self._bounds = tuple(bounds or ())
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

    # What a middleware that inlines the hot path needs (see exporter.middleware).
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
    def of(cls, recorder: Recorder) -> RequestMetrics:
        """The recorder's instance: every middleware on one recorder shares it."""
        with _SHARED_LOCK:
            found = getattr(recorder, "_request_metrics", None)
            if found is None:
                found = recorder._request_metrics = cls(recorder)
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

        The aiohttp integrations inline the same steps (see ``exporter.middleware``);
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
        perf_counter = time.perf_counter
        otel = _otel_trace
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
            traced = traceparent or (otel is not None and (_OTEL_UNCHECKABLE or otel._TRACER_PROVIDER is not None))
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
                table.children[key][1]._buckets[bucket].set_exemplar(
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
        return self.enter(), time.perf_counter()

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
                fold_histogram(histogram, now, before, 2)
                table.flushed[key] = now
        if in_flight != self._flushed_in_flight:
            self._in_flight_gauge.inc(in_flight - self._flushed_in_flight)
            self._flushed_in_flight = in_flight
