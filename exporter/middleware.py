"""aiohttp middleware: request metrics, tier resolution and error ids.

Labels come from bounded sources only: the tier from the API-key resolver,
the route from the router's template (never the raw path), the method from
a fixed set. An unhandled exception becomes a 500 JSON body carrying an
error id, and one structured log record with the same id.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from aiohttp import web

from exporter.recorder import Recorder

log = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"
DEFAULT_EXCLUDED = ("/metrics", "/healthz", "/readyz")
UNMATCHED = "unmatched"
CLIENT_CLOSED = 499  # nginx's convention for "client went away"


@dataclass(frozen=True)
class Identity:
    tier: str
    user: str | None = None


ANONYMOUS = Identity("unknown")
# Request key under which handlers find the caller (typed key on aiohttp >= 3.14).
IDENTITY = web.RequestKey("clary.identity", Identity) if hasattr(web, "RequestKey") else "clary.identity"
Resolver = Callable[[str | None], Identity]


def key_table_resolver(table: Mapping[str, object]) -> Resolver:
    """Resolve API keys from a table of key -> object with ``tier`` and ``user``."""
    identities = {key: Identity(entry.tier, entry.user) for key, entry in table.items()}

    def resolve(api_key: str | None) -> Identity:
        return identities.get(api_key, ANONYMOUS) if api_key else ANONYMOUS

    return resolve


def route_template(request: web.Request) -> str:
    """The matched resource's template, including sub-application prefixes."""
    match_info = request.match_info
    if match_info.http_exception is not None:
        return UNMATCHED
    route = match_info.route
    resource = route.resource if route is not None else None
    return resource.canonical if resource is not None else UNMATCHED


def metrics_middleware(
    recorder: Recorder,
    resolver: Resolver,
    excluded: Iterable[str] = DEFAULT_EXCLUDED,
):
    """Build the middleware; one instance per application."""
    excluded = frozenset(excluded)
    in_flight = recorder.metrics.families["clary_http_requests_in_flight"]

    @web.middleware
    async def middleware(request: web.Request, handler):
        if request.path in excluded:
            return await handler(request)
        identity = resolver(request.headers.get(API_KEY_HEADER))
        request[IDENTITY] = identity
        route = route_template(request)
        start = time.perf_counter()
        code = 500
        in_flight.inc()
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
            response = _internal_error(recorder, request, identity, route, exc)
            if request.writer.output_size > 0:
                # The handler had started a (streamed) response: a second one would be
                # written into its body. Drop the connection instead, as aiohttp does.
                raise ConnectionResetError("handler failed after its response started") from exc
            return response
        finally:
            in_flight.dec()
            recorder.http_request(identity.tier, request.method, route, code, time.perf_counter() - start)
            if identity.user:
                recorder.user_seen(identity.tier, identity.user)

    return middleware


def _internal_error(
    recorder: Recorder, request: web.Request, identity: Identity, route: str, exc: Exception
) -> web.Response:
    error_id = str(uuid.uuid4())
    error_type = type(exc).__name__
    recorder.error(identity.tier, error_type, route)
    log.error(
        "unhandled exception",
        exc_info=exc,
        extra={
            "fields": {
                "error_id": error_id,
                "error_type": error_type,
                "error": str(exc)[:500],
                "route": route,
                "method": request.method,
                "tier": identity.tier,
            }
        },
    )
    return web.json_response({"error": "internal_error", "error_id": error_id}, status=500)
