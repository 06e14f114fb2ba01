"""``instrument()`` specifics: no middleware chain, handlers wrapped once, the unmatched hook, sub-apps."""

from __future__ import annotations

import pytest
from aiohttp import web

from exporter.instrument.aiohttp_middleware import instrument, key_table_resolver, metrics_middleware
from tests.instrument.aiohttp_middleware.service import build_app, measured_app
from tests.instrument.http_helpers import KEYS, requests


async def test_instrument_adds_no_middleware_and_wraps_each_handler_once(aiohttp_client, rec, registry, handlers):
    app = web.Application()
    instrument(app, rec, key_table_resolver(KEYS))
    instrument(app, rec, key_table_resolver(KEYS))  # a second call must not count twice
    app.router.add_get("/items/{id}", handlers.item)
    client = await aiohttp_client(app)
    assert (await client.get("/items/1")).status == 200
    assert (await client.get("/nothing")).status == 404
    assert list(app.middlewares) == []  # so aiohttp runs no middleware chain at all
    (route,) = [r for r in app.router.routes() if r.method == "GET"]
    assert route.handler.__wrapped__ == handlers.item and route.handler.__name__ == "item"  # introspection
    assert requests(registry) == {("unknown", "GET", "/items/{id}", "200"): 1,
                                  ("unknown", "GET", "unmatched", "404"): 1}


async def test_only_unmatched_requests_reach_the_unmatched_hook(aiohttp_client, rec, registry, handlers,
                                                                monkeypatch):
    from exporter.instrument import aiohttp_middleware as middleware

    seen = []
    original = middleware._UnmatchedHook.resolve

    async def counting(self, request):
        seen.append(request.path)
        return await original(self, request)

    # Private seam: which requests reach the hook is a cost only (the answers are the same either way).
    monkeypatch.setattr(middleware._UnmatchedHook, "resolve", counting)
    client = await aiohttp_client(build_app(rec, handlers, "instrument"))
    for path in ("/items/1", "/teapot", "/sub/items/2", "/views/3", "/metrics"):
        assert (await client.get(path)).status in (200, 418)
    assert seen == []
    assert (await client.get("/sub/nope")).status == 404
    assert (await client.post("/teapot")).status == 405
    # Each once, plus once more inside its own second resolve (which yields aiohttp's answer).
    assert seen == ["/sub/nope", "/sub/nope", "/teapot", "/teapot"]
    assert requests(registry)[("unknown", "POST", "unmatched", "405")] == 1


async def test_requests_a_middleware_answers_count_only_with_the_middleware_first(aiohttp_client, rec, registry,
                                                                                 handlers, integration):
    """instrument() measures inside the app's middlewares; metrics_middleware first sees their answers too."""

    @web.middleware
    async def auth(request, handler):
        if "X-API-Key" not in request.headers:
            raise web.HTTPUnauthorized()
        return await handler(request)

    if integration == "middleware":
        app = web.Application(middlewares=[metrics_middleware(rec, key_table_resolver(KEYS)), auth])
    else:
        app = measured_app(integration, rec, middlewares=[auth])
    app.router.add_get("/items/{id}", handlers.item)
    client = await aiohttp_client(app)
    assert (await client.get("/items/1")).status == 401
    assert (await client.get("/items/1", headers={"X-API-Key": "key-pro-77d2e0"})).status == 200
    expected = {("professional", "GET", "/items/{id}", "200"): 1}
    if integration == "middleware":
        expected[("unknown", "GET", "/items/{id}", "401")] = 1
    assert requests(registry) == expected


def test_instrument_a_sub_application_before_mounting_it(rec, handlers):
    sub = web.Application()
    sub.router.add_get("/items/{id}", handlers.item)
    web.Application().add_subapp("/sub/", sub)
    with pytest.raises(RuntimeError):  # its startup hooks are frozen once mounted
        instrument(sub, rec, key_table_resolver(KEYS))
