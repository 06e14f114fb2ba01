"""aiohttp integration: request metrics, tier resolution, exemplars and error ids.

Labels come from bounded sources only: the tier from the API-key resolver,
the route from the router's template (never the raw path), the method from
a fixed set. An unhandled exception becomes a 500 JSON body carrying an
error id, and one structured log record with the same id.

Two ways in, one per-request path (:class:`_HotPath`):

- :func:`instrument` (recommended): wraps each route's handler once, at
  startup, with its template baked in. With no middleware on the
  application, aiohttp then skips its middleware machinery altogether
  (about 7 % of a tiny request). Unmatched requests (404/405) are caught by
  a hook that only they reach.
- :func:`metrics_middleware`: a classic middleware, for applications that
  want one; the route template (and whether the route is excluded) is
  computed once per route object.

Either way the metric children are created once per label combination and
active users are recorded once per user and minute.
"""

from __future__ import annotations

import asyncio
import logging
from bisect import bisect_left
from collections.abc import Callable, Iterable
from functools import partial, update_wrapper

from aiohttp import web
from aiohttp.web_urldispatcher import AbstractResource, AbstractRoute, PrefixedSubAppResource, UrlDispatcher
from multidict import istr

from exporter.instrument import _compat
from exporter.instrument.error_report import ErrorSink, sink_of
from exporter.instrument.errors import error_body, record_unhandled
from exporter.instrument.identity import ANONYMOUS, API_KEY_HEADER, Identity, Resolver, key_table_resolver, lookup
from exporter.instrument.requests import CLIENT_CLOSED, DEFAULT_EXCLUDED, UNMATCHED, RequestMetrics
from exporter.instrument.tracing import TRACEPARENT_HEADER
from exporter.instrument.recorder import Recorder

__all__ = [
    "ANONYMOUS",
    "API_KEY_HEADER",
    "CLIENT_CLOSED",
    "DEFAULT_EXCLUDED",
    "IDENTITY",
    "UNMATCHED",
    "Identity",
    "Resolver",
    "instrument",
    "key_table_resolver",
    "metrics_middleware",
    "route_template",
]

log = logging.getLogger(__name__)

# Request key under which handlers find the caller (typed key on aiohttp >= 3.14).
IDENTITY = web.RequestKey("clary.identity", Identity) if hasattr(web, "RequestKey") else "clary.identity"

_API_KEY = istr(API_KEY_HEADER)
_TRACEPARENT = istr(TRACEPARENT_HEADER)
_EXCLUDED = object()  # route marker: served, not measured
# Routes remembered per middleware; an application has a fixed, small set of them.
ROUTE_CACHE_LIMIT = 10_000

Handler = Callable[[web.Request], object]


def route_template(request: web.Request) -> str:
    """The matched resource's template, including sub-application prefixes."""
    match_info = request.match_info
    if match_info.http_exception is not None:
        return UNMATCHED
    route = match_info.route
    resource = route.resource if route is not None else None
    return resource.canonical if resource is not None else UNMATCHED


def _raw_paths(request: web.Request, template: str) -> tuple[str | None, ...]:
    """The request's path (and query) where they differ from its template (and so may carry ids)."""
    path, path_qs = request.path, request.path_qs
    return (path if path != template else None, path_qs if path_qs != path else None)


