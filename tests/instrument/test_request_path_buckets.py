"""Every copy of the per-request recording puts a duration on a bucket bound into that bucket.

The per-request path exists more than once for speed: ``RequestMetrics.leave``
(ASGI, and aiohttp in multiprocess mode), the aiohttp integration's inlined
copy of it, ``Recorder.http_request`` (direct recording) and the deferred
tables of ``Recorder.batch()`` (ingested ``api_call`` events). Prometheus
buckets are ``le`` (inclusive): a request of exactly 0.5 s belongs in
``le="0.5"``, not ``le="0.75"``. Each copy is driven here with durations
placed exactly on every bound, through a fake clock, so that a
``bisect_left`` -> ``bisect_right`` slip (or ``<=`` -> ``<``) in any one copy
fails its own case.
"""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.utils import floatToGoString

from exporter.catalog import spec
from exporter.instrument import (ANONYMOUS, Hasher, Identity, MetricsMiddleware, Recorder, instrument,
                                 key_table_resolver, metrics_middleware)
from exporter.instrument.requests import RequestMetrics

BOUNDS = tuple(b for b in spec("clary_http_request_duration_seconds").buckets if b != float("inf"))
FAMILY = "clary_http_request_duration_seconds_bucket"
KEYS = key_table_resolver({"k": Identity("lite", None)})


class EdgeClock:
    """Returns the queued readings in order (start, end of one request), then 0.0."""

    def __init__(self):
        self.readings: list[float] = []

    def __call__(self) -> float:
        return self.readings.pop(0) if self.readings else 0.0

    def next_request(self, duration: float) -> None:
        self.readings = [0.0, duration]


def placed(registry: CollectorRegistry, labels: dict[str, str]) -> list[tuple[float, float]]:
    """(cumulative count at the bound, at the bound below) for each bound, after one request per bound."""
    found = []
    below = 0.0
    for bound in BOUNDS:
        at = registry.get_sample_value(FAMILY, {**labels, "le": floatToGoString(bound)}) or 0.0
        found.append((at, below))
        below = at
    return found


def assert_each_on_its_own_bound(registry: CollectorRegistry, labels: dict[str, str]) -> None:
    # One request per bound, of exactly that duration: le=bound holds i+1 requests, the bound below i.
    expected = [(float(i + 1), float(i)) for i in range(len(BOUNDS))]
    assert placed(registry, labels) == expected


def new_recorder() -> tuple[CollectorRegistry, Recorder]:
    registry = CollectorRegistry()
    return registry, Recorder(registry, Hasher("bucket-edge-test-secret"))


@pytest.mark.parametrize("deferred", [True, False], ids=["deferred tables", "direct (multiprocess)"])
def test_request_metrics_leave(deferred):
    registry, rec = new_recorder()
    clock = EdgeClock()
    metrics = RequestMetrics.of(rec, clock=clock)
    metrics.deferred = deferred
    for bound in BOUNDS:
        clock.next_request(bound)
        table, start = metrics.started()
        metrics.finished((table, start), ANONYMOUS, "GET", "/x", 200)
    assert_each_on_its_own_bound(registry, {"tier": "unknown", "method": "GET", "route": "/x"})


@pytest.mark.parametrize("deferred", [True, False], ids=["inlined copy", "through enter/leave"])
@pytest.mark.parametrize("way", ["instrument", "middleware"])
async def test_aiohttp_integration(aiohttp_client, way, deferred):
    registry, rec = new_recorder()
    clock = EdgeClock()
    RequestMetrics.of(rec, clock=clock).deferred = deferred

    async def handler(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    if way == "instrument":
        app = web.Application()
        instrument(app, rec, KEYS)
    else:
        app = web.Application(middlewares=[metrics_middleware(rec, KEYS)])
    app.router.add_get("/docs/{id}", handler)
    client = await aiohttp_client(app)
    for bound in BOUNDS:
        clock.next_request(bound)
        assert (await client.get("/docs/1", headers={"X-API-Key": "k"})).status == 200
    assert_each_on_its_own_bound(registry, {"tier": "lite", "method": "GET", "route": "/docs/{id}"})


async def test_asgi_middleware():
    registry, rec = new_recorder()
    clock = EdgeClock()
    RequestMetrics.of(rec, clock=clock)

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    middleware = MetricsMiddleware(app, rec, KEYS)

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        pass

    for bound in BOUNDS:
        clock.next_request(bound)
        scope = {"type": "http", "method": "GET", "path": "/x", "headers": [(b"x-api-key", b"k")]}
        await asyncio.wait_for(middleware(scope, receive, send), 5)
    assert_each_on_its_own_bound(registry, {"tier": "lite", "method": "GET", "route": "unmatched"})


@pytest.mark.parametrize("how", ["Recorder.http_request", "Recorder.batch().http_request"])
def test_recorder_http_request(how):
    registry, rec = new_recorder()
    target = rec.batch() if how.startswith("Recorder.batch") else rec
    for bound in BOUNDS:
        target.http_request("standard", "POST", "/v1/parse", 200, bound)
    if target is not rec:
        target.commit()
    assert_each_on_its_own_bound(registry, {"tier": "standard", "method": "POST", "route": "/v1/parse"})


@pytest.mark.parametrize("how", ["few values per call", "many values per call", "many series"])
def test_batch_observe_each(how):
    """The bulk path of ingested events (``observe_each``): by bisection per value, or per bound walk."""
    registry, rec = new_recorder()
    batch = rec.batch()
    labels = ("professional", "GET", "/v1/docs")
    if how == "few values per call":  # up to deferred.FEW_VALUES: each value placed by bisection
        for i in range(0, len(BOUNDS), 3):
            batch.observe_each("clary_http_request_duration_seconds", [labels] * 3, BOUNDS[i:i + 3])
    elif how == "many values per call":  # sorted once, counted bound by bound
        batch.observe_each("clary_http_request_duration_seconds", [labels] * len(BOUNDS), BOUNDS)
    else:  # other series in between: values are grouped per series first
        pairs = [(labels, b) for b in BOUNDS] + [(("lite", "GET", f"/v1/r{i}"), 0.001) for i in range(20)]
        batch.observe_each("clary_http_request_duration_seconds", [p[0] for p in pairs], [p[1] for p in pairs])
    batch.commit()
    assert_each_on_its_own_bound(registry, {"tier": "professional", "method": "GET", "route": "/v1/docs"})
