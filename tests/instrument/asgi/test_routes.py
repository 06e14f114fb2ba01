"""The ASGI middleware on Starlette and FastAPI apps: route templates through mounts, sub-apps and hosts; tiers."""

from __future__ import annotations

import pytest
from fastapi import APIRouter, Depends, FastAPI
from prometheus_client import generate_latest
from starlette.applications import Starlette
from starlette.routing import Mount, Route

from exporter.instrument.asgi import IDENTITY_SCOPE_KEY, MetricsMiddleware, get_identity
from exporter.instrument.identity import Identity, key_table_resolver
from tests.instrument.asgi_client import call
from tests.instrument.http_helpers import KEYS, LITE, PRO, RAW_ID, requests


async def test_route_label_is_the_template_not_the_raw_path(app, registry):
    for raw in ("1", "2", RAW_ID):
        reply = await call(app, "GET", f"/items/{raw}", LITE)
        assert reply.status == 200 and reply.json() == {"id": raw, "tier": "lite"}
    assert (await call(app, "GET", "/typed/42", PRO)).status == 200
    assert requests(registry) == {
        ("lite", "GET", "/items/{id}", "200"): 3,
        ("professional", "GET", "/typed/{id}", "200"): 1,
    }
    assert registry.get_sample_value(
        "clary_http_request_duration_seconds_count", {"tier": "lite", "method": "GET", "route": "/items/{id}"}) == 3
    assert RAW_ID not in generate_latest(registry).decode()


@pytest.mark.parametrize(
    ("path", "headers", "template"),
    [
        (f"/sub/items/{RAW_ID}", {}, "/sub/items/{id}"),
        (f"/users/u-9/docs/{RAW_ID}", {}, "/users/{uid}/docs/{id}"),
        (f"/v2/inner/x/{RAW_ID}", {}, "/v2/inner/x/{id}"),
        (f"/static/css/{RAW_ID}.css", {}, "/static/{path}"),
        (f"/hosted/{RAW_ID}", {"Host": "api.example.com"}, "/hosted/{id}"),
    ],
)
async def test_route_template_inside_mounts_sub_apps_and_hosts(app, registry, path, headers, template):
    for _ in range(2):  # the second request takes the cached template
        assert (await call(app, "GET", path, {**PRO, **headers})).status == 200
    assert requests(registry) == {("professional", "GET", template, "200"): 2}


async def test_unmatched_paths_wrong_methods_and_redirects(app, registry):
    assert (await call(app, "GET", f"/nothing/{RAW_ID}")).status == 404
    assert (await call(app, "GET", f"/sub/{RAW_ID}")).status == 404  # mount matched, no route inside
    assert (await call(app, "GET", "/typed/not-a-number")).status == 404
    assert (await call(app, "POST", "/items/1")).status == 405
    assert (await call(app, "PROPFIND", "/items/1")).status == 405
    assert (await call(app, "GET", "/items/1/")).status == 307  # redirect_slashes
    assert requests(registry) == {
        ("unknown", "GET", "unmatched", "404"): 3,
        ("unknown", "POST", "unmatched", "405"): 1,
        ("unknown", "other", "unmatched", "405"): 1,
        ("unknown", "GET", "unmatched", "307"): 1,
    }
    assert RAW_ID not in generate_latest(registry).decode()


async def test_head_and_options(app, registry):
    assert (await call(app, "HEAD", "/items/7", LITE)).status == 200
    assert (await call(app, "OPTIONS", "/options", LITE)).status == 200
    assert (await call(app, "OPTIONS", "/items/7", LITE)).status == 405
    assert requests(registry) == {
        ("lite", "HEAD", "/items/{id}", "200"): 1,
        ("lite", "OPTIONS", "/options", "200"): 1,
        ("lite", "OPTIONS", "unmatched", "405"): 1,
    }


async def test_same_route_object_under_two_mounts_is_told_apart_by_path(rec, registry, handlers):
    shared = Route("/items/{id}", handlers.item)
    app = Starlette(routes=[Mount("/a", routes=[shared]), Mount("/b/{tenant}", routes=[shared])])
    app.add_middleware(MetricsMiddleware, recorder=rec, resolver=key_table_resolver(KEYS))
    for path in ("/a/items/1", "/b/acme/items/2", "/b/other/items/3", "/a/items/4"):
        assert (await call(app, "GET", path)).status == 200
    assert requests(registry) == {
        ("unknown", "GET", "/a/items/{id}", "200"): 2,
        ("unknown", "GET", "/b/{tenant}/items/{id}", "200"): 2,
    }


async def test_fastapi_routers_prefixes_and_identity_dependency(rec, registry):
    router = APIRouter(prefix="/api/v1")

    @router.get("/documents/{doc_id}")
    async def document(doc_id: int, identity: Identity = Depends(get_identity)):
        return {"doc": doc_id, "tier": identity.tier}

    @router.post("/documents")
    async def upload():
        return {"ok": True}

    app = FastAPI()
    app.include_router(router)
    app.add_middleware(MetricsMiddleware, recorder=rec, resolver=key_table_resolver(KEYS))
    reply = await call(app, "GET", "/api/v1/documents/12", PRO)
    assert reply.status == 200 and reply.json() == {"doc": 12, "tier": "professional"}
    assert (await call(app, "GET", "/api/v1/documents/not-int", PRO)).status == 422
    assert (await call(app, "POST", "/api/v1/documents", LITE)).status == 200
    assert (await call(app, "GET", "/api/v1/nothing", LITE)).status == 404
    assert requests(registry) == {
        ("professional", "GET", "/api/v1/documents/{doc_id}", "200"): 1,
        ("professional", "GET", "/api/v1/documents/{doc_id}", "422"): 1,
        ("lite", "POST", "/api/v1/documents", "200"): 1,
        ("lite", "GET", "unmatched", "404"): 1,
    }


async def test_tier_from_api_key_and_identity_in_scope(app, registry):
    await call(app, "GET", "/items/1")
    await call(app, "GET", "/items/1", {"X-API-Key": "not-a-key"})
    await call(app, "GET", "/items/1", {"X-API-Key": ""})
    assert (await call(app, "GET", "/items/1", PRO)).json()["tier"] == "professional"
    assert (await call(app, "GET", "/items/1", {"x-api-key": "key-lite-3f9a1c"})).json()["tier"] == "lite"
    assert requests(registry) == {
        ("unknown", "GET", "/items/{id}", "200"): 3,
        ("professional", "GET", "/items/{id}", "200"): 1,
        ("lite", "GET", "/items/{id}", "200"): 1,
    }
    assert registry.get_sample_value("clary_active_users", {"tier": "professional", "window": "5m"}) == 1
    assert registry.get_sample_value("clary_active_users", {"tier": "unknown", "window": "5m"}) == 0
    text = generate_latest(registry).decode()
    for secret in (*KEYS, "pro-user-7", "lite-user-1"):
        assert secret not in text
    assert get_identity({}) == Identity("unknown")
    assert get_identity({IDENTITY_SCOPE_KEY: Identity("lite", "u")}).tier == "lite"
