"""Pure ASGI middleware (Starlette, FastAPI): the aiohttp middleware's semantics.

Not a ``BaseHTTPMiddleware``: it wraps ``send`` only, so streaming bodies
pass through untouched and are counted when their last chunk has been sent.

- ``tier`` from the ``X-API-Key`` header through the same resolver as the
  aiohttp middleware; handlers find the caller with :func:`get_identity`.
- ``route`` is Starlette's template, mount prefixes included
  (``/api/v1/documents/{id}``), computed once per route object from the
  routing tree; no match, a wrong method (405) or a redirect is
  ``unmatched``.
- a request is counted when its response ends; a client that goes away
  first (cancelled, ``send`` failing, a stream abandoned) counts as 499.
- an unhandled exception before the response started becomes a 500 JSON
  body ``{"error": "internal_error", "error_id": ..., "message": ...}`` and one log record;
  after it started, the connection is dropped (the exception propagates).
- a W3C ``traceparent`` header (or an active OpenTelemetry span) gives the
  duration observation a ``trace_id`` exemplar.

Usage::

    app = Starlette(routes=...)
    app.add_middleware(MetricsMiddleware, recorder=recorder, resolver=resolver)
    # or wrap any ASGI app: app = MetricsMiddleware(app, recorder, resolver)
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from exporter.instrument.error_report import sink_of
from exporter.instrument.errors import error_body_bytes, record_unhandled
from exporter.instrument.identity import ANONYMOUS, Identity, Resolver, lookup
from exporter.instrument.requests import CLIENT_CLOSED, DEFAULT_EXCLUDED, UNMATCHED, RequestMetrics
from exporter.instrument.recorder import Recorder

try:  # the annotation FastAPI needs to inject the request into get_identity
    from starlette.requests import HTTPConnection
except ImportError:  # pragma: no cover - Starlette is optional
    HTTPConnection = Any  # type: ignore[misc,assignment]

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

IDENTITY_SCOPE_KEY = "clary.identity"
_API_KEY = b"x-api-key"
_TRACEPARENT = b"traceparent"
_START = "http.response.start"
_NOT_STARTED, _STARTED, _ENDED = 0, 1, 2
_BODY = "http.response.body"
# The last message of a response: a body without more_body (also the zero-copy extension's), or a pathsend.
_BODIES = frozenset({_BODY, "http.response.zerocopysend"})
_PATHSEND = "http.response.pathsend"
_JSON_HEADERS = [(b"content-type", b"application/json")]
# Routes remembered per middleware; an application has a fixed, small set of them.
ROUTE_CACHE_LIMIT = 10_000


def get_identity(request: HTTPConnection) -> Identity:
    """The caller the middleware resolved, from a Starlette ``Request`` (or a bare scope).

    Works as a FastAPI dependency: ``identity: Identity = Depends(get_identity)``.
    """
    scope = getattr(request, "scope", request)
    return scope.get(IDENTITY_SCOPE_KEY, ANONYMOUS)


# --- route templates -----------------------------------------------------------


def _format(path: str) -> str:
    """A Starlette path with its convertors dropped: ``/items/{id:int}`` -> ``/items/{id}``."""
    return re.sub(r"{([a-zA-Z_][a-zA-Z0-9_]*)(:[a-zA-Z_][a-zA-Z0-9_]*)?}", r"{\1}", path)


def _is_mount(route: Any) -> bool:
    return hasattr(route, "routes") and hasattr(route, "path") and hasattr(route, "app")


def _own_template(route: Any) -> str | None:
    """The route's own part of the template (a mount of a plain ASGI app: ``/prefix/{path}``)."""
    if _is_mount(route):
        return _format(route.path) + "/{path}"
    path = getattr(route, "path", None)
    return _format(path) if isinstance(path, str) else None


def _chains(routes: Iterable[Any], target: Any, prefix: str, depth: int = 0) -> list[str]:
    """Every full template under which ``target`` is reachable from ``routes``.

    ``target`` is the matched route, or (Starlette before ``scope["route"]``)
    its endpoint or mounted application.
    """
    found: list[str] = []
    if depth > 16:
        return found
    for route in routes:
        if route is target or getattr(route, "endpoint", None) is target or (
            _is_mount(route) and route.app is target
        ):
            own = _own_template(route)
            if own is not None:
                found.append(prefix + own)
            continue
        children = getattr(route, "routes", None)
        if children:
            # A Mount adds its path; a Host (or another router-like route) adds nothing.
            inner = prefix + _format(route.path) if _is_mount(route) else prefix
            found.extend(_chains(children, target, inner, depth + 1))
    return found


class _RouteInfo:
    __slots__ = ("route", "template", "methods", "candidates")

    def __init__(self, route: Any, template: str, methods: frozenset[str] | None, candidates=()):
        self.route = route  # kept alive so that its id() is not reused
        self.template = template
        self.methods = methods
        self.candidates = candidates  # (compiled, template) when a route is reachable twice


def _find_route(routes: Iterable[Any], target: Any, depth: int = 0) -> Any:
    """The route object whose endpoint (or mounted app) is ``target``."""
    for route in routes:
        if route is target or getattr(route, "endpoint", None) is target or (
            _is_mount(route) and route.app is target
        ):
            return route
        children = getattr(route, "routes", None)
        if children and depth < 16:
            found = _find_route(children, target, depth + 1)
            if found is not None:
                return found
    return None


