"""The compat module: its probes hold on the installed versions, and its public fallbacks give the same answers."""

from __future__ import annotations

import math

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from prometheus_client import CollectorRegistry, Counter, Histogram

from exporter.instrument import IDENTITY, Hasher, Identity, Recorder, _compat, instrument, key_table_resolver


def test_every_probe_holds_on_the_installed_versions():
    """A failing probe here means a dependency changed its internals: update _compat.py (the bounds in
    pyproject.toml say which versions were tested)."""
    assert _compat.PROBES == {name: True for name in _compat.PROBES}
    assert _compat.deferred_available() is True


def test_request_fields_match_the_public_api():
    request = make_mocked_request("POST", "/x", headers={"X-API-Key": "k"})
    for fields in (_compat.request_fields, _compat._public_request_fields):
        headers, state, method = fields(request)
        state[IDENTITY] = Identity("lite", None)
        assert (headers.get("X-API-Key"), method, request.get(IDENTITY)) == ("k", "POST", Identity("lite", None))


async def test_instrumented_app_works_through_the_public_fallback(aiohttp_client, monkeypatch):
    monkeypatch.setattr(_compat, "request_fields", _compat._public_request_fields)
    registry = CollectorRegistry()
    rec = Recorder(registry, Hasher("compat-test-secret"))

    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=request[IDENTITY].tier)

    app = web.Application()
    instrument(app, rec, key_table_resolver({"k": Identity("standard", None)}))
    app.router.add_get("/items/{id}", handler)
    client = await aiohttp_client(app)
    response = await client.get("/items/7", headers={"X-API-Key": "k"})
    assert await response.text() == "standard"
    assert registry.get_sample_value("clary_http_requests_total", {
        "tier": "standard", "method": "GET", "route": "/items/{id}", "code": "200"}) == 1


def test_histogram_parts_and_counter_inc():
    histogram = Histogram("h", "H.", buckets=(0.1, 1.0), registry=None)
    parts = _compat.histogram_parts(histogram)
    assert parts.bounds == (0.1, 1.0, math.inf) and len(parts.buckets) == 3
    _compat.fold_histogram(histogram, [0, 2.5, 1, 0, 1], [0, 0.0, 0, 0, 0], 2)
    samples = {(s.name, s.labels.get("le")): s.value for s in histogram.collect()[0].samples}
    assert samples[("h_bucket", "0.1")] == 1 and samples[("h_bucket", "+Inf")] == 2 and samples[("h_sum", None)] == 2.5

    class OtherLayout:
        _upper_bounds = (1.0, math.inf)

    assert _compat.histogram_parts(OtherLayout()) is None
    counter = Counter("c", "C.", registry=None)
    _compat.counter_inc(counter)(3)
    assert counter._value.get() == 3  # noqa: SLF001 - the value the fast path writes, read back directly

    class PublicOnly:
        def inc(self, amount: float = 1) -> None:
            self.added = amount

    public = PublicOnly()
    _compat.counter_inc(public)(2)
    assert public.added == 2


@pytest.mark.parametrize("installed", [True, False])
def test_tracer_configured_follows_the_provider(monkeypatch, installed):
    if not installed:
        monkeypatch.setattr(_compat, "otel_trace", None)
        assert _compat._tracer_configured_factory()() is False
        return
    from opentelemetry import trace

    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)
    check = _compat._tracer_configured_factory()
    assert check() is False
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", trace.NoOpTracerProvider())
    assert check() is True
