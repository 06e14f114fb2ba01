"""aiohttp middleware: request metrics, tier resolution, exemplars and error ids.

Labels come from bounded sources only: the tier from the API-key resolver,
the route from the router's template (never the raw path), the method from
a fixed set. An unhandled exception becomes a 500 JSON body carrying an
error id, and one structured log record with the same id.

The per-request cost is kept close to that of an empty middleware: the
route template (and whether the route is excluded) is computed once per
route object, the metric children once per label combination
(:meth:`Recorder.http_request`), and active users once per user and minute.
"""

from __future__ import annotations

import asyncio
import logging
import time
from bisect import bisect_left
from collections.abc import Iterable

from aiohttp import web
from aiohttp.web_urldispatcher import AbstractRoute
from multidict import istr

from exporter.httpmetrics import (
    ANONYMOUS,
    API_KEY_HEADER,
    CLIENT_CLOSED,
    DEFAULT_EXCLUDED,
    TRACEPARENT_HEADER,
    UNMATCHED,
    Identity,
    RequestMetrics,
    Resolver,
    error_body,
    key_table_resolver,
    lookup,
    otel_module,
    record_unhandled,
)
from exporter.recorder import Recorder

__all__ = [
    "ANONYMOUS",
    "API_KEY_HEADER",
    "CLIENT_CLOSED",
    "DEFAULT_EXCLUDED",
    "IDENTITY",
    "UNMATCHED",
    "Identity",
    "Resolver",
    "key_table_resolver",
    "metrics_middleware",
    "route_template",
]

log = logging.getLogger(__name__)

# Request key under which handlers find the caller (typed key on aiohttp >= 3.14).
IDENTITY = web.RequestKey("clary.identity", Identity) if hasattr(web, "RequestKey") else "clary.identity"

_API_KEY = istr(API_KEY_HEADER)
_TRACEPARENT = istr(TRACEPARENT_HEADER)
_EXCLUDED = object()  # template-cache marker for an excluded route
# Routes remembered per middleware; an application has a fixed, small set of them.
ROUTE_CACHE_LIMIT = 10_000


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


def metrics_middleware(
    recorder: Recorder,
    resolver: Resolver,
    excluded: Iterable[str] = DEFAULT_EXCLUDED,
):
    """Build the middleware; one instance per application.

    Args:
        recorder: where the metrics go.
        resolver: ``X-API-Key`` header value (or None) -> :class:`Identity`;
            see :func:`key_table_resolver`. Handlers read the result from
            ``request[IDENTITY]``.
        excluded: paths served but not measured (default ``/metrics``,
            ``/healthz``, ``/readyz``).
    """
    excluded = frozenset(excluded)
    templates: dict[AbstractRoute, object] = {}
    get_template = templates.get
    resolve = lookup(resolver)
    request_metrics = RequestMetrics.of(recorder)
    enter = request_metrics.enter
    leave = request_metrics.leave
    perf_counter = time.perf_counter

    def template_of(request: web.Request, route: AbstractRoute) -> object:
        """Template of a matched route (cached), or of an unmatched request.

        The cached value is the template, ``_EXCLUDED``, or for a dynamic
        route that an excluded path could match, ``(template,)``: check the
        path per request.
        """
        if request.match_info.http_exception is not None or route.resource is None:
            # 404/405: a fresh SystemRoute per request, so nothing is cached.
            return _EXCLUDED if request.path in excluded else UNMATCHED
        resource = route.resource
        template = resource.canonical
        if template in excluded:
            found: object = _EXCLUDED
        else:
            match = getattr(resource, "_match", None)
            could_match = match is None or any(match(path) is not None for path in excluded)
            found = (template,) if could_match else template
        if len(templates) < ROUTE_CACHE_LIMIT:
            templates[route] = found
        return found

    def unhandled(request: web.Request, exc: Exception, template: str, identity: Identity) -> web.Response:
        error_id = record_unhandled(recorder, log, exc, template, request.method, identity.tier,
                                    (request.headers.get(_API_KEY), identity.user, *_raw_paths(request, template)))
        if request.writer.output_size > 0:
            # The handler had started a (streamed) response: a second one would be
            # written into its body. Drop the connection instead, as aiohttp does.
            raise ConnectionResetError("handler failed after its response started") from exc
        return web.json_response(error_body(error_id), status=500)

    if not request_metrics.deferred:
        # Multiprocess mode: straight into the metric objects, through the shared enter/leave.
        @web.middleware
        async def direct_middleware(request: web.Request, handler):
            route = request.match_info.route
            template = get_template(route)
            if template is None:
                template = template_of(request, route)
            headers = request.headers
            identity = resolve(headers.get(_API_KEY), ANONYMOUS)
            request[IDENTITY] = identity
            if template.__class__ is not str:
                if template is _EXCLUDED or request.path in excluded:
                    return await handler(request)
                template = template[0]
            code = 500
            table = enter()
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
                leave(table, identity, request.method, template, code, start, headers.get(_TRACEPARENT))

        return direct_middleware

    # The per-request path, inlined: RequestMetrics.leave's steps without its calls.
    local = request_metrics.local
    new_table = request_metrics.new_table
    new_series = request_metrics.new_series
    bounds = request_metrics.bounds
    first_bound = bounds[0]
    exemplar = request_metrics.exemplar
    saw_user = request_metrics.saw_user
    otel = otel_module()
    otel_uncheckable = otel is not None and not hasattr(otel, "_TRACER_PROVIDER")

    @web.middleware
    async def middleware(request: web.Request, handler):
        route = request.match_info.route
        template = get_template(route)
        if template is None:
            template = template_of(request, route)
        headers = request.headers
        identity = resolve(headers.get(_API_KEY), ANONYMOUS)
        request[IDENTITY] = identity
        if template.__class__ is not str:
            if template is _EXCLUDED or request.path in excluded:
                return await handler(request)
            template = template[0]
        try:
            table = local.table
        except AttributeError:
            table = new_table()
        table.in_flight += 1
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
            end = perf_counter()
            duration = end - start
            table.in_flight -= 1
            tier = identity.tier
            key = (tier, request.method, template, code)
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
            if traceparent or (otel is not None and (otel_uncheckable or otel._TRACER_PROVIDER is not None)):
                exemplar(table, key, duration, end, traceparent)
            user = identity.user
            if user and (end >= table.users_until or table.users.get(user) != tier):
                saw_user(table, tier, user, end)

    return middleware