def _route_info(scope: Scope, target: Any) -> _RouteInfo:
    router = scope.get("router")
    routes = getattr(router, "routes", ())
    route = target if "route" in scope else (_find_route(routes, target) or target)
    methods = getattr(route, "methods", None)
    methods = frozenset(methods) if methods else None
    if _is_mount(route) and route.routes:
        # A mounted router matched the prefix but none of its routes did.
        return _RouteInfo(target, UNMATCHED, None)
    chains = _chains(routes, target, "") if router is not None else []
    if not chains:
        own = _own_template(route)
        return _RouteInfo(target, own or UNMATCHED, methods)
    unique = list(dict.fromkeys(chains))
    if len(unique) == 1:
        return _RouteInfo(target, unique[0], methods)
    # The same route (or endpoint) under several prefixes: tell them apart by the path.
    candidates = tuple((re.compile(_template_regex(t)), t) for t in unique)
    return _RouteInfo(target, unique[0], methods, candidates)


def _template_regex(template: str) -> str:
    parts = re.split(r"({[^}]*})", template)
    return "^" + "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts) + "$"


# --- the middleware --------------------------------------------------------------


class MetricsMiddleware:
    """Pure ASGI middleware recording the catalog's HTTP metrics.

    Args:
        app: the ASGI application to wrap.
        recorder: where the metrics go.
        resolver: ``X-API-Key`` header value (or None) -> :class:`Identity`
            (see :func:`exporter.instrument.identity.key_table_resolver`).
        excluded: paths served but not measured (default ``/metrics``,
            ``/healthz``, ``/readyz``).
        report_errors: off by default; an ``EventClient`` sends an error record of every
            unhandled exception to the exporter (``exporter.instrument.error_report``).
    """

    def __init__(
        self,
        app: ASGIApp,
        recorder: Recorder,
        resolver: Resolver,
        excluded: Iterable[str] = DEFAULT_EXCLUDED,
        report_errors=None,
    ):
        self.app = app
        self.reporter = sink_of(report_errors)
        self.recorder = recorder
        self.resolver = resolver
        self._resolve = lookup(resolver)
        self.excluded = frozenset(excluded)
        self._routes: dict[int, _RouteInfo] = {}
        metrics = RequestMetrics.of(recorder)
        self._enter = metrics.enter
        self._leave = metrics.leave
        self._clock = metrics.clock

    def route_template(self, scope: Scope) -> str:
        """The template of the route Starlette matched for ``scope`` (after routing)."""
        route = scope.get("route")
        if route is None:
            route = scope.get("endpoint")  # Starlette before scope["route"]
            if route is None:
                return UNMATCHED
        info = self._routes.get(id(route))
        if info is None or info.route is not route:
            info = _route_info(scope, route)
            if len(self._routes) < ROUTE_CACHE_LIMIT:
                self._routes[id(route)] = info
        if info.methods is not None and scope["method"] not in info.methods:
            return UNMATCHED  # path matched, method did not: Starlette answered 405
        if info.candidates:
            path = scope.get("path", "")
            for compiled, template in info.candidates:
                if compiled.match(path):
                    return template
        return info.template

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        api_key = traceparent = None
        for name, value in scope["headers"]:
            if name == _API_KEY:
                api_key = value.decode("latin-1")
            elif name == _TRACEPARENT:
                traceparent = value.decode("latin-1")
        identity = self._resolve(api_key, ANONYMOUS)
        scope[IDENTITY_SCOPE_KEY] = identity
        if scope["path"] in self.excluded:
            await self.app(scope, receive, send)
            return
        leave = self._leave
        status = 0
        state = _NOT_STARTED
        send_failed = False
        table = self._enter()
        start = self._clock()

        async def send_and_count(message: Message) -> None:
            nonlocal status, state, send_failed
            kind = message["type"]
            if kind == _START:
                status = message["status"]
                state = _STARTED
            try:
                await send(message)
            except BaseException:
                send_failed = True  # the connection is gone: the client went away
                raise
            if state == _STARTED and (
                (kind in _BODIES and not message.get("more_body", False)) or kind == _PATHSEND
            ):
                state = _ENDED
                leave(table, identity, scope["method"], self.route_template(scope), status, start, traceparent)

        try:
            await self.app(scope, receive, send_and_count)
        except Exception as exc:
            if send_failed:
                if state != _ENDED:
                    leave(table, identity, scope["method"], self.route_template(scope), CLIENT_CLOSED,
                          start, traceparent)
                raise
            method = scope["method"]
            template = self.route_template(scope)
            path = scope.get("path")
            query = scope.get("query_string", b"").decode("latin-1")
            secrets = (api_key, identity.user, path if path != template else None, query)
            error_id = record_unhandled(self.recorder, log, exc, template, method, identity.tier, secrets,
                                        self.reporter, identity.user)
            if state == _ENDED:
                return  # the response was complete (a background task failed): nothing more to send
            leave(table, identity, method, template, 500, start, traceparent)
            if state == _STARTED:
                # Headers (and maybe part of the body) are out: no second response may
                # follow. Propagate, so that the server drops the connection.
                raise
            body = error_body_bytes(error_id)
            await send({
                "type": _START,
                "status": 500,
                "headers": [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())],
            })
            await send({"type": _BODY, "body": body})
            return
        except BaseException:
            # Cancelled (the client went away, or shutdown) before the response ended.
            if state != _ENDED:
                leave(table, identity, scope["method"], self.route_template(scope), CLIENT_CLOSED,
                      start, traceparent)
            raise
        if state != _ENDED:
            # Returned without ending the response: a stream abandoned because the
            # client disconnected (or, with no response at all, a broken application).
            leave(table, identity, scope["method"], self.route_template(scope),
                  CLIENT_CLOSED if state == _STARTED else 500, start, traceparent)
