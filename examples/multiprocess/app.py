"""A Clary-like aiohttp service instrumented in multiprocess mode.

Run it with several workers (see gunicorn.conf.py in this directory):

    PROMETHEUS_MULTIPROC_DIR=/tmp/clary-multiproc \
        gunicorn -c examples/multiprocess/gunicorn.conf.py

Each worker builds its own recorder in a private registry; every value it
records lands in the shared directory, and ``/metrics`` (whichever worker
answers) aggregates all workers. Custom collectors (active users/licenses)
are per process and not served here: see docs/deployment.md (Multiprocess workers).
"""

from __future__ import annotations

import asyncio
import os

from aiohttp import web
from prometheus_client import CollectorRegistry

from exporter.instrument import IDENTITY, Hasher, Identity, Recorder, instrument, key_table_resolver, multiprocess

API_KEYS = {
    f"example-{tier}-key": Identity(tier, f"example-{tier}-user")
    for tier in ("lite", "standard", "professional")
}
RECORDER = web.AppKey("recorder", Recorder)
MAX_WAIT_SECONDS = 10.0


def _worker_header(response: web.StreamResponse) -> web.StreamResponse:
    response.headers["X-Worker-Pid"] = str(os.getpid())
    return response


async def process_document(request: web.Request) -> web.Response:
    tier = request[IDENTITY].tier
    request.app[RECORDER].document_processed(tier, request.match_info["doc_type"], "success",
                                             duration=0.05, features=["ocr"])
    return _worker_header(web.json_response({"status": "processed"}))


async def wait(request: web.Request) -> web.Response:
    """Hold the request open (bounded): shows in-flight requests summed over workers."""
    seconds = min(float(request.query.get("seconds", "1")), MAX_WAIT_SECONDS)
    await asyncio.sleep(seconds)
    return _worker_header(web.json_response({"waited": seconds}))


async def whoami(request: web.Request) -> web.Response:
    return _worker_header(web.json_response({"pid": os.getpid()}))


async def create_app() -> web.Application:
    """gunicorn's aiohttp worker calls this once per worker process."""
    secret = os.environ.get("CLARY_HMAC_SECRET") or "example-secret-change-me"
    # Private registry: its objects write to the multiprocess files; it is never served.
    recorder = Recorder(CollectorRegistry(), Hasher(secret))
    recorder.model_loaded("layout-base", duration=1.0, memory_bytes=100_000_000)
    app = web.Application()
    instrument(app, recorder, key_table_resolver(API_KEYS))
    app[RECORDER] = recorder
    app.router.add_post("/api/v1/documents/{doc_type}", process_document)
    app.router.add_get("/api/v1/wait", wait)
    app.router.add_get("/whoami", whoami)
    multiprocess.add_metrics_route(app)
    return app