class _HotPath:
    """What both integrations run per request, as closures over locals (no attribute lookups).

    ``measure(handler, template, request)`` runs the handler and records the
    request; ``identified(handler, request)`` only resolves the caller (for
    excluded paths); ``checked(handler, template, request)`` picks one of the
    two by the request's path (a dynamic route that an excluded path can
    match). All three return the handler's awaitable without an extra frame
    in between, so a ``partial`` of them can stand in for a handler.
    """

    def __init__(self, recorder: Recorder, resolver: Resolver, excluded: Iterable[str],
                 reporter: ErrorSink | None = None):
        self.excluded = excluded = frozenset(excluded)
        resolve = lookup(resolver)
        request_metrics = RequestMetrics.of(recorder)
        perf_counter = request_metrics.clock
        request_fields = _compat.request_fields  # (headers, state, method) in one C call

        def unhandled(request: web.Request, exc: Exception, template: str, identity: Identity) -> web.Response:
            error_id = record_unhandled(recorder, log, exc, template, request.method, identity.tier,
                                        (request.headers.get(_API_KEY), identity.user, *_raw_paths(request, template)),
                                        reporter, identity.user)
            if request.writer.output_size > 0:
                # The handler had started a (streamed) response: a second one would be
                # written into its body. Drop the connection instead, as aiohttp does.
                raise ConnectionResetError("handler failed after its response started") from exc
            return web.json_response(error_body(error_id), status=500)

        def identified(handler: Handler, request: web.Request):
            request[IDENTITY] = resolve(request.headers.get(_API_KEY), ANONYMOUS)
            return handler(request)

        # The per-request path, inlined: RequestMetrics.leave's steps without its calls (its twin is
        # tested bound by bound: tests/instrument/test_request_path_buckets.py). In multiprocess mode
        # (not deferred) values go straight into the metric objects through enter/leave instead.
        deferred = request_metrics.deferred
        enter = request_metrics.enter
        leave = request_metrics.leave
        local = request_metrics.local
        new_table = request_metrics.new_table
        new_series = request_metrics.new_series
        bounds = request_metrics.bounds
        first_bound = bounds[0] if bounds else 0.0
        exemplar = request_metrics.exemplar
        saw_user = request_metrics.saw_user
        tracer_configured = _compat.tracer_configured

        async def measure(handler: Handler, template: str, request: web.Request):
            headers, state, method = request_fields(request)
            identity = resolve(headers.get(_API_KEY), ANONYMOUS)
            state[IDENTITY] = identity
            if deferred:
                try:
                    table = local.table
                except AttributeError:
                    table = new_table()
                table.in_flight += 1
            else:
                table = enter()
            code = 500
            start = perf_counter()
            try:
                response = await handler(request)
                code = response.status
                return response
            except web.HTTPException as exc:
                code = exc.status
                raise
            except asyncio.CancelledError:
                code = CLIENT_CLOSED
                raise
            except Exception as exc:
                return unhandled(request, exc, template, identity)
            finally:
                if deferred:
                    end = perf_counter()
                    duration = end - start
                    table.in_flight -= 1
                    tier = identity.tier
                    key = (tier, method, template, code)
                    counts = table.series.get(key)
                    if counts is None:
                        counts = new_series(table, key)
                    counts[0] += 1
                    counts[1] += duration
                    if duration <= first_bound:  # most requests: no search
                        counts[2] += 1
                    else:
                        counts[2 + bisect_left(bounds, duration)] += 1
                    traceparent = headers.get(_TRACEPARENT)
                    if traceparent or tracer_configured():
                        exemplar(table, key, duration, end, traceparent)
                    user = identity.user
                    if user and (end >= table.users_until or table.users.get(user) != tier):
                        saw_user(table, tier, user, end)
                else:
                    leave(table, identity, method, template, code, start, headers.get(_TRACEPARENT))

        def checked(handler: Handler, template: str, request: web.Request):
            if request.path in excluded:
                return identified(handler, request)
            return measure(handler, template, request)

        self.measure = measure
        self.identified = identified
        self.checked = checked
        for step in (measure, identified, checked):
            step.clary_measures = True  # marks a handler wrapped in it (see _wrapped)

    def classify(self, resource: AbstractResource) -> object:
        """A matched resource's template, ``_EXCLUDED``, or ``(template,)`` when an
        excluded path could match it (a dynamic route: check the path per request)."""
        template = resource.canonical
        if template in self.excluded:
            return _EXCLUDED
        match = _compat.resource_matcher(resource)
        if match is None or any(match(path) is not None for path in self.excluded):
            return (template,)
        return template

    def unmatched(self, request: web.Request) -> object:
        """What a 404/405 counts as (its route is a fresh ``SystemRoute`` per request)."""
        return _EXCLUDED if request.path in self.excluded else UNMATCHED

    def wrap(self, handler: Handler, kind: object) -> Handler:
        """``handler`` measured as ``kind`` (from :meth:`classify` or :meth:`unmatched`).

        A plain ``partial``: a subclass (or a closure calling the step) costs
        another ~50 ns per request. It carries the handler's name, attributes
        and ``__wrapped__``, as aiohttp's own middleware chain does.
        """
        if kind.__class__ is str:
            wrapped = partial(self.measure, handler, kind)
        elif kind is _EXCLUDED:
            wrapped = partial(self.identified, handler)
        else:
            wrapped = partial(self.checked, handler, kind[0])
        return update_wrapper(wrapped, handler)


def _wrapped(handler: Handler) -> bool:
    """Whether ``handler`` is already measured (by this or another :func:`instrument` call)."""
    return getattr(getattr(handler, "func", None), "clary_measures", False)


