"""Both aiohttp integrations (``instrument`` and ``metrics_middleware``) on a small app:
labels, errors, in-flight, streaming, cancels. Tests that build an app run once per integration."""

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
from exporter.instrument.requests import DEFAULT_EXCLUDED
from exporter.instrument.aiohttp_middleware import IDENTITY, instrument, key_table_resolver, metrics_middleware
from exporter.instrument.hashing import Hasher
from exporter.instrument.recorder import Recorder

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


INTEGRATIONS = ("instrument", "middleware")


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


@pytest.fixture
def registry():
    return CollectorRegistry()


@pytest.fixture
def rec(registry):
    return Recorder(registry, Hasher("middleware-test-secret"))


@pytest.fixture
def handlers():
    return Handlers()


@pytest.fixture(params=INTEGRATIONS)
def integration(request):
    return request.param


@pytest.fixture
async def client(aiohttp_client, rec, handlers, integration):
    return await aiohttp_client(build_app(rec, handlers, integration))


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
    caplog.set_level(logging.ERROR, logger="exporter.instrument.aiohttp_middleware")
    resp = await client.post(f"/items/{RAW_ID}/fail", headers={"X-API-Key": "key-lite-3f9a1c"})
    assert resp.status == 500
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert set(body) == {"error", "error_id"} and body["error"] == "internal_error"
    assert uuid.UUID(body["error_id"]).version == 4 and str(uuid.UUID(body["error_id"])) == body["error_id"]

    assert registry.get_sample_value(
        "clary_errors_total", {"tier": "lite", "error_type": "RuntimeError", "route": "/items/{id}/fail"}) == 1
    assert requests(registry) == {("lite", "POST", "/items/{id}/fail", "500"): 1}

    records = [r for r in caplog.records if r.name == "exporter.instrument.aiohttp_middleware"]
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
    assert {r.fields["error_id"] for r in caplog.records if r.name == "exporter.instrument.aiohttp_middleware"} == ids


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
    assert len([r for r in caplog.records if r.name == "exporter.instrument.aiohttp_middleware"]) == 1
    assert in_flight(registry) == 0
    assert (await client.get("/items/1")).status == 200  # the server carries on


async def test_client_disconnect_counts_499(client, registry, handlers):
    with pytest.raises(asyncio.TimeoutError):
        await client.get("/blocked", timeout=aiohttp.ClientTimeout(total=0.2))
    await asyncio.wait_for(handlers.cancelled.wait(), 5)
    await eventually(lambda: requests(registry))
    assert requests(registry) == {("unknown", "GET", "/blocked", "499"): 1}
    assert in_flight(registry) == 0


async def test_cancelled_handler_counts_499_directly(rec, registry, integration):
    async def cancelled(request):
        raise asyncio.CancelledError

    app = measured_app(integration, rec)
    app.router.add_get("/items/{id}", cancelled)
    app.on_startup.freeze()
    await app.startup()  # what a runner does before serving
    app.freeze()
    request = make_mocked_request("GET", "/items/5", headers={"X-API-Key": "key-pro-77d2e0"}, app=app)
    with pytest.raises(asyncio.CancelledError):
        await app._handle(request)  # aiohttp's dispatch: resolve, middlewares, handler
    assert requests(registry) == {("professional", "GET", "/items/{id}", "499"): 1}
    assert in_flight(registry) == 0


# --- HEAD / OPTIONS, exemplars, hot path details ---------------------------------------------

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def openmetrics(registry) -> str:
    from prometheus_client.openmetrics.exposition import generate_latest as om_latest

    return om_latest(registry).decode()


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


async def test_traceparent_becomes_an_exemplar_in_openmetrics(client, registry):
    await client.get("/items/1", headers={"X-API-Key": "key-pro-77d2e0", "traceparent": TRACEPARENT})
    await client.get("/items/2", headers={"traceparent": "ff-" + TRACE_ID + "-00f067aa0ba902b7-01"})
    await client.get("/items/3", headers={"traceparent": "not a traceparent"})
    text = openmetrics(registry)
    lines = [line for line in text.splitlines() if "# {" in line]
    assert len(lines) == 1
    assert lines[0].startswith("clary_http_request_duration_seconds_bucket{")
    assert f'# {{trace_id="{TRACE_ID}"}}' in lines[0]
    assert 'route="/items/{id}"' in lines[0] and 'tier="professional"' in lines[0]
    # The classic text format carries no exemplars; the counts are the same either way.
    assert "trace_id" not in generate_latest(registry).decode()
    assert requests(registry) == {
        ("professional", "GET", "/items/{id}", "200"): 1,
        ("unknown", "GET", "/items/{id}", "200"): 2,
    }
    assert registry.get_sample_value(
        "clary_http_request_duration_seconds_count", {"tier": "unknown", "method": "GET", "route": "/items/{id}"}) == 2


