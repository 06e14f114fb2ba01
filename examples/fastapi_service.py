"""A minimal FastAPI service instrumented with the Clary library.

The pure ASGI middleware measures every request (tier from ``X-API-Key``,
route template, status, duration with trace-id exemplars, in-flight, error
ids); endpoints report the rest through the recorder. The service serves its
own ``/metrics``.

    CLARY_HMAC_SECRET=$(openssl rand -hex 32) python examples/fastapi_service.py --port 8000
    curl -H 'X-API-Key: example-pro-key' localhost:8000/api/v1/documents/42
    curl localhost:8000/metrics
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from pydantic import BaseModel, Field

from exporter import logs
from exporter.instrument import Hasher, Identity, MetricsMiddleware, Recorder, get_identity, key_table_resolver

# In a real service the key table comes from your key store (or the exporter's config file).
API_KEYS = {
    "example-lite-key": Identity("lite", "user-lite-1"),
    "example-standard-key": Identity("standard", "user-standard-1"),
    "example-pro-key": Identity("professional", "user-pro-1"),
}


class DocumentIn(BaseModel):
    doc_type: str = Field("pdf", max_length=64)
    features: list[str] = Field(default_factory=list, max_length=32)


def create_app(secret: str) -> FastAPI:
    registry = CollectorRegistry()
    rec = Recorder(registry, Hasher(secret))
    api = APIRouter(prefix="/api/v1")

    @api.get("/documents/{doc_id}")
    async def get_document(doc_id: str, caller: Identity = Depends(get_identity)):
        return {"id": doc_id, "tier": caller.tier}

    @api.post("/documents", status_code=201)
    async def process_document(doc: DocumentIn, caller: Identity = Depends(get_identity)):
        with rec.time_document(caller.tier, doc.doc_type, features=doc.features):
            async with rec.time_inference(caller.tier, "layout-base"):
                await asyncio.sleep(0.005)  # the model would run here
        return {"processed": True}

    @api.post("/features/{feature}", status_code=403)
    async def blocked_feature(feature: str, caller: Identity = Depends(get_identity)):
        rec.feature_blocked(caller.tier, feature)
        return {"error": "upgrade_required"}

    @api.get("/broken")
    async def broken():
        raise RuntimeError("something broke")  # becomes a 500 with an error id, logged once

    app = FastAPI()
    app.include_router(api)

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/metrics")
    def metrics(request: Request) -> Response:  # sync: Starlette renders it on a worker thread
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(registry), media_type=content_type)

    # Pure ASGI middleware; inside Starlette's error handler, so a failure gets the JSON 500 with an error id.
    app.add_middleware(MetricsMiddleware, recorder=rec, resolver=key_table_resolver(API_KEYS))
    app.state.recorder = rec
    return app


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    secret = os.environ.get("CLARY_HMAC_SECRET")
    if not secret:
        print("set CLARY_HMAC_SECRET (e.g. $(openssl rand -hex 32))", file=sys.stderr)
        return 2
    # One JSON object per line; an unhandled exception's record carries its error id and route.
    logs.setup("info", "json")
    uvicorn.run(create_app(secret), host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
