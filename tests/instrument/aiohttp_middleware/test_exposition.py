"""aiohttp integrations: what a scrape sees; exemplars from traceparent or an active span, folds at every scrape."""

from __future__ import annotations

import itertools

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest

from exporter.instrument.hashing import Hasher
from exporter.instrument.recorder import Recorder
from tests.instrument.aiohttp_middleware.service import Handlers, build_app, measured_app
from tests.instrument.http_helpers import TRACE_ID, TRACEPARENT, openmetrics, requests


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
        # Every request takes 2 ms by this clock: both runs put the same requests in the same buckets.
        ticks = itertools.count(step=0.002)
        metrics = RequestMetrics.of(rec, clock=lambda: next(ticks))
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