def metrics_middleware(
    recorder: Recorder,
    resolver: Resolver,
    excluded: Iterable[str] = DEFAULT_EXCLUDED,
    report_errors=None,
):
    """Build the middleware; one instance per application.

    :func:`instrument` records the same and costs less; the middleware, first
    in ``middlewares``, also counts requests that other middlewares answer
    by themselves (a 401 from an auth middleware).

    Args:
        recorder: where the metrics go.
        resolver: ``X-API-Key`` header value (or None) -> :class:`Identity`;
            see :func:`key_table_resolver`. Handlers read the result from
            ``request[IDENTITY]``.
        excluded: paths served but not measured (default ``/metrics``,
            ``/healthz``, ``/readyz``).
        report_errors: off by default; an ``EventClient`` (or an ``ErrorReporter``) sends an
            error record of every unhandled exception to the exporter, looked up there by
            the error id of the 500 body (``exporter.instrument.error_report``).
    """
    hot = _HotPath(recorder, resolver, excluded, sink_of(report_errors))
    measure, identified, checked = hot.measure, hot.identified, hot.checked
    templates: dict[AbstractRoute, object] = {}
    get_template = templates.get

    def template_of(request: web.Request, route: AbstractRoute) -> object:
        """Kind of a matched route (cached), or of an unmatched request (never cached)."""
        if request.match_info.http_exception is not None or route.resource is None:
            return hot.unmatched(request)
        found = hot.classify(route.resource)
        if len(templates) < ROUTE_CACHE_LIMIT:
            templates[route] = found
        return found

    # A plain function that returns the measuring coroutine: one frame per request, not two.
    @web.middleware
    def middleware(request: web.Request, handler):
        route = request.match_info.route
        template = get_template(route)
        if template is None:
            template = template_of(request, route)
        if template.__class__ is str:
            return measure(handler, template, request)
        if template is _EXCLUDED:
            return identified(handler, request)
        return checked(handler, template[0], request)

    return middleware


# --- instrument(): wrapped handlers, no middleware --------------------------------------------


class _UnmatchedHook:
    """The last candidate of a router's ``/`` index entry, so only requests that no route
    matched reach it (a matched one returns from the router's walk earlier).

    It resolves the request again with itself out of the way, which yields aiohttp's own
    404/405 (allowed methods included), and wraps that error's handler: the cost of
    counting unmatched requests falls on them alone.
    """

    def __init__(self, router: UrlDispatcher, hot: _HotPath):
        self._router = router
        self._hot = hot
        self._resolving: set[int] = set()

    async def resolve(self, request: web.Request):
        key = id(request)
        if key in self._resolving:
            return None, set()
        self._resolving.add(key)
        try:
            match_info = await self._router.resolve(request)
        finally:
            self._resolving.discard(key)
        route = match_info.route
        if match_info.http_exception is not None and not _wrapped(route.handler):
            _compat.set_route_handler(route, self._hot.wrap(route.handler, self._hot.unmatched(request)))
        return match_info, set()


def _wrap_routes(router: UrlDispatcher, hot: _HotPath) -> None:
    """Wrap every route's handler (sub-applications' too) and hook each router's 404/405."""
    for resource in router.resources():
        if isinstance(resource, PrefixedSubAppResource):
            _wrap_routes(resource.get_info()["app"].router, hot)
            continue
        kind = hot.classify(resource)
        for route in resource:
            if not _wrapped(route.handler):
                _compat.set_route_handler(route, hot.wrap(route.handler, kind))
    root = _compat.root_index_candidates(router)
    if not any(isinstance(candidate, _UnmatchedHook) for candidate in root):
        root.append(_UnmatchedHook(router, hot))


def instrument(
    app: web.Application,
    recorder: Recorder,
    resolver: Resolver,
    excluded: Iterable[str] = DEFAULT_EXCLUDED,
    report_errors=None,
) -> None:
    """Measure every request ``app`` (and its sub-applications) routes to a handler; the
    recommended way. Arguments as for :func:`metrics_middleware`.

    Records what :func:`metrics_middleware` records, without being a middleware:
    at startup (routes and sub-applications in place) each route's handler is
    wrapped with its template baked in, so an application without middlewares
    runs no middleware chain at all. Call it before mounting ``app`` as a
    sub-application (its startup hooks freeze then).

    Where the application has middlewares, they run outside the measurement,
    as if ours were the last one: an OpenTelemetry middleware's span is seen
    (exemplars), but a request that a middleware answers by itself (a 401 from
    an auth middleware) is not counted. To count those, put
    :func:`metrics_middleware` first in ``middlewares`` instead.
    """
    excluded = tuple(excluded)
    reporter = sink_of(report_errors)

    async def wrap_handlers(app: web.Application) -> None:
        _wrap_routes(app.router, _HotPath(recorder, resolver, excluded, reporter))

    app.on_startup.append(wrap_handlers)
