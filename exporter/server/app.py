"""The exporter's HTTP server, as an aiohttp app factory.

``create_app(config)`` builds everything from the config and a registry
passed in (or a fresh one), so tests run it with ``aiohttp_client`` and no
globals. Routes: ``/`` landing page, ``/metrics``, ``/healthz``, ``/readyz``,
``/privacy`` (the generated privacy notice);
demo mode (``exporter.demo``) adds its API under ``/demo/``.
"""

from __future__ import annotations

import html
import logging

import prometheus_client
from aiohttp import web
from prometheus_client import CollectorRegistry

from exporter import __version__
from exporter.api.errors import storage_unavailable
from exporter.collectors.base import CollectorSet
from exporter.collectors.registry import registered
from exporter.config import Config
from exporter.instrument.exposition import Renderer
from exporter.instrument.hashing import Hasher
from exporter.instrument.recorder import Recorder
from exporter.server import privacy
from exporter.server.connections import GUARD, ConnectionGuard
from exporter.server.webconfig import WebConfig
from exporter.store.health import StorageUnavailable

log = logging.getLogger(__name__)

RECORDER = web.AppKey("recorder", Recorder)
RENDERER = web.AppKey("renderer", Renderer)
CONFIG = web.AppKey("config", Config)
READY = web.AppKey("ready", dict)


def build_collectors(config: Config) -> CollectorSet:
    """The registered collectors that the config enables, in name order."""
    enabled = config.collectors.model_dump()
    return CollectorSet([entry.factory() for name, entry in registered().items() if enabled[name]])


def hmac_secret(config: Config) -> str:
    if config.hmac_secret:
        return config.hmac_secret
    raise ValueError("an HMAC secret is required: set CLARY_HMAC_SECRET or hmac_secret in the config file")


def _json_error(status: int, error: str, message: str, **extra) -> web.Response:
    return web.json_response({"error": error, "message": message, **extra}, status=status)


@web.middleware
async def json_errors(request: web.Request, handler):
    """404 and 405 as JSON, as an API client expects, not aiohttp's text; so is a 503 for a store that is down."""
    try:
        return await handler(request)
    except StorageUnavailable:
        raise storage_unavailable() from None
    except web.HTTPNotFound:
        return _json_error(404, "not_found", "no such endpoint")
    except web.HTTPMethodNotAllowed as exc:
        response = _json_error(
            405, "method_not_allowed", f"{request.method} is not allowed here",
            allowed=sorted(exc.allowed_methods),
        )
        response.headers["Allow"] = ",".join(sorted(exc.allowed_methods))
        return response


async def metrics(request: web.Request) -> web.StreamResponse:
    rendered = await request.app[RENDERER].render(
        request.headers.get("Accept"), request.headers.get("Accept-Encoding")
    )
    response = web.Response(body=rendered.body, headers={"Content-Type": rendered.content_type})
    if rendered.gzipped:
        response.headers["Content-Encoding"] = "gzip"
    response.headers["Vary"] = "Accept, Accept-Encoding"
    return response


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """200 while serving; 503 while shutting down, or while the store fails (with the reason)."""
    ready = request.app[READY]
    if not ready.get("ready"):
        return web.json_response({"status": "not ready"}, status=503)
    storage = ready.get("storage")
    if storage is not None and not storage.up:
        return web.json_response({"status": "not ready", "reason": f"storage unavailable: {storage.reason}"},
                                 status=503)
    return web.json_response({"status": "ready"})


_LANDING = """<!doctype html>
<html><head><meta charset="utf-8"><title>Clary AI exporter</title></head>
<body>
<h1>Clary AI exporter</h1>
<p>Version {version}.{demo}</p>
<ul>
<li><a href="metrics">Metrics</a></li>
<li><a href="healthz">Health</a> &middot; <a href="readyz">Readiness</a></li>
<li><a href="privacy">Privacy notice</a></li>
</ul>
</body></html>
"""


async def landing(request: web.Request) -> web.Response:
    demo = " Demo mode: demo API under <code>/demo/api/v1/</code>." if request.app[CONFIG].demo else ""
    body = _LANDING.format(version=html.escape(__version__), demo=demo)
    return web.Response(text=body, content_type="text/html")


def create_app(config: Config, registry: CollectorRegistry | None = None,
               web_config: WebConfig | None = None) -> web.Application:
    """Build the exporter application from a validated config.

    ``web_config`` (``--web.config.file``) adds its response headers and basic
    auth in front of everything else; TLS is the listener's business (cli).
    """
    # The _created series double every counter's series count for little use.
    prometheus_client.disable_created_metrics()
    registry = registry if registry is not None else CollectorRegistry()
    recorder = Recorder(registry, Hasher(hmac_secret(config)), config.allow_lists,
                        license_stale_after=config.license_stale_after or None, funnels=config.funnels,
                        workflow_idle_timeout=config.workflow_session_timeout,
                        workflow_max_sessions=config.workflow_max_sessions)
    collectors = build_collectors(config)
    registry.register(collectors)

    guards = []
    if web_config is not None:
        from exporter.server import webconfig

        guards = webconfig.middlewares(web_config)
    # Outermost: connection phases and the compressed-body policy (exporter.server.connections).
    connections = ConnectionGuard(config)
    registry.register(connections)
    app = web.Application(middlewares=[connections.middleware, *guards, json_errors])
    app[CONFIG] = config
    app[GUARD] = connections
    app.on_cleanup.append(connections.on_cleanup)
    app[RECORDER] = recorder
    app[RENDERER] = Renderer(registry)
    app[READY] = {"ready": False}
    app.router.add_get("/", landing)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    privacy.add_routes(app, config)  # /privacy and /privacy.json (exporter.server.privacy)

    # Ingestion, feedback and privacy API under /api/v1/ (exporter.api.app): routes plus
    # its background tasks (store thread, webhook notifier, retention purge).
    from exporter.api.app import setup_api

    api = setup_api(app, config, recorder)
    registry.register(api.store.health)  # clary_exporter_storage_up and _errors_total
    registry.register(api.errors)  # the error-group families (exporter.api.error_sink)
    app[READY]["storage"] = api.store.health

    async def ready(app: web.Application) -> None:
        app[READY]["ready"] = True

    async def not_ready(app: web.Application) -> None:
        app[READY]["ready"] = False

    async def release(app: web.Application) -> None:
        # After in-flight requests finished: a scrape never loses its renderer.
        app[RENDERER].close()
        collectors.close()

    app.on_startup.append(ready)
    app.on_shutdown.append(not_ready)
    app.on_cleanup.append(release)
    return app
