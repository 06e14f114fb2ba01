"""Every access to a private attribute of a third-party library, in one module.

The hot paths read a few internals of aiohttp, prometheus_client and
OpenTelemetry (and one of the standard library) because the public API
costs a Python frame or a lock per request. Each access is probed here, at
import, against the installed version; where the layout is not the one this
module knows, the probe says so (``PROBES``) and the callers take the public
API instead: slower, same results. ``tests/instrument/test_compat.py`` runs
the public fallbacks too. Nothing outside this module touches a third-party
``_private`` name (``tests/test_layering.py`` greps for them).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from operator import attrgetter
from typing import Any, NamedTuple

from prometheus_client import Histogram
from prometheus_client import values as prometheus_values

log = logging.getLogger(__name__)

# --- standard library -------------------------------------------------------------------------

try:  # the C loop behind collections.Counter(iterable); Counter() itself costs microseconds to set up
    from collections import _count_elements as count_elements
except ImportError:  # pragma: no cover - other Python implementations
    def count_elements(mapping: dict, iterable: Iterable) -> None:
        for element in iterable:
            mapping[element] = mapping.get(element, 0) + 1


# --- prometheus_client ------------------------------------------------------------------------

class HistogramParts(NamedTuple):
    """A histogram child's value objects: the sum, one per bucket (not cumulative), and the bounds."""

    total: Any
    buckets: list
    bounds: tuple[float, ...]


def histogram_parts(histogram: Any) -> HistogramParts | None:
    """The in-memory value objects of a histogram child, or None where the layout differs."""
    total = getattr(histogram, "_sum", None)
    buckets = getattr(histogram, "_buckets", None)
    bounds = getattr(histogram, "_upper_bounds", None)
    if total is None or buckets is None or bounds is None or len(buckets) != len(bounds):
        return None
    if not hasattr(total, "inc") or not all(hasattr(bucket, "inc") for bucket in buckets):
        return None
    return HistogramParts(total, list(buckets), tuple(bounds))


def counter_inc(counter: Any) -> Callable[[float], None]:
    """The counter child's value ``inc`` (no label checks, no exemplar handling), else its public ``inc``."""
    return getattr(getattr(counter, "_value", None), "inc", None) or counter.inc


def multiprocess_mode() -> bool:
    """Whether values live in prometheus_client's multiprocess files (written at update time)."""
    return bool(getattr(prometheus_values.ValueClass, "_multiprocess", True))


def _probe_histogram() -> bool:
    probe = Histogram("probe", "Probe.", buckets=(1.0,), registry=None)
    return histogram_parts(probe) is not None


HISTOGRAM_LAYOUT = _probe_histogram()
"""Whether histogram children keep the in-memory layout that :func:`fold_histogram` writes into."""


def deferred_available() -> bool:
    """Whether counts may be summed aside and folded into the metric objects at scrape time.

    Probed again on each call (a recorder asks once, when it is built).
    """
    return not multiprocess_mode() and _probe_histogram()


def fold_histogram(histogram: Any, now: list, before: list, first_bucket: int) -> None:
    """Add to a histogram child what a running ``[..., sum, bucket counts...]`` gained.

    ``now`` and ``before`` are two copies of the running list; the sum sits
    just before ``first_bucket``. Bucket counts are per bucket, not
    cumulative, as prometheus_client keeps them.
    """
    at = first_bucket - 1
    if now[at] != before[at]:
        histogram._sum.inc(now[at] - before[at])
    for i, bucket in enumerate(histogram._buckets):
        delta = now[first_bucket + i] - before[first_bucket + i]
        if delta:
            bucket.inc(delta)


def set_bucket_exemplar(histogram: Any, index: int, exemplar: Any) -> None:
    """Replace the exemplar of one bucket of a histogram child."""
    histogram._buckets[index].set_exemplar(exemplar)


# --- OpenTelemetry (optional) -----------------------------------------------------------------

try:
    from opentelemetry import trace as otel_trace
except ImportError:  # pragma: no cover - depends on the environment
    otel_trace = None


def _tracer_configured_factory() -> Callable[[], bool]:
    if otel_trace is None:
        return lambda: False
    if not hasattr(otel_trace, "_TRACER_PROVIDER"):  # unknown version: always look for a span
        return lambda: True
    module = otel_trace

    def tracer_configured() -> bool:
        # Without a configured tracer provider every span is invalid: no need to look for one.
        return module._TRACER_PROVIDER is not None

    return tracer_configured


tracer_configured = _tracer_configured_factory()
"""Whether an active span could carry a trace id (a tracer provider is set)."""


# --- aiohttp ----------------------------------------------------------------------------------

def _public_request_fields(request: Any) -> tuple[Any, Any, str]:
    return request.headers, request, request.method


def _probe_request_fields() -> bool:
    """Whether aiohttp's request sets the three fields read here (read off its ``__init__``'s code,
    without building a request: that needs ``aiohttp.test_utils``, which loads ``unittest``)."""
    try:
        from aiohttp.web_request import BaseRequest

        names = set(BaseRequest.__init__.__code__.co_names)
    except (ImportError, AttributeError):  # pragma: no cover - another aiohttp
        return False
    return {"_headers", "_state", "_method"} <= names


PROBES: dict[str, bool] = {"prometheus_client histogram layout": HISTOGRAM_LAYOUT,
                           "aiohttp request fields": _probe_request_fields()}

request_fields: Callable[[Any], tuple[Any, Any, str]] = (
    attrgetter("_headers", "_state", "_method") if PROBES["aiohttp request fields"] else _public_request_fields)
"""``(headers, state, method)`` of an aiohttp request in one C call (``request.headers`` and
``.method`` run a Python getter each); ``state[key] = value`` is ``request[key] = value``
minus its key-type check."""


def set_route_handler(route: Any, handler: Callable) -> None:
    """Replace the handler of a registered aiohttp route (aiohttp has no public setter)."""
    route._handler = handler


def resource_matcher(resource: Any) -> Callable[[str], Any] | None:
    """The resource's path matcher (None where it has none: always check paths per request)."""
    return getattr(resource, "_match", None)


def root_index_candidates(router: Any) -> list:
    """The router's candidate list for paths under ``/``: where an unmatched-request hook goes."""
    return router._resource_index.setdefault("/", [])


for _name, _ok in PROBES.items():
    if not _ok:  # pragma: no cover - depends on the installed versions
        log.warning("unknown library internals, using the public API (slower)", extra={"fields": {"probe": _name}})