async def test_active_opentelemetry_span_becomes_an_exemplar(aiohttp_client, rec, registry, monkeypatch,
                                                             integration):
    from opentelemetry import trace

    monkeypatch.setattr(trace, "_TRACER_PROVIDER", trace.NoOpTracerProvider())
    context = trace.SpanContext(trace_id=int(TRACE_ID, 16), span_id=0x00F067AA0BA902B7, is_remote=False,
                                trace_flags=trace.TraceFlags(1))

    @web.middleware
    async def tracing(request, handler):  # what an OpenTelemetry server instrumentation does
        with trace.use_span(trace.NonRecordingSpan(context)):
            return await handler(request)

    app = measured_app(integration, rec, middlewares=[tracing])  # instrument(): inside every middleware
    app.router.add_get("/items/{id}", Handlers().item)
    client = await aiohttp_client(app)
    assert (await client.get("/items/1")).status == 200
    assert openmetrics(registry).count(f'# {{trace_id="{TRACE_ID}"}}') == 1


async def test_counts_are_folded_in_at_every_scrape(client, registry):
    for i in range(5):
        await client.get(f"/items/{i}", headers={"X-API-Key": "key-lite-3f9a1c"})
        assert requests(registry) == {("lite", "GET", "/items/{id}", "200"): i + 1}
    text = generate_latest(registry).decode()
    assert 'clary_http_requests_total{code="200",method="GET",route="/items/{id}",tier="lite"} 5.0' in text
    assert registry.get_sample_value(
        "clary_http_request_duration_seconds_count", {"tier": "lite", "method": "GET", "route": "/items/{id}"}) == 5


async def test_direct_path_matches_the_deferred_one(aiohttp_client, handlers, integration):
    """Multiprocess mode records directly (values live in files); both paths expose the same samples."""
    from exporter.instrument.requests import RequestMetrics

    exposed = []
    for deferred in (True, False):
        registry = CollectorRegistry()
        rec = Recorder(registry, Hasher("middleware-test-secret"))
        metrics = RequestMetrics.of(rec)
        metrics.deferred = deferred
        client = await aiohttp_client(build_app(rec, handlers, integration))
        for path, key in (("/items/1", "key-lite-3f9a1c"), ("/teapot", "key-pro-77d2e0"), ("/nope", "")):
            await client.get(path, headers={"X-API-Key": key})
        await client.post("/items/1/fail")
        exposed.append({
            (s.name, tuple(sorted((k, v) for k, v in s.labels.items()))): s.value
            for f in registry.collect() for s in f.samples
            if s.name.startswith("clary_http_") and not s.name.endswith(("_sum", "_created"))
        })
    assert exposed[0] == exposed[1]
    assert exposed[0][("clary_http_requests_total",
                       (("code", "418"), ("method", "GET"), ("route", "/teapot"), ("tier", "professional")))] == 1
    assert exposed[0][("clary_http_requests_in_flight", ())] == 0


async def test_threads_writing_while_a_scrape_folds_lose_nothing(rec, registry):
    """Each thread counts into its own table; scrapes on another thread read them concurrently."""
    import threading

    from exporter.instrument.identity import ANONYMOUS
    from exporter.instrument.requests import RequestMetrics

    metrics = RequestMetrics.of(rec)
    n, threads = 20_000, 4
    stop = threading.Event()

    def work():
        for _ in range(n):
            metrics.finished(metrics.started(), ANONYMOUS, "GET", "/t", 200)

    def scrape():
        while not stop.is_set():
            requests(registry)

    scraper = threading.Thread(target=scrape)
    scraper.start()
    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    stop.set()
    scraper.join()
    assert requests(registry) == {("unknown", "GET", "/t", "200"): n * threads}
    assert registry.get_sample_value(
        "clary_http_request_duration_seconds_count", {"tier": "unknown", "method": "GET", "route": "/t"}) == n * threads
    assert in_flight(registry) == 0


