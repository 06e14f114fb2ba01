"""The small aiohttp application the integration tests measure, built for either integration."""

from __future__ import annotations

import asyncio

from aiohttp import web

from exporter.instrument.aiohttp_middleware import IDENTITY, instrument, key_table_resolver, metrics_middleware
from exporter.instrument.recorder import Recorder
from exporter.instrument.requests import DEFAULT_EXCLUDED
from tests.instrument.http_helpers import KEYS

INTEGRATIONS = ("instrument", "middleware")


class Handlers:
    def __init__(self):
        self.release = asyncio.Event()
        self.entered = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def item(self, request):
        identity = request[IDENTITY]
        return web.json_response({"id": request.match_info["id"], "tier": identity.tier})

    async def fail(self, request):
        raise RuntimeError("kaboom")

    async def forbidden(self, request):
        raise web.HTTPForbidden()

    async def missing(self, request):
        raise web.HTTPNotFound()

    async def teapot(self, request):
        return web.Response(status=418, text="short and stout")

    async def metrics(self, request):
        return web.Response(text="# nothing\n")

    async def blocked(self, request):
        self.entered.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return web.json_response({"ok": True})

    async def broken_stream(self, request):
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"first;")
        raise RuntimeError("failed mid-stream")

    async def stream(self, request):
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"first;")
        self.entered.set()
        await self.release.wait()
        for i in range(3):
            await response.write(b"chunk%d;" % i)
        await response.write_eof()
        return response


def measured_app(integration: str, rec: Recorder, resolver=None, excluded=DEFAULT_EXCLUDED,
                 middlewares=()) -> web.Application:
    """An empty application measured by ``integration``; routes added afterwards count too
    (``instrument`` wraps them at startup)."""
    resolver = resolver or key_table_resolver(KEYS)
    if integration == "middleware":
        return web.Application(middlewares=[*middlewares, metrics_middleware(rec, resolver, excluded)])
    app = web.Application(middlewares=middlewares)
    instrument(app, rec, resolver, excluded)
    return app


class ItemView(web.View):
    async def get(self):
        return web.json_response({"view": self.request.match_info["id"], "tier": self.request[IDENTITY].tier})


def build_app(rec: Recorder, handlers: Handlers, integration: str) -> web.Application:
    app = measured_app(integration, rec)
    app.router.add_get("/items/{id}", handlers.item)
    app.router.add_post("/items/{id}/fail", handlers.fail)
    app.router.add_get("/forbidden", handlers.forbidden)
    app.router.add_get("/items/{id}/missing", handlers.missing)
    app.router.add_get("/teapot", handlers.teapot)
    app.router.add_get("/metrics", handlers.metrics)
    app.router.add_get("/blocked", handlers.blocked)
    app.router.add_get("/stream", handlers.stream)
    app.router.add_get("/broken-stream", handlers.broken_stream)
    app.router.add_view("/views/{id}", ItemView)
    sub = web.Application()
    sub.router.add_get("/items/{id}", handlers.item)
    app.add_subapp("/sub/", sub)
    return app
