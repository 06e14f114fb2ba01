"""The metrics middleware on a small aiohttp app: labels, errors, in-flight, streaming, cancels."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from prometheus_client import CollectorRegistry, generate_latest

from exporter.config import ApiKey
from exporter.logs import JsonFormatter, TextFormatter
from exporter.middleware import IDENTITY, key_table_resolver, metrics_middleware
from exporter.privacy import Hasher
from exporter.recorder import Recorder

HTTP = "clary_http_requests_total"
KEYS = {
    "key-lite-3f9a1c": ApiKey(tier="lite", user="lite-user-1"),
    "key-pro-77d2e0": ApiKey(tier="professional", user="pro-user-7"),
}
RAW_ID = "secret-doc-name-123"


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


def build_app(rec: Recorder, handlers: Handlers) -> web.Application:
    app = web.Application(middlewares=[metrics_middleware(rec, key_table_resolver(KEYS))])
    app.router.add_get("/items/{id}", handlers.item)
    app.router.add_post("/items/{id}/fail", handlers.fail)
    app.router.add_get("/forbidden", handlers.forbidden)
    app.router.add_get("/items/{id}/missing", handlers.missing)
    app.router.add_get("/teapot", handlers.teapot)
    app.router.add_get("/metrics", handlers.metrics)
    app.router.add_get("/blocked", handlers.blocked)
    app.router.add_get("/stream", handlers.stream)
    app.router.add_get("/broken-stream", handlers.broken_stream)
    sub = web.Application()
    sub.router.add_get("/items/{id}", handlers.item)
    app.add_subapp("/sub/", sub)
    return app


@pytest.fixture
def registry():
    return CollectorRegistry()


@pytest.fixture
def rec(registry):
    return Recorder(registry, Hasher("middleware-test-secret"))


@pytest.fixture
def handlers():
    return Handlers()


@pytest.fixture
async def client(aiohttp_client, rec, handlers):
    return await aiohttp_client(build_app(rec, handlers))


def requests(registry) -> dict[tuple[str, str, str, str], float]:
    """{(tier, method, route, code): count} for every non-zero request series."""
    return {
        (s.labels["tier"], s.labels["method"], s.labels["route"], s.labels["code"]): s.value
        for f in registry.collect()
        for s in f.samples
        if s.name == HTTP and s.value
    }


def in_flight(registry) -> float:
    return registry.get_sample_value("clary_http_requests_in_flight")


async def eventually(predicate, timeout: float = 5.0):
    async def poll():
        while not predicate():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


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


async def test_middleware_on_the_sub_application_only(aiohttp_client, rec, registry, handlers):
    """The demo layout: the parent app has no metrics middleware, the mounted one has."""
    sub = web.Application(middlewares=[metrics_middleware(rec, key_table_resolver(KEYS))])
    sub.router.add_get("/items/{id}", handlers.item)
    parent = web.Application()
    parent.add_subapp("/demo/", sub)
    client = await aiohttp_client(parent)
    assert (await client.get("/demo/items/9")).status == 200
    assert requests(registry) == {("unknown", "GET", "/demo/items/{id}", "200"): 1}


async def test_unknown_path_and_wrong_method_are_unmatched(client, registry):
    assert (await client.get(f"/nothing/here/{RAW_ID}")).status == 404
    assert (await client.post("/items/1")).status == 405
    assert (await client.request("PROPFIND", "/items/1")).status == 405
    assert requests(registry) == {
        ("unknown", "GET", "unmatched", "404"): 1,
        ("unknown", "POST", "unmatched", "405"): 1,
        ("unknown", "other", "unmatched", "405"): 1,
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


async def test_handler_exception_becomes_500_with_error_id_and_one_log_record(client, registry, caplog):
    caplog.set_level(logging.ERROR, logger="exporter.middleware")
    resp = await client.post(f"/items/{RAW_ID}/fail", headers={"X-API-Key": "key-lite-3f9a1c"})
    assert resp.status == 500
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert set(body) == {"error", "error_id"} and body["error"] == "internal_error"
    assert uuid.UUID(body["error_id"]).version == 4 and str(uuid.UUID(body["error_id"])) == body["error_id"]

    assert registry.get_sample_value(
        "clary_errors_total", {"tier": "lite", "error_type": "RuntimeError", "route": "/items/{id}/fail"}) == 1
    assert requests(registry) == {("lite", "POST", "/items/{id}/fail", "500"): 1}

    records = [r for r in caplog.records if r.name == "exporter.middleware"]
    assert len(records) == 1
    fields = records[0].fields
    assert fields["error_id"] == body["error_id"]
    assert fields["error_type"] == "RuntimeError"
    assert fields["route"] == "/items/{id}/fail"
    assert fields["method"] == "POST"
    assert fields["tier"] == "lite"
    assert records[0].exc_info and records[0].exc_info[0] is RuntimeError
    for rendered in (json.dumps(fields), JsonFormatter().format(records[0]), TextFormatter().format(records[0])):
        assert body["error_id"] in rendered
        for secret in (RAW_ID, f"/items/{RAW_ID}/fail", "key-lite-3f9a1c", "lite-user-1"):
            assert secret not in rendered


async def test_each_500_gets_its_own_error_id(client, caplog):
    ids = set()
    for _ in range(3):
        ids.add((await (await client.post("/items/1/fail")).json())["error_id"])
    assert len(ids) == 3
    assert {r.fields["error_id"] for r in caplog.records if r.name == "exporter.middleware"} == ids


async def test_http_exceptions_and_returned_statuses_counted_with_their_code(client, registry):
    assert (await client.get("/forbidden", headers={"X-API-Key": "key-pro-77d2e0"})).status == 403
    assert (await client.get("/items/3/missing")).status == 404
    assert (await client.get("/teapot")).status == 418
    assert requests(registry) == {
        ("professional", "GET", "/forbidden", "403"): 1,
        ("unknown", "GET", "/items/{id}/missing", "404"): 1,
        ("unknown", "GET", "/teapot", "418"): 1,
    }
    assert registry.get_sample_value(
        "clary_errors_total", {"tier": "professional", "error_type": "other", "route": "/forbidden"}) is None
    assert in_flight(registry) == 0


async def test_in_flight_goes_up_and_back_to_zero(client, registry, handlers):
    assert in_flight(registry) == 0
    pending = asyncio.ensure_future(client.get("/blocked"))
    await asyncio.wait_for(handlers.entered.wait(), 5)
    assert in_flight(registry) == 1
    assert requests(registry) == {}
    handlers.release.set()
    assert (await pending).status == 200
    await eventually(lambda: requests(registry))
    assert in_flight(registry) == 0
    assert requests(registry) == {("unknown", "GET", "/blocked", "200"): 1}
    await client.post("/items/1/fail")
    assert in_flight(registry) == 0


async def test_excluded_paths_not_counted(client, registry):
    for _ in range(3):
        assert (await client.get("/metrics")).status == 200
    assert requests(registry) == {}
    assert "/metrics" not in {s.labels.get("route") for f in registry.collect() for s in f.samples}
    assert in_flight(registry) == 0


async def test_streamed_response_counted_once_when_done(client, registry, handlers):
    resp = await client.get("/stream", headers={"X-API-Key": "key-lite-3f9a1c"})
    assert resp.status == 200
    await asyncio.wait_for(handlers.entered.wait(), 5)
    assert await resp.content.readexactly(len(b"first;")) == b"first;"
    assert requests(registry) == {}, "not counted while still streaming"
    assert in_flight(registry) == 1
    handlers.release.set()
    assert await resp.read() == b"chunk0;chunk1;chunk2;"
    await eventually(lambda: requests(registry))
    assert requests(registry) == {("lite", "GET", "/stream", "200"): 1}
    assert in_flight(registry) == 0


async def test_stream_failing_after_it_started_drops_the_connection(client, registry, caplog):
    """Headers already went out: no second (JSON 500) response may be written into the body."""
    resp = await client.get("/broken-stream", headers={"X-API-Key": "key-lite-3f9a1c"})
    assert resp.status == 200
    with pytest.raises(aiohttp.ClientPayloadError):
        await resp.read()
    await eventually(lambda: requests(registry))
    assert requests(registry) == {("lite", "GET", "/broken-stream", "500"): 1}
    assert registry.get_sample_value(
        "clary_errors_total", {"tier": "lite", "error_type": "RuntimeError", "route": "/broken-stream"}) == 1
    assert len([r for r in caplog.records if r.name == "exporter.middleware"]) == 1
    assert in_flight(registry) == 0
    assert (await client.get("/items/1")).status == 200  # the server carries on


async def test_client_disconnect_counts_499(client, registry, handlers):
    with pytest.raises(asyncio.TimeoutError):
        await client.get("/blocked", timeout=aiohttp.ClientTimeout(total=0.2))
    await asyncio.wait_for(handlers.cancelled.wait(), 5)
    await eventually(lambda: requests(registry))
    assert requests(registry) == {("unknown", "GET", "/blocked", "499"): 1}
    assert in_flight(registry) == 0


async def test_cancelled_handler_counts_499_directly(rec, registry):
    async def cancelled(request):
        raise asyncio.CancelledError

    app = web.Application()
    app.router.add_get("/items/{id}", cancelled)
    headers = {"X-API-Key": "key-pro-77d2e0"}
    request = make_mocked_request("GET", "/items/5", headers=headers, app=app)
    match_info = await app.router.resolve(request)
    match_info.add_app(app)
    request._match_info = match_info  # what aiohttp's own dispatch does before the middlewares run
    middleware = metrics_middleware(rec, key_table_resolver(KEYS))
    with pytest.raises(asyncio.CancelledError):
        await middleware(request, cancelled)
    assert requests(registry) == {("professional", "GET", "/items/{id}", "499"): 1}
    assert in_flight(registry) == 0