async def test_status_outside_the_valid_range_counts_as_500(rec, registry):
    from exporter.instrument.identity import ANONYMOUS
    from exporter.instrument.requests import RequestMetrics

    metrics = RequestMetrics.of(rec)
    for deferred in (True, False):
        metrics.deferred = deferred
        metrics.finished(metrics.started(), ANONYMOUS, "GET", "/odd", 999)
    assert requests(registry) == {("unknown", "GET", "/odd", "500"): 2}


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


async def test_secrets_repeated_in_the_exception_message_are_redacted_from_the_log(aiohttp_client, rec, registry,
                                                                                    caplog, integration):
    """``keys[api_key]`` raises KeyError(api_key): the log record must still not carry the key or the raw path."""
    caplog.set_level(logging.ERROR, logger="exporter.instrument.aiohttp_middleware")

    async def lookup(request):
        try:
            raise LookupError(f"no document {request.path_qs}")
        except LookupError:
            raise KeyError(request.headers["X-API-Key"]) from None

    async def chained(request):
        try:
            {}[request.headers["X-API-Key"]]
        except KeyError as exc:
            raise RuntimeError(f"lookup failed for user {request[IDENTITY].user} on {request.path}") from exc

    app = measured_app(integration, rec)
    app.router.add_get("/docs/{id}", lookup)
    app.router.add_get("/chained/{id}", chained)
    client = await aiohttp_client(app)
    resp = await client.get(f"/docs/{RAW_ID}?token=tok-4455", headers={"X-API-Key": "key-lite-3f9a1c"})
    assert resp.status == 500
    error_id = (await resp.json())["error_id"]
    assert (await client.get(f"/chained/{RAW_ID}", headers={"X-API-Key": "key-lite-3f9a1c"})).status == 500
    records = [r for r in caplog.records if r.name == "exporter.instrument.aiohttp_middleware"]
    assert len(records) == 2
    assert records[0].fields["error_id"] == error_id
    assert records[0].fields["error_type"] == "KeyError" and records[0].exc_info[0].__name__ == "KeyError"
    assert records[1].fields["error_type"] == "RuntimeError"
    for record in records:
        for rendered in (JsonFormatter().format(record), TextFormatter().format(record)):
            assert "[redacted]" in rendered
            for secret in ("key-lite-3f9a1c", "lite-user-1", RAW_ID, "tok-4455"):
                assert secret not in rendered
    json_stack = json.loads(JsonFormatter().format(records[1]))["stack"]
    assert "KeyError: '[redacted]'" in json_stack and "RuntimeError: lookup failed for user [redacted]" in json_stack
    assert registry.get_sample_value(
        "clary_errors_total", {"tier": "lite", "error_type": "KeyError", "route": "/docs/{id}"}) == 1


async def test_a_bucket_exemplar_is_replaced_at_most_every_interval(rec, registry, monkeypatch):
    import time

    from exporter.instrument import requests as httpmetrics
    from exporter.instrument.identity import ANONYMOUS
    from exporter.instrument.requests import RequestMetrics

    metrics = RequestMetrics.of(rec)
    other = "0af7651916cd43dd8448eb211c80319c"

    def traced(trace: str) -> None:  # ~30 ms: the 0.05 bucket, far from its edges
        metrics.leave(metrics.enter(), ANONYMOUS, "GET", "/x", 200, time.perf_counter() - 0.03,
                      f"00-{trace}-00f067aa0ba902b7-01")

    traced(TRACE_ID)
    traced(other)
    text = openmetrics(registry)
    assert text.count(f'trace_id="{TRACE_ID}"') == 1 and other not in text  # within the interval: kept
    assert 'le="0.05"' in next(line for line in text.splitlines() if TRACE_ID in line)
    monkeypatch.setattr(httpmetrics, "EXEMPLAR_INTERVAL", 0.0)
    traced(other)
    text = openmetrics(registry)
    assert text.count(f'trace_id="{other}"') == 1 and TRACE_ID not in text  # replaced by the latest
    assert requests(registry) == {("unknown", "GET", "/x", "200"): 3}


# --- instrument() specifics -----------------------------------------------------------------------


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
