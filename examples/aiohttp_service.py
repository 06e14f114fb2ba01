"""A minimal aiohttp service instrumented with the Clary library.

Every request is measured by ``instrument(app, ...)`` (tier from ``X-API-Key``,
route template, status, duration with trace-id exemplars, in-flight, error
ids), which wraps each route's handler: no middleware runs. Handlers report
what the request alone cannot show through the recorder. The service serves
its own ``/metrics``.

    CLARY_HMAC_SECRET=$(openssl rand -hex 32) python examples/aiohttp_service.py --port 8080
    curl -H 'X-API-Key: example-standard-key' localhost:8080/api/v1/documents/42
    curl localhost:8080/metrics
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from aiohttp import web
from prometheus_client import CollectorRegistry

from exporter import logs
from exporter.instrument import IDENTITY, Hasher, Identity, Recorder, Renderer, instrument, key_table_resolver

# In a real service the key table comes from your key store (or the exporter's config file).
API_KEYS = {
    "example-lite-key": Identity("lite", "user-lite-1"),
    "example-standard-key": Identity("standard", "user-standard-1"),
    "example-pro-key": Identity("professional", "user-pro-1"),
}
RECORDER = web.AppKey("recorder", Recorder)
RENDERER = web.AppKey("renderer", Renderer)


async def get_document(request: web.Request) -> web.Response:
    return web.json_response({"id": request.match_info["doc_id"], "tier": request[IDENTITY].tier})


async def process_document(request: web.Request) -> web.Response:
    rec = request.config_dict[RECORDER]
    tier = request[IDENTITY].tier
    body = await request.json()
    features = body.get("features", [])
    # Timed as a block: an exception (or .fail()) records a failure, with its duration.
    with rec.time_document(tier, body.get("doc_type", "pdf"), features=features):
        async with rec.time_inference(tier, "layout-base"):
            await asyncio.sleep(0.005)  # the model would run here
    return web.json_response({"processed": True}, status=201)


async def blocked_feature(request: web.Request) -> web.Response:
    request.config_dict[RECORDER].feature_blocked(request[IDENTITY].tier, request.match_info["feature"])
    return web.json_response({"error": "upgrade_required"}, status=403)


async def broken(request: web.Request) -> web.Response:
    raise RuntimeError("something broke")  # becomes a 500 with an error id, logged once


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    rendered = await request.config_dict[RENDERER].render(request.headers.get("Accept"), request.headers.get("Accept-Encoding"))
    response = web.Response(body=rendered.body, headers={"Content-Type": rendered.content_type})
    if rendered.gzipped:
        response.headers["Content-Encoding"] = "gzip"
    return response


def create_app(secret: str) -> web.Application:
    registry = CollectorRegistry()
    recorder = Recorder(registry, Hasher(secret))
    app = web.Application()
    instrument(app, recorder, key_table_resolver(API_KEYS))  # takes effect at startup: routes below count
    app[RECORDER] = recorder
    app[RENDERER] = Renderer(registry)

    api = web.Application()  # a sub-application: routes keep their full template, /api/v1/documents/{doc_id}
    api.router.add_get("/documents/{doc_id}", get_document)
    api.router.add_post("/documents", process_document)
    api.router.add_post("/features/{feature}", blocked_feature)
    api.router.add_get("/broken", broken)
    app.add_subapp("/api/v1/", api)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)

    async def close(app: web.Application) -> None:
        app[RENDERER].close()

    app.on_cleanup.append(close)
    return app


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    secret = os.environ.get("CLARY_HMAC_SECRET")
    if not secret:
        print("set CLARY_HMAC_SECRET (e.g. $(openssl rand -hex 32))", file=sys.stderr)
        return 2
    # One JSON object per line; an unhandled exception's record carries its error id and route.
    logs.setup("info", "json")
    web.run_app(create_app(secret), host=args.host, port=args.port, access_log=None,
                print=lambda _: print(f"listening on http://{args.host}:{args.port}", flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
