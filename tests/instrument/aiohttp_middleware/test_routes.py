"""aiohttp integrations: the route label is the template, tiers come from the key table, unmatched is one label."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import generate_latest

from exporter.instrument.aiohttp_middleware import IDENTITY
from tests.instrument.aiohttp_middleware.service import build_app, measured_app
from tests.instrument.http_helpers import KEYS, RAW_ID, requests


async def test_route_label_is_the_template_not_the_raw_path(client, registry):
    for raw in ("1", "2", RAW_ID):
        resp = await client.get(f"/items/{raw}", headers={"X-API-Key": "key-lite-3f9a1c"})
        assert resp.status == 200 and (await resp.json())["tier"] == "lite"
    assert requests(registry) == {("lite", "GET", "/items/{id}", "200"): 3}
    assert registry.get_sample_value(
        "clary_http_request_duration_seconds_count", {"tier": "lite", "method": "GET", "route": "/items/{id}"}) == 3
    assert RAW_ID not in generate_latest(registry).decode()


async def test_route_template_inside_a_sub_application(client, registry):
    resp = await client.get(f"/sub/items/{RAW_ID}", headers={"X-API-Key": "key-pro-77d2e0"})
    assert resp.status == 200
    assert requests(registry) == {("professional", "GET", "/sub/items/{id}", "200"): 1}


async def test_class_based_view(client, registry):
    resp = await client.get("/views/5", headers={"X-API-Key": "key-lite-3f9a1c"})
    assert await resp.json() == {"view": "5", "tier": "lite"}
    assert requests(registry) == {("lite", "GET", "/views/{id}", "200"): 1}


async def test_measured_on_the_sub_application_only(aiohttp_client, rec, registry, handlers, integration):
    """The demo layout: the parent app is not measured, the mounted one is."""
    sub = measured_app(integration, rec)
    sub.router.add_get("/items/{id}", handlers.item)
    parent = web.Application()
    parent.router.add_get("/outside", handlers.teapot)
    parent.add_subapp("/demo/", sub)
    client = await aiohttp_client(parent)
    assert (await client.get("/demo/items/9")).status == 200
    assert (await client.get("/demo/nothing")).status == 404
    assert (await client.get("/outside")).status == 418
    assert (await client.get("/nothing")).status == 404
    assert requests(registry) == {
        ("unknown", "GET", "/demo/items/{id}", "200"): 1,
        ("unknown", "GET", "unmatched", "404"): 1,  # /demo/nothing; the parent's own are not measured
    }


async def test_unknown_path_and_wrong_method_are_unmatched(client, registry):
    assert (await client.get(f"/nothing/here/{RAW_ID}")).status == 404
    assert (await client.get("/sub/nothing")).status == 404  # in the sub-application's router
    assert (await client.get("/")).status == 404
    assert (await client.post("/items/1")).status == 405
    assert (await client.request("PROPFIND", "/items/1")).status == 405
    assert requests(registry) == {
        ("unknown", "GET", "unmatched", "404"): 3,
        ("unknown", "POST", "unmatched", "405"): 1,
        ("unknown", "other", "unmatched", "405"): 1,
    }


async def test_routes_at_the_root_and_the_unmatched_hook(aiohttp_client, rec, registry, handlers, integration):
    """The hook sits in the router's "/" entry, after the root's own routes."""
    app = measured_app(integration, rec)
    app.router.add_get("/", handlers.teapot)
    app.router.add_get("/{name}", handlers.teapot)
    client = await aiohttp_client(app)
    assert (await client.get("/")).status == 418
    assert (await client.get("/anything")).status == 418
    assert (await client.post("/")).status == 405
    assert (await client.get("/a/b")).status == 404
    assert requests(registry) == {
        ("unknown", "GET", "/", "418"): 1,
        ("unknown", "GET", "/{name}", "418"): 1,
        ("unknown", "POST", "unmatched", "405"): 1,
        ("unknown", "GET", "unmatched", "404"): 1,
    }


async def test_domain_sub_application(aiohttp_client, rec, registry, handlers, integration):
    """add_domain() sub-apps are matched before the path index; unmatched inside them still counts."""
    app = measured_app(integration, rec)
    app.router.add_get("/teapot", handlers.teapot)
    sub = web.Application()
    sub.router.add_get("/items/{id}", handlers.item)
    app.add_domain("api.example.com", sub)
    client = await aiohttp_client(app)
    host = {"Host": "api.example.com"}
    assert (await client.get("/items/1", headers=host)).status == 200
    assert (await client.get("/nothing", headers=host)).status == 404
    assert (await client.get("/teapot")).status == 418
    assert requests(registry) == {
        ("unknown", "GET", "/items/{id}", "200"): 1,
        ("unknown", "GET", "unmatched", "404"): 1,
        ("unknown", "GET", "/teapot", "418"): 1,
    }


async def test_head_and_options(aiohttp_client, rec, registry, handlers, integration):
    app = build_app(rec, handlers, integration)

    async def options(request):
        return web.Response(headers={"Allow": "GET, OPTIONS"})

    app.router.add_route("OPTIONS", "/options", options)
    client = await aiohttp_client(app)
    assert (await client.head("/items/7", headers={"X-API-Key": "key-lite-3f9a1c"})).status == 200
    assert (await client.options("/options", headers={"X-API-Key": "key-lite-3f9a1c"})).status == 200
    assert (await client.options("/items/7", headers={"X-API-Key": "key-lite-3f9a1c"})).status == 405
    assert requests(registry) == {
        ("lite", "HEAD", "/items/{id}", "200"): 1,
        ("lite", "OPTIONS", "/options", "200"): 1,
        ("lite", "OPTIONS", "unmatched", "405"): 1,
    }


async def test_excluded_path_under_a_dynamic_route_and_the_route_cache(aiohttp_client, rec, registry, handlers,
                                                                        integration):
    async def whoami(request):
        return web.Response(text=request[IDENTITY].tier)

    app = measured_app(integration, rec, excluded=["/healthz", "/gone", "/static/who"])
    app.router.add_get("/{name}", handlers.teapot)  # also serves /healthz
    app.router.add_get("/static/page", handlers.teapot)
    app.router.add_get("/static/who", whoami)
    client = await aiohttp_client(app)
    for path in ("/healthz", "/other", "/healthz", "/static/page", "/static/page"):
        assert (await client.get(path)).status == 418
    # Excluded: not counted, but the handler still finds the caller.
    assert await (await client.get("/static/who", headers={"X-API-Key": "key-lite-3f9a1c"})).text() == "lite"
    assert (await client.get("/gone/for/good")).status == 404
    assert (await client.get("/gone")).status == 418  # excluded, served by /{name}
    assert requests(registry) == {
        ("unknown", "GET", "/{name}", "418"): 1,
        ("unknown", "GET", "/static/page", "418"): 2,
        ("unknown", "GET", "unmatched", "404"): 1,
    }


async def test_tier_from_api_key(client, registry):
    await client.get("/items/1")
    await client.get("/items/1", headers={"X-API-Key": "not-a-key"})
    await client.get("/items/1", headers={"X-API-Key": ""})
    await client.get("/items/1", headers={"X-API-Key": "key-pro-77d2e0"})
    await client.get("/items/1", headers={"X-API-Key": "key-lite-3f9a1c"})
    assert requests(registry) == {
        ("unknown", "GET", "/items/{id}", "200"): 3,
        ("professional", "GET", "/items/{id}", "200"): 1,
        ("lite", "GET", "/items/{id}", "200"): 1,
    }
    # Known callers count as active users, by HMAC only.
    assert registry.get_sample_value("clary_active_users", {"tier": "professional", "window": "5m"}) == 1
    assert registry.get_sample_value("clary_active_users", {"tier": "unknown", "window": "5m"}) == 0
    text = generate_latest(registry).decode()
    for secret in (*KEYS, "pro-user-7", "lite-user-1"):
        assert secret not in text


async def test_custom_resolver_values_are_bounded(aiohttp_client, rec, registry, handlers, integration):
    from exporter.instrument.identity import Identity

    def resolver(key):
        return Identity(tier=f"gold-{key}", user=None) if key else Identity("PROFESSIONAL", "u-1")

    app = measured_app(integration, rec, resolver)
    app.router.add_get("/items/{id}", handlers.item)
    client = await aiohttp_client(app)
    await client.get("/items/1", headers={"X-API-Key": "whatever"})
    await client.get("/items/1")
    assert requests(registry) == {
        ("unknown", "GET", "/items/{id}", "200"): 1,
        ("professional", "GET", "/items/{id}", "200"): 1,
    }


async def test_known_callers_enter_the_active_user_sketch_once_per_minute(aiohttp_client, rec, registry, handlers,
                                                                          monkeypatch, integration):
    seen = []
    original = rec.user_seen
    monkeypatch.setattr(rec, "user_seen", lambda tier, user: (seen.append((tier, user)), original(tier, user)))
    client = await aiohttp_client(build_app(rec, handlers, integration))
    for _ in range(5):
        await client.get("/items/1", headers={"X-API-Key": "key-pro-77d2e0"})
        await client.get("/items/1", headers={"X-API-Key": "key-lite-3f9a1c"})
    assert sorted(seen) == [("lite", "lite-user-1"), ("professional", "pro-user-7")]
    assert registry.get_sample_value("clary_active_users", {"tier": "professional", "window": "5m"}) == 1
