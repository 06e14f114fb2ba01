"""The ASGI middleware: exemplars from a traceparent header or an active OpenTelemetry span."""

from __future__ import annotations

from tests.instrument.asgi_client import call
from tests.instrument.http_helpers import LITE, PRO, TRACE_ID, TRACEPARENT, openmetrics, requests


async def test_traceparent_becomes_an_exemplar_in_openmetrics(app, registry):
    await call(app, "GET", "/items/1", {**PRO, "traceparent": TRACEPARENT})
    await call(app, "GET", "/items/2", {**LITE, "traceparent": "00-" + "0" * 32 + "-00f067aa0ba902b7-01"})
    await call(app, "GET", "/items/3", {**LITE, "traceparent": "garbage"})
    text = openmetrics(registry)
    lines = [line for line in text.splitlines() if f'trace_id="{TRACE_ID}"' in line]
    assert len(lines) == 1
    assert lines[0].startswith('clary_http_request_duration_seconds_bucket{')
    assert 'route="/items/{id}"' in lines[0] and 'tier="professional"' in lines[0]
    assert text.count("# {") == 1, "invalid traceparent headers give no exemplar"
    assert requests(registry) == {
        ("professional", "GET", "/items/{id}", "200"): 1,
        ("lite", "GET", "/items/{id}", "200"): 2,
    }
    assert registry.get_sample_value(
        "clary_http_request_duration_seconds_count", {"tier": "lite", "method": "GET", "route": "/items/{id}"}) == 2


async def test_active_opentelemetry_span_becomes_an_exemplar(app, registry, monkeypatch):
    from opentelemetry import trace

    monkeypatch.setattr(trace, "_TRACER_PROVIDER", trace.NoOpTracerProvider())
    context = trace.SpanContext(trace_id=int(TRACE_ID, 16), span_id=0x00F067AA0BA902B7, is_remote=False,
                                trace_flags=trace.TraceFlags(1))
    with trace.use_span(trace.NonRecordingSpan(context)):
        await call(app, "GET", "/items/1", PRO)
    text = openmetrics(registry)
    assert text.count(f'# {{trace_id="{TRACE_ID}"}}') == 1
