"""The Starlette application the ASGI middleware tests measure: routes, mounts, a host, streams."""

from __future__ import annotations

import asyncio

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Host, Mount, Route, Router

from exporter.instrument.asgi import MetricsMiddleware, get_identity
from exporter.instrument.identity import key_table_resolver
from exporter.instrument.recorder import Recorder
from tests.instrument.http_helpers import KEYS


class Handlers:
    def __init__(self):
        self.release = asyncio.Event()
        self.entered = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def item(self, request):
        return JSONResponse({"id": request.path_params.get("id"), "tier": get_identity(request).tier})

    async def fail(self, request):
        raise RuntimeError("kaboom")

    async def forbidden(self, request):
        raise HTTPException(403)

    async def teapot(self, request):
        return PlainTextResponse("short and stout", status_code=418)

    async def metrics(self, request):
        return PlainTextResponse("# nothing\n")

    async def blocked(self, request):
        self.entered.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return JSONResponse({"ok": True})

    async def stream(self, request):
        async def chunks():
            yield b"first;"
            self.entered.set()
            await self.release.wait()
            for i in range(3):
                yield b"chunk%d;" % i

        return StreamingResponse(chunks(), media_type="text/plain")

    async def broken_stream(self, request):
        async def chunks():
            yield b"first;"
            raise RuntimeError("failed mid-stream")

        return StreamingResponse(chunks(), media_type="text/plain")

    async def options(self, request):
        return PlainTextResponse("", headers={"Allow": "GET, OPTIONS"})


async def raw_asgi(scope, receive, send):
    await PlainTextResponse("raw")(scope, receive, send)


def build_app(rec: Recorder, handlers: Handlers) -> Starlette:
    h = handlers
    nested = Starlette(routes=[Mount("/inner", routes=[Route("/x/{id}", h.item)])])
    app = Starlette(routes=[
        Route("/items/{id}", h.item),
        Route("/typed/{id:int}", h.item),
        Route("/items/{id}/fail", h.fail, methods=["POST"]),
        Route("/forbidden", h.forbidden),
        Route("/teapot", h.teapot),
        Route("/metrics", h.metrics),
        Route("/blocked", h.blocked),
        Route("/stream", h.stream),
        Route("/broken-stream", h.broken_stream),
        Route("/options", h.options, methods=["GET", "OPTIONS"]),
        Mount("/sub", routes=[Route("/items/{id}", h.item)]),
        Mount("/users/{uid}", routes=[Route("/docs/{id}", h.item)]),
        Mount("/v2", app=nested),
        Mount("/static", app=raw_asgi),
        Host("api.example.com", app=Router([Route("/hosted/{id}", h.item)])),
    ])
    app.add_middleware(MetricsMiddleware, recorder=rec, resolver=key_table_resolver(KEYS))
    return app
